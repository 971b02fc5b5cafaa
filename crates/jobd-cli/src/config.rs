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
    pub api_token: Option<String>,
    /// Concurrency per queue, over the built-in defaults.
    #[serde(default)]
    pub queues: BTreeMap<String, usize>,
    pub max_concurrency: Option<usize>,
    pub shutdown_grace_secs: Option<u64>,
    pub scheduler: Option<bool>,
    /// Where the file was read from (not a setting).
    #[serde(skip)]
    pub path: Option<PathBuf>,
}

impl Config {
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
        let resolve = |p: PathBuf| if p.is_relative() { base.join(p) } else { p };
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
pub fn template(data_dir: &Path, token: &str) -> String {
    format!(
        r#"# jobd configuration. Flags and environment variables (JOBD_DB, JOBD_DATA_DIR,
# JOBD_LISTEN, JOBD_API_TOKEN) override what is here.

# Queue database, tenant databases (tenants/), artifacts/ and backups/.
data_dir = "{data_dir}"
# db = "jobd-data/queue.db"

# The HTTP API and dashboard. Keep it on loopback unless a proxy guards it.
listen = "{DEFAULT_LISTEN}"

# Every /api request needs "Authorization: Bearer <api_token>". Keep this file private.
api_token = "{token}"

# Run the cron scheduler in `jobd serve` (one or several daemons may run it).
scheduler = true

# Jobs run at once, across all queues, per process.
max_concurrency = 16

# On SIGTERM: how long running jobs may take to finish before they are released.
shutdown_grace_secs = 30

# Concurrency per queue (these are the defaults).
[queues]
pdf = 2
batch = 1
analytics = 1
maintenance = 1
email = 5
default = 4
"#,
        data_dir = data_dir.display()
    )
}
