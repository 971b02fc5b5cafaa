//! `jobd.toml`: the daemon's configuration.  Every command reads it (from
//! `--config`, else `./jobd.toml` when present); flags and environment
//! variables override it.  Relative paths in it are relative to the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::CliResult;

pub const DEFAULT_LISTEN: &str = "127.0.0.1:7878";
pub const DEFAULT_DATA_DIR: &str = "jobd-data";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub data_dir: Option<PathBuf>,
    pub db: Option<PathBuf>,
    pub listen: Option<String>,
    /// A path prefix for the console and the API behind a reverse proxy.
    pub base_path: Option<String>,
    pub api_token: Option<String>,
    /// Concurrency per queue, over the built-in defaults.
    #[serde(default)]
    pub queues: BTreeMap<String, usize>,
    pub max_concurrency: Option<usize>,
    pub shutdown_grace_secs: Option<u64>,
    pub scheduler: Option<bool>,
    /// Job kinds backed by a program: `[kinds.render_pdf]`.
    #[serde(default)]
    pub kinds: BTreeMap<String, KindConfig>,
    /// The SMTP server of `send_email` and `send_batch_email`.
    pub email: Option<EmailConfig>,
    /// `export_data`: the exportable tables, days kept, the download URL.
    pub exports: Option<jobd_handlers::export::ExportConfig>,
    /// Where job notifications may go (`[notify]`; the webhook secret from
    /// `$JOBD_WEBHOOK_SECRET`).
    pub notify: Option<jobd_handlers::notify::NotifyConfig>,
    /// Who is told when jobs end dead (`[alerts]`, needs `[email]`).
    pub alerts: Option<jobd_handlers::alerts::AlertConfig>,
    /// Where the file was read from (not a setting).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

/// `[email]`: the SMTP server (see `jobd_handlers::email`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    pub host: String,
    pub port: Option<u16>,
    /// `starttls` (the default), `tls` or `none` (loopback only).
    pub tls: Option<jobd_handlers::email::TlsMode>,
    pub username: Option<String>,
    /// The environment variable holding the password (default
    /// `JOBD_SMTP_PASSWORD`).
    pub password_env: Option<String>,
    /// Refused: a password does not belong in this file.
    pub password: Option<String>,
    pub from: String,
    pub timeout: Option<String>,
    pub pool_size: Option<u32>,
    pub batch_size: Option<usize>,
    pub batch_pause: Option<String>,
    /// Certificates (PEM) trusted beside the Mozilla roots; relative to
    /// jobd.toml's folder.
    pub ca_file: Option<PathBuf>,
}

impl EmailConfig {
    /// The server as the mailer takes it, the password read from the
    /// environment; `base` is where relative paths start (jobd.toml's folder).
    pub fn smtp(&self, base: &Path) -> CliResult<jobd_handlers::email::SmtpConfig> {
        if self.password.is_some() {
            return Err(
                "[email] password: keep the SMTP password out of jobd.toml; put it in \
                        the environment (JOBD_SMTP_PASSWORD, or the variable password_env names)"
                    .into(),
            );
        }
        let duration =
            |field: &str, text: &Option<String>, default: u64| -> CliResult<std::time::Duration> {
                match text {
                    None => Ok(std::time::Duration::from_millis(default)),
                    Some(t) => humantime::parse_duration(t).map_err(|e| {
                        format!("[email] {field} = {t:?} is not a duration: {e}").into()
                    }),
                }
            };
        let var = self.password_env.as_deref().unwrap_or("JOBD_SMTP_PASSWORD");
        let password = match &self.username {
            None => None,
            Some(user) => Some(std::env::var(var).map_err(|_| {
                format!("[email] username = {user:?} needs its password in the environment variable {var}")
            })?),
        };
        Ok(jobd_handlers::email::SmtpConfig {
            host: self.host.clone(),
            port: self.port,
            tls: self.tls.unwrap_or(jobd_handlers::email::TlsMode::Starttls),
            username: self.username.clone(),
            password,
            from: self.from.clone(),
            timeout: duration("timeout", &self.timeout, 10_000)?,
            pool_size: self.pool_size.unwrap_or(4),
            batch_size: self.batch_size.unwrap_or(10),
            batch_pause: duration("batch_pause", &self.batch_pause, 1000)?,
            ca_file: self.ca_file.as_ref().map(|f| base.join(f)),
        })
    }
}

/// `[kinds.NAME]`: a job kind run by a program (see
/// `jobd_handlers::command`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KindConfig {
    /// Its queue (default: `default`).
    pub queue: Option<String>,
    /// The program and its arguments, never through a shell.
    pub command: Vec<String>,
    /// Every try ends after this (`"5m"`).
    pub timeout: Option<String>,
    /// Between SIGTERM and SIGKILL when a try is stopped (default `"5s"`).
    pub kill_grace: Option<String>,
    /// Its working directory (default: this file's directory).
    pub cwd: Option<PathBuf>,
    /// Exit codes that fail the job for good (default `[65]`).
    pub permanent_exit_codes: Option<Vec<i32>>,
    /// More environment for the program.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl KindConfig {
    /// The kind as the handler runs it, or what is wrong with it.
    pub fn spec(
        &self,
        kind: &str,
        base: &Path,
        data_dir: &Path,
    ) -> CliResult<jobd_handlers::command::CommandKind> {
        let duration = |field: &str,
                        text: &Option<String>|
         -> CliResult<Option<std::time::Duration>> {
            text.as_deref()
                .map(|t| {
                    humantime::parse_duration(t).map_err(|e| {
                        format!("[kinds.{kind}] {field} = {t:?} is not a duration (\"30s\", \"5m\"): {e}").into()
                    })
                })
                .transpose()
        };
        let mut spec = jobd_handlers::command::CommandKind::new(
            kind,
            self.command.clone(),
            data_dir.to_path_buf(),
        );
        spec.timeout = duration("timeout", &self.timeout)?;
        if let Some(g) = duration("kill_grace", &self.kill_grace)? {
            spec.kill_grace = g;
        }
        spec.cwd = match &self.cwd {
            Some(c) if c.is_relative() => base.join(c),
            Some(c) => c.clone(),
            None => base.to_path_buf(),
        };
        if let Some(codes) = &self.permanent_exit_codes {
            spec.permanent_exit_codes = codes.clone();
        }
        spec.env = self.env.clone();
        spec.check().map_err(|e| format!("[kinds.{kind}]: {e}"))?;
        if let Some(q) = &self.queue {
            jobd::store::validate_name("queue", q).map_err(|e| format!("[kinds.{kind}]: {e}"))?;
        }
        Ok(spec)
    }

    pub fn queue(&self) -> &str {
        self.queue.as_deref().unwrap_or("default")
    }
}

impl Config {
    /// The directory relative paths in the file are relative to.
    pub fn base(&self) -> PathBuf {
        let dir = self
            .path
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new(""));
        std::path::absolute(if dir.as_os_str().is_empty() {
            Path::new(".")
        } else {
            dir
        })
        .unwrap_or_else(|_| PathBuf::from("."))
    }

    /// Queues configured with concurrency 0: served by remote workers only.
    pub fn remote_queues(&self) -> Vec<String> {
        self.queues
            .iter()
            .filter(|(_, n)| **n == 0)
            .map(|(q, _)| q.clone())
            .collect()
    }

    /// Read `explicit`, else `./jobd.toml` if it exists, else defaults.
    pub fn load(explicit: Option<&Path>) -> CliResult<Config> {
        let path = match explicit {
            Some(p) => p.to_path_buf(),
            None if Path::new("jobd.toml").exists() => PathBuf::from("jobd.toml"),
            None => return Ok(Config::default()),
        };
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("reading config {}: {e}", path.display()))?;
        let mut config: Config =
            toml::from_str(&text).map_err(|e| format!("config {}: {e}", path.display()))?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let resolve = |p: PathBuf| {
            let url = p.to_str().is_some_and(jobd::store::postgres::is_url);
            if p.is_relative() && !url {
                base.join(p)
            } else {
                p
            }
        };
        config.data_dir = config.data_dir.map(resolve);
        config.db = config.db.map(resolve);
        config.path = Some(path);
        Ok(config)
    }
}

/// A new random API token: 32 bytes from the OS, hex.
pub fn new_token() -> CliResult<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("no randomness for a token: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// The commented `jobd.toml` that `jobd init` writes.
///
/// `db` is written out when it is a PostgreSQL URL (its password, if any,
/// left out: it belongs in `PGPASSWORD`); a file stays the default.
pub fn template(data_dir: &Path, db: &Path, token: &str) -> String {
    let db_line = match db.to_str().filter(|d| jobd::store::postgres::is_url(d)) {
        Some(url) => format!(
            "db = \"{}\"  # the password, if it needs one, from PGPASSWORD",
            jobd::store::postgres::without_password(url)
        ),
        None => "# db = \"jobd-data/queue.db\"".to_string(),
    };
    format!(
        r#"# jobd configuration. Flags and environment variables (JOBD_DB, JOBD_DATA_DIR,
# JOBD_LISTEN, JOBD_API_TOKEN) override what is here.

# Queue database, tenant databases (tenants/), artifacts/ and backups/.
data_dir = "{data_dir}"
{db_line}

# The HTTP API and dashboard. Keep it on loopback unless a proxy guards it.
listen = "{DEFAULT_LISTEN}"
# Behind a reverse proxy that passes a path prefix on: the console at /jobd/.
# base_path = "/jobd"

# Every /api request needs "Authorization: Bearer <api_token>". Keep this file private.
api_token = "{token}"

# Run the cron scheduler in `jobd serve` (one or several daemons may run it).
scheduler = true

# Jobs run at once, across all queues, per process.
max_concurrency = 16

# On SIGTERM: how long running jobs may take to finish before they are released.
shutdown_grace_secs = 30

# Concurrency per queue (these are the defaults). A queue set to 0 is served
# only by remote workers (the worker protocol): e.g. `reports = 0`.
[queues]
pdf = 2
batch = 1
analytics = 1
maintenance = 1
email = 5
default = 4

# A job kind run by a program of yours: the payload on its stdin as JSON,
# progress and the result as JSON lines on its stdout (docs/workers.md).
# [kinds.render_pdf]
# queue = "pdf"
# command = ["python3", "tasks/render.py"]
# timeout = "5m"

# The SMTP server of send_email and send_batch_email (templates in
# <data_dir>/templates/email/). The password comes from $JOBD_SMTP_PASSWORD.
# [email]
# host = "smtp.example.com"
# port = 587
# tls = "starttls"            # "tls" for port 465; "none" only for a server on loopback
# username = "jobd"
# from = "QR Platform <noreply@example.com>"
"#,
        data_dir = data_dir.display()
    )
}
