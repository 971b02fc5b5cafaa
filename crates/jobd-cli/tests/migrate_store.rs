//! `jobd migrate-store`: a demo's queue file copied into PostgreSQL and
//! verified (counts and checksums equal), resumed after an interruption,
//! refused over a database holding other rows — and the copy then serves
//! as the queue, on the same ids.

use std::process::Command;

use jobd_testkit::run_ok;

const JOBD: &str = env!("CARGO_BIN_EXE_jobd");

fn migrate(from: &std::path::Path, to: &str) -> std::process::Output {
    Command::new(JOBD)
        .args(["migrate-store", "--from"])
        .arg(from)
        .args(["--to", to])
        .output()
        .unwrap()
}

/// `table → (file rows, postgres rows, inserted)` from the report.
fn rows(out: &str) -> std::collections::BTreeMap<String, (u64, u64, u64)> {
    out.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let n = |i: usize| f.get(i)?.parse().ok();
            Some((f.first()?.to_string(), (n(1)?, n(2)?, n(3)?)))
        })
        .collect()
}

#[test]
fn a_demo_file_round_trips_into_postgres_verified_and_resumable() {
    let Some(url) = jobd_testkit::pg::database() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("d");
    run_ok(
        Command::new(JOBD)
            .args([
                "demo",
                "--tenants",
                "3",
                "--scans",
                "50",
                "--jobs",
                "400",
                "--data-dir",
            ])
            .arg(&data),
    );
    let file = data.join("queue.db");
    // Schedules, a token and a paused queue too.
    let jobd = |args: &[&str]| run_ok(Command::new(JOBD).arg("--db").arg(&file).args(args));
    jobd(&[
        "schedule",
        "add",
        "nightly",
        "--cron",
        "0 2 * * *",
        "--queue",
        "maintenance",
        "--kind",
        "health_check",
    ]);
    jobd(&["token", "add", "ci", "--role", "worker"]);
    jobd(&["queue", "pause", "pdf"]);

    let out = migrate(&file, &url);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("verified"), "{text}");
    let first = rows(&text);
    assert!(first["jobs"].0 >= 400, "{text}");
    for (table, (file_rows, pg_rows, inserted)) in &first {
        assert_eq!(file_rows, pg_rows, "{table}");
        assert_eq!(file_rows, inserted, "{table}: all new");
    }
    assert_eq!(first["schedules"].0, 1);
    assert_eq!(first["api_tokens"].0, 1);
    assert!(first["tries"].0 > 0 && first["progress"].0 > 0, "{text}");
    assert_eq!(
        first["state"].0, 1,
        "the demo's cached analytics answer: {text}"
    );

    // An interrupted copy: the target lost its newest half of the jobs (and
    // their tries); run again, it adds exactly what is missing.
    let half = first["jobs"].0 / 2;
    let mut c = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    let cut = c
        .execute(
            "DELETE FROM jobs WHERE id > (SELECT min(id) FROM jobs) + $1",
            &[&(half as i64)],
        )
        .unwrap();
    assert!(cut > 0);
    let out = migrate(&file, &url);
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{text}");
    let again = rows(&text);
    assert_eq!(again["jobs"].2, cut, "{text}");
    assert_eq!(again["schedules"].2, 0, "nothing copied twice");

    // A target holding a row of its own is refused, and keeps it.
    let changed = c
        .execute("UPDATE queues SET concurrency = 99 WHERE name = 'pdf'", &[])
        .unwrap();
    assert_eq!(changed, 1);
    let out = migrate(&file, &url);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("does not hold the same rows"), "{err}");
    let mine: i64 = c
        .query_one("SELECT count(*) FROM queues WHERE concurrency = 99", &[])
        .unwrap()
        .get(0);
    assert_eq!(mine, 1, "nothing overwritten");

    // The copy is a queue: the same jobs, settings and schedules, and new
    // ids continue past the file's.
    let on = |db: &str, args: &[&str]| {
        String::from_utf8_lossy(&run_ok(Command::new(JOBD).arg("--db").arg(db).args(args)).stdout)
            .into_owned()
    };
    let file_arg = file.to_str().unwrap();
    assert_eq!(
        on(&url, &["list", "--limit", "50"]),
        on(file_arg, &["list", "--limit", "50"])
    );
    assert_eq!(
        on(&url, &["schedule", "list"]),
        on(file_arg, &["schedule", "list"])
    );
    let stats = on(&url, &["stats"]);
    assert!(stats.contains("pdf") && stats.contains("paused"), "{stats}");
    let id: i64 = on(
        &url,
        &[
            "enqueue",
            "--queue",
            "default",
            "--kind",
            "sleep",
            "--payload",
            r#"{"ms": 1}"#,
        ],
    )
    .trim()
    .parse()
    .unwrap();
    assert!(
        id as u64 > first["jobs"].0,
        "id {id} continues past the file's"
    );
}
