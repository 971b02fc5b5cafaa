//! The one error type of jobd.
//!
//! Variants say what the caller can do about a failure: fix the input
//! (`InvalidInput`), look elsewhere (`NotFound`), give up the job (`LeaseLost`),
//! wait and retry (`Busy`, `IoFault`), free disk space (`DiskFull`), or restore
//! from a backup (`Corrupt`).  SQLite result codes are mapped to variants in exactly
//! one place: [`Error::from_sqlite`].

use std::path::PathBuf;

/// Result alias used across jobd.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in jobd.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The caller passed something jobd cannot accept; nothing was written.
    #[error("invalid {field}: {reason}")]
    InvalidInput { field: &'static str, reason: String },

    /// No job with this id exists.
    #[error("job {job_id} not found")]
    NotFound { job_id: i64 },

    /// A long operation stopped early because its job was cancelled or its
    /// worker is shutting down; nothing half-done was kept.
    #[error(
        "{operation} stopped before it finished: the job was cancelled or timed out, or its worker is stopping"
    )]
    Stopped { operation: &'static str },

    /// A named thing of a library built on jobd (a tenant database of the
    /// built-in handlers, say) does not exist.
    #[error("{what} {name:?} not found")]
    Missing { what: &'static str, name: String },

    /// No schedule with this name exists.
    #[error("schedule {name:?} not found")]
    ScheduleNotFound { name: String },

    /// A schedule with this name already exists.
    #[error("a schedule named {name:?} already exists (remove it first, or replace it)")]
    ScheduleExists { name: String },

    /// The operation does not apply to a job in its current state.
    #[error("job {job_id} is {state}; cannot {operation}")]
    InvalidState {
        job_id: i64,
        state: String,
        operation: &'static str,
    },

    /// Another live job already holds this unique key.
    #[error("unique key {key:?} is held by live job {job_id}")]
    Conflict { key: String, job_id: i64 },

    /// The worker's lease on the job is gone (expired and re-claimed, or the job
    /// was finished by someone else).  The call changed nothing; the worker must
    /// drop its result.
    #[error("lease on job {job_id} lost: the job was re-claimed or finished elsewhere")]
    LeaseLost { job_id: i64 },

    /// The database stayed locked by other connections longer than the busy timeout.
    #[error("queue database busy during {operation}: {source}")]
    Busy {
        operation: &'static str,
        source: rusqlite::Error,
    },

    /// The disk (or file-size limit) is full; nothing of the failed operation was kept.
    #[error("disk full during {operation} on {path}: free some space and try again")]
    DiskFull {
        operation: &'static str,
        path: PathBuf,
    },

    /// The file is damaged: SQLite says so, and says so again when the file
    /// is checked afresh.
    #[error("{path} is corrupt: {reason}")]
    Corrupt { path: PathBuf, reason: String },

    /// A read or write failed with an I/O error (or data SQLite could not
    /// read) while the file itself checks out: a passing fault of the disk
    /// or the file system.  Nothing of the failed operation was kept; try
    /// again.
    #[error("I/O error during {operation} on {path} ({detail}); the file checks out, try again")]
    IoFault {
        operation: &'static str,
        path: PathBuf,
        detail: String,
    },

    /// The file exists but is not a jobd queue database.
    #[error("{path} is not a jobd queue database: {reason}; refusing to touch it")]
    NotAQueue { path: PathBuf, reason: String },

    /// The file was written by a newer jobd.
    #[error("{path} has schema version {found}, newer than this jobd supports ({supported}); upgrade jobd")]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },

    /// A pragma did not take the value jobd set.
    #[error("PRAGMA {pragma} is {actual}, expected {expected} (file system without WAL support?)")]
    Pragma {
        pragma: &'static str,
        expected: String,
        actual: String,
    },

    /// Any other SQLite error, with the operation that hit it.
    #[error("sqlite error during {operation}: {source}")]
    Sqlite {
        operation: &'static str,
        source: rusqlite::Error,
    },

    /// A bulk operation (run in batches, each its own transaction) failed
    /// part-way: the batches before the failing one were kept.
    #[error("{source}; {done} jobs were {what} in earlier batches")]
    PartlyDone {
        done: usize,
        what: &'static str,
        source: Box<Error>,
    },

    /// The backend has no such operation (a SQLite file's pragmas asked of
    /// PostgreSQL, say); nothing was done.
    #[error("{what} is not available on {backend}")]
    Unsupported {
        what: &'static str,
        backend: &'static str,
    },

    /// A PostgreSQL error, with the operation that hit it.  A lost or
    /// refused connection is [`Error::Unreachable`].
    #[error("PostgreSQL error during {operation}: {detail} (SQLSTATE {code})")]
    Postgres {
        operation: &'static str,
        /// The SQLSTATE code, empty when the server sent none.
        code: String,
        detail: String,
    },

    /// The PostgreSQL server could not be reached (down, restarting, or the
    /// connection dropped); nothing of the operation was kept unless it had
    /// committed.  Try again.
    #[error("PostgreSQL unreachable during {operation}: {detail}; try again")]
    Unreachable {
        operation: &'static str,
        detail: String,
    },

    /// The connection pool could not hand out a connection.
    #[error("connection pool: {0}")]
    Pool(#[from] r2d2::Error),

    /// A file-system operation failed.
    #[error("{operation} {path}: {source}")]
    Io {
        operation: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Whether a PostgreSQL error means the server cannot be reached: class 08
/// (connection exception), 57P01-03 (the server shutting down or starting),
/// or the socket failing under the connection.
pub(crate) fn pg_unreachable(err: &postgres::Error) -> bool {
    let code = err.code().map(|c| c.code()).unwrap_or_default();
    let io = std::iter::successors(std::error::Error::source(err), |s| s.source())
        .any(|s| s.is::<std::io::Error>());
    err.is_closed() || io || code.starts_with("08") || matches!(code, "57P01" | "57P02" | "57P03")
}

/// The operation [`Error::from_postgres`] names until the store names it.
pub(crate) const PG_STATEMENT: &str = "a PostgreSQL statement";

impl From<postgres::Error> for Error {
    fn from(err: postgres::Error) -> Error {
        Error::from_postgres(PG_STATEMENT, err)
    }
}

impl Error {
    /// Map a PostgreSQL error met during `operation`: a lost or refused
    /// connection (or a server shutting down) is [`Error::Unreachable`],
    /// anything else [`Error::Postgres`] with its SQLSTATE.
    pub fn from_postgres(operation: &'static str, err: postgres::Error) -> Error {
        let code = err.code().map(|c| c.code().to_string()).unwrap_or_default();
        let detail = match err.as_db_error() {
            Some(db) => match db.detail() {
                Some(more) => format!("{}: {more}", db.message()),
                None => db.message().to_string(),
            },
            None => {
                let mut text = err.to_string();
                let mut source = std::error::Error::source(&err);
                while let Some(s) = source {
                    text = format!("{text}: {s}");
                    source = s.source();
                }
                text
            }
        };
        if pg_unreachable(&err) {
            Error::Unreachable { operation, detail }
        } else {
            Error::Postgres {
                operation,
                code,
                detail,
            }
        }
    }

    /// This error, naming `operation` if it did not name one yet.
    pub(crate) fn during(self, operation: &'static str) -> Error {
        match self {
            Error::Postgres {
                operation: PG_STATEMENT,
                code,
                detail,
            } => Error::Postgres {
                operation,
                code,
                detail,
            },
            Error::Unreachable {
                operation: PG_STATEMENT,
                detail,
            } => Error::Unreachable { operation, detail },
            other => other,
        }
    }

    /// Map a SQLite error met during `operation` on the file at `path`.
    ///
    /// This is the single place where SQLite result codes become jobd errors.
    pub fn from_sqlite(
        operation: &'static str,
        path: &std::path::Path,
        err: rusqlite::Error,
    ) -> Error {
        use rusqlite::ErrorCode as C;
        match err.sqlite_error_code() {
            Some(C::DiskFull) => Error::DiskFull {
                operation,
                path: path.to_path_buf(),
            },
            Some(C::DatabaseBusy) | Some(C::DatabaseLocked) => Error::Busy {
                operation,
                source: err,
            },
            Some(C::DatabaseCorrupt) => Error::Corrupt {
                path: path.to_path_buf(),
                reason: err.to_string(),
            },
            Some(C::SystemIoFailure) => Error::IoFault {
                operation,
                path: path.to_path_buf(),
                detail: err.to_string(),
            },
            Some(C::NotADatabase) => Error::NotAQueue {
                path: path.to_path_buf(),
                reason: "the file is not a SQLite database".into(),
            },
            _ => Error::Sqlite {
                operation,
                source: err,
            },
        }
    }

    /// The underlying SQLite extended result code, when there is one.
    pub fn sqlite_code(&self) -> Option<i32> {
        match self {
            Error::Busy { source, .. } | Error::Sqlite { source, .. } => match source {
                rusqlite::Error::SqliteFailure(e, _) => Some(e.extended_code),
                _ => None,
            },
            _ => None,
        }
    }

    /// True for failures that may pass if the same call is made again later
    /// (lock contention, a full disk that gets freed).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Error::Busy { .. } | Error::DiskFull { .. } | Error::IoFault { .. } | Error::Pool(_)
        )
    }

    /// A file-system failure during `operation` on `path`, for `map_err`:
    /// a full disk is [`Error::DiskFull`], the rest [`Error::Io`].  The path
    /// is copied only when there is an error.
    pub fn io<'p>(
        operation: &'static str,
        path: &'p std::path::Path,
    ) -> impl FnOnce(std::io::Error) -> Error + 'p {
        move |source| {
            let path = path.to_path_buf();
            if source.kind() == std::io::ErrorKind::StorageFull {
                Error::DiskFull { operation, path }
            } else {
                Error::Io {
                    operation,
                    path,
                    source,
                }
            }
        }
    }

    pub fn invalid(field: &'static str, reason: impl Into<String>) -> Error {
        Error::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

/// Plain SQLite errors inside store code; the store's transaction helpers
/// re-map them with the operation and path through [`Error::from_sqlite`].
impl From<rusqlite::Error> for Error {
    fn from(source: rusqlite::Error) -> Error {
        Error::Sqlite {
            operation: "query",
            source,
        }
    }
}
