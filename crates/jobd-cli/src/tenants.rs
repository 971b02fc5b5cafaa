//! `jobd tenants seed | list` and `jobd backup run | list | restore`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use jobd_handlers::backup::{self, BackupOptions};
use jobd_handlers::tenants::{seed, SeedOptions};
use jobd_handlers::{DataDir, Reporter};

use super::{iso, CliResult};

#[derive(Subcommand, Debug)]
pub enum TenantsCommand {
    /// Create demo tenant databases (deterministic; existing ones are kept).
    Seed {
        /// How many tenants (tenant-001, tenant-002, …).
        #[arg(long, default_value_t = 101)]
        count: usize,
        /// Scans per tenant.
        #[arg(long, default_value_t = 100_000)]
        scans: usize,
        /// QR templates per tenant.
        #[arg(long, default_value_t = 40)]
        templates: usize,
        /// Seed of the generated data (the same seed gives the same databases).
        #[arg(long, default_value_t = 42)]
        seed: u64,
    },
    /// The tenants found in the tenant directory.
    List {
        #[arg(long)]
        json: bool,
    },
}

pub fn tenants(data_dir: &Path, cmd: TenantsCommand) -> CliResult {
    let data = DataDir::new(data_dir);
    match cmd {
        TenantsCommand::Seed {
            count,
            scans,
            templates,
            seed: s,
        } => {
            let opts = SeedOptions {
                tenants: count,
                scans_per_tenant: scans,
                templates_per_tenant: templates,
                seed: s,
                ..SeedOptions::default()
            };
            let report = seed(data.tenants(), &opts)?;
            println!(
                "{}: created {} tenants ({} templates, {} scans), kept {} existing",
                data.tenants().root().display(),
                report.created.len(),
                report.templates,
                report.scans,
                report.existing.len()
            );
        }
        TenantsCommand::List { json } => {
            let tenants = data.tenants().list()?;
            if json {
                println!("{}", serde_json::to_string_pretty(&tenants)?);
            } else {
                for t in tenants {
                    println!("{t}");
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand, Debug)]
pub enum BackupCommand {
    /// Back up every tenant now (in this process) into a new set.
    Run {
        /// Backup sets to keep.
        #[arg(long, default_value_t = 7)]
        keep: usize,
        /// Leave the queue file out.
        #[arg(long)]
        no_queue: bool,
        /// Folders of the data directory to archive (default uploads and
        /// logs, those that exist).
        #[arg(long = "folder")]
        folders: Vec<String>,
    },
    /// Write the queue file of a backup set to a new path (stop the daemon,
    /// then move it into place).
    RestoreQueue {
        set: String,
        /// Where to write it; must not exist.
        #[arg(long)]
        to: PathBuf,
    },
    /// Unpack a folder of a backup set into a new (or empty) folder.
    RestoreFolder {
        set: String,
        /// The folder as the set names it (uploads, logs).
        folder: String,
        /// Where to unpack it; must not exist or be empty.
        #[arg(long)]
        to: PathBuf,
    },
    /// The backup sets, oldest first.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Bring a tenant back from a backup set.
    Restore {
        /// The set (a name from `jobd backup list`, like 20261123T020000Z).
        set: String,
        tenant: String,
        /// The most the restored database may take in staging, in bytes
        /// (default 4 GiB): a manifest claiming more is refused before
        /// anything is written.
        #[arg(long, default_value_t = backup::DEFAULT_RESTORE_MAX_BYTES)]
        max_bytes: u64,
    },
}

pub fn backup(db: &Path, data_dir: &Path, cmd: BackupCommand) -> CliResult {
    let data = DataDir::new(data_dir);
    match cmd {
        BackupCommand::Run {
            keep,
            no_queue,
            folders,
        } => {
            let now = jobd::Clock::now_ms(&jobd::SystemClock);
            let opts = BackupOptions {
                keep,
                queue: !no_queue,
                folders: (!folders.is_empty()).then_some(folders),
                ..BackupOptions::default()
            };
            let queue = db.exists().then_some(db);
            let m = backup::backup_set(&data, &opts, queue, now, &Reporter::silent())?;
            let failures = m.failures();
            for (what, error) in &failures {
                eprintln!("{what}: FAILED: {error}");
            }
            if let Some(q) = &m.queue {
                println!(
                    "queue file: {} -> {} bytes",
                    q.source_bytes, q.compressed_bytes
                );
            }
            for f in &m.folders {
                println!(
                    "{}/: {} files, {} -> {} bytes",
                    f.folder, f.files, f.source_bytes, f.compressed_bytes
                );
            }
            println!(
                "backup set {} at {}: {} ok, {} failed, {} -> {} bytes ({:.1}x) in {} ms",
                m.set,
                m.path.display(),
                m.ok,
                m.failed,
                m.source_bytes,
                m.compressed_bytes,
                m.source_bytes as f64 / m.compressed_bytes.max(1) as f64,
                m.duration_ms
            );
            if !failures.is_empty() {
                return Ok(ExitCode::FAILURE);
            }
        }
        BackupCommand::List { json } => {
            if json {
                let manifests = backup::list_sets(&data)?
                    .iter()
                    .map(|set| backup::read_manifest(&data.backups().join(set)))
                    .collect::<jobd::Result<Vec<_>>>()?;
                println!("{}", serde_json::to_string_pretty(&manifests)?);
                return Ok(ExitCode::SUCCESS);
            }
            for set in backup::list_sets(&data)? {
                let m = backup::read_manifest(&data.backups().join(&set))?;
                println!(
                    "{set}  {}  {} ok, {} failed, {} bytes",
                    iso(m.created_at),
                    m.ok,
                    m.failed,
                    m.compressed_bytes
                );
            }
        }
        BackupCommand::RestoreQueue { set, to } => {
            let bytes = backup::restore_queue(&data, &set, &to)?;
            println!(
                "queue file of {set} written to {} ({bytes} bytes); stop jobd, then move it into place",
                to.display()
            );
        }
        BackupCommand::RestoreFolder { set, folder, to } => {
            let r = backup::restore_folder(&data, &set, &folder, &to)?;
            println!(
                "{folder}/ of {set} unpacked into {} ({} files, {} bytes)",
                to.display(),
                r.files,
                r.bytes
            );
        }
        BackupCommand::Restore {
            set,
            tenant,
            max_bytes,
        } => {
            let opts = backup::RestoreOptions { max_bytes };
            let r = backup::restore_with(&data, &set, &tenant, &opts)?;
            println!(
                "tenant {} restored from {} ({} bytes{})",
                r.tenant,
                r.set,
                r.bytes,
                if r.replaced {
                    ", replaced its contents"
                } else {
                    ""
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
