//! `dead_alerts`: e-mail the admins when jobs of the watched queues end dead,
//! throttled — at most one mail per window, summarising every job that
//! died since the last one.  A burst of a thousand failures is one mail.
//!
//! Run every minute by the `dead-alerts` schedule (installed when
//! `[alerts]` is configured).  Each run is one `BEGIN IMMEDIATE`
//! transaction: it reads the mark (`alert_marks`, the last dead job an
//! alert covered), the jobs that died after it (index `jobs_dead`), and —
//! when there are some and the window since the last mail has passed —
//! enqueues one `send_email` job (template `jobs-dead`) and moves the mark,
//! together.  Within the window nothing moves: the next run after it sends
//! them all.  On a file new to alerts the mark starts an hour back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jobd::store::NewJob;
use jobd::worker::{Handler, JobContext, JobError, WorkerBuilder};
use jobd::{Millis, Store};
use rusqlite::{params, OptionalExtension};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::email::{Email, Mailer, Recipients, EMAIL_QUEUE, SEND_KIND};

pub const KIND: &str = "dead_alerts";
/// The queue its schedule fires on (beside the notifications, never behind
/// a long backup).
pub const QUEUE: &str = crate::notify::QUEUE;
/// The schedule that runs it.
pub const SCHEDULE: &str = "dead-alerts";
pub const TEMPLATE: &str = "jobs-dead";
/// Jobs listed one by one in a mail; the rest are counted.
pub const LISTED: usize = 20;
const MARK: &str = "dead";

const GET_MARK: &str = "SELECT through_at, through_id, sent_at FROM alert_marks WHERE name = ?1";
const PUT_MARK: &str = "
INSERT INTO alert_marks (name, through_at, through_id, sent_at) VALUES (?1, ?2, ?3, ?4)
ON CONFLICT (name) DO UPDATE SET through_at = ?2, through_id = ?3, sent_at = ?4";
/// Dead jobs after the mark, oldest first, up to ?3 (now).
const DEAD_SINCE: &str = "
SELECT id, queue, kind, attempts, last_error, finished_at
FROM jobs INDEXED BY jobs_dead
WHERE state = 'dead' AND (finished_at, id) > (?1, ?2) AND finished_at <= ?3
ORDER BY finished_at, id";

/// `[alerts]` of `jobd.toml`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertConfig {
    /// Who is told.
    pub to: Vec<String>,
    /// The queues watched; empty for all.
    #[serde(default)]
    pub queues: Vec<String>,
    /// At most one mail per this long (`"15m"`).
    #[serde(default = "default_window")]
    pub window: String,
}

fn default_window() -> String {
    "15m".into()
}

impl AlertConfig {
    pub fn window(&self) -> Result<Duration, String> {
        humantime::parse_duration(&self.window)
            .map_err(|e| format!("[alerts] window = {:?}: {e}", self.window))
    }

    /// Check the configuration against the mailer that will send it.
    pub fn check(&self, mailer: Option<&Mailer>) -> Result<(), String> {
        self.window()?;
        if self.to.is_empty() {
            return Err("[alerts] to is empty: whom should dead jobs be reported to?".into());
        }
        for q in &self.queues {
            jobd::store::validate_name("queue", q).map_err(|e| format!("[alerts] queues: {e}"))?;
        }
        let mailer = mailer.ok_or("[alerts] needs [email]: the alerts are e-mails")?;
        let sample = self.email(json!({
            "count": 1, "since": "2026-01-01 00:00 UTC",
            "queues": [{"queue": "q", "count": 1}],
            "jobs": [{"id": 1, "queue": "q", "kind": "k", "attempts": 1, "error": "e",
                      "finished": "2026-01-01 00:00 UTC"}],
            "more": 0,
        }));
        mailer.check(&sample).map_err(|e| format!("[alerts]: {e}"))
    }

    fn email(&self, data: serde_json::Value) -> Email {
        Email {
            to: Recipients::Many(self.to.clone()),
            cc: None,
            bcc: None,
            reply_to: None,
            template: TEMPLATE.into(),
            data,
            subject: None,
            attachments: Vec::new(),
        }
    }
}

/// What a run did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertReport {
    /// Dead jobs of the watched queues since the last mail.
    pub dead: usize,
    /// The `send_email` job enqueued, if one was.
    pub email_job: Option<i64>,
    /// When the window lets the next mail go (if jobs wait for it).
    pub held_until: Option<Millis>,
}

fn at(ms: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// One look at what died since the mark; enqueues the mail when due.
pub fn scan(
    store: &Store,
    config: &AlertConfig,
    mailer: &Mailer,
) -> Result<AlertReport, jobd::Error> {
    crate::migrate(store)?;
    let window = config
        .window()
        .map_err(|e| jobd::Error::invalid("alerts", e))?;
    let window_ms = window.as_millis() as i64;
    let file = store.require_sqlite("dead-job alerts")?;
    file.write("dead-job alerts", |tx| {
        let now = store.clock().now_ms();
        let mark: Option<(Millis, i64, Option<Millis>)> = tx
            .prepare_cached(GET_MARK)?
            .query_row([MARK], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .optional()?;
        let (through_at, through_id, sent_at) = mark.unwrap_or((now - 3_600_000, 0, None));
        let mut dead = Vec::new();
        let mut last = (through_at, through_id);
        {
            let mut stmt = tx.prepare_cached(DEAD_SINCE)?;
            let mut rows = stmt.query(params![through_at, through_id, now])?;
            while let Some(r) = rows.next()? {
                let (id, queue): (i64, String) = (r.get(0)?, r.get(1)?);
                let finished: Millis = r.get(5)?;
                last = (finished, id);
                if config.queues.is_empty() || config.queues.contains(&queue) {
                    let kind: String = r.get(2)?;
                    let attempts: i64 = r.get(3)?;
                    let error: Option<String> = r.get(4)?;
                    dead.push((id, queue, kind, attempts, error, finished));
                }
            }
        }
        let mut report = AlertReport {
            dead: dead.len(),
            ..AlertReport::default()
        };
        if dead.is_empty() {
            // Nothing to tell: skip past the unwatched queues' deaths.
            if last != (through_at, through_id) || mark.is_none() {
                tx.prepare_cached(PUT_MARK)?
                    .execute(params![MARK, last.0, last.1, sent_at])?;
            }
            return Ok(report);
        }
        if let Some(sent) = sent_at.filter(|s| now < s + window_ms) {
            report.held_until = Some(sent + window_ms);
            return Ok(report);
        }
        let mut per_queue: BTreeMap<&str, usize> = BTreeMap::new();
        for d in &dead {
            *per_queue.entry(d.1.as_str()).or_default() += 1;
        }
        let listed: Vec<_> = dead
            .iter()
            .take(LISTED)
            .map(|(id, queue, kind, attempts, error, finished)| {
                json!({"id": id, "queue": queue, "kind": kind, "attempts": attempts,
                       "error": error.clone().unwrap_or_default(), "finished": at(*finished)})
            })
            .collect();
        let email = config.email(json!({
            "count": dead.len(),
            "since": at(dead[0].5),
            "queues": per_queue.iter().map(|(q, n)| json!({"queue": q, "count": n}))
                .collect::<Vec<_>>(),
            "jobs": listed,
            "more": dead.len().saturating_sub(LISTED),
        }));
        mailer
            .check(&email)
            .map_err(|e| jobd::Error::invalid("alerts", e))?;
        let job = NewJob::new(EMAIL_QUEUE, SEND_KIND).payload(&email);
        let id = file.enqueue_in(tx, &job)?;
        tx.prepare_cached(PUT_MARK)?
            .execute(params![MARK, last.0, last.1, now])?;
        report.email_job = Some(id);
        Ok(report)
    })
}

/// The `dead_alerts` handler.  Without `[alerts]` (or `[email]`) a run
/// does nothing and says so.
pub struct AlertHandler {
    config: Option<AlertConfig>,
    mailer: Option<Arc<Mailer>>,
}

impl AlertHandler {
    pub fn new(config: Option<AlertConfig>, mailer: Option<Arc<Mailer>>) -> AlertHandler {
        AlertHandler { config, mailer }
    }
}

/// `dead_alerts` takes no options.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NoOptions {}

impl Handler for AlertHandler {
    const KIND: &'static str = KIND;
    type Payload = NoOptions;
    type Output = serde_json::Value;

    async fn run(&self, ctx: JobContext, _: NoOptions) -> Result<serde_json::Value, JobError> {
        let (Some(config), Some(mailer)) = (self.config.clone(), self.mailer.clone()) else {
            return Ok(json!({"configured": false}));
        };
        let store = ctx.store().clone();
        let report = ctx
            .blocking(move || scan(&store, &config, &mailer).map_err(crate::job_error))
            .await?;
        if let Some(id) = report.email_job {
            tracing::warn!(dead = report.dead, email_job = id, "dead jobs reported");
        }
        serde_json::to_value(report).map_err(|e| JobError::permanent(e.to_string()))
    }
}

/// Register `dead_alerts` (on [`QUEUE`]).
pub fn register(
    builder: WorkerBuilder,
    config: Option<AlertConfig>,
    mailer: Option<Arc<Mailer>>,
) -> WorkerBuilder {
    builder.register(AlertHandler::new(config, mailer))
}

/// Install the `dead-alerts` schedule (every minute), once per file: a
/// removed schedule stays removed.
pub fn install_schedule(store: &Store) -> jobd::Result<Vec<String>> {
    let schedule =
        jobd::scheduler::NewSchedule::every(SCHEDULE, Duration::from_secs(60), QUEUE, KIND)
            .misfire(jobd::scheduler::Misfire::Skip);
    store.install_schedules_once("dead_alerts_schedule_installed_at", &[schedule], false)
}
