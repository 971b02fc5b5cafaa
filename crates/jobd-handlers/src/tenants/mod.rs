//! Tenant databases: one SQLite file per tenant, `<name>.db`, in a tenant
//! directory (by default `<data dir>/tenants/`).  The schema is
//! `schema/tenant.sql`.
//!
//! Tenants are discovered from the directory.  A name that could leave it is
//! refused before any file is touched: names are 1–128 characters of
//! `A-Z a-z 0-9 _ - .` not starting with a dot (so no `..`, `/` or NUL), and
//! a `<name>.db` that is a symlink resolving outside the directory is
//! refused too.  Handlers open tenants read-only unless they must write.

mod seed;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};

use jobd::error::{Error, Result};
use jobd::store::validate_tenant;

pub use seed::{seed, SeedOptions, SeedReport};

/// The tenant schema, applied by [`seed`] and by [`TenantDir::create`].
pub const TENANT_SCHEMA: &str = include_str!("../../schema/tenant.sql");

/// A directory of tenant databases.  Cheap to clone.
#[derive(Debug, Clone)]
pub struct TenantDir {
    root: PathBuf,
    opens: Arc<AtomicU64>,
}

impl TenantDir {
    /// The tenant directory at `root` (it need not exist yet).
    pub fn new(root: impl Into<PathBuf>) -> TenantDir {
        TenantDir {
            root: root.into(),
            opens: Arc::new(AtomicU64::new(0)),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// How many tenant databases this handle has opened so far (all clones).
    pub fn opens(&self) -> u64 {
        self.opens.load(Ordering::Relaxed)
    }

    /// Every tenant, by name.  Files whose names are not valid tenant names,
    /// and symlinks that leave the directory, are left out (with a warning).
    pub fn list(&self) -> Result<Vec<String>> {
        let io = |source| Error::io("listing tenants in", &self.root)(source);
        let entries = match std::fs::read_dir(&self.root) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io(e)),
        };
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io)?;
            let file = entry.file_name();
            let Some(name) = file.to_str().and_then(|f| f.strip_suffix(".db")) else {
                continue;
            };
            match self.path(name) {
                Ok(_) => names.push(name.to_string()),
                Err(e) => tracing::warn!(file = ?file, error = %e, "not a tenant; skipped"),
            }
        }
        names.sort();
        Ok(names)
    }

    /// The path of tenant `name`'s database, checked: a valid name, an
    /// existing regular file, inside the directory.
    pub fn path(&self, name: &str) -> Result<PathBuf> {
        let path = self.path_unchecked(name)?;
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::Missing {
                    what: "tenant",
                    name: name.to_string(),
                })
            }
            Err(source) => {
                return Err(Error::Io {
                    operation: "reading",
                    path,
                    source,
                })
            }
        };
        if meta.file_type().is_symlink() {
            let canon = |p: &Path| p.canonicalize().map_err(Error::io("resolving", p));
            if !canon(&path)?.starts_with(canon(&self.root)?) {
                return Err(Error::invalid(
                    "tenant",
                    format!("{name:?} is a symlink leading out of the tenant directory"),
                ));
            }
        } else if !meta.is_file() {
            return Err(Error::invalid(
                "tenant",
                format!("{name:?} is not a regular file"),
            ));
        }
        Ok(path)
    }

    /// Where tenant `name`'s database is or would be (the name is checked,
    /// the file is not).
    pub fn path_unchecked(&self, name: &str) -> Result<PathBuf> {
        validate_tenant(name)?;
        Ok(self.root.join(format!("{name}.db")))
    }

    /// Open tenant `name` read-only.
    pub fn open_read_only(&self, name: &str) -> Result<Connection> {
        self.open(name, OpenFlags::SQLITE_OPEN_READ_ONLY)
    }

    /// Open tenant `name` for writing (maintenance, restore).
    pub fn open_read_write(&self, name: &str) -> Result<Connection> {
        self.open(name, OpenFlags::SQLITE_OPEN_READ_WRITE)
    }

    fn open(&self, name: &str, flags: OpenFlags) -> Result<Connection> {
        let path = self.path(name)?;
        let conn = Connection::open_with_flags(&path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|e| Error::from_sqlite("opening tenant database", &path, e))?;
        conn.busy_timeout(Duration::from_secs(10))
            .map_err(|e| Error::from_sqlite("opening tenant database", &path, e))?;
        self.opens.fetch_add(1, Ordering::Relaxed);
        Ok(conn)
    }

    /// Create tenant `name`'s database with the tenant schema (WAL mode).
    /// An existing tenant is an error.
    pub fn create(&self, name: &str) -> Result<Connection> {
        let path = self.path_unchecked(name)?;
        std::fs::create_dir_all(&self.root)
            .map_err(Error::io("creating the tenant directory", &self.root))?;
        if path.exists() {
            return Err(Error::invalid("tenant", format!("{name:?} already exists")));
        }
        let map = |e| Error::from_sqlite("creating tenant database", &path, e);
        let conn = Connection::open(&path).map_err(map)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(map)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(map)?;
        conn.execute_batch(TENANT_SCHEMA).map_err(map)?;
        Ok(conn)
    }
}
