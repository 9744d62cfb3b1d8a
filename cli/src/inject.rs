//! `kfcache inject` (being written).

use anyhow::{bail, Result};
use clap::Args;

use crate::settings::GlobalArgs;

#[derive(Debug, Args)]
pub struct InjectArgs {}

pub async fn run(_global: &GlobalArgs, _args: InjectArgs) -> Result<()> {
    bail!("kfcache inject is not available yet")
}
