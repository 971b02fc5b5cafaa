//! Handlers: typed, async, registered by job kind.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::worker::JobContext;

/// Runs the jobs of one kind.
///
/// The payload is decoded from the job's JSON into `Payload`; a payload that
/// does not decode fails the job at once, without retries (it never will).
/// The returned `Output` is stored as the job's result (JSON).
///
/// Handlers run on the tokio runtime: CPU-heavy or blocking work belongs in
/// [`JobContext::blocking`], so it does not stall the other jobs.
///
/// ```
/// use jobd::worker::{Handler, JobContext, JobError};
///
/// #[derive(Default)]
/// struct Greet;
///
/// #[derive(serde::Deserialize)]
/// struct Who { name: String }
///
/// impl Handler for Greet {
///     const KIND: &'static str = "greet";
///     type Payload = Who;
///     type Output = String;
///     async fn run(&self, ctx: JobContext, who: Who) -> Result<String, JobError> {
///         ctx.progress(50.0, "greeting", None).await?;
///         Ok(format!("hello, {}", who.name))
///     }
/// }
/// ```
pub trait Handler: Send + Sync + 'static {
    /// The job kind this handler runs.
    const KIND: &'static str;
    type Payload: DeserializeOwned + Send + 'static;
    type Output: Serialize + Send + 'static;

    fn run(
        &self,
        ctx: JobContext,
        payload: Self::Payload,
    ) -> impl Future<Output = Result<Self::Output, JobError>> + Send;

    /// Refuse, before it is enqueued, a job every try of which would fail
    /// for a reason known now — a tenant that does not exist, a template it
    /// does not have.  Its payload decoded already; `tenant` is the job's
    /// own.  Called when a job is checked against a
    /// [`Catalog`](crate::worker::Catalog) (`jobd enqueue`, the HTTP API),
    /// never by the store.  Default: nothing more to check.
    fn check(&self, payload: &Self::Payload, tenant: Option<&str>) -> Result<(), String> {
        let _ = (payload, tenant);
        Ok(())
    }
}

/// Why a try failed, and whether trying again could help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobError {
    pub message: String,
    /// Retried (after the job's backoff, while tries remain) when true; the
    /// job goes straight to `dead` when false.
    pub retryable: bool,
}

impl JobError {
    /// A failure that may go away: retried per the job's policy.
    pub fn retryable(message: impl fmt::Display) -> JobError {
        JobError {
            message: message.to_string(),
            retryable: true,
        }
    }

    /// A failure that will not go away (bad input): the job is dead at once.
    pub fn permanent(message: impl fmt::Display) -> JobError {
        JobError {
            message: message.to_string(),
            retryable: false,
        }
    }
}

impl fmt::Display for JobError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// Any error converts into a retryable failure, with its chain of causes.
impl<E: std::error::Error> From<E> for JobError {
    fn from(e: E) -> JobError {
        let mut message = e.to_string();
        let mut source = e.source();
        while let Some(s) = source {
            message.push_str(": ");
            message.push_str(&s.to_string());
            source = s.source();
        }
        JobError::retryable(message)
    }
}

pub(crate) type RunFuture =
    Pin<Box<dyn Future<Output = Result<serde_json::Value, JobError>> + Send + 'static>>;

/// A handler with its types erased, as the runtime stores it.
pub(crate) trait ErasedHandler: Send + Sync {
    /// Decode the payload and start the run.
    fn start(&self, ctx: JobContext, payload: &str) -> Result<RunFuture, JobError>;

    /// Would the job run?  Its payload must decode, and pass the handler's
    /// own check (what `start` and every try would refuse, said before the
    /// job is enqueued).  `Err((field, reason))`.
    fn check(&self, payload: &str, tenant: Option<&str>) -> Result<(), (&'static str, String)>;
}

pub(crate) struct Typed<H>(pub(crate) Arc<H>);

impl<H: Handler> Typed<H> {
    fn decode(payload: &str) -> Result<H::Payload, String> {
        serde_json::from_str(payload)
            .map_err(|e| format!("payload does not fit job kind '{}': {e}", H::KIND))
    }
}

impl<H: Handler> ErasedHandler for Typed<H> {
    fn check(&self, payload: &str, tenant: Option<&str>) -> Result<(), (&'static str, String)> {
        let payload = Self::decode(payload).map_err(|e| ("payload", e))?;
        self.0.check(&payload, tenant).map_err(|e| ("job", e))
    }

    fn start(&self, ctx: JobContext, payload: &str) -> Result<RunFuture, JobError> {
        let payload = Self::decode(payload).map_err(JobError::permanent)?;
        let handler = self.0.clone();
        Ok(Box::pin(async move {
            let output = handler.run(ctx, payload).await?;
            serde_json::to_value(output).map_err(|e| {
                JobError::permanent(format!("result of '{}' is not JSON: {e}", H::KIND))
            })
        }))
    }
}

/// A handler from a closure over the raw JSON payload.
pub(crate) struct FnHandler<F>(pub(crate) F);

impl<F, Fut> ErasedHandler for FnHandler<F>
where
    F: Fn(JobContext, serde_json::Value) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<serde_json::Value, JobError>> + Send + 'static,
{
    fn check(&self, payload: &str, _tenant: Option<&str>) -> Result<(), (&'static str, String)> {
        serde_json::from_str::<serde::de::IgnoredAny>(payload)
            .map(drop)
            .map_err(|e| ("payload", format!("payload is not JSON: {e}")))
    }

    fn start(&self, ctx: JobContext, payload: &str) -> Result<RunFuture, JobError> {
        let payload: serde_json::Value = serde_json::from_str(payload)
            .map_err(|e| JobError::permanent(format!("payload is not JSON: {e}")))?;
        Ok(Box::pin((self.0)(ctx, payload)))
    }
}
