//! Tenant databases and the built-in handlers: backup/restore, cleanup,
//! health check.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use jobd::store::JobState;
use jobd::worker::Worker;
use jobd::{Error, NewJob, Store};
use jobd_handlers::backup::{self, BackupHandler, BackupOptions, BackupStatus};
use jobd_handlers::maintenance::{self, CleanupOptions};
use jobd_handlers::tenants::{seed, SeedOptions};
use jobd_handlers::{DataDir, Reporter};

fn small(tenants: usize) -> SeedOptions {
    SeedOptions {
        tenants,
        templates_per_tenant: 5,
        scans_per_tenant: 300,
        ..SeedOptions::default()
    }
}

fn seeded(tenants: usize) -> (tempfile::TempDir, DataDir) {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    seed(data.tenants(), &small(tenants)).unwrap();
    (dir, data)
}

fn rows(conn: &rusqlite::Connection, sql: &str) -> Vec<String> {
    let mut stmt = conn.prepare(sql).unwrap();
    stmt.query_map([], |r| r.get::<_, String>(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

const SCAN_ROWS: &str = "SELECT json_array(id, template_id, scanned_at, country, device, referrer) FROM scans ORDER BY id";

fn file_bytes(path: &std::path::Path) -> Vec<u8> {
    std::fs::read(path).unwrap()
}

#[test]
fn seeding_is_deterministic_and_tenant_names_cannot_escape() {
    let (_a, one) = seeded(3);
    let (_b, two) = seeded(3);
    let list = one.tenants().list().unwrap();
    assert_eq!(list, ["tenant-001", "tenant-002", "tenant-003"]);
    for t in &list {
        let a = rows(&one.tenants().open_read_only(t).unwrap(), SCAN_ROWS);
        let b = rows(&two.tenants().open_read_only(t).unwrap(), SCAN_ROWS);
        assert_eq!(a.len(), 300);
        assert_eq!(a, b, "same seed, same rows");
    }
    let d1: String = one
        .tenants()
        .open_read_only("tenant-001")
        .unwrap()
        .query_row("SELECT value FROM tenant WHERE key = 'domain'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert!(d1.ends_with(".example"), "{d1}");
    // Seeding again keeps what exists.
    let again = seed(one.tenants(), &small(4)).unwrap();
    assert_eq!(again.created, ["tenant-004"]);
    assert_eq!(again.existing.len(), 3);

    let dir = one.tenants();
    for bad in ["..", "../queue", "a/b", "x\0y", "", ".hidden"] {
        let err = dir.path(bad).unwrap_err();
        assert!(matches!(err, Error::InvalidInput { .. }), "{bad:?}: {err}");
    }
    assert!(matches!(
        dir.path("nobody"),
        Err(Error::Missing { what: "tenant", .. })
    ));
    // A symlink leading out of the directory is refused and not listed.
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.db");
    std::fs::write(&secret, b"not yours").unwrap();
    std::os::unix::fs::symlink(&secret, dir.root().join("evil.db")).unwrap();
    let err = dir.open_read_only("evil").unwrap_err();
    assert!(err.to_string().contains("symlink leading out"), "{err}");
    assert!(!dir.list().unwrap().contains(&"evil".to_string()));
    // A symlink inside is fine.
    std::os::unix::fs::symlink(
        dir.root().join("tenant-001.db"),
        dir.root().join("alias.db"),
    )
    .unwrap();
    assert!(dir.list().unwrap().contains(&"alias".to_string()));
}

/// Acceptance 4: a backup taken while another thread keeps inserting; every
/// archive verifies; a restore equals the source at the snapshot.
#[test]
fn backup_while_writing_then_restore_equals_the_snapshot() {
    let (_dir, data) = seeded(3);
    let tenant = "tenant-002";
    let path = data.tenants().path(tenant).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let committed = Arc::new(AtomicI64::new(0));
    let writer = std::thread::spawn({
        let (stop, committed, path) = (stop.clone(), committed.clone(), path.clone());
        move || {
            let conn = rusqlite::Connection::open(&path).unwrap();
            conn.busy_timeout(Duration::from_secs(10)).unwrap();
            let mut n = 0;
            while !stop.load(Ordering::SeqCst) {
                conn.execute(
                    "INSERT INTO scans (template_id, scanned_at, country, device) VALUES (1, ?1, 'DE', 'ios')",
                    [n],
                )
                .unwrap();
                n += 1;
                committed.store(n, Ordering::SeqCst);
            }
            n
        }
    });
    // Let the writer get going, then back up under its feet.
    let t0 = Instant::now();
    while committed.load(Ordering::SeqCst) < 200 {
        assert!(t0.elapsed() < Duration::from_secs(10));
        std::thread::yield_now();
    }
    let before = committed.load(Ordering::SeqCst);
    let manifest = backup::backup_tenants(
        &data,
        &BackupOptions::default(),
        1_790_000_000_000,
        &Reporter::silent(),
    )
    .unwrap();
    let after = committed.load(Ordering::SeqCst);
    stop.store(true, Ordering::SeqCst);
    let written = writer.join().unwrap();
    assert!(written > before, "the writer kept writing");

    assert_eq!((manifest.ok, manifest.failed), (3, 0));
    for line in &manifest.tenants {
        assert_eq!(line.status, BackupStatus::Ok);
        assert!(line.ratio > 1.0, "{line:?}");
        assert_eq!(line.sha256.len(), 64);
        assert!(manifest.path.join(&line.file).exists());
    }
    assert_eq!(
        backup::list_sets(&data).unwrap(),
        vec![manifest.set.clone()]
    );
    let on_disk = backup::read_manifest(&manifest.path).unwrap();
    assert_eq!(on_disk.tenants, manifest.tenants);

    // The source now: seed rows + `written` rows.  Wipe it, then restore.
    let source = rows(&data.tenants().open_read_only(tenant).unwrap(), SCAN_ROWS);
    data.tenants()
        .open_read_write(tenant)
        .unwrap()
        .execute("DELETE FROM scans", [])
        .unwrap();
    let report = backup::restore(&data, &manifest.set, tenant).unwrap();
    assert!(report.replaced);
    let restored = rows(&data.tenants().open_read_only(tenant).unwrap(), SCAN_ROWS);
    // A consistent snapshot is a prefix of the source's rows: every insert
    // committed before it, none after — and it fell inside the backup.
    let snapshot_inserts = restored.len() as i64 - 300;
    assert!(
        (before..=after).contains(&snapshot_inserts),
        "{before} <= {snapshot_inserts} <= {after}"
    );
    assert_eq!(restored[..], source[..restored.len()]);
    let check: String = data
        .tenants()
        .open_read_only(tenant)
        .unwrap()
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .unwrap();
    assert_eq!(check, "ok");

    // Restoring a tenant whose file is gone puts the file back.
    let t3 = data.tenants().path("tenant-003").unwrap();
    let original = rows(
        &data.tenants().open_read_only("tenant-003").unwrap(),
        SCAN_ROWS,
    );
    std::fs::remove_file(&t3).unwrap();
    assert!(
        !backup::restore(&data, &manifest.set, "tenant-003")
            .unwrap()
            .replaced
    );
    assert_eq!(
        rows(
            &data.tenants().open_read_only("tenant-003").unwrap(),
            SCAN_ROWS
        ),
        original
    );
}

#[test]
fn corrupt_or_oversized_archives_are_refused_and_change_nothing() {
    let (_dir, data) = seeded(1);
    let tenant = "tenant-001";
    let manifest = backup::backup_tenants(
        &data,
        &BackupOptions::default(),
        1_790_000_000_000,
        &Reporter::silent(),
    )
    .unwrap();
    let archive = manifest.path.join(&manifest.tenants[0].file);
    let tenant_file = data.tenants().path(tenant).unwrap();
    let tenant_before = file_bytes(&tenant_file);
    let good = file_bytes(&archive);

    let set_manifest = |sha: &str, size: u64| {
        let mut m = backup::read_manifest(&manifest.path).unwrap();
        m.tenants[0].sha256 = sha.to_string();
        m.tenants[0].source_bytes = size;
        std::fs::write(
            manifest.path.join("manifest.json"),
            serde_json::to_vec(&m).unwrap(),
        )
        .unwrap();
    };
    let sha = |bytes: &[u8]| {
        use sha2::Digest;
        sha2::Sha256::digest(bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    };

    // 1. Bytes flipped: the manifest's hash catches it.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0xFF;
    std::fs::write(&archive, &bad).unwrap();
    let err = backup::restore(&data, &manifest.set, tenant).unwrap_err();
    assert!(
        matches!(err, Error::Corrupt { .. }) && err.to_string().contains("SHA-256"),
        "{err}"
    );

    // 2. A manifest rewritten to match garbage: the decompressor catches it.
    std::fs::write(&archive, b"this is not zstd at all").unwrap();
    set_manifest(
        &sha(b"this is not zstd at all"),
        manifest.tenants[0].source_bytes,
    );
    let err = backup::restore(&data, &manifest.set, tenant).unwrap_err();
    assert!(matches!(err, Error::Corrupt { .. }), "{err}");

    // 3. A bomb: 64 MiB of zeros in a few KiB, the manifest claiming 1 MiB.
    let bomb = zstd::encode_all(std::io::repeat(0).take_bytes(64 << 20), 19).unwrap();
    assert!(bomb.len() < 64 << 10);
    std::fs::write(&archive, &bomb).unwrap();
    set_manifest(&sha(&bomb), 1 << 20);
    let err = backup::restore(&data, &manifest.set, tenant).unwrap_err();
    assert!(err.to_string().contains("oversized"), "{err}");

    // 4. A manifest claiming a huge size filled staging up to
    // that claim and then reported "… is not a jobd queue database".  The
    // restore limit, not the manifest, caps staging: refused before a byte
    // is written, saying what was wrong.
    set_manifest(&sha(&bomb), 1 << 40);
    let limited = backup::RestoreOptions { max_bytes: 8 << 20 };
    let err = backup::restore_with(&data, &manifest.set, tenant, &limited).unwrap_err();
    assert!(
        err.to_string().contains(
            "says tenant-001 is 1099511627776 bytes, more than the restore limit of 8388608"
        ),
        "{err}"
    );
    // Within the limit but more than the disk holds (1 PiB): a full disk.
    set_manifest(&sha(&bomb), 1 << 50);
    let unlimited = backup::RestoreOptions {
        max_bytes: u64::MAX,
    };
    let err = backup::restore_with(&data, &manifest.set, tenant, &unlimited).unwrap_err();
    assert!(matches!(err, Error::DiskFull { .. }), "{err}");
    // 5. What an archive holds is not a SQLite database: said so.
    let zeros = zstd::encode_all(std::io::repeat(0).take_bytes(1 << 20), 3).unwrap();
    std::fs::write(&archive, &zeros).unwrap();
    set_manifest(&sha(&zeros), 1 << 20);
    let err = backup::restore(&data, &manifest.set, tenant)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a SQLite database"), "{err}");
    assert!(!err.contains("queue"), "{err}");

    assert_eq!(
        file_bytes(&tenant_file),
        tenant_before,
        "the tenant is untouched"
    );
    let staging: Vec<_> = std::fs::read_dir(data.tenants().root().join(".staging"))
        .unwrap()
        .collect();
    assert!(staging.is_empty(), "no partial restore left behind");

    // Bad names.
    for (set, t) in [
        ("../x", tenant),
        (manifest.set.as_str(), "../x"),
        ("20991231T000000Z", tenant),
    ] {
        assert!(backup::restore(&data, set, t).is_err());
    }
}

trait TakeBytes: std::io::Read + Sized {
    fn take_bytes(self, n: u64) -> std::io::Take<Self> {
        std::io::Read::take(self, n)
    }
}
impl<R: std::io::Read> TakeBytes for R {}

#[test]
fn a_failing_tenant_is_its_own_failure_and_retention_keeps_the_newest() {
    let (_dir, data) = seeded(2);
    std::fs::write(data.tenants().root().join("broken.db"), vec![0x5Au8; 8192]).unwrap();
    let opts = BackupOptions {
        keep: 2,
        tenants: None,
        ..BackupOptions::default()
    };
    let mut sets = Vec::new();
    for i in 0..4 {
        let m = backup::backup_tenants(
            &data,
            &opts,
            1_790_000_000_000 + i * 3_600_000,
            &Reporter::silent(),
        )
        .unwrap();
        assert_eq!((m.ok, m.failed), (2, 1));
        let broken = m.tenants.iter().find(|l| l.tenant == "broken").unwrap();
        assert_eq!(broken.status, BackupStatus::Failed);
        assert!(
            broken.error.as_deref().unwrap().contains("not"),
            "{broken:?}"
        );
        assert!(!m.path.join("broken.db.zst").exists());
        sets.push(m.set);
    }
    assert_eq!(backup::list_sets(&data).unwrap(), sets[2..]);
    // Two sets in the same second get distinct names.
    let a = backup::backup_tenants(&data, &opts, 1_800_000_000_000, &Reporter::silent()).unwrap();
    let b = backup::backup_tenants(&data, &opts, 1_800_000_000_000, &Reporter::silent()).unwrap();
    assert_ne!(a.set, b.set);
    assert_eq!(backup::list_sets(&data).unwrap(), [a.set, b.set]);

    // Bad input: nothing written.
    let count = backup::list_sets(&data).unwrap();
    for (opts, wanted) in [
        (
            BackupOptions {
                keep: 0,
                tenants: None,
                ..BackupOptions::default()
            },
            "keep",
        ),
        (
            BackupOptions {
                keep: 1,
                tenants: Some(vec!["../etc".into()]),
                ..BackupOptions::default()
            },
            "tenant",
        ),
        (
            BackupOptions {
                keep: 1,
                tenants: Some(vec!["nobody".into()]),
                ..BackupOptions::default()
            },
            "not found",
        ),
    ] {
        let err = backup::backup_tenants(&data, &opts, 1_900_000_000_000, &Reporter::silent())
            .unwrap_err();
        assert!(err.to_string().contains(wanted), "{err}");
    }
    assert_eq!(backup::list_sets(&data).unwrap(), count);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_job_runs_on_a_worker_with_progress() {
    let (dir, data) = seeded(3);
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn({
        let stop = stop.clone();
        Worker::builder(store.clone())
            .register(BackupHandler::new(data.clone()))
            .queue("maintenance", 1)
            .run(async move { stop.cancelled().await })
    });
    let ok = store
        .enqueue(
            &NewJob::new("maintenance", "backup_tenants").payload(&serde_json::json!({"keep": 3})),
        )
        .unwrap();
    let bad = store
        .enqueue(
            &NewJob::new("maintenance", "backup_tenants")
                .payload(&serde_json::json!({"tenants": ["tenant-404"]})),
        )
        .unwrap();
    let typo = store
        .enqueue(
            &NewJob::new("maintenance", "backup_tenants").payload(&serde_json::json!({"kepe": 3})),
        )
        .unwrap();
    let t0 = Instant::now();
    while [ok, bad, typo]
        .iter()
        .any(|id| !store.get(*id).unwrap().state.is_finished())
    {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "jobs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.cancel();
    worker.await.unwrap().unwrap();

    let job = store.get(ok).unwrap();
    assert_eq!(job.state, JobState::Succeeded, "{:?}", job.last_error);
    let result = job.result.unwrap();
    assert_eq!(result["ok"], 3);
    assert_eq!(job.progress.percent, Some(100.0));
    let reports: i64 = store
        .sqlite()
        .unwrap()
        .connection()
        .unwrap()
        .query_row(
            "SELECT count(*) FROM progress WHERE job_id = ?1",
            [ok],
            |r| r.get(0),
        )
        .unwrap();
    assert!(reports >= 2, "progress was reported ({reports})");
    // Unknown tenant and a malformed payload: dead at once, saying why.
    for (id, wanted) in [(bad, "tenant \"tenant-404\" not found"), (typo, "kepe")] {
        let job = store.get(id).unwrap();
        assert_eq!(job.state, JobState::Dead);
        assert_eq!(job.attempts, 1, "not retried");
        assert!(
            job.last_error.as_deref().unwrap().contains(wanted),
            "{:?}",
            job.last_error
        );
    }
}

#[test]
fn cleanup_purges_past_retention_and_tends_tenants() {
    let (dir, data) = seeded(2);
    let clock = jobd::ManualClock::new(1_790_000_000_000);
    let store = Store::open_with(
        dir.path().join("queue.db"),
        jobd::StoreOptions::default().clock(clock.clone()),
    )
    .unwrap();
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(store.enqueue(&NewJob::new("q", "k")).unwrap());
    }
    for job in store
        .claim("w", &["q"], 2, Duration::from_secs(60))
        .unwrap()
    {
        store
            .set_progress(
                job.id,
                job.lease_token,
                &jobd::Progress {
                    percent: Some(50.0),
                    stage: Some("half".into()),
                    detail: None,
                },
            )
            .unwrap();
        store.complete(job.id, job.lease_token, None).unwrap();
    }
    clock.advance(Duration::from_secs(8 * 86_400));
    let report = maintenance::cleanup(
        &store,
        Some(&data),
        &CleanupOptions {
            analyze_tenants: true,
            ..CleanupOptions::default()
        },
        &Reporter::silent(),
    )
    .unwrap();
    assert_eq!(report.purged_jobs, 2);
    assert_eq!(report.tenants_done, 2);
    assert!(report.tenants_failed.is_empty());
    assert!(matches!(store.get(ids[0]), Err(Error::NotFound { .. })));
    assert_eq!(
        store.get(ids[2]).unwrap().state,
        JobState::Ready,
        "unfinished jobs stay"
    );
    let stats: i64 = data
        .tenants()
        .open_read_only("tenant-001")
        .unwrap()
        .query_row("SELECT count(*) FROM sqlite_stat1", [], |r| r.get(0))
        .unwrap();
    assert!(stats > 0, "tenants analyzed");

    let health = maintenance::health_check(&store, Some(&data), &Reporter::silent()).unwrap();
    assert!(health.queue_ok && health.unhealthy_tenants.is_empty() && health.tenants == 2);
    std::fs::write(data.tenants().root().join("broken.db"), vec![7u8; 4096]).unwrap();
    let health = maintenance::health_check(&store, Some(&data), &Reporter::silent()).unwrap();
    assert_eq!(health.unhealthy_tenants.len(), 1);
    assert_eq!(health.unhealthy_tenants[0].0, "broken");
}

/// Acceptance 3: the aggregate equals a naive count over the same rows, and
/// a second request within the TTL opens no tenant database.
#[test]
fn analytics_equal_a_naive_count_and_are_served_from_the_cache() {
    use chrono::{Datelike, TimeZone};
    use jobd_handlers::analytics::{self, AnalyticsQuery, Period};
    use std::collections::BTreeMap;

    let (dir, data) = seeded(4);
    let clock = jobd::ManualClock::new(1_800_000_000_000);
    let store = Store::open_with(
        dir.path().join("queue.db"),
        jobd::StoreOptions::default().clock(clock.clone()),
    )
    .unwrap();
    let domain_of = |t: &str| -> String {
        rusqlite::Connection::open(data.tenants().root().join(format!("{t}.db")))
            .unwrap()
            .query_row("SELECT value FROM tenant WHERE key = 'domain'", [], |r| {
                r.get(0)
            })
            .unwrap()
    };
    let end = SeedOptions::default().end_ms;
    let queries = [
        AnalyticsQuery::default(),
        AnalyticsQuery {
            period: Period::Weekly,
            template: Some(2),
            ..Default::default()
        },
        AnalyticsQuery {
            period: Period::Monthly,
            domain: Some(domain_of("tenant-002")),
            ..Default::default()
        },
        AnalyticsQuery {
            period: Period::Daily,
            from_ms: Some(end - 20 * 86_400_000),
            to_ms: Some(end - 10 * 86_400_000),
            concurrency: Some(1),
            ..Default::default()
        },
    ];
    for q in &queries {
        let got = analytics::analytics(&store, &data, q, &Reporter::silent()).unwrap();
        assert!(!got.cached);
        // The naive way: every row into Rust, bucketed with chrono.
        let (mut periods, mut countries, mut devices) = (
            BTreeMap::<String, u64>::new(),
            BTreeMap::<String, u64>::new(),
            BTreeMap::<String, u64>::new(),
        );
        let mut tenants = 0;
        for t in data.tenants().list().unwrap() {
            if q.domain.as_ref().is_some_and(|d| *d != domain_of(&t)) {
                continue;
            }
            tenants += 1;
            let conn =
                rusqlite::Connection::open(data.tenants().root().join(format!("{t}.db"))).unwrap();
            let mut stmt = conn
                .prepare("SELECT template_id, scanned_at, country, device FROM scans")
                .unwrap();
            let rows = stmt
                .query_map([], |r| {
                    Ok((
                        r.get::<_, i64>(0)?,
                        r.get::<_, i64>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ))
                })
                .unwrap();
            for row in rows {
                let (template, at, country, device) = row.unwrap();
                if q.template.is_some_and(|id| id != template)
                    || q.from_ms.is_some_and(|f| at < f)
                    || q.to_ms.is_some_and(|e| at >= e)
                {
                    continue;
                }
                let day = chrono::Utc.timestamp_millis_opt(at).unwrap().date_naive();
                let bucket = match q.period {
                    Period::Daily => day,
                    Period::Weekly => {
                        day - chrono::Days::new(day.weekday().num_days_from_monday() as u64)
                    }
                    Period::Monthly => day.with_day(1).unwrap(),
                };
                *periods
                    .entry(bucket.format("%Y-%m-%d").to_string())
                    .or_default() += 1;
                *countries.entry(country).or_default() += 1;
                *devices.entry(device).or_default() += 1;
            }
        }
        assert_eq!(got.periods, periods, "{q:?}");
        assert_eq!(got.by_country, countries);
        assert_eq!(got.by_device, devices);
        assert_eq!(got.total_scans, periods.values().sum::<u64>());
        assert_eq!(got.by_tenant.len(), tenants);
        assert!(got.total_scans > 0);
    }

    // Within the TTL: served from the queue file, no tenant opened.
    let opens = data.tenants().opens();
    let again = analytics::analytics(&store, &data, &queries[0], &Reporter::silent()).unwrap();
    assert!(again.cached);
    assert_eq!(data.tenants().opens(), opens, "no tenant database opened");
    let first = analytics::cached(&store, &queries[0]).unwrap().unwrap();
    assert_eq!(first.periods, again.periods);
    // Past the TTL: computed again.
    clock.advance(Duration::from_secs(3601));
    assert!(analytics::cached(&store, &queries[0]).unwrap().is_none());
    let fresh = analytics::analytics(&store, &data, &queries[0], &Reporter::silent()).unwrap();
    assert!(!fresh.cached);
    assert!(data.tenants().opens() > opens);

    // A broken tenant is that tenant's failure; bad queries are refused.
    std::fs::write(data.tenants().root().join("broken.db"), vec![1u8; 4096]).unwrap();
    let q = AnalyticsQuery {
        ttl_secs: 0,
        ..Default::default()
    };
    let with_broken = analytics::analytics(&store, &data, &q, &Reporter::silent()).unwrap();
    assert_eq!(with_broken.failed_tenants.len(), 1);
    assert_eq!(with_broken.total_scans, fresh.total_scans);
    let bad = AnalyticsQuery {
        from_ms: Some(10),
        to_ms: Some(5),
        ..Default::default()
    };
    let err = analytics::analytics(&store, &data, &bad, &Reporter::silent()).unwrap_err();
    assert!(err.to_string().contains("not before"), "{err}");
}

fn num(o: &lopdf::Object) -> f32 {
    match o {
        lopdf::Object::Integer(i) => *i as f32,
        lopdf::Object::Real(r) => *r,
        other => panic!("not a number: {other:?}"),
    }
}

/// The XObjects a page can place (`/Do`), by name.
fn page_xobjects(doc: &lopdf::Document, page: lopdf::ObjectId) -> lopdf::Dictionary {
    let (direct, ids) = doc.get_page_resources(page).unwrap();
    let dicts = direct
        .into_iter()
        .chain(ids.iter().map(|id| doc.get_dictionary(*id).unwrap()));
    let mut found = lopdf::Dictionary::new();
    for resources in dicts {
        if let Ok(x) = resources.get(b"XObject") {
            let (_, x) = doc.dereference(x).unwrap();
            for (name, obj) in x.as_dict().unwrap().iter() {
                found.set(name.clone(), obj.clone());
            }
        }
    }
    found
}

/// `a` then `b`, as PDF matrices `[a b c d e f]` compose (`cm`).
fn then(m: [f32; 6], ctm: [f32; 6]) -> [f32; 6] {
    [
        m[0] * ctm[0] + m[1] * ctm[2],
        m[0] * ctm[1] + m[1] * ctm[3],
        m[2] * ctm[0] + m[3] * ctm[2],
        m[2] * ctm[1] + m[3] * ctm[3],
        m[4] * ctm[0] + m[5] * ctm[2] + ctm[4],
        m[4] * ctm[1] + m[5] * ctm[3] + ctm[5],
    ]
}

/// The filled paths of a PDF page, each as its rings' bounding boxes in page
/// space (pt): what its own content paints and what the form XObjects it
/// places paint, through their `cm` placement.
fn filled_paths(doc: &lopdf::Document, page: lopdf::ObjectId) -> Vec<Vec<(f32, f32, f32, f32)>> {
    let mut paths = Vec::new();
    let xobjects = page_xobjects(doc, page);
    paint(
        doc,
        &doc.get_page_content(page),
        &xobjects,
        [1.0, 0.0, 0.0, 1.0, 0.0, 0.0],
        &mut paths,
    );
    paths
}

fn paint(
    doc: &lopdf::Document,
    content: &[u8],
    xobjects: &lopdf::Dictionary,
    start: [f32; 6],
    paths: &mut Vec<Vec<(f32, f32, f32, f32)>>,
) {
    let content = lopdf::content::Content::decode(content).unwrap();
    let (mut ctm, mut saved) = (start, Vec::new());
    let (mut rings, mut ring) = (Vec::new(), Vec::<(f32, f32)>::new());
    let at =
        |m: &[f32; 6], x: f32, y: f32| (m[0] * x + m[2] * y + m[4], m[1] * x + m[3] * y + m[5]);
    let close = |ring: &mut Vec<(f32, f32)>, rings: &mut Vec<(f32, f32, f32, f32)>| {
        if !ring.is_empty() {
            let xs = ring.iter().map(|p| p.0);
            let ys = ring.iter().map(|p| p.1);
            rings.push((
                xs.clone().fold(f32::MAX, f32::min),
                ys.clone().fold(f32::MAX, f32::min),
                xs.fold(f32::MIN, f32::max),
                ys.fold(f32::MIN, f32::max),
            ));
            ring.clear();
        }
    };
    for op in content.operations {
        let n = |i: usize| num(&op.operands[i]);
        match op.operator.as_str() {
            "q" => saved.push(ctm),
            "Q" => ctm = saved.pop().unwrap(),
            "cm" => ctm = then([n(0), n(1), n(2), n(3), n(4), n(5)], ctm),
            "m" => {
                close(&mut ring, &mut rings);
                ring.push(at(&ctm, n(0), n(1)));
            }
            "l" => ring.push(at(&ctm, n(0), n(1))),
            "re" => {
                close(&mut ring, &mut rings);
                let (x, y, w, h) = (n(0), n(1), n(2), n(3));
                ring.extend([at(&ctm, x, y), at(&ctm, x + w, y + h)]);
                close(&mut ring, &mut rings);
            }
            "h" => close(&mut ring, &mut rings),
            "f" | "f*" | "F" => {
                close(&mut ring, &mut rings);
                paths.push(std::mem::take(&mut rings));
            }
            "n" | "S" | "s" => {
                ring.clear();
                rings.clear();
            }
            "Do" => {
                let name = op.operands[0].as_name().unwrap();
                let (_, form) = doc.dereference(xobjects.get(name).unwrap()).unwrap();
                let form = form.as_stream().unwrap();
                assert_eq!(
                    form.dict.get(b"Subtype").unwrap().as_name().unwrap(),
                    b"Form"
                );
                let inner = form
                    .decompressed_content()
                    .unwrap_or_else(|_| form.content.clone());
                paint(doc, &inner, xobjects, ctm, paths);
            }
            _ => {}
        }
    }
}

/// Rasterize rectangles (a QR code's modules) and decode the code.
fn decode_rects(rects: &[(f32, f32, f32, f32)]) -> String {
    let module = rects.iter().map(|r| r.3 - r.1).fold(f32::MAX, f32::min);
    let (x0, y0) = (
        rects.iter().map(|r| r.0).fold(f32::MAX, f32::min),
        rects.iter().map(|r| r.1).fold(f32::MAX, f32::min),
    );
    let (x1, y1) = (
        rects.iter().map(|r| r.2).fold(f32::MIN, f32::max),
        rects.iter().map(|r| r.3).fold(f32::MIN, f32::max),
    );
    let px = 6.0 / module; // 6 pixels per module
    let quiet = 24usize;
    let w = ((x1 - x0) * px).round() as usize + 2 * quiet;
    let h = ((y1 - y0) * px).round() as usize + 2 * quiet;
    let mut img = vec![255u8; w * h];
    for r in rects {
        let (cx0, cx1) = (
            ((r.0 - x0) * px).round() as usize,
            ((r.2 - x0) * px).round() as usize,
        );
        // PDF y grows upwards; image rows grow downwards.
        let (cy0, cy1) = (
            ((y1 - r.3) * px).round() as usize,
            ((y1 - r.1) * px).round() as usize,
        );
        for y in cy0..cy1 {
            img[(y + quiet) * w + quiet + cx0..(y + quiet) * w + quiet + cx1].fill(0);
        }
    }
    decode_image(w, h, &img)
}

fn decode_image(w: usize, h: usize, pixels: &[u8]) -> String {
    let mut prepared = rqrr::PreparedImage::prepare_from_greyscale(w, h, |x, y| pixels[y * w + x]);
    let grids = prepared.detect_grids();
    assert_eq!(grids.len(), 1, "one QR code in the image");
    grids[0].decode().unwrap().1
}

/// Acceptance 1: the PDF parses, has the pages and text expected, and its
/// vector QR code decodes back to the template's URL.
#[test]
fn the_qr_pdf_parses_and_its_codes_decode_to_the_url() {
    use jobd_handlers::qr::{self, PageSize, PdfOptions};
    let (_dir, data) = seeded(1);
    let tenant = "tenant-001";
    let (name, url, label): (String, String, String) = data
        .tenants()
        .open_read_only(tenant)
        .unwrap()
        .query_row(
            "SELECT name, target_url, label FROM templates WHERE id = 3",
            [],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
        )
        .unwrap();
    let opts = PdfOptions {
        template_id: 3,
        tenant: None,
        page_size: PageSize::Letter,
        columns: 2,
        rows: 2,
        copies: 6,
        ecc: None,
    };
    let result = qr::generate_pdf(&data, tenant, &opts, &Reporter::silent()).unwrap();
    assert_eq!((result.pages, result.codes), (2, 6));
    assert!(result.path.starts_with(data.artifacts().join(tenant)));
    let bytes = std::fs::read(&result.path).unwrap();
    assert_eq!(bytes.len() as u64, result.bytes);

    let doc = lopdf::Document::load(&result.path).unwrap();
    let pages = doc.get_pages();
    assert_eq!(pages.len(), 2);
    let text = doc.extract_text(&[1]).unwrap();
    for wanted in [&name, &label, &url] {
        assert!(
            text.contains(wanted.as_str()),
            "page text lacks {wanted:?}: {text:?}"
        );
    }
    // Page 1 has 4 codes, page 2 the other 2: each one filled vector path.
    let mut codes = 0;
    for (n, page) in pages.values().enumerate() {
        let paths: Vec<_> = filled_paths(&doc, *page)
            .into_iter()
            .filter(|p| p.len() > 20)
            .collect();
        assert_eq!(paths.len(), [4, 2][n], "codes on page {}", n + 1);
        // Each code where its cell is: on the (Letter) page, none over another.
        let boxes: Vec<(f32, f32, f32, f32)> = paths
            .iter()
            .map(|p| {
                p.iter()
                    .fold((f32::MAX, f32::MAX, f32::MIN, f32::MIN), |b, r| {
                        (b.0.min(r.0), b.1.min(r.1), b.2.max(r.2), b.3.max(r.3))
                    })
            })
            .collect();
        for (i, b) in boxes.iter().enumerate() {
            assert!(
                b.0 > 0.0 && b.1 > 0.0 && b.2 < 612.0 && b.3 < 792.0,
                "{b:?}"
            );
            assert!(b.2 - b.0 > 100.0, "a code about a cell wide: {b:?}");
            for o in &boxes[i + 1..] {
                let apart = b.2 <= o.0 || o.2 <= b.0 || b.3 <= o.1 || o.3 <= b.1;
                assert!(apart, "codes overlap: {b:?} {o:?}");
            }
        }
        for p in &paths {
            assert_eq!(decode_rects(p), url);
            codes += 1;
        }
    }
    assert_eq!(codes, 6);

    // Bad input: clear, permanent errors.
    let err = qr::generate_pdf(
        &data,
        tenant,
        &PdfOptions {
            template_id: 999,
            ..opts.clone()
        },
        &Reporter::silent(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("no template 999"), "{err}");
    let err = qr::generate_pdf(&data, "tenant-404", &opts, &Reporter::silent()).unwrap_err();
    assert!(matches!(err, Error::Missing { what: "tenant", .. }));
    let err = qr::generate_pdf(
        &data,
        tenant,
        &PdfOptions {
            columns: 0,
            ..opts.clone()
        },
        &Reporter::silent(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("columns"), "{err}");
}

/// Acceptance 2: every PNG decodes to its URL; bad ids are counted, the
/// batch goes on.
#[test]
fn a_batch_renders_decodable_pngs_and_counts_failures() {
    use jobd_handlers::qr::{self, BatchOptions, ImageFormat};
    let (_dir, data) = seeded(1);
    let tenant = "tenant-001";
    let opts = BatchOptions {
        template_ids: vec![1, 2, 999, 3, 4, -5],
        tenant: None,
        formats: vec![ImageFormat::Png, ImageFormat::Svg],
        scale: 4,
        ecc: None,
        email: None,
    };
    let r = qr::batch(&data, tenant, "t", &opts, &Reporter::silent()).unwrap();
    assert_eq!((r.completed, r.failed, r.total_processed), (4, 2, 6));
    assert!((r.success_rate - 4.0 / 6.0).abs() < 1e-9);
    assert_eq!(
        r.failures.iter().map(|f| f.0).collect::<Vec<_>>(),
        [999, -5]
    );
    let conn = data.tenants().open_read_only(tenant).unwrap();
    for id in [1, 2, 3, 4] {
        let url: String = conn
            .query_row(
                "SELECT target_url FROM templates WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .unwrap();
        let mut decoder = png::Decoder::new(std::io::BufReader::new(
            std::fs::File::open(r.dir.join(format!("template-{id}.png"))).unwrap(),
        ));
        decoder.set_transformations(png::Transformations::EXPAND); // 1-bit -> 8-bit
        let mut reader = decoder.read_info().unwrap();
        let mut buf = vec![0; reader.output_buffer_size().unwrap()];
        let info = reader.next_frame(&mut buf).unwrap();
        assert_eq!(
            decode_image(
                info.width as usize,
                info.height as usize,
                &buf[..info.buffer_size()]
            ),
            url
        );
        let svg = std::fs::read_to_string(r.dir.join(format!("template-{id}.svg"))).unwrap();
        assert!(svg.starts_with("<?xml") && svg.contains("<svg"));
    }
    let err = qr::batch(
        &data,
        tenant,
        "t2",
        &BatchOptions {
            template_ids: vec![],
            ..opts.clone()
        },
        &Reporter::silent(),
    )
    .unwrap_err();
    assert!(err.to_string().contains("template ids"), "{err}");
}

/// Acceptance 5: every handler over 101 seeded tenants, on a worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_handlers_over_101_tenants() {
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let opts = SeedOptions {
        tenants: 101,
        templates_per_tenant: 3,
        scans_per_tenant: 50,
        ..SeedOptions::default()
    };
    seed(data.tenants(), &opts).unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let stop = tokio_util::sync::CancellationToken::new();
    let worker = tokio::spawn({
        let stop = stop.clone();
        jobd_handlers::builtin(Worker::builder(store.clone()), &data)
            .run(async move { stop.cancelled().await })
    });
    let tenants = data.tenants().list().unwrap();
    assert_eq!(tenants.len(), 101);
    let mut jobs = Vec::new();
    for t in &tenants {
        jobs.push(
            NewJob::new("pdf", "generate_qr_pdf").tenant(t).payload(
                &serde_json::json!({"template_id": 1, "columns": 2, "rows": 2, "copies": 5}),
            ),
        );
        jobs.push(
            NewJob::new("batch", "batch_qr")
                .tenant(t)
                .payload(&serde_json::json!({"template_ids": [1, 2, 3, 4]})),
        );
    }
    jobs.push(
        NewJob::new("analytics", "analytics_rollup")
            .payload(&serde_json::json!({"period": "weekly"})),
    );
    jobs.push(
        NewJob::new("maintenance", "backup_tenants").payload(&serde_json::json!({"keep": 2})),
    );
    jobs.push(NewJob::new("maintenance", "cleanup"));
    jobs.push(NewJob::new("maintenance", "health_check"));
    let ids = store.enqueue_many(&jobs).unwrap();
    let t0 = Instant::now();
    while ids
        .iter()
        .any(|id| !store.get(*id).unwrap().state.is_finished())
    {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "jobs did not finish"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.cancel();
    worker.await.unwrap().unwrap();

    for id in &ids {
        let job = store.get(*id).unwrap();
        assert_eq!(
            job.state,
            JobState::Succeeded,
            "{} {}: {:?}",
            job.kind,
            id,
            job.last_error
        );
        assert_eq!(
            job.progress.percent,
            Some(100.0),
            "{} reported progress",
            job.kind
        );
    }
    let result = |i: usize| store.get(ids[i]).unwrap().result.unwrap();
    assert_eq!(result(0)["pages"], 2);
    assert_eq!(result(1)["completed"], 3);
    assert_eq!(result(1)["failed"], 1, "template 4 does not exist");
    let n = 2 * 101;
    assert_eq!(result(n)["by_tenant"].as_object().unwrap().len(), 101);
    assert_eq!(result(n)["total_scans"], 101 * 50);
    assert_eq!(result(n + 1)["ok"], 101);
    assert_eq!(result(n + 3)["tenants"], 101);
}

#[test]
fn a_cancelled_backup_or_analytics_leaves_nothing_behind() {
    let (dir, data) = seeded(3);
    let cancel = tokio_util::sync::CancellationToken::new();
    cancel.cancel();
    let stopped = Reporter::cancellable(cancel);
    let err = backup::backup_tenants(
        &data,
        &BackupOptions::default(),
        1_790_000_000_000,
        &stopped,
    )
    .unwrap_err();
    assert!(matches!(err, Error::Stopped { .. }), "{err}");
    let left: Vec<_> = std::fs::read_dir(data.backups()).unwrap().collect();
    assert!(
        left.is_empty(),
        "no set and no .partial directory: {left:?}"
    );

    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let q = jobd_handlers::analytics::AnalyticsQuery::default();
    let err = jobd_handlers::analytics::analytics(&store, &data, &q, &stopped).unwrap_err();
    assert!(matches!(err, Error::Stopped { .. }), "{err}");
    assert!(
        jobd_handlers::analytics::cached(&store, &q)
            .unwrap()
            .is_none(),
        "nothing cached"
    );
}

#[test]
fn the_handlers_tables_migrate_and_their_statements_prepare() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    jobd_handlers::migrate(&store).unwrap();
    jobd_handlers::migrate(&store).unwrap(); // once is enough; again changes nothing
    let conn = rusqlite::Connection::open(store.path().unwrap()).unwrap();
    let version: String = conn
        .query_row(
            "SELECT value FROM meta WHERE key = 'schema:jobd-handlers'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(version, jobd_handlers::MIGRATIONS.len().to_string());
}

#[test]
fn the_default_schedules_are_the_platforms_and_install_once() {
    use jobd::scheduler::When;
    use jobd_handlers::schedules::install_default_schedules;
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    assert_eq!(
        install_default_schedules(&store, false).unwrap(),
        [
            "tenant-backup",
            "job-cleanup",
            "analytics-rollup",
            "health-check",
            "file-cleanup"
        ]
    );
    let when = |name: &str| store.schedule(name).unwrap().when;
    assert_eq!(when("tenant-backup"), When::Cron("0 2 * * *".into()));
    assert_eq!(when("job-cleanup"), When::Cron("0 3 * * 0".into()));
    assert_eq!(when("analytics-rollup"), When::Cron("0 1 * * *".into()));
    assert_eq!(when("file-cleanup"), When::Cron("0 */6 * * *".into()));
    assert_eq!(when("health-check"), When::Every(Duration::from_secs(1800)));
    store.remove_schedule("job-cleanup").unwrap();
    assert!(install_default_schedules(&store, false).unwrap().is_empty());
    assert_eq!(
        install_default_schedules(&store, true).unwrap(),
        ["job-cleanup"]
    );

    // A file whose defaults were installed before file-cleanup existed
    // gets that one at its next `jobd init`, and only that one.
    let older = Store::open(dir.path().join("older.db")).unwrap();
    older
        .install_schedules_once("default_schedules_installed_at", &[], false)
        .unwrap();
    assert_eq!(
        install_default_schedules(&older, false).unwrap(),
        ["file-cleanup"]
    );
}
