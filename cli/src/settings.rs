//! Settings shared by every subcommand, merged from flags and `KFCACHE_*` environment
//! variables here in the binary and handed to the libraries as plain values.

use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Args;

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// SQLite database file [default: $KFCACHE_DB, else $XDG_DATA_HOME/kfcache/kfcache.db,
    /// else ~/.local/share/kfcache/kfcache.db].
    #[arg(long, global = true, value_name = "PATH")]
    pub db: Option<PathBuf>,

    /// More log output (-v info, -vv debug); logs go to stderr. `RUST_LOG` overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

impl GlobalArgs {
    /// The database path: `--db`, else the environment-derived default.
    pub fn db_path(&self) -> Result<PathBuf> {
        if let Some(path) = &self.db {
            return Ok(path.clone());
        }
        kfcache_schema::default_db_path(
            std::env::var_os("KFCACHE_DB").as_deref(),
            std::env::var_os("XDG_DATA_HOME").as_deref(),
            std::env::var_os("HOME").as_deref(),
        )
        .context("no database path: pass --db PATH or set KFCACHE_DB (HOME is not set either)")
    }
}

pub fn init_tracing(global: &GlobalArgs) {
    use tracing_subscriber::EnvFilter;
    let default = match global.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
