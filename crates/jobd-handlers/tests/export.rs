//! `export_data`: a tenant's scans to CSV, JSON lines and XLSX, read back by
//! readers nobody here wrote (the `csv` crate's reader, serde_json, the
//! `calamine` XLSX reader) and compared with the source rows; bad input
//! refused before anything is written; a stopped export leaves no file;
//! old exports removed; the export-ready mail through a real SMTP server.

use std::sync::Arc;
use std::time::{Duration, Instant};

use calamine::{open_workbook, Data, Reader, Xlsx};
use jobd::store::{JobState, NewJob};
use jobd::worker::Worker;
use jobd::Store;
use jobd_handlers::email::{self, Mailer, SmtpConfig};
use jobd_handlers::export::{self, ExportConfig, ExportHandler, ExportSpec, Format};
use jobd_handlers::tenants::{seed, SeedOptions};
use jobd_handlers::{DataDir, Reporter};
use jobd_testkit::smtp::{python, SmtpServer};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

const T: &str = "tenant-001";
/// Scans 2026-10-01 to 2026-10-16 (ms).
const FROM: i64 = 1_790_812_800_000;
const TO: i64 = 1_792_108_800_000;

fn seeded(scans: usize) -> (tempfile::TempDir, DataDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path().join("data"));
    let opts = SeedOptions {
        tenants: 2,
        templates_per_tenant: 5,
        scans_per_tenant: scans,
        ..SeedOptions::default()
    };
    seed(data.tenants(), &opts).unwrap();
    (dir, data)
}

/// The source rows the export should hold, as strings (NULL as "").
fn source(data: &DataDir, fields: &[&str], from: i64, to: i64) -> Vec<Vec<String>> {
    let conn = data.tenants().open_read_only(T).unwrap();
    let sql = format!(
        "SELECT {} FROM scans WHERE scanned_at >= ?1 AND scanned_at < ?2 ORDER BY id",
        fields.join(", ")
    );
    let mut stmt = conn.prepare(&sql).unwrap();
    let n = fields.len();
    stmt.query_map([from, to], |r| {
        (0..n)
            .map(|i| {
                Ok(match r.get_ref(i)? {
                    rusqlite::types::ValueRef::Null => String::new(),
                    rusqlite::types::ValueRef::Integer(x) => x.to_string(),
                    rusqlite::types::ValueRef::Text(t) => String::from_utf8_lossy(t).into(),
                    other => panic!("{other:?}"),
                })
            })
            .collect::<rusqlite::Result<Vec<String>>>()
    })
    .unwrap()
    .collect::<rusqlite::Result<_>>()
    .unwrap()
}

fn spec(format: Format, fields: &[&str]) -> ExportSpec {
    ExportSpec {
        format,
        table: "scans".into(),
        fields: fields.iter().map(|f| f.to_string()).collect(),
        from_ms: Some(FROM),
        to_ms: Some(TO),
        email: None,
    }
}

const FIELDS: [&str; 5] = ["id", "scanned_at", "country", "device", "referrer"];

#[test]
fn csv_jsonl_and_xlsx_read_back_equal_to_the_source_rows() {
    let (_d, data) = seeded(20_000);
    let want = source(&data, &FIELDS, FROM, TO);
    assert!(want.len() > 2_000, "the range holds rows: {}", want.len());
    assert!(want.iter().any(|r| r[4].is_empty()), "some NULL referrers");
    let config = ExportConfig::default();

    // CSV, read by the csv crate's reader.
    let r = export::export(
        &data,
        &config,
        T,
        &spec(Format::Csv, &FIELDS),
        "a",
        &Reporter::silent(),
    )
    .unwrap();
    assert_eq!(r.rows as usize, want.len());
    assert_eq!(r.path, format!("artifacts/exports/{T}/a.csv"));
    let mut rd = csv::Reader::from_path(data.root().join(&r.path)).unwrap();
    assert_eq!(rd.headers().unwrap(), FIELDS.as_slice());
    let got: Vec<Vec<String>> = rd
        .records()
        .map(|rec| rec.unwrap().iter().map(str::to_string).collect())
        .collect();
    assert_eq!(got, want);

    // JSON lines, each a JSON object with the fields in order.
    let r = export::export(
        &data,
        &config,
        T,
        &spec(Format::Jsonl, &FIELDS),
        "b",
        &Reporter::silent(),
    )
    .unwrap();
    let text = std::fs::read_to_string(data.root().join(&r.path)).unwrap();
    let got: Vec<Vec<String>> = text
        .lines()
        .map(|l| {
            let v: serde_json::Map<String, Value> = serde_json::from_str(l).unwrap();
            assert!(
                l.starts_with("{\"id\":") && l.contains("\"country\":"),
                "{l}"
            );
            FIELDS
                .iter()
                .map(|f| match &v[*f] {
                    Value::Null => String::new(),
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                })
                .collect()
        })
        .collect();
    assert_eq!(got, want);

    // XLSX, read by calamine: a header row, then the rows, numbers as numbers.
    let r = export::export(
        &data,
        &config,
        T,
        &spec(Format::Xlsx, &FIELDS),
        "c",
        &Reporter::silent(),
    )
    .unwrap();
    let mut book: Xlsx<_> = open_workbook(data.root().join(&r.path)).unwrap();
    let sheet = book.worksheet_range("export-1").unwrap();
    let mut rows = sheet.rows();
    let header: Vec<String> = rows.next().unwrap().iter().map(|c| c.to_string()).collect();
    assert_eq!(header, FIELDS);
    let got: Vec<Vec<String>> = rows
        .map(|row| {
            (0..FIELDS.len())
                .map(|i| match row.get(i) {
                    None | Some(Data::Empty) => String::new(),
                    Some(Data::Float(f)) => (*f as i64).to_string(),
                    Some(Data::Int(x)) => x.to_string(),
                    Some(Data::String(s)) => s.clone(),
                    Some(other) => panic!("{other:?}"),
                })
                .collect()
        })
        .collect();
    assert_eq!(got, want);

    // No temporary file is left beside them.
    let names: Vec<String> = std::fs::read_dir(data.artifacts().join("exports").join(T))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}");
    assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
}

#[test]
fn bad_input_is_refused_before_anything_is_written() {
    let (_d, data) = seeded(100);
    let config = ExportConfig::default();
    let cases: Vec<(ExportSpec, Option<&str>, &str)> = vec![
        (spec(Format::Csv, &["id"]), Some("tenant-404"), "tenant-404"),
        (spec(Format::Csv, &["id"]), None, "tenant"),
        (
            spec(Format::Csv, &["id", "password"]),
            Some(T),
            "no field \"password\"",
        ),
        (
            ExportSpec {
                table: "sqlite_master".into(),
                ..spec(Format::Csv, &[])
            },
            Some(T),
            "not exportable",
        ),
        (
            ExportSpec {
                from_ms: Some(TO),
                to_ms: Some(FROM),
                ..spec(Format::Csv, &[])
            },
            Some(T),
            "after to_ms",
        ),
        (
            ExportSpec {
                email: Some(serde_json::from_value(json!("ana@x.com")).unwrap()),
                ..spec(Format::Csv, &[])
            },
            Some(T),
            "no [email] server",
        ),
        (
            spec(Format::Csv, &["id\" FROM scans; --"]),
            Some(T),
            "no field",
        ),
    ];
    for (s, tenant, says) in cases {
        let e = export::check(&data, &config, &s, tenant, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains(says), "{e} should say {says}");
    }
    let handler = ExportHandler::new(data.clone(), config.clone(), true);
    let bad_mail = ExportSpec {
        email: Some(serde_json::from_value(json!("not an address")).unwrap()),
        ..spec(Format::Csv, &[])
    };
    let e = jobd::worker::Handler::check(&handler, &bad_mail, Some(T)).unwrap_err();
    assert!(e.contains("not an address"), "{e}");
    assert!(
        !data.artifacts().join("exports").exists(),
        "nothing written"
    );
}

#[test]
fn a_stopped_export_leaves_no_file_and_old_exports_are_removed() {
    let (_d, data) = seeded(120_000);
    let config = ExportConfig::default();
    let dir = data.artifacts().join("exports").join(T);
    for format in [Format::Csv, Format::Jsonl, Format::Xlsx] {
        let cancel = CancellationToken::new();
        cancel.cancel();
        let all = ExportSpec {
            from_ms: None,
            to_ms: None,
            ..spec(format, &[])
        };
        let e = export::export(
            &data,
            &config,
            T,
            &all,
            "stopped",
            &Reporter::cancellable(cancel),
        )
        .unwrap_err();
        assert!(e.to_string().contains("stopped"), "{format:?}: {e}");
        assert_eq!(
            std::fs::read_dir(&dir).unwrap().count(),
            0,
            "{format:?}: no partial file left"
        );
    }

    // An export older than keep_days goes; a newer one and what a symlink
    // points at outside stay.
    let old = dir.join("old.csv");
    std::fs::write(&old, "x").unwrap();
    let f = std::fs::File::options().write(true).open(&old).unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(8 * 86_400))
        .unwrap();
    let recent = dir.join("recent.csv");
    std::fs::write(&recent, "y").unwrap();
    let outside = tempfile::NamedTempFile::new().unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(outside.path())
        .unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(30 * 86_400))
        .unwrap();
    std::os::unix::fs::symlink(outside.path(), dir.join("link.csv")).unwrap();
    let r = export::export(
        &data,
        &config,
        T,
        &spec(Format::Jsonl, &["id"]),
        "new",
        &Reporter::silent(),
    )
    .unwrap();
    assert_eq!(r.removed, 1);
    assert!(!old.exists() && recent.exists() && outside.path().exists());
}

/// Through a worker: the job's tenant, its progress, and the export-ready
/// mail (a `send_email` job) delivered by a real SMTP server.
#[tokio::test]
async fn an_export_job_sends_the_export_ready_mail() {
    let Some(py) = python() else { return };
    let server = SmtpServer::start(&py, &[]);
    let (dir, data) = seeded(5_000);
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let mailer = Arc::new(
        Mailer::new(
            &SmtpConfig::loopback(server.port, "QR <noreply@qr.example>"),
            data.clone(),
        )
        .unwrap(),
    );
    let config = ExportConfig {
        base_url: Some("https://qr.example/exports".into()),
        ..ExportConfig::default()
    };
    let builder = email::register(Worker::builder(store.clone()), mailer)
        .register(ExportHandler::new(data.clone(), config, true));
    let builder = builder.queue("exports", 1).queue("email", 1);
    let catalog = builder.catalog();
    let job = NewJob::new("exports", "export_data").tenant(T).payload(
        &json!({"format": "csv", "fields": ["id", "country"], "email": "ana@example.com"}),
    );
    catalog.checker(&store).check_job(&job).unwrap();
    let id = store.enqueue(&job).unwrap();
    let stop = CancellationToken::new();
    let run = tokio::spawn({
        let stop = stop.clone();
        builder.run(async move { stop.cancelled().await })
    });
    let got = tokio::task::spawn_blocking(move || server_wait(server))
        .await
        .unwrap();
    stop.cancel();
    run.await.unwrap().unwrap();
    let j = store.get(id).unwrap();
    assert_eq!(j.state, JobState::Succeeded, "{:?}", j.last_error);
    let result = j.result.clone().unwrap();
    assert_eq!(result["rows"], 5_000);
    assert_eq!(j.progress.detail.as_deref(), Some("5000/5000"));
    let (envelope, raw) = got;
    assert_eq!(envelope["to"], json!(["ana@example.com"]));
    assert!(raw.contains("5000 rows"), "{raw}");
    assert!(
        raw.contains(&format!("https://qr.example/exports/{T}/scans-{id}.csv")),
        "{raw}"
    );
}

fn server_wait(server: SmtpServer) -> (Value, String) {
    let t0 = Instant::now();
    loop {
        if let Some(m) = server.received().pop() {
            return m;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no export-ready mail"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
