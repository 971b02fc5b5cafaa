//! What a worker configuration runs, to refuse at enqueue a job that no
//! worker could run.
//!
//! The store takes any queue and kind: the handlers live in worker processes
//! it knows nothing of.  But a job on a misspelt queue waits forever, and one
//! of an unknown kind, or with a payload its handler cannot decode, dies on
//! its first try — long after whoever enqueued it has gone.  `jobd enqueue`,
//! `jobd schedule add` and the HTTP API check each job first against a
//! [`Catalog`]: the queues and kinds of their own worker configuration (each
//! kind with its handler's payload check), and, for anything not there, what
//! the live workers on the file registered (other processes, workers built
//! on the library).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, OnceLock};

use crate::error::{Error, Result};
use crate::scheduler::NewSchedule;
use crate::store::job::validate_name;
use crate::store::notify::{sample_payload, NOTIFY_KIND, NOTIFY_QUEUE};
use crate::store::{LiveWork, NewJob, Store};
use crate::worker::handler::ErasedHandler;

/// The queues a worker configuration serves and the job kinds it runs, with
/// each kind's payload check.  Made by [`crate::worker::WorkerBuilder::catalog`];
/// cheap to clone.
#[derive(Clone)]
pub struct Catalog {
    queues: Arc<BTreeSet<String>>,
    handlers: Arc<BTreeMap<String, Arc<dyn ErasedHandler>>>,
}

impl std::fmt::Debug for Catalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Catalog")
            .field("queues", &self.queues)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Catalog {
    pub(crate) fn new(
        queues: impl IntoIterator<Item = String>,
        handlers: BTreeMap<String, Arc<dyn ErasedHandler>>,
    ) -> Catalog {
        Catalog {
            queues: Arc::new(queues.into_iter().collect()),
            handlers: Arc::new(handlers),
        }
    }

    /// The queues of this configuration, sorted.
    pub fn queues(&self) -> impl Iterator<Item = &str> {
        self.queues.iter().map(String::as_str)
    }

    /// The job kinds of this configuration, sorted.
    pub fn kinds(&self) -> impl Iterator<Item = &str> {
        self.handlers.keys().map(String::as_str)
    }

    /// A checker of jobs bound for `store`: it reads the file's live workers
    /// at most once, and only for a queue or kind this catalog does not know.
    pub fn checker<'a>(&'a self, store: &'a Store) -> Checker<'a> {
        Checker {
            catalog: self,
            store,
            live: OnceLock::new(),
        }
    }
}

/// Checks jobs against a [`Catalog`] and the live workers of one file.
pub struct Checker<'a> {
    catalog: &'a Catalog,
    store: &'a Store,
    live: OnceLock<LiveWork>,
}

impl Checker<'_> {
    /// Refuse, with what was wrong, a job no worker could run: its queue is
    /// neither the catalog's nor a live worker's, its kind neither, or the
    /// catalog's handler of its kind refuses it (a payload that does not
    /// decode, or the handler's own [`check`](crate::worker::Handler::check):
    /// a tenant that does not exist...).
    ///
    /// Each of its notifications is checked as the job it will enqueue (of
    /// kind [`NOTIFY_KIND`] on [`NOTIFY_QUEUE`]), once per end state it
    /// fires on: a worker must run those, and their handler may refuse an
    /// entry (a webhook host it does not allow, an unknown template).
    pub fn check_job(&self, job: &NewJob) -> Result<()> {
        let tenant = job.tenant.as_deref();
        match &job.payload {
            Ok(payload) => self.check(&job.queue, &job.kind, payload, tenant)?,
            Err(e) => return Err(Error::invalid("payload", e.clone())),
        }
        for (i, entry) in job.notify.iter().enumerate() {
            for state in entry.states() {
                let sample = sample_payload(entry, &job.queue, &job.kind, tenant, state);
                self.check(NOTIFY_QUEUE, NOTIFY_KIND, &sample, tenant)
                    .map_err(|e| match e {
                        Error::InvalidInput { reason, .. } => Error::invalid(
                            "notify",
                            format!("entry #{i} (on {}): {reason}", state.as_str()),
                        ),
                        other => other,
                    })?;
            }
        }
        Ok(())
    }

    /// [`Checker::check_job`] for the job a schedule fires.
    pub fn check_schedule(&self, schedule: &NewSchedule) -> Result<()> {
        self.check_job(&schedule.job)
    }

    /// [`Checker::check_job`] for a job given by its parts.
    pub fn check(
        &self,
        queue: &str,
        kind: &str,
        payload: &str,
        tenant: Option<&str>,
    ) -> Result<()> {
        validate_name("queue", queue)?;
        validate_name("kind", kind)?;
        let configured = self.catalog.queues.contains(queue);
        let handler = self.catalog.handlers.get(kind);
        // A job runs on whichever worker claims it: one worker must both
        // serve its queue and run its kind — this configuration, or one
        // live worker on the file.
        let here = configured && handler.is_some();
        if !here && !self.live()?.runs(queue, kind) {
            let live = self.live()?;
            if !configured && !live.serves(queue) {
                return Err(Error::invalid(
                    "queue",
                    format!(
                        "unknown queue {queue:?}: no worker serves it (the configured queues are {}; \
                         no live worker on the file serves it either)",
                        list(self.catalog.queues())
                    ),
                ));
            }
            if handler.is_none() && !live.runs_kind(kind) {
                return Err(Error::invalid(
                    "kind",
                    format!(
                        "unknown job kind {kind:?}: no worker runs it (the configured kinds are {}; \
                         no live worker on the file runs it either)",
                        list(self.catalog.kinds())
                    ),
                ));
            }
            // Both are known, but not to one worker.
            let mut kinds_there = BTreeSet::new();
            let mut queues_of_kind = BTreeSet::new();
            if configured {
                kinds_there.extend(self.catalog.kinds());
            }
            if handler.is_some() {
                queues_of_kind.extend(self.catalog.queues());
            }
            for w in &live.workers {
                if w.queues.contains(queue) {
                    kinds_there.extend(w.kinds.iter().map(String::as_str));
                }
                if w.runs_kind(kind) {
                    queues_of_kind.extend(w.queues.iter().map(String::as_str));
                }
            }
            return Err(Error::invalid(
                "kind",
                format!(
                    "no worker runs job kind {kind:?} on queue {queue:?}: the workers that serve \
                     {queue:?} run {}, and those that run {kind:?} serve {} (a worker that claims \
                     a job it has no handler for fails it)",
                    list(kinds_there.into_iter()),
                    list(queues_of_kind.into_iter())
                ),
            ));
        }
        match handler {
            Some(handler) => handler
                .check(payload, tenant)
                .map_err(|(field, reason)| Error::invalid(field, reason)),
            None => Ok(()),
        }
    }

    fn live(&self) -> Result<&LiveWork> {
        if let Some(live) = self.live.get() {
            return Ok(live);
        }
        let live = self.store.live_work()?;
        Ok(self.live.get_or_init(|| live))
    }
}

fn list<'a>(names: impl Iterator<Item = &'a str>) -> String {
    let names: Vec<&str> = names.collect();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}
