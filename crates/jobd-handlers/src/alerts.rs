//! `dead_alerts`: e-mail the admins when jobs of the watched queues end dead,
//! throttled — at most one mail per window, summarising every job that
//! died since the last one.  A burst of a thousand failures is one mail.
//!
//! Run every minute by the `dead-alerts` schedule (installed when
//! `[alerts]` is configured).  Each run reads the mark (in the store's
//! state: the last dead job an alert covered), the jobs that died after it
//! (`Store::dead_since`), and — when there are some and the window since
//! the last mail has passed — enqueues one `send_email` job (template
//! `jobs-dead`) and moves the mark, together, if the mark is still the one
//! it read (`Store::state_swap`).  Within the window nothing moves: the next run after it sends
//! them all.  On a file new to alerts the mark starts an hour back.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jobd::store::NewJob;
use jobd::worker::{Handler, JobContext, JobError, WorkerBuilder};
use jobd::{Millis, Store};
use rusqlite::OptionalExtension;
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

/// How far the alerts have read: the last dead job an alert covered, and
/// when the last mail was enqueued.  Kept in the store's state under
/// [`MARK_KEY`], on a file or on PostgreSQL alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Mark {
    through_at: Millis,
    through_id: i64,
    sent_at: Option<Millis>,
}

/// The state key of the mark.
const MARK_KEY: &str = "alerts:dead";

/// A file's mark from before the store's state (the handlers' own
/// `alert_marks` table), so an upgrade neither repeats nor drops an alert.
fn legacy_mark(store: &Store) -> Result<Option<Mark>, jobd::Error> {
    let Some(file) = store.sqlite() else {
        return Ok(None);
    };
    crate::migrate(store)?;
    file.with_conn("reading the alerts' mark", |c| {
        Ok(c.prepare_cached(GET_MARK)?
            .query_row([MARK], |r| {
                Ok(Mark {
                    through_at: r.get(0)?,
                    through_id: r.get(1)?,
                    sent_at: r.get(2)?,
                })
            })
            .optional()?)
    })
}

/// One look at what died since the mark; enqueues the mail when due.  The
/// mark moves, and the mail is enqueued, in one transaction that first
/// checks the mark is still the one read ([`Store::state_swap`](jobd::store::Backend::state_swap)): of two
/// runs at once, one sends.
pub fn scan(
    store: &Store,
    config: &AlertConfig,
    mailer: &Mailer,
) -> Result<AlertReport, jobd::Error> {
    let window = config
        .window()
        .map_err(|e| jobd::Error::invalid("alerts", e))?;
    let window_ms = window.as_millis() as i64;
    let now = store.clock().now_ms();
    let stored = store.state_get(MARK_KEY)?.map(|e| e.value);
    let mark = match &stored {
        Some(text) => serde_json::from_str(text).map_err(|e| jobd::Error::Corrupt {
            path: store.location().into(),
            reason: format!("the dead-job alerts' mark is not one: {e}"),
        })?,
        None => legacy_mark(store)?.unwrap_or(Mark {
            through_at: now - 3_600_000,
            through_id: 0,
            sent_at: None,
        }),
    };
    let mut dead = Vec::new();
    let mut last = (mark.through_at, mark.through_id);
    for j in store.dead_since(last, now)? {
        let finished = j.finished_at.unwrap_or(now);
        last = (finished, j.id);
        if config.queues.is_empty() || config.queues.contains(&j.queue) {
            dead.push((j.id, j.queue, j.kind, j.attempts, j.last_error, finished));
        }
    }
    let mut report = AlertReport {
        dead: dead.len(),
        ..AlertReport::default()
    };
    let moved = |sent_at| {
        serde_json::to_string(&Mark {
            through_at: last.0,
            through_id: last.1,
            sent_at,
        })
        .expect("a mark serializes")
    };
    if dead.is_empty() {
        // Nothing to tell: skip past the unwatched queues' deaths.
        if last != (mark.through_at, mark.through_id) || stored.is_none() {
            store.state_swap(MARK_KEY, stored.as_deref(), &moved(mark.sent_at), None)?;
        }
        return Ok(report);
    }
    if let Some(sent) = mark.sent_at.filter(|s| now < s + window_ms) {
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
    match store.state_swap(MARK_KEY, stored.as_deref(), &moved(Some(now)), Some(&job))? {
        jobd::store::Swap::Done { job_id } => report.email_job = job_id,
        // Another run moved the mark first: it sent them.
        jobd::store::Swap::Changed => report.dead = 0,
    }
    Ok(report)
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
