//! Notifications when a job ends: a job (or a schedule's jobs) carries a
//! list of [`Notify`], and when the job reaches one of the outcomes an entry
//! names, a job of kind [`NOTIFY_KIND`] on queue [`NOTIFY_QUEUE`] is
//! enqueued to deliver it — in the same transaction as the job's end,
//! whichever path ended it: a worker's complete or fail, the reaper, a
//! cancel ([`enqueue_ended`], run by each before it commits; schema 10).
//!
//! The store knows only when to notify; what an entry's target means (a
//! webhook, an e-mail) is the `notify` handler's, which checks each entry at
//! enqueue like any job (see [`crate::worker::Catalog`]).  A notification
//! job is an ordinary job: retried with backoff, listed, cancellable.  Its
//! payload is `{"job": {id, queue, kind, state, attempts, tenant, result,
//! error, finished_at}, "notify": <the entry>}`.

use rusqlite::Connection;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::store::job::JobState;

/// The queue notification jobs go on.
pub const NOTIFY_QUEUE: &str = "notify";
/// The kind of notification jobs.
pub const NOTIFY_KIND: &str = "notify";
/// Entries a job may carry.
pub const MAX_NOTIFY: usize = 16;
/// A notification job's tries unless its entry says (`max_attempts`).
pub const DEFAULT_ATTEMPTS: i64 = 10;
/// The first retry delay of a notification job unless its entry says
/// (`backoff_ms`); doubling up to an hour.
pub const DEFAULT_BACKOFF_MS: i64 = 10_000;

/// The ended jobs whose notifications are not enqueued yet (a probe of an
/// index that is empty but for them).
pub(crate) const PENDING: &str = "
SELECT id FROM jobs INDEXED BY jobs_notify_pending
WHERE notify IS NOT NULL AND finished_at IS NOT NULL AND notified_at IS NOT finished_at
  AND (state = 'succeeded' OR state = 'dead' OR state = 'cancelled')";

/// The notification jobs of job ?1's end: one per entry naming its state,
/// due at once, the entry's retry policy or the defaults.  Ids follow
/// `job_id_floor` as the one-row enqueue's do (schema 8), the entry's index
/// keeping two of one end apart.
pub(crate) const INSERT_NOTIFICATIONS: &str = "
INSERT INTO jobs (id, queue, kind, payload, state, priority, run_at, max_attempts,
                  attempt_limit, backoff_base_ms, backoff_max_ms, tenant, created_at)
SELECT (SELECT f.id + 1 + n.key FROM job_id_floor AS f
        WHERE f.id > (SELECT coalesce(max(id), 0) FROM jobs)),
       'notify', 'notify',
       json_object(
           'job', json_object(
               'id', j.id, 'queue', j.queue, 'kind', j.kind, 'state', j.state,
               'attempts', j.attempts, 'tenant', j.tenant,
               'result', CASE WHEN j.state = 'succeeded' THEN json(j.result) END,
               'error', CASE WHEN j.state <> 'succeeded' THEN j.last_error END,
               'finished_at', j.finished_at),
           'notify', json(n.value)),
       'ready', 0, ?2,
       coalesce(n.value ->> '$.max_attempts', ?3),
       coalesce(n.value ->> '$.max_attempts', ?3),
       coalesce(n.value ->> '$.backoff_ms', ?4),
       max(coalesce(n.value ->> '$.backoff_ms', ?4), 3600000),
       j.tenant, ?2
FROM jobs AS j, json_each(j.notify) AS n
WHERE j.id = ?1
  AND EXISTS (SELECT 1 FROM json_each(n.value, '$.on') AS o WHERE o.value = j.state)";

pub(crate) const MARK_NOTIFIED: &str = "UPDATE jobs SET notified_at = finished_at WHERE id = ?1";

#[cfg(test)]
pub(crate) const STATEMENTS: &[(&str, &str)] = &[
    ("PENDING", PENDING),
    ("INSERT_NOTIFICATIONS", INSERT_NOTIFICATIONS),
    ("MARK_NOTIFIED", MARK_NOTIFIED),
];

/// Enqueue the notifications of every job that ended in this transaction
/// (or before, behind jobd's back) and was not notified of that end; how
/// many.  Run by every store write that ends jobs, before it commits.
pub(crate) fn enqueue_ended(
    conn: &Connection,
    now: crate::clock::Millis,
) -> rusqlite::Result<usize> {
    let ended: Vec<i64> = {
        let mut stmt = conn.prepare_cached(PENDING)?;
        let rows = stmt.query_map([], |r| r.get(0))?;
        rows.collect::<rusqlite::Result<_>>()?
    };
    let mut enqueued = 0;
    for id in ended {
        enqueued += conn
            .prepare_cached(INSERT_NOTIFICATIONS)?
            .execute(rusqlite::params![
                id,
                now,
                DEFAULT_ATTEMPTS,
                DEFAULT_BACKOFF_MS
            ])?;
        conn.prepare_cached(MARK_NOTIFIED)?.execute([id])?;
        tracing::debug!(job_id = id, "notifications enqueued");
    }
    Ok(enqueued)
}

/// When a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Succeeded,
    Dead,
    Cancelled,
    /// Any end: succeeded, dead or cancelled.
    End,
}

impl Outcome {
    fn states(self) -> &'static [JobState] {
        match self {
            Outcome::Succeeded => &[JobState::Succeeded],
            Outcome::Dead => &[JobState::Dead],
            Outcome::Cancelled => &[JobState::Cancelled],
            Outcome::End => &[JobState::Succeeded, JobState::Dead, JobState::Cancelled],
        }
    }
}

/// One notification of a job: on which outcomes, and to what.
///
/// ```
/// # use jobd::store::{Notify, Outcome};
/// let n: Notify = serde_json::from_str(
///     r#"{"on": "dead", "webhook": "https://hooks.example.com/jobd"}"#).unwrap();
/// assert_eq!(n.on, vec![Outcome::Dead]);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notify {
    /// One outcome or a list.
    #[serde(deserialize_with = "one_or_many")]
    pub on: Vec<Outcome>,
    /// Tries of the notification job (default [`DEFAULT_ATTEMPTS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<i64>,
    /// Its first retry delay in ms (default [`DEFAULT_BACKOFF_MS`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_ms: Option<i64>,
    /// The rest of the entry: the target, for the `notify` handler
    /// (`"webhook": url` or `"email": {...}` with the built-in handlers).
    #[serde(flatten)]
    pub target: Map<String, Value>,
}

fn one_or_many<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<Outcome>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(Outcome),
        Many(Vec<Outcome>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(o) => vec![o],
        OneOrMany::Many(v) => v,
    })
}

impl Notify {
    /// A notification on `on` to `target` (the handler's fields).
    pub fn new(on: &[Outcome], target: Map<String, Value>) -> Notify {
        Notify {
            on: on.to_vec(),
            max_attempts: None,
            backoff_ms: None,
            target,
        }
    }

    /// The end states this entry fires on.
    pub fn states(&self) -> Vec<JobState> {
        let mut states: Vec<JobState> = Vec::new();
        for s in self.on.iter().flat_map(|o| o.states()) {
            if !states.contains(s) {
                states.push(*s);
            }
        }
        states
    }

    /// The entry as stored (and read by [`INSERT_NOTIFICATIONS`]): `on` as the list of end states.
    pub(crate) fn stored(&self) -> Value {
        let mut entry = self.target.clone();
        let states = self
            .states()
            .iter()
            .map(|s| Value::from(s.as_str()))
            .collect();
        entry.insert("on".into(), Value::Array(states));
        if let Some(n) = self.max_attempts {
            entry.insert("max_attempts".into(), n.into());
        }
        if let Some(ms) = self.backoff_ms {
            entry.insert("backoff_ms".into(), ms.into());
        }
        Value::Object(entry)
    }

    fn validate(&self) -> std::result::Result<(), String> {
        if self.on.is_empty() {
            return Err("\"on\" is empty: give succeeded, dead, cancelled or end".into());
        }
        if self.target.is_empty() {
            return Err("no target: give what to notify (a webhook or an e-mail)".into());
        }
        if let Some(n) = self.max_attempts {
            if !(1..=100).contains(&n) {
                return Err(format!("max_attempts {n} is not between 1 and 100"));
            }
        }
        if let Some(ms) = self.backoff_ms {
            if !(0..=3_600_000).contains(&ms) {
                return Err(format!("backoff_ms {ms} is not between 0 and 3600000"));
            }
        }
        Ok(())
    }
}

/// Check a job's list; the JSON text to store (`None` for an empty list).
pub(crate) fn stored_list(list: &[Notify]) -> Result<Option<String>> {
    if list.is_empty() {
        return Ok(None);
    }
    if list.len() > MAX_NOTIFY {
        return Err(Error::invalid(
            "notify",
            format!("{} entries is over the limit of {MAX_NOTIFY}", list.len()),
        ));
    }
    let mut stored = Vec::with_capacity(list.len());
    for (i, n) in list.iter().enumerate() {
        n.validate()
            .map_err(|e| Error::invalid("notify", format!("entry #{i}: {e}")))?;
        stored.push(n.stored());
    }
    Ok(Some(Value::Array(stored).to_string()))
}

/// A stored list read back (the column of a job or a schedule).
pub(crate) fn parse_stored(text: Option<&str>) -> Vec<Notify> {
    text.and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default()
}

/// The payload of the notification job `entry` makes for a job that ends
/// in `state`: what the store writes, for checking the entry at enqueue
/// with the handler of [`NOTIFY_KIND`] (a job id of 0, no result).
pub fn sample_payload(
    entry: &Notify,
    queue: &str,
    kind: &str,
    tenant: Option<&str>,
    state: JobState,
) -> String {
    let error = (state != JobState::Succeeded).then_some("the error the job ended with");
    serde_json::json!({
        "job": {
            "id": 0, "queue": queue, "kind": kind, "state": state.as_str(), "attempts": 1,
            "tenant": tenant, "result": null, "error": error, "finished_at": 0,
        },
        "notify": entry.stored(),
    })
    .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_are_checked_and_stored_with_their_states() {
        let list: Vec<Notify> = serde_json::from_str(
            r#"[{"on": "end", "webhook": "http://h/x"},
                {"on": ["dead", "dead"], "email": {"to": "a@b.c"}, "max_attempts": 2}]"#,
        )
        .unwrap();
        let text = stored_list(&list).unwrap().unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v[0]["on"],
            serde_json::json!(["succeeded", "dead", "cancelled"])
        );
        assert_eq!(v[1]["on"], serde_json::json!(["dead"]));
        assert_eq!(v[1]["max_attempts"], 2);
        assert_eq!(parse_stored(Some(&text))[1].states(), vec![JobState::Dead]);

        for (bad, why) in [
            (r#"[{"on": [], "webhook": "x"}]"#, "empty"),
            (r#"[{"on": "dead"}]"#, "no target"),
            (
                r#"[{"on": "dead", "webhook": "x", "max_attempts": 0}]"#,
                "max_attempts",
            ),
        ] {
            let list: Vec<Notify> = serde_json::from_str(bad).unwrap();
            let e = stored_list(&list).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
        }
        assert!(serde_json::from_str::<Notify>(r#"{"on": "finished", "webhook": "x"}"#).is_err());
        assert_eq!(stored_list(&[]).unwrap(), None);
    }
}
