//! `kfcache-node-agent`: the test node agent that stands in for the kubelet on kwok's fake nodes.
//!
//! A thin shell: it parses flags, connects to the API server (kubeconfig from `--kubeconfig`,
//! `KUBECONFIG` or the usual places), builds an [`AgentConfig`] and runs [`agent::run`] until
//! SIGTERM or SIGINT, then kills the container processes it started.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use kfcache_k8s_e2e::config::image_mappings;
use kfcache_k8s_e2e::{agent, AgentConfig};
use kube::config::{KubeConfigOptions, Kubeconfig};

/// Runs the pods that the control plane binds to fake nodes as local processes.
#[derive(Debug, Parser)]
#[command(name = "kfcache-node-agent", version)]
struct Args {
    /// A node to serve (repeatable). Without it: every node annotated kwok.x-k8s.io/node=fake.
    #[arg(long = "node")]
    nodes: Vec<String>,
    /// Where pod volumes, container roots and logs are kept.
    #[arg(long, env = "KFCACHE_NODE_AGENT_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// PREFIX=DIR: images starting with PREFIX get DIR at /kfcache-image/bin, first on PATH.
    #[arg(long = "image-bin")]
    image_bins: Vec<String>,
    /// PREFIX=CMD: the entrypoint of images starting with PREFIX (a JSON array or words).
    #[arg(long = "image-entrypoint")]
    image_entrypoints: Vec<String>,
    /// CA bundle for service account volumes when a namespace has no kube-root-ca.crt ConfigMap.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The kubeconfig to use (default: KUBECONFIG, then ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The address reported as hostIP and podIP, and where the kubelet endpoint listens.
    #[arg(long, default_value = "127.0.0.1")]
    node_ip: String,
    /// Port of the kubelet stand-in endpoint that receives Argo's pods/exec kill commands
    /// (0: any free port; it is written into the nodes' status).
    #[arg(long, default_value_t = 0)]
    kubelet_port: u16,
    /// Serve no kubelet endpoint (Argo's pods/exec calls then fail, as with no kubelet at all).
    #[arg(long)]
    no_kubelet_endpoint: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KFCACHE_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let args = Args::parse();
    kfcache_k8s_e2e::install_crypto_provider();
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path)
                .with_context(|| format!("reading {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?
        }
        None => kube::Config::infer()
            .await
            .context("finding a kubeconfig")?,
    };
    let root_cert = config.root_cert.clone();
    let root_cert_file = config.root_cert_file.clone();
    let api_host = config
        .cluster_url
        .host()
        .unwrap_or("127.0.0.1")
        .trim_matches(['[', ']'])
        .to_string();
    let api_port = config.cluster_url.port_u16().unwrap_or(443);
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;
    let state_dir = match args.state_dir {
        Some(dir) => dir,
        None if std::path::Path::new("/dev/shm").is_dir() => PathBuf::from(format!(
            "/dev/shm/kfcache-node-agent-{}",
            std::process::id()
        )),
        None => std::env::temp_dir().join(format!("kfcache-node-agent-{}", std::process::id())),
    };
    // Without --ca-file, service account volumes get the CA this agent trusts for the API server.
    let ca_file = match (args.ca_file.or(root_cert_file), root_cert) {
        (Some(file), _) => Some(file),
        (None, Some(certs)) if !certs.is_empty() => {
            std::fs::create_dir_all(&state_dir)
                .with_context(|| format!("creating {}", state_dir.display()))?;
            let path = state_dir.join("kube-ca.crt");
            std::fs::write(&path, pem(&certs)?)
                .with_context(|| format!("writing {}", path.display()))?;
            Some(path)
        }
        (None, _) => None,
    };
    let agent_config = AgentConfig {
        nodes: args.nodes,
        state_dir,
        images: image_mappings(&args.image_bins, &args.image_entrypoints)?,
        ca_file,
        api_host,
        api_port,
        node_ip: args.node_ip,
        host_dirs: AgentConfig::default_host_dirs(),
        kubelet_port: (!args.no_kubelet_endpoint).then_some(args.kubelet_port),
    };
    let shutdown = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    };
    agent::run(client, agent_config, shutdown).await?;
    Ok(())
}

/// PEM text of DER certificates (base64 through k8s-openapi's `ByteString` serializer).
fn pem(certs: &[Vec<u8>]) -> anyhow::Result<String> {
    let mut out = String::new();
    for der in certs {
        let encoded = serde_json::to_value(k8s_openapi::ByteString(der.clone()))?;
        let encoded = encoded
            .as_str()
            .context("base64 of a certificate")?
            .to_string();
        out.push_str("-----BEGIN CERTIFICATE-----\n");
        for chunk in encoded.as_bytes().chunks(64) {
            out.push_str(&String::from_utf8_lossy(chunk));
            out.push('\n');
        }
        out.push_str("-----END CERTIFICATE-----\n");
    }
    Ok(out)
}
