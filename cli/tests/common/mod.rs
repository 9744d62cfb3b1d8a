//! Running the `kfcache` binary the way the CLI tests do: from the workspace root (so paths
//! in its output are relative and stable) with its own database. Each test binary uses a
//! different part of it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};

use assert_cmd::Command;

pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Every `KFCACHE_*` variable the binary reads, plus any other `KFCACHE_*` (and `RUST_LOG`) in
/// the test's own environment: a developer's shell must not change the keys, addresses or
/// logs of the commands the tests run.
pub fn kfcache_variables() -> Vec<String> {
    const READ_BY_KFCACHE: &[&str] = &[
        "KFCACHE_CACHE_TIMEOUT",
        "KFCACHE_CONFIG",
        "KFCACHE_DB",
        "KFCACHE_DEADLINE",
        "KFCACHE_IGNITE",
        "KFCACHE_IGNITE_PASSWORD",
        "KFCACHE_IGNITE_USERNAME",
        "KFCACHE_K8S_NAMESPACE",
        "KFCACHE_KEY_PREFIX",
        "KFCACHE_NAMESPACE",
        "KFCACHE_NODE_NAME",
        "KFCACHE_POD",
        "KFCACHE_READ_BANDWIDTH_MBPS",
        "KFCACHE_RUN",
        "KFCACHE_RUN_NAMESPACE",
        "KFCACHE_TASK",
        "KFCACHE_TENANT",
        "RUST_LOG",
    ];
    let mut names: Vec<String> = READ_BY_KFCACHE.iter().map(|n| n.to_string()).collect();
    names.extend(std::env::vars_os().filter_map(|(name, _)| {
        let name = name.into_string().ok()?;
        name.starts_with("KFCACHE_").then_some(name)
    }));
    names.sort();
    names.dedup();
    names
}

/// Clears [`kfcache_variables`] from a command, whichever kind of command it is.
pub trait WithoutKfcacheEnv {
    fn without_kfcache_env(&mut self) -> &mut Self;
}

impl WithoutKfcacheEnv for Command {
    fn without_kfcache_env(&mut self) -> &mut Self {
        for name in kfcache_variables() {
            self.env_remove(name);
        }
        self
    }
}

impl WithoutKfcacheEnv for tokio::process::Command {
    fn without_kfcache_env(&mut self) -> &mut Self {
        for name in kfcache_variables() {
            self.env_remove(name);
        }
        self
    }
}

impl WithoutKfcacheEnv for std::process::Command {
    fn without_kfcache_env(&mut self) -> &mut Self {
        for name in kfcache_variables() {
            self.env_remove(name);
        }
        self
    }
}

/// `kfcache` run from the workspace root with a database in `db_dir`, and none of the
/// caller's `KFCACHE_*` settings.
pub fn kfcache(db_dir: &Path) -> Command {
    let mut cmd = Command::cargo_bin("kfcache").expect("binary built");
    cmd.current_dir(workspace())
        .without_kfcache_env()
        .env("KFCACHE_DB", db_dir.join("kfcache.db"))
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

/// The value of a variable `scripts/services.sh env` exports; a missing one fails the test
/// with instructions, never passes it silently.
pub fn env(variable: &str) -> String {
    match std::env::var(variable) {
        Ok(value) if !value.trim().is_empty() => value,
        _ => panic!(
            "{variable} is not set. This test needs the real Ignite and S3 servers: run \
             `bash scripts/test.sh`, or `scripts/services.sh up && eval \"$(scripts/services.sh env)\"` \
             before `cargo test`."
        ),
    }
}

/// A name no other test run uses.
pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}-{}-{nanos}", std::process::id())
}

/// Creates a bucket on the S3 server (moto accepts an unsigned `PUT /bucket`).
pub async fn create_bucket(endpoint: &str, bucket: &str) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = endpoint.trim_start_matches("http://").trim_end_matches('/');
    let mut stream = tokio::net::TcpStream::connect(host)
        .await
        .unwrap_or_else(|e| panic!("cannot reach the S3 server at {host}: {e}"));
    let request = format!(
        "PUT /{bucket} HTTP/1.1\r\nhost: {host}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("cannot send to the S3 server at {host}: {e}"));
    let mut answer = String::new();
    stream
        .read_to_string(&mut answer)
        .await
        .unwrap_or_else(|e| panic!("no answer from the S3 server at {host}: {e}"));
    assert!(
        answer.starts_with("HTTP/1.1 200") || answer.contains("BucketAlreadyOwnedByYou"),
        "cannot create bucket {bucket}: {answer}"
    );
}

/// A client of `bucket` on the test S3 server, with the credentials of the environment.
pub fn s3_store(endpoint: &str, bucket: &str) -> object_store::aws::AmazonS3 {
    object_store::aws::AmazonS3Builder::from_env()
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_bucket_name(bucket)
        .build()
        .unwrap_or_else(|e| panic!("an S3 client for {endpoint}/{bucket}: {e}"))
}

/// Deterministic, incompressible-looking bytes, different for each `seed`.
pub fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
