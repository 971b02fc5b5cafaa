//! Deterministic demo data: tenants with a domain, QR templates and scans.
//!
//! The same options give byte-for-byte the same rows on every machine and
//! every version of jobd (the generator is a fixed SplitMix64, not a crate
//! whose streams may change).  Existing tenants are left alone.

use rusqlite::params;
use serde::Serialize;

use crate::tenants::TenantDir;
use jobd::error::{Error, Result};

/// What [`seed`] creates.
#[derive(Debug, Clone)]
pub struct SeedOptions {
    /// Tenants `tenant-001` … `tenant-NNN`.
    pub tenants: usize,
    pub templates_per_tenant: usize,
    /// Scans per tenant (default 100,000: analytics has real work to do).
    pub scans_per_tenant: usize,
    /// Scans spread over this many days before `end_ms`.
    pub days: i64,
    /// The newest scan time (default 2026-11-01T00:00Z, fixed so data is
    /// reproducible).
    pub end_ms: i64,
    pub seed: u64,
}

impl Default for SeedOptions {
    fn default() -> SeedOptions {
        SeedOptions {
            tenants: 101,
            templates_per_tenant: 40,
            scans_per_tenant: 100_000,
            days: 90,
            end_ms: 1_793_491_200_000,
            seed: 42,
        }
    }
}

/// What [`seed`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SeedReport {
    pub created: Vec<String>,
    /// Tenants that already existed and were left alone.
    pub existing: Vec<String>,
    pub templates: u64,
    pub scans: u64,
}

/// The name of the `i`-th seeded tenant (from 1).
pub fn tenant_name(i: usize) -> String {
    format!("tenant-{i:03}")
}

const WORDS: [&str; 16] = [
    "alpine", "harbor", "cedar", "nova", "pixel", "maple", "orbit", "river", "summit", "velvet",
    "ember", "lumen", "quartz", "tidal", "zephyr", "atlas",
];
const SHOPS: [&str; 8] = [
    "menu", "shop", "events", "cafe", "studio", "market", "tickets", "gallery",
];
const COUNTRIES: [(&str, u64); 10] = [
    ("US", 30),
    ("DE", 14),
    ("GB", 10),
    ("FR", 9),
    ("IN", 9),
    ("BR", 8),
    ("JP", 7),
    ("NL", 5),
    ("ES", 5),
    ("CA", 3),
];
const DEVICES: [(&str, u64); 4] = [("ios", 45), ("android", 42), ("desktop", 10), ("other", 3)];
const REFERRERS: [&str; 5] = ["poster", "table-tent", "flyer", "packaging", "window"];

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut x = self.0;
        x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        x ^ (x >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    fn weighted<'a>(&mut self, table: &[(&'a str, u64)]) -> &'a str {
        let total: u64 = table.iter().map(|(_, w)| w).sum();
        let mut pick = self.below(total);
        for (item, w) in table {
            if pick < *w {
                return item;
            }
            pick -= w;
        }
        table[0].0
    }
}

/// Create the tenants of `opts` in `dir` (existing ones are kept as they are).
pub fn seed(dir: &TenantDir, opts: &SeedOptions) -> Result<SeedReport> {
    if opts.tenants == 0 || opts.tenants > 9_999 {
        return Err(Error::invalid(
            "tenants",
            format!("{} is not between 1 and 9999", opts.tenants),
        ));
    }
    if opts.templates_per_tenant == 0 {
        return Err(Error::invalid(
            "templates",
            "at least one template per tenant",
        ));
    }
    let mut report = SeedReport::default();
    for i in 1..=opts.tenants {
        let name = tenant_name(i);
        if dir.path_unchecked(&name)?.exists() {
            report.existing.push(name);
            continue;
        }
        let (templates, scans) = seed_one(dir, &name, i, opts)?;
        report.templates += templates;
        report.scans += scans;
        report.created.push(name);
    }
    tracing::info!(
        created = report.created.len(),
        existing = report.existing.len(),
        scans = report.scans,
        "tenants seeded"
    );
    Ok(report)
}

fn seed_one(dir: &TenantDir, name: &str, i: usize, opts: &SeedOptions) -> Result<(u64, u64)> {
    // Written under a temporary name and renamed: a seed that dies half way
    // leaves no half tenant behind.
    let final_path = dir.path_unchecked(name)?;
    let staging = TenantDir::new(dir.root().join(".staging"));
    let tmp = staging.path_unchecked(name)?;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
    }
    let mut rng = Rng(opts.seed ^ (i as u64).wrapping_mul(0xA076_1D64_78BD_642F));
    let domain = format!(
        "{}-{}.example",
        WORDS[rng.below(WORDS.len() as u64) as usize],
        SHOPS[rng.below(SHOPS.len() as u64) as usize]
    );
    let mut conn = staging.create(name)?;
    let map = |e| Error::from_sqlite("seeding tenant database", &tmp, e);
    let tx = conn.transaction().map_err(map)?;
    tx.execute(
        "INSERT INTO tenant (key, value) VALUES ('name', ?1), ('domain', ?2)",
        params![name, domain],
    )
    .map_err(map)?;
    let created_at = opts.end_ms - opts.days * 86_400_000;
    {
        let mut insert = tx
            .prepare(
                "INSERT INTO templates (id, name, target_url, label, options, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(map)?;
        for t in 1..=opts.templates_per_tenant {
            let shop = SHOPS[rng.below(SHOPS.len() as u64) as usize];
            let ecc = ["L", "M", "Q", "H"][rng.below(4) as usize];
            let options = serde_json::json!({
                "ecc": ecc,
                "size_mm": 30 + 5 * rng.below(5),
            });
            insert
                .execute(params![
                    t as i64,
                    format!("{shop} #{t}"),
                    format!("https://{domain}/{shop}/{t}?src=qr"),
                    format!("Scan for our {shop}"),
                    options.to_string(),
                    created_at,
                ])
                .map_err(map)?;
        }
        let mut insert = tx
            .prepare(
                "INSERT INTO scans (template_id, scanned_at, country, device, referrer)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(map)?;
        let span = (opts.days * 86_400_000).max(1) as u64;
        let templates = opts.templates_per_tenant as u64;
        for _ in 0..opts.scans_per_tenant {
            // A few templates get most scans.
            let template = 1 + (rng.below(templates) * rng.below(templates)) / templates;
            let referrer = match rng.below(4) {
                0 => None,
                _ => Some(REFERRERS[rng.below(REFERRERS.len() as u64) as usize]),
            };
            insert
                .execute(params![
                    template as i64,
                    opts.end_ms - rng.below(span) as i64,
                    rng.weighted(&COUNTRIES),
                    rng.weighted(&DEVICES),
                    referrer,
                ])
                .map_err(map)?;
        }
    }
    tx.commit().map_err(map)?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE); PRAGMA optimize;")
        .map_err(map)?;
    drop(conn);
    std::fs::rename(&tmp, &final_path)
        .map_err(Error::io("renaming seeded tenant to", &final_path))?;
    for suffix in ["-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", tmp.display()));
    }
    Ok((
        opts.templates_per_tenant as u64,
        opts.scans_per_tenant as u64,
    ))
}
