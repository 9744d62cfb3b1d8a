//! `kfcache cron` (being written).

use anyhow::{bail, Result};
use clap::Args;

use crate::settings::GlobalArgs;

#[derive(Debug, Args)]
pub struct CronArgs {}

pub async fn run(_global: &GlobalArgs, _args: CronArgs) -> Result<()> {
    bail!("kfcache cron is not available yet")
}
