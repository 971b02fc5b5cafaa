//! `jobd token add|list|revoke`: API tokens with a role, for the HTTP API
//! and the worker protocol.  A new token is printed once; the queue file
//! keeps only its SHA-256.

use std::path::Path;
use std::process::ExitCode;

use clap::Subcommand;
use jobd::store::Role;
use sha2::{Digest, Sha256};

use super::config::new_token;
use super::{open, CliResult};

#[derive(Subcommand, Debug)]
pub enum TokenCommand {
    /// Make a new token and print it (once: only its hash is kept).
    Add {
        /// The token's name: its remote workers are registered as NAME/<worker>.
        name: String,
        /// admin (everything), producer (enqueue and read jobs) or worker
        /// (the worker protocol and its own jobs).
        #[arg(long)]
        role: String,
    },
    /// The tokens' names and roles.
    List,
    /// Remove a token: it stops working within two seconds.
    Revoke { name: String },
}

pub fn token(db: &Path, cmd: TokenCommand) -> CliResult {
    let store = open(db)?;
    match cmd {
        TokenCommand::Add { name, role } => {
            let role = Role::parse(&role)?;
            let token = new_token()?;
            let hash: [u8; 32] = Sha256::digest(token.as_bytes()).into();
            store.add_api_token(&name, role, &hash)?;
            eprintln!(
                "token {name:?} ({}) added; it is printed once, below: keep it secret",
                role.as_str()
            );
            println!("{token}");
        }
        TokenCommand::List => {
            let tokens = store.api_tokens()?;
            if tokens.is_empty() {
                println!("no tokens (the daemon's api_token is its admin token)");
            }
            for t in tokens {
                println!(
                    "{:<24} {:<9} created {}",
                    t.name,
                    t.role.as_str(),
                    super::iso(t.created_at)
                );
            }
        }
        TokenCommand::Revoke { name } => {
            if !store.revoke_api_token(&name)? {
                return Err(format!("no token named {name:?} (jobd token list shows them)").into());
            }
            println!("token {name:?} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}
