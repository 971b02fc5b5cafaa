//! The built-in jobs' one shape: plain blocking work over the data
//! directory ([`BlockingJob`]), run by [`Blocking`] on the blocking pool with
//! its progress stored as it comes, and declared with `blocking_job!`.

use jobd::worker::{JobContext, JobError};

use crate::{run_blocking, DataDir, Reporter};

/// A built-in job: plain blocking work, run by [`Blocking`] on the blocking
/// pool with its progress stored as it comes.
pub trait BlockingJob: Send + Sync + 'static {
    /// The job kind.
    const KIND: &'static str;
    type Payload: serde::de::DeserializeOwned + Send + 'static;
    type Output: serde::Serialize + Send + 'static;

    /// See [`Handler::check`](jobd::worker::Handler::check); `data` is the
    /// handler's data directory.
    fn check(
        data: Option<&DataDir>,
        payload: &Self::Payload,
        tenant: Option<&str>,
    ) -> Result<(), String> {
        let _ = (data, payload, tenant);
        Ok(())
    }

    /// Do the work (on a blocking thread).
    fn work(
        run: &Run,
        payload: Self::Payload,
        reporter: &Reporter,
    ) -> Result<Self::Output, JobError>;
}

/// What a [`BlockingJob`]'s work knows of its job.
#[derive(Debug, Clone)]
pub struct Run {
    pub store: jobd::Store,
    pub job_id: jobd::JobId,
    /// The job's tenant, if it has one.
    pub tenant: Option<String>,
    /// When the run started (the store's clock).
    pub now: jobd::Millis,
    /// The handler's data directory, if it was given one.
    pub data: Option<DataDir>,
}

/// Why a job that needs the data directory cannot run or be checked.
pub(crate) const NO_DATA: &str = "this handler was registered without a data directory";

impl Run {
    /// The data directory; a permanent failure when the handler has none.
    pub fn data(&self) -> Result<&DataDir, JobError> {
        self.data
            .as_ref()
            .ok_or_else(|| JobError::permanent(NO_DATA))
    }
}

/// Declare a built-in job: the type `$job` of kind `$kind`, its handler type
/// `$handler` (`$handler::new(data)` to register it), the payload it
/// decodes and the output it stores, the function that checks a job before
/// it is enqueued and the one that does the work on the blocking pool.
macro_rules! blocking_job {
    ($(#[$doc:meta])* $job:ident = $handler:ident: $kind:expr, $payload:ty => $output:ty,
     $check:ident, $work:ident) => {
        $(#[$doc])*
        pub struct $job;

        #[doc = concat!("The handler of [`", stringify!($job), "`].")]
        pub type $handler = $crate::Blocking<$job>;

        impl $crate::BlockingJob for $job {
            const KIND: &'static str = $kind;
            type Payload = $payload;
            type Output = $output;

            fn check(
                data: Option<&$crate::DataDir>,
                payload: &$payload,
                tenant: Option<&str>,
            ) -> $crate::blocking::Checked {
                $check(data, payload, tenant)
            }

            fn work(
                run: &$crate::Run,
                payload: $payload,
                reporter: &$crate::Reporter,
            ) -> Result<$output, jobd::worker::JobError> {
                $work(run, payload, reporter)
            }
        }
    };
}

/// What a check before enqueueing says: nothing, or why the job is refused.
pub type Checked = Result<(), String>;

/// The check of a job that has nothing to check before it is enqueued.
pub(crate) fn no_check<P>(_: Option<&DataDir>, _: &P, _: Option<&str>) -> Result<(), String> {
    Ok(())
}

/// The [`Handler`](jobd::worker::Handler) of a [`BlockingJob`], working on
/// a data directory (or none: the maintenance jobs then tend only the queue
/// file).
pub struct Blocking<J> {
    data: Option<DataDir>,
    job: std::marker::PhantomData<fn() -> J>,
}

impl<J> Blocking<J> {
    pub fn new(data: impl Into<Option<DataDir>>) -> Blocking<J> {
        Blocking {
            data: data.into(),
            job: std::marker::PhantomData,
        }
    }
}

impl<J: BlockingJob> jobd::worker::Handler for Blocking<J> {
    const KIND: &'static str = J::KIND;
    type Payload = J::Payload;
    type Output = J::Output;

    fn check(&self, payload: &J::Payload, tenant: Option<&str>) -> Result<(), String> {
        J::check(self.data.as_ref(), payload, tenant)
    }

    async fn run(&self, ctx: JobContext, payload: J::Payload) -> Result<J::Output, JobError> {
        let run = Run {
            store: ctx.store().clone(),
            job_id: ctx.id(),
            tenant: ctx.tenant().map(str::to_string),
            now: ctx.store().clock().now_ms(),
            data: self.data.clone(),
        };
        run_blocking(&ctx, move |reporter| J::work(&run, payload, reporter)).await
    }
}
