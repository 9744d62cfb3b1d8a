//! Running the `kfcache` binary the way the CLI tests do: from the workspace root (so paths
//! in its output are relative and stable) with its own database. Each test binary uses a
//! different part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// `kfcache` run from the workspace root with a database in `db_dir`.
pub fn kfcache(db_dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("kfcache").expect("binary built");
    cmd.current_dir(workspace())
        .env("KFCACHE_DB", db_dir.join("kfcache.db"))
        .env_remove("RUST_LOG")
        .env("NO_COLOR", "1");
    cmd
}

/// Run `cmd`, require success, and return its standard output.
pub fn stdout_of(cmd: &mut Command) -> String {
    let out = cmd.output().expect("kfcache runs");
    assert!(
        out.status.success(),
        "kfcache failed ({:?}):\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}
