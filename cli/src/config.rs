//! Cache connection settings for `kfcache cache` and `kfcache bench cache`, merged here from
//! (highest first) flags, `KFCACHE_*` environment variables and the TOML config file
//! (`$KFCACHE_CONFIG`, else `$XDG_CONFIG_HOME/kfcache/config.toml`, else
//! `~/.config/kfcache/config.toml`), and handed to the libraries as plain structs.
//!
//! ```toml
//! [ignite]
//! addresses = ["10.0.0.5:10800", "10.0.0.6:10800"]
//! username = "ignite"          # optional, with password
//! password = "ignite"
//! tls_ca = "/etc/kfcache/ca.pem"   # optional: TLS to the thin-client port
//! connect_timeout_secs = 5
//! request_timeout_secs = 60
//!
//! [cache]
//! name = "kfcache"             # Ignite cache (chunks); metadata goes to NAME.meta
//! key_prefix = "default"       # prefix of every key (formerly `namespace`)
//! backups = 1
//! chunk_size = "4MiB"
//!
//! [s3]
//! endpoint = "http://127.0.0.1:9000"   # a local S3 server (path-style requests)
//! region = "us-east-1"
//! allow_http = true
//!
//! [source]                     # every network source (S3, GCS, Azure, HTTP)
//! max_retries = 10             # retries of a failed request (5xx, refused, timed out)
//! retry_timeout_secs = 180     # no retry after this long since the first try
//! request_timeout_secs = 30    # one request, start to end (a hung server)
//! connect_timeout_secs = 5
//!
//! [pvc]                        # claim name = local mount root (NFS)
//! training-data = "/mnt/training-data"
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use kfcache_ops::units::{human_size, parse_size};

use anyhow::{bail, Context, Result};
use clap::Args;
use kfcache_ignite::{ClientConfig, TlsConfig};
use kfcache_prefetcher::{IgniteSinkConfig, LayoutConfig, SourceConfig, DEFAULT_CHUNK_SIZE};
use serde::Deserialize;

/// Address used when none is configured anywhere.
pub const DEFAULT_IGNITE_ADDRESS: &str = "127.0.0.1:10800";

/// Flags shared by the cache commands.
#[derive(Debug, Clone, Default, Args)]
pub struct ConnectionArgs {
    /// Ignite thin-client addresses, comma-separated [env: KFCACHE_IGNITE] [default: from the
    /// config file, else 127.0.0.1:10800].
    #[arg(long, global = true, value_name = "ADDRS")]
    pub ignite: Option<String>,

    /// Config file [default: $KFCACHE_CONFIG, else ~/.config/kfcache/config.toml].
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Prefix of every cache key, the same for every Kubernetes namespace
    /// [env: KFCACHE_KEY_PREFIX] [default: from the config file, else "default"]. Formerly
    /// --namespace (KFCACHE_NAMESPACE), still accepted.
    #[arg(long, alias = "namespace", global = true, value_name = "PREFIX")]
    pub key_prefix: Option<String>,

    /// The Kubernetes namespace whose objects these are: keys go under PREFIX.NS, so
    /// pipelines of two namespaces never see each other's staged objects [default: the
    /// sidecar's --run-namespace; for prefetch, the namespace recorded for its --run].
    /// Formerly --tenant (KFCACHE_TENANT), still accepted.
    #[arg(
        long,
        alias = "tenant",
        global = true,
        value_name = "NS",
        env = "KFCACHE_K8S_NAMESPACE"
    )]
    pub k8s_namespace: Option<String>,

    /// Ignite cache name [default: from the config file, else "kfcache"].
    #[arg(long, global = true, value_name = "NAME")]
    pub cache_name: Option<String>,

    /// Backup copies of each partition when the cache is created [default: 1].
    #[arg(long, global = true, value_name = "N")]
    pub backups: Option<u32>,

    /// Chunk size for new objects, e.g. 4MiB [default: from the config file, else 4MiB].
    #[arg(long, global = true, value_name = "SIZE", value_parser = parse_size)]
    pub chunk_size: Option<u64>,

    /// S3 endpoint for s3:// URIs (a local server such as MinIO or moto).
    #[arg(long, global = true, value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// S3 region [default: from the config file, else the AWS environment].
    #[arg(long, global = true, value_name = "REGION")]
    pub s3_region: Option<String>,

    /// Retries of a failed request to a network source (S3, GCS, Azure, HTTP): a 5xx answer,
    /// a refused or dropped connection, a timed-out read; with exponential backoff. A request
    /// is tried at most 1 + N times [default: from the config file, else 10].
    #[arg(long, global = true, value_name = "N")]
    pub source_max_retries: Option<usize>,

    /// No retry of a source request after this long since its first try, e.g. 30s
    /// [default: from the config file, else 3m].
    #[arg(long, global = true, value_name = "DURATION", value_parser = kfcache_ops::units::parse_duration)]
    pub source_retry_timeout: Option<Duration>,

    /// Limit for one source request from its start to the end of its response, so a hung
    /// server fails (and the request is retried), e.g. 10s [default: from the config file,
    /// else 30s].
    #[arg(long, global = true, value_name = "DURATION", value_parser = kfcache_ops::units::parse_duration)]
    pub source_request_timeout: Option<Duration>,

    /// Limit for connecting to a network source [default: from the config file, else 5s].
    #[arg(long, global = true, value_name = "DURATION", value_parser = kfcache_ops::units::parse_duration)]
    pub source_connect_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    #[serde(default)]
    ignite: IgniteFile,
    #[serde(default)]
    cache: CacheFile,
    #[serde(default)]
    s3: S3File,
    #[serde(default)]
    source: SourceFile,
    #[serde(default)]
    pvc: BTreeMap<String, PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct IgniteFile {
    addresses: Option<Vec<String>>,
    username: Option<String>,
    password: Option<String>,
    tls_ca: Option<PathBuf>,
    tls_server_name: Option<String>,
    connect_timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CacheFile {
    name: Option<String>,
    #[serde(alias = "namespace")]
    key_prefix: Option<String>,
    backups: Option<u32>,
    chunk_size: Option<SizeValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct S3File {
    endpoint: Option<String>,
    region: Option<String>,
    allow_http: Option<bool>,
}

/// Retries and timeouts of every network source.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct SourceFile {
    max_retries: Option<usize>,
    retry_timeout_secs: Option<u64>,
    request_timeout_secs: Option<u64>,
    connect_timeout_secs: Option<u64>,
}

/// A size written as a number of bytes or as text (`"4MiB"`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum SizeValue {
    Bytes(u64),
    Text(String),
}

/// Everything the cache commands need, resolved.
#[derive(Debug, Clone)]
pub struct CacheSettings {
    pub client: ClientConfig,
    /// Where the addresses came from, for error messages.
    pub addresses_origin: String,
    pub sink: IgniteSinkConfig,
    /// `layout.namespace` is the key namespace: the configured namespace, followed by
    /// `.TENANT` when the objects belong to a Kubernetes namespace.
    pub layout: LayoutConfig,
    pub source: SourceConfig,
    /// The configured namespace, without a tenant: sidecar events live there, so that one
    /// drain reads the events of every tenant.
    pub base_namespace: String,
    /// The Kubernetes namespace the key namespace is scoped to, if any.
    pub tenant: Option<String>,
}

impl CacheSettings {
    /// Scopes the key namespace to the Kubernetes namespace `tenant` when no tenant was named
    /// (`--k8s-namespace`, `KFCACHE_K8S_NAMESPACE`); a named one stays. Refuses a name that is not a
    /// Kubernetes namespace name.
    pub fn default_tenant(&mut self, tenant: Option<&str>) -> Result<()> {
        match (&self.tenant, tenant.filter(|t| !t.is_empty())) {
            (None, Some(tenant)) => self.set_tenant(tenant),
            _ => Ok(()),
        }
    }

    fn set_tenant(&mut self, tenant: &str) -> Result<()> {
        check_tenant(tenant)?;
        self.layout.namespace = format!("{}.{tenant}", self.base_namespace);
        self.tenant = Some(tenant.to_string());
        Ok(())
    }
}

/// A Kubernetes namespace name (an RFC 1123 label): at most 63 lowercase letters, digits and
/// '-', starting and ending with a letter or digit. Nothing else may reach a key namespace.
pub fn check_tenant(tenant: &str) -> Result<()> {
    let valid = !tenant.is_empty()
        && tenant.len() <= 63
        && tenant
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !tenant.starts_with('-')
        && !tenant.ends_with('-');
    if !valid {
        bail!(
            "tenant {tenant:?} is not a Kubernetes namespace name (lowercase letters, digits and '-', at most 63)"
        );
    }
    Ok(())
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn config_path(args: &ConnectionArgs) -> Result<Option<(PathBuf, bool)>> {
    if let Some(path) = &args.config {
        return Ok(Some((path.clone(), true)));
    }
    if let Some(path) = std::env::var_os("KFCACHE_CONFIG").filter(|p| !p.is_empty()) {
        return Ok(Some((PathBuf::from(path), true)));
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| Path::new(&home).join(".config")));
    Ok(base.map(|base| (base.join("kfcache").join("config.toml"), false)))
}

fn load_file(args: &ConnectionArgs) -> Result<(FileConfig, Option<PathBuf>)> {
    let Some((path, required)) = config_path(args)? else {
        return Ok((FileConfig::default(), None));
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok((FileConfig::default(), None));
        }
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot read config file {}", path.display()))
        }
    };
    let config: FileConfig =
        toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))?;
    Ok((config, Some(path)))
}

impl ConnectionArgs {
    /// Ignite addresses and where they came from.
    fn addresses(&self, file: &FileConfig, file_path: Option<&Path>) -> (Vec<String>, String) {
        let split = |list: &str| ClientConfig::from_address_list(list).addresses;
        if let Some(list) = &self.ignite {
            return (split(list), "--ignite".to_string());
        }
        if let Some(list) = env_nonempty("KFCACHE_IGNITE") {
            return (split(&list), "KFCACHE_IGNITE".to_string());
        }
        if let (Some(addresses), Some(path)) = (&file.ignite.addresses, file_path) {
            if !addresses.is_empty() {
                return (addresses.clone(), format!("config file {}", path.display()));
            }
        }
        (
            vec![DEFAULT_IGNITE_ADDRESS.to_string()],
            "the default (no --ignite, KFCACHE_IGNITE or config file addresses)".to_string(),
        )
    }

    /// Merges flags, environment and config file.
    pub fn resolve(&self) -> Result<CacheSettings> {
        let (file, file_path) = load_file(self)?;
        let (addresses, addresses_origin) = self.addresses(&file, file_path.as_deref());
        if addresses.is_empty() {
            bail!("no Ignite address given ({addresses_origin} is empty)");
        }
        let mut client = ClientConfig::new(addresses);
        if let Some(secs) = file.ignite.connect_timeout_secs {
            client = client.with_connect_timeout(Duration::from_secs(secs));
        }
        if let Some(secs) = file.ignite.request_timeout_secs {
            client = client.with_request_timeout(Duration::from_secs(secs));
        }
        let username = env_nonempty("KFCACHE_IGNITE_USERNAME").or(file.ignite.username.clone());
        let password = env_nonempty("KFCACHE_IGNITE_PASSWORD").or(file.ignite.password.clone());
        match (username, password) {
            (Some(username), Some(password)) => {
                client = client.with_credentials(username, password);
            }
            (None, None) => {}
            _ => bail!("Ignite username and password must be given together"),
        }
        if let Some(ca_file) = &file.ignite.tls_ca {
            client = client.with_tls(TlsConfig {
                ca_file: ca_file.clone(),
                server_name: file.ignite.tls_server_name.clone(),
            });
        }

        let sink = IgniteSinkConfig {
            cache_name: self
                .cache_name
                .clone()
                .or(file.cache.name.clone())
                .unwrap_or_else(|| IgniteSinkConfig::default().cache_name),
            backups: self
                .backups
                .or(file.cache.backups)
                .unwrap_or_else(|| IgniteSinkConfig::default().backups),
        };
        let chunk_size = match (self.chunk_size, &file.cache.chunk_size) {
            (Some(size), _) => size,
            (None, Some(SizeValue::Bytes(size))) => *size,
            (None, Some(SizeValue::Text(text))) => parse_size(text)
                .map_err(anyhow::Error::msg)
                .context("cache.chunk_size")?,
            (None, None) => DEFAULT_CHUNK_SIZE,
        };
        let layout = LayoutConfig {
            namespace: self
                .key_prefix
                .clone()
                .or(env_nonempty("KFCACHE_KEY_PREFIX"))
                .or(env_nonempty("KFCACHE_NAMESPACE"))
                .or(file.cache.key_prefix.clone())
                .unwrap_or_else(|| LayoutConfig::default().namespace),
            chunk_size,
            ..LayoutConfig::default()
        };
        let source = SourceConfig {
            s3_endpoint: self.s3_endpoint.clone().or(file.s3.endpoint.clone()),
            s3_region: self.s3_region.clone().or(file.s3.region.clone()),
            s3_allow_http: file.s3.allow_http,
            pvc_roots: file.pvc.clone(),
            max_retries: self.source_max_retries.or(file.source.max_retries),
            retry_timeout: self
                .source_retry_timeout
                .or(file.source.retry_timeout_secs.map(Duration::from_secs)),
            request_timeout: self
                .source_request_timeout
                .or(file.source.request_timeout_secs.map(Duration::from_secs)),
            connect_timeout: self
                .source_connect_timeout
                .or(file.source.connect_timeout_secs.map(Duration::from_secs)),
        };
        let base_namespace = layout.namespace.clone();
        let mut settings = CacheSettings {
            client,
            addresses_origin,
            sink,
            layout,
            source,
            base_namespace,
            tenant: None,
        };
        let k8s_namespace = self
            .k8s_namespace
            .clone()
            .or(env_nonempty("KFCACHE_TENANT"));
        if let Some(tenant) = k8s_namespace.as_deref().filter(|t| !t.is_empty()) {
            settings.set_tenant(tenant)?;
        }
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("4MiB"), Ok(4 << 20));
        assert_eq!(parse_size("4M"), Ok(4 << 20));
        assert_eq!(parse_size("1.5KiB"), Ok(1536));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("123"), Ok(123));
        assert!(parse_size("4 parsecs").is_err());
        assert!(parse_size("").is_err());
        assert!(parse_size("1e999").is_err());
        assert_eq!(human_size(0), "0 B");
        assert_eq!(human_size(4 << 20), "4.0 MiB");
        assert_eq!(human_size(1536), "1.5 KiB");
        assert_eq!(human_size(u64::MAX), "16.0 EiB");
    }

    #[test]
    fn config_file_parses() {
        let text = r#"
            [ignite]
            addresses = ["10.0.0.5:10800"]
            [cache]
            namespace = "team-a"
            chunk_size = "1MiB"
            [s3]
            endpoint = "http://127.0.0.1:9000"
            [pvc]
            data = "/mnt/data"
        "#;
        let file: FileConfig = toml::from_str(text).expect("parses");
        assert_eq!(file.pvc.get("data"), Some(&PathBuf::from("/mnt/data")));
        assert!(matches!(file.cache.chunk_size, Some(SizeValue::Text(_))));
        // `namespace` is the former name of `key_prefix`.
        assert_eq!(file.cache.key_prefix.as_deref(), Some("team-a"));
        let renamed: FileConfig =
            toml::from_str("[cache]\nkey_prefix = \"team-b\"").expect("parses");
        assert_eq!(renamed.cache.key_prefix.as_deref(), Some("team-b"));
        assert!(toml::from_str::<FileConfig>("[ignite]\nadress = 1").is_err());
    }

    #[test]
    fn source_retries_and_timeouts_come_from_the_file_and_flags_win() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "[source]\nmax_retries = 4\nretry_timeout_secs = 20\nrequest_timeout_secs = 7\nconnect_timeout_secs = 2\n",
        )
        .expect("writes");
        let args = ConnectionArgs {
            config: Some(path),
            source_max_retries: Some(1),
            source_request_timeout: Some(Duration::from_millis(1500)),
            ..ConnectionArgs::default()
        };
        let source = args.resolve().expect("resolves").source;
        assert_eq!(source.max_retries, Some(1));
        assert_eq!(source.retry_timeout, Some(Duration::from_secs(20)));
        assert_eq!(source.request_timeout, Some(Duration::from_millis(1500)));
        assert_eq!(source.connect_timeout, Some(Duration::from_secs(2)));
    }
}
