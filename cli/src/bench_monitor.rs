//! `kfcache bench monitor` (being written).

use anyhow::{bail, Result};
use clap::Args;

#[derive(Debug, Args)]
pub struct MonitorBenchArgs {}

pub async fn run(_args: MonitorBenchArgs) -> Result<()> {
    bail!("kfcache bench monitor is not available yet")
}
