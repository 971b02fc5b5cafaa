//! Scan analytics across every tenant database, cached beside the queue.
//!
//! A query (period, optional domain and template filters, optional time
//! range) is answered by reading each tenant's `scans` in parallel, at most
//! `concurrency` tenants at once, and adding the per-tenant aggregates up.
//! The answer is cached in the store's state (`Store::state_put`, on a file
//! or on PostgreSQL alike) for the query's TTL: a second request while it
//! is fresh is served from there without opening a single tenant database.  A tenant that cannot be read
//! is listed in `failed_tenants`; the others still count.

use std::collections::BTreeMap;

use chrono::Datelike;
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};

use crate::blocking::Checked;
use crate::schedules::ANALYTICS_KIND;
use crate::{job_error, per_tenant, tenant_threads, DataDir, Reporter, Run};
use jobd::clock::Millis;
use jobd::error::{Error, Result};
use jobd::store::Store;
use jobd::worker::JobError;

/// The key of a query's cached answer in the store's state (schema 11 of
/// the file; the same table on PostgreSQL).
fn cache_key(query: &AnalyticsQuery) -> String {
    format!("{CACHE_PREFIX}{}", query.cache_key())
}

/// Every cached answer's key starts with this.
const CACHE_PREFIX: &str = "analytics:";

/// One pass over a tenant's scans: counts per UTC day number, country and
/// device.  Integer division instead of SQLite date functions per row, and
/// one scan instead of one per breakdown; periods are formed in Rust.
const SCANS_BY_DAY: &str = "
SELECT scanned_at / 86400000 AS day, country, device, count(*)
FROM scans
WHERE (?1 IS NULL OR template_id = ?1) AND scanned_at >= ?2 AND scanned_at < ?3
GROUP BY day, country, device";

const TENANT_DOMAIN: &str = "SELECT value FROM tenant WHERE key = 'domain'";

/// Bucket size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    #[default]
    Daily,
    /// Weeks start on Monday (UTC).
    Weekly,
    Monthly,
}

/// What to aggregate.  The `analytics_rollup` job's payload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AnalyticsQuery {
    #[serde(default)]
    pub period: Period,
    /// Only tenants with this domain.
    #[serde(default)]
    pub domain: Option<String>,
    /// Only scans of this template id.
    #[serde(default)]
    pub template: Option<i64>,
    /// Scans at or after this time (ms since the epoch).
    #[serde(default)]
    pub from_ms: Option<Millis>,
    /// Scans before this time.
    #[serde(default)]
    pub to_ms: Option<Millis>,
    /// How long the answer is served from the cache, and how old a cached
    /// answer this request accepts (0: always compute).  Default 3600 s.
    #[serde(default = "default_ttl")]
    pub ttl_secs: u64,
    /// Tenants read at once.  Default: the number of CPUs, at most 8.
    #[serde(default)]
    pub concurrency: Option<usize>,
}

fn default_ttl() -> u64 {
    3600
}

impl Default for AnalyticsQuery {
    fn default() -> Self {
        AnalyticsQuery {
            period: Period::Daily,
            domain: None,
            template: None,
            from_ms: None,
            to_ms: None,
            ttl_secs: default_ttl(),
            concurrency: None,
        }
    }
}

impl AnalyticsQuery {
    /// The cache key: what changes the answer (not the TTL or concurrency).
    pub fn cache_key(&self) -> String {
        serde_json::json!({
            "period": self.period,
            "domain": self.domain,
            "template": self.template,
            "from_ms": self.from_ms,
            "to_ms": self.to_ms,
        })
        .to_string()
    }

    /// A range that runs forwards, a concurrency of at least 1, a domain of
    /// sane length.
    pub fn validate(&self) -> Result<()> {
        if let (Some(from), Some(to)) = (self.from_ms, self.to_ms) {
            if from >= to {
                return Err(Error::invalid(
                    "range",
                    format!("from_ms {from} is not before to_ms {to}"),
                ));
            }
        }
        if self.concurrency == Some(0) {
            return Err(Error::invalid("concurrency", "must be at least 1"));
        }
        if let Some(d) = &self.domain {
            if d.is_empty() || d.len() > 253 {
                return Err(Error::invalid("domain", "must be 1 to 253 bytes"));
            }
        }
        Ok(())
    }
}

/// The answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analytics {
    pub query: AnalyticsQuery,
    /// Scans per period start (`YYYY-MM-DD`).
    pub periods: BTreeMap<String, u64>,
    pub by_country: BTreeMap<String, u64>,
    pub by_device: BTreeMap<String, u64>,
    /// Scans per tenant that matched the filters.
    pub by_tenant: BTreeMap<String, u64>,
    pub total_scans: u64,
    pub failed_tenants: Vec<(String, String)>,
    pub computed_at: Millis,
    pub duration_ms: u64,
    /// True when this answer came from the cache.
    pub cached: bool,
}

/// The cached answer to `query`, if one is fresh.  Opens no tenant database.
pub fn cached(store: &Store, query: &AnalyticsQuery) -> Result<Option<Analytics>> {
    let now = store.clock().now_ms();
    // Fresh: not expired, and no older than the asker's TTL.
    let text = store
        .state_get(&cache_key(query))?
        .filter(|e| e.expires_at.is_some_and(|x| x > now) && e.updated_at > now - ttl_ms(query))
        .map(|e| e.value);
    Ok(match text {
        Some(t) => {
            let mut a: Analytics = serde_json::from_str(&t).map_err(|e| Error::Corrupt {
                path: store.location().into(),
                reason: format!("analytics cache entry is not an answer: {e}"),
            })?;
            a.cached = true;
            a.query.ttl_secs = query.ttl_secs;
            a.query.concurrency = query.concurrency;
            Some(a)
        }
        None => None,
    })
}

/// Answer `query`: from the cache when fresh, else computed across all
/// tenants and cached.
pub fn analytics(
    store: &Store,
    data: &DataDir,
    query: &AnalyticsQuery,
    reporter: &Reporter,
) -> Result<Analytics> {
    query.validate()?;
    if let Some(hit) = cached(store, query)? {
        reporter.report(100.0, "served from cache", None);
        return Ok(hit);
    }
    let started = std::time::Instant::now();
    let now = store.clock().now_ms();
    let tenants = data.tenants().list()?;
    let workers = query.concurrency.unwrap_or_else(|| tenant_threads(8));
    let outcomes = per_tenant(&tenants, workers, reporter, "aggregating tenants", |t| {
        tenant_aggregate(data, t, query)
    })
    .ok_or(Error::Stopped {
        operation: "analytics",
    })?;
    let results = tenants.iter().cloned().zip(outcomes);
    let mut answer = Analytics {
        query: query.clone(),
        periods: BTreeMap::new(),
        by_country: BTreeMap::new(),
        by_device: BTreeMap::new(),
        by_tenant: BTreeMap::new(),
        total_scans: 0,
        failed_tenants: Vec::new(),
        computed_at: now,
        duration_ms: 0,
        cached: false,
    };
    for (tenant, outcome) in results {
        match outcome {
            Ok(None) => {} // filtered out by domain
            Ok(Some(agg)) => {
                let add = |map: &mut BTreeMap<String, u64>, rows: Vec<(String, u64)>| {
                    for (k, n) in rows {
                        *map.entry(k).or_default() += n;
                    }
                };
                add(&mut answer.periods, agg.periods);
                add(&mut answer.by_country, agg.countries);
                add(&mut answer.by_device, agg.devices);
                answer.total_scans += agg.total;
                answer.by_tenant.insert(tenant, agg.total);
            }
            Err(e) => answer.failed_tenants.push((tenant, e.to_string())),
        }
    }
    answer.duration_ms = started.elapsed().as_millis() as u64;
    let expires = now.saturating_add(ttl_ms(query));
    let json = serde_json::to_string(&answer).expect("an answer serializes");
    store.state_put(&cache_key(query), &json, Some(expires))?;
    tracing::info!(
        tenants = answer.by_tenant.len(),
        failed = answer.failed_tenants.len(),
        scans = answer.total_scans,
        ms = answer.duration_ms,
        "analytics computed"
    );
    Ok(answer)
}

fn ttl_ms(q: &AnalyticsQuery) -> i64 {
    (q.ttl_secs.min(i64::MAX as u64 / 1000) * 1000) as i64
}

struct TenantAggregate {
    periods: Vec<(String, u64)>,
    countries: Vec<(String, u64)>,
    devices: Vec<(String, u64)>,
    total: u64,
}

fn tenant_aggregate(
    data: &DataDir,
    tenant: &str,
    q: &AnalyticsQuery,
) -> Result<Option<TenantAggregate>> {
    let conn = data.tenants().open_read_only(tenant)?;
    let path = data.tenants().path(tenant)?;
    let map = |e| Error::from_sqlite("reading tenant scans", &path, e);
    if let Some(domain) = &q.domain {
        let own: Option<String> = conn
            .query_row(TENANT_DOMAIN, [], |r| r.get(0))
            .optional()
            .map_err(map)?;
        if own.as_deref() != Some(domain.as_str()) {
            return Ok(None);
        }
    }
    let (from, to) = (q.from_ms.unwrap_or(i64::MIN), q.to_ms.unwrap_or(i64::MAX));
    let mut stmt = conn.prepare_cached(SCANS_BY_DAY).map_err(map)?;
    let rows = stmt
        .query_map(params![q.template, from, to], |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)? as u64,
            ))
        })
        .map_err(map)?;
    let (mut periods, mut countries, mut devices) = (
        BTreeMap::new(),
        BTreeMap::<String, u64>::new(),
        BTreeMap::<String, u64>::new(),
    );
    let mut total = 0;
    for row in rows {
        let (day, country, device, n) = row.map_err(map)?;
        *periods.entry(period_start(q.period, day)).or_insert(0) += n;
        *countries.entry(country).or_default() += n;
        *devices.entry(device).or_default() += n;
        total += n;
    }
    let periods = periods.into_iter().collect();
    let countries = countries.into_iter().collect();
    let devices = devices.into_iter().collect();
    Ok(Some(TenantAggregate {
        periods,
        countries,
        devices,
        total,
    }))
}

/// The start (`YYYY-MM-DD`) of the period holding UTC day number `day`.
fn period_start(period: Period, day: i64) -> String {
    let date = chrono::DateTime::from_timestamp(day * 86_400, 0)
        .map(|t| t.date_naive())
        .unwrap_or_default();
    let start = match period {
        Period::Daily => date,
        Period::Weekly => {
            date - chrono::Days::new(u64::from(date.weekday().num_days_from_monday()))
        }
        Period::Monthly => date.with_day(1).unwrap_or(date),
    };
    start.format("%Y-%m-%d").to_string()
}

/// Delete expired cache entries; returns how many.
pub fn purge_expired(store: &Store) -> Result<usize> {
    store.state_purge(CACHE_PREFIX, store.clock().now_ms())
}

blocking_job! {
    /// The `analytics_rollup` job: payload [`AnalyticsQuery`], result [`Analytics`].
    AnalyticsRollup = AnalyticsHandler: ANALYTICS_KIND, AnalyticsQuery => Analytics,
    check_rollup, run_rollup
}

/// A range that runs forwards, a concurrency of at least 1, a domain of sane length.
fn check_rollup(_: Option<&DataDir>, query: &AnalyticsQuery, _: Option<&str>) -> Checked {
    query.validate().map_err(super::said)
}

fn run_rollup(run: &Run, query: AnalyticsQuery, r: &Reporter) -> Result<Analytics, JobError> {
    analytics(&run.store, run.data()?, &query, r).map_err(job_error)
}
