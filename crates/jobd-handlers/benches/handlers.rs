//! The built-in handlers at demo size: 101 tenants × 100,000 scans.
//!
//! ```text
//! cargo bench --bench handlers            # JOBD_BENCH_SCANS=10000 for a quicker run
//! ```
//!
//! Reports PDF pages/s, QR codes/s (PNG), analytics wall time across all
//! tenants (computed, not cached), backup MB/s and compression ratio.

use std::time::Instant;

use jobd::Store;
use jobd_handlers::analytics::{self, AnalyticsQuery, Period};
use jobd_handlers::backup::{self, BackupOptions};
use jobd_handlers::qr::{self, BatchOptions, ImageFormat, PageSize, PdfOptions};
use jobd_handlers::tenants::{seed, SeedOptions};
use jobd_handlers::{DataDir, Reporter};

fn main() {
    let scans: usize = std::env::var("JOBD_BENCH_SCANS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(100_000);
    let dir = tempfile::tempdir().unwrap();
    let data = DataDir::new(dir.path());
    let r = Reporter::silent();

    let t = Instant::now();
    let opts = SeedOptions {
        scans_per_tenant: scans,
        ..SeedOptions::default()
    };
    seed(data.tenants(), &opts).unwrap();
    let seed_s = t.elapsed().as_secs_f64();
    let tenants = data.tenants().list().unwrap();
    let db_bytes: u64 = tenants
        .iter()
        .map(|t| {
            std::fs::metadata(data.tenants().path(t).unwrap())
                .unwrap()
                .len()
        })
        .sum();
    println!(
        "seeded {} tenants × {scans} scans ({:.0} MB) in {seed_s:.1} s",
        tenants.len(),
        db_bytes as f64 / 1e6
    );

    // PDF: a 3 × 4 grid, 24 codes (2 pages) per tenant.
    let t = Instant::now();
    let mut pages = 0;
    let mut codes = 0;
    for tenant in &tenants {
        let o = PdfOptions {
            template_id: 1,
            tenant: None,
            page_size: PageSize::A4,
            columns: 3,
            rows: 4,
            copies: 24,
            ecc: None,
        };
        let res = qr::generate_pdf(&data, tenant, &o, &r).unwrap();
        pages += res.pages;
        codes += res.codes;
    }
    let pdf_s = t.elapsed().as_secs_f64();

    // Batch: every template of every tenant as a PNG.
    let t = Instant::now();
    let mut pngs = 0;
    for tenant in &tenants {
        let o = BatchOptions {
            template_ids: (1..=opts.templates_per_tenant as i64).collect(),
            tenant: None,
            formats: vec![ImageFormat::Png],
            scale: 8,
            ecc: None,
            email: None,
        };
        pngs += qr::batch(&data, tenant, "bench", &o, &r).unwrap().completed;
    }
    let png_s = t.elapsed().as_secs_f64();

    // Analytics, computed (ttl 0 never takes a cached answer).
    let store = Store::open(dir.path().join("queue.db")).unwrap();
    let mut analytics_s = Vec::new();
    for period in [Period::Daily, Period::Weekly, Period::Monthly] {
        let q = AnalyticsQuery {
            period,
            ttl_secs: 0,
            ..AnalyticsQuery::default()
        };
        let t = Instant::now();
        let a = analytics::analytics(&store, &data, &q, &r).unwrap();
        analytics_s.push(t.elapsed().as_secs_f64());
        assert_eq!(a.total_scans as usize, scans * tenants.len());
    }
    let q = AnalyticsQuery {
        ttl_secs: 3600,
        ..AnalyticsQuery::default()
    };
    analytics::analytics(&store, &data, &q, &r).unwrap();
    let t = Instant::now();
    assert!(analytics::analytics(&store, &data, &q, &r).unwrap().cached);
    let cached_ms = t.elapsed().as_secs_f64() * 1e3;

    // Backup: online copy + zstd + verification of every tenant.
    let t = Instant::now();
    let now = jobd::Clock::now_ms(&jobd::SystemClock);
    let m = backup::backup_tenants(&data, &BackupOptions::default(), now, &r).unwrap();
    let backup_s = t.elapsed().as_secs_f64();
    assert_eq!(m.ok, tenants.len());

    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("\n| handler (101 tenants, {scans} scans each, {cpus} CPUs) | figure |");
    println!("|---|---|");
    println!(
        "| QR PDF | {:.0} pages/s, {:.0} codes/s ({pages} pages in {pdf_s:.2} s) |",
        pages as f64 / pdf_s,
        codes as f64 / pdf_s
    );
    println!(
        "| batch QR (PNG, 8 px/module) | {:.0} codes/s ({pngs} in {png_s:.2} s) |",
        pngs as f64 / png_s
    );
    println!(
        "| analytics, all tenants | daily {:.2} s, weekly {:.2} s, monthly {:.2} s; cached {cached_ms:.2} ms |",
        analytics_s[0], analytics_s[1], analytics_s[2]
    );
    println!(
        "| backup (online copy + zstd + verify) | {:.1} MB/s of database, ratio {:.2} ({:.0} MB → {:.0} MB in {backup_s:.2} s) |",
        m.source_bytes as f64 / 1e6 / backup_s,
        m.source_bytes as f64 / m.compressed_bytes as f64,
        m.source_bytes as f64 / 1e6,
        m.compressed_bytes as f64 / 1e6
    );
}
