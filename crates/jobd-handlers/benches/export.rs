//! `export_data` of 1M scans: CSV, JSON lines and XLSX, each in a child
//! process of its own so its peak RSS is its own (`getrusage`), beside the
//! raw limit — the same rows read by bare rusqlite and written as CSV with
//! `write!` — in the same run.
//!
//! ```text
//! cargo bench -p jobd-handlers --bench export    # JOBD_BENCH_ROWS (1000000), JOBD_BENCH_ROUNDS (3)
//! ```

use jobd_testkit::env_usize as env;
use std::io::Write;
use std::process::Command;
use std::time::Instant;

use jobd_handlers::export::{self, ExportConfig, ExportSpec, Format};
use jobd_handlers::tenants::{seed, SeedOptions};
use jobd_handlers::{DataDir, Reporter};

const CHILD: &str = "JOBD_EXPORT_BENCH_CHILD";

fn peak_rss_mb() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    u.ru_maxrss as f64 / 1024.0
}

/// In the child: one export; prints "rows seconds peak-RSS-MB".
fn child(what: &str, root: &str) {
    let data = DataDir::new(root);
    let started = Instant::now();
    let rows = if what == "bare" {
        let conn = data.tenants().open_read_only("tenant-001").unwrap();
        let mut stmt = conn
            .prepare("SELECT id, template_id, scanned_at, country, device, referrer FROM scans ORDER BY rowid")
            .unwrap();
        let mut rows = stmt.query([]).unwrap();
        let path = data.root().join("bare.csv");
        let mut out = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        writeln!(out, "id,template_id,scanned_at,country,device,referrer").unwrap();
        let mut n = 0u64;
        while let Some(r) = rows.next().unwrap() {
            let (a, b, c): (i64, i64, i64) =
                (r.get(0).unwrap(), r.get(1).unwrap(), r.get(2).unwrap());
            let (d, e): (String, String) = (r.get(3).unwrap(), r.get(4).unwrap());
            let f: Option<String> = r.get(5).unwrap();
            writeln!(out, "{a},{b},{c},{d},{e},{}", f.unwrap_or_default()).unwrap();
            n += 1;
        }
        out.into_inner().unwrap().sync_all().unwrap();
        n
    } else {
        let format = match what {
            "csv" => Format::Csv,
            "jsonl" => Format::Jsonl,
            _ => Format::Xlsx,
        };
        let spec = ExportSpec {
            format,
            table: "scans".into(),
            fields: Vec::new(),
            from_ms: None,
            to_ms: None,
            email: None,
        };
        let r = export::export(
            &data,
            &ExportConfig::default(),
            "tenant-001",
            &spec,
            what,
            &Reporter::silent(),
        )
        .unwrap();
        r.rows
    };
    println!(
        "{rows} {} {}",
        started.elapsed().as_secs_f64(),
        peak_rss_mb()
    );
}

fn main() {
    if let Ok(spec) = std::env::var(CHILD) {
        let (what, root) = spec.split_once(':').unwrap();
        return child(what, root);
    }
    let rows = env("JOBD_BENCH_ROWS", 1_000_000);
    let rounds = env("JOBD_BENCH_ROUNDS", 3);
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let t = Instant::now();
    seed(
        data.tenants(),
        &SeedOptions {
            tenants: 1,
            templates_per_tenant: 40,
            scans_per_tenant: rows,
            ..SeedOptions::default()
        },
    )
    .unwrap();
    println!(
        "export: {rows} scans of one tenant (seeded in {:.1} s), 6 columns, {} CPUs; each export in a child process",
        t.elapsed().as_secs_f64(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let exe = std::env::current_exe().unwrap();
    let kinds = ["bare", "csv", "jsonl", "xlsx"];
    let mut all: Vec<Vec<(f64, f64)>> = vec![Vec::new(); kinds.len()];
    for round in 1..=rounds {
        let mut line = format!("round {round}:");
        for (i, what) in kinds.iter().enumerate() {
            let out = Command::new(&exe)
                .env(CHILD, format!("{what}:{}", dir.path().display()))
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let text = String::from_utf8_lossy(&out.stdout);
            let v: Vec<f64> = text
                .split_whitespace()
                .map(|x| x.parse().unwrap())
                .collect();
            assert_eq!(v[0] as usize, rows, "every row exported");
            let rate = v[0] / v[1];
            line += &format!("  {what} {rate:>9.0} rows/s {:>5.1} MB", v[2]);
            all[i].push((rate, v[2]));
        }
        println!("{line}");
    }
    println!("median (rows/s, peak RSS of the process):");
    for (i, what) in kinds.iter().enumerate() {
        let mut rates: Vec<f64> = all[i].iter().map(|x| x.0).collect();
        rates.sort_by(f64::total_cmp);
        let rss = all[i].iter().map(|x| x.1).fold(0.0, f64::max);
        let label = if *what == "bare" {
            "bare rusqlite + write! CSV"
        } else {
            what
        };
        println!(
            "  {label:<26} {:>9.0} rows/s   peak RSS ≤ {rss:.1} MB",
            rates[rates.len() / 2]
        );
    }
}
