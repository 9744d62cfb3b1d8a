//! `kfcache nodes` (being written).

use anyhow::{bail, Result};
use clap::Args;

use crate::settings::GlobalArgs;

#[derive(Debug, Args)]
pub struct NodesArgs {}

pub async fn run(_global: &GlobalArgs, _args: NodesArgs) -> Result<()> {
    bail!("kfcache nodes is not available yet")
}
