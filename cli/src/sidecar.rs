//! `kfcache sidecar` (being written).

use anyhow::{bail, Result};
use clap::Args;

use crate::settings::GlobalArgs;

#[derive(Debug, Args)]
pub struct SidecarArgs {}

pub async fn run(_global: &GlobalArgs, _args: SidecarArgs) -> Result<()> {
    bail!("kfcache sidecar is not available yet")
}
