//! The one piece of the kubelet's HTTPS API that Argo needs: `/exec`, for the kill commands the
//! workflow-controller sends to stop containers.
//!
//! Argo v3.7.4's controller stops the containers still running after `main` ends (the `wait`
//! container and sidecars), and every container on shutdown or deadline, by exec-ing
//! `/var/run/argo/argoexec kill <SIG> 1` (or `/bin/sh -c "kill -<SIG> 1"`) into them through
//! `pods/exec` (`workflow/signal/signal.go` `SignalContainer`, called from
//! `workflow/controller/pod/queue.go` `signalContainers`). The API server forwards that request
//! to the node's kubelet endpoint (`status.daemonEndpoints.kubeletEndpoint.Port` at the node's
//! address). This module listens there, recognises those kill commands and delivers the signal
//! to the container's first process (its "PID 1"), which is what the command does in a real
//! container. It does not speak the SPDY stream protocol: after acting it answers with an HTTP
//! error, which Argo logs and ignores (`_ = signal.SignalContainer(...)`). Any other command
//! gets 501 and nothing runs.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use rustix::process::{kill_process, Pid, Signal};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tracing::{info, warn};

use crate::error::{Error, Result};

/// Container processes by (namespace, pod, container).
pub type ProcessTable = Arc<Mutex<HashMap<(String, String, String), Pid>>>;

/// What an exec request asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecRequest {
    pub namespace: String,
    pub pod: String,
    pub container: String,
    pub command: Vec<String>,
}

/// Parses the request target of a kubelet exec call:
/// `/exec/{namespace}/{pod}[/{uid}]/{container}?command=...&command=...`.
pub fn parse_exec_target(target: &str) -> Option<ExecRequest> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let (namespace, pod, container) = match parts.as_slice() {
        ["exec", namespace, pod, container] => (*namespace, *pod, *container),
        ["exec", namespace, pod, _uid, container] => (*namespace, *pod, *container),
        _ => return None,
    };
    let command = query
        .split('&')
        .filter_map(|pair| pair.split_once('='))
        .filter(|(k, _)| *k == "command")
        .map(|(_, v)| percent_decode(v))
        .collect();
    Some(ExecRequest {
        namespace: percent_decode(namespace),
        pod: percent_decode(pod),
        container: percent_decode(container),
        command,
    })
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The signal of one of Argo's kill commands aimed at PID 1, if `command` is one.
pub fn kill_signal(command: &[String]) -> Option<i32> {
    match command {
        [program, kill, signal, pid]
            if program.ends_with("argoexec") && kill == "kill" && pid == "1" =>
        {
            signal.parse().ok()
        }
        [shell, dash_c, script] if shell.ends_with("sh") && dash_c == "-c" => {
            let words: Vec<&str> = script.split_whitespace().collect();
            match words.as_slice() {
                ["kill", signal, "1"] => signal.strip_prefix('-')?.parse().ok(),
                _ => None,
            }
        }
        _ => None,
    }
}

/// A self-signed serving certificate for `ip`, made with the host's `openssl`.
pub fn self_signed(dir: &Path, ip: &str) -> Result<(Vec<u8>, Vec<u8>)> {
    std::fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    let cert = dir.join("kubelet.crt");
    let key = dir.join("kubelet.key");
    let output = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "7",
            "-subj",
            "/CN=kfcache-node-agent",
        ])
        .arg("-addext")
        .arg(format!("subjectAltName=IP:{ip}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .map_err(|source| Error::Spawn {
            container: "kubelet-api".into(),
            program: "openssl".into(),
            source,
        })?;
    if !output.status.success() {
        return Err(Error::Config {
            setting: "kubelet serving certificate".into(),
            message: String::from_utf8_lossy(&output.stderr).into_owned(),
        });
    }
    Ok((
        std::fs::read(&cert).map_err(Error::io("read", &cert))?,
        std::fs::read(&key).map_err(Error::io("read", &key))?,
    ))
}

/// A TLS acceptor for the certificate and key (PEM).
pub fn acceptor(cert_pem: &[u8], key_pem: &[u8]) -> Result<tokio_rustls::TlsAcceptor> {
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::{CertificateDer, PrivateKeyDer};
    let bad = |message: String| Error::Config {
        setting: "kubelet serving certificate".into(),
        message,
    };
    let certs = CertificateDer::pem_slice_iter(cert_pem)
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| bad(e.to_string()))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| bad(e.to_string()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| bad(e.to_string()))?
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .map_err(|e| bad(e.to_string()))?;
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Serves exec requests on `listener` until the task is dropped.
pub async fn serve(
    listener: TcpListener,
    acceptor: tokio_rustls::TlsAcceptor,
    processes: ProcessTable,
) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "kubelet endpoint accept");
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let processes = processes.clone();
        tokio::spawn(async move {
            let mut tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => return warn!(%peer, error = %e, "kubelet endpoint TLS"),
            };
            let mut head = Vec::new();
            let mut buffer = [0u8; 4096];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 256 * 1024 {
                match tls.read(&mut buffer).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => head.extend_from_slice(&buffer[..n]),
                }
            }
            let text = String::from_utf8_lossy(&head);
            let target = text
                .lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .unwrap_or_default();
            let (code, body) = respond(target, &processes);
            let response = format!(
                "HTTP/1.1 {code}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = tls.write_all(response.as_bytes()).await;
            let _ = tls.shutdown().await;
        });
    }
}

fn respond(target: &str, processes: &ProcessTable) -> (&'static str, String) {
    let Some(request) = parse_exec_target(target) else {
        return (
            "404 Not Found",
            format!("the kfcache test node agent serves only /exec, not {target}\n"),
        );
    };
    let Some(signal) = kill_signal(&request.command) else {
        warn!(
            ?request,
            "exec of a command other than Argo's kill: not served"
        );
        return (
            "501 Not Implemented",
            format!(
                "the kfcache test node agent runs only Argo's kill commands, not {:?}\n",
                request.command
            ),
        );
    };
    let key = (
        request.namespace.clone(),
        request.pod.clone(),
        request.container.clone(),
    );
    let pid = processes
        .lock()
        .ok()
        .and_then(|table| table.get(&key).copied());
    let Some(pid) = pid else {
        return (
            "404 Not Found",
            format!("container {}/{}/{} is not running\n", key.0, key.1, key.2),
        );
    };
    let result = Signal::from_named_raw(signal).map(|s| kill_process(pid, s));
    info!(pod = %format!("{}/{}", key.0, key.1), container = %key.2, signal, ?result, "exec kill from the API server");
    // Not 101: the agent does not speak the SPDY stream protocol. Argo ignores the error.
    (
        "500 Internal Server Error",
        format!("kfcache test node agent: sent signal {signal} to container {}; exec streams are not served\n", key.2),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argo_kill_requests_are_recognised() {
        let request = parse_exec_target(
            "/exec/ns/pod-1/wait?command=%2Fvar%2Frun%2Fargo%2Fargoexec&command=kill&command=15&command=1&error=1&output=1",
        )
        .expect("exec");
        assert_eq!(request.container, "wait");
        assert_eq!(kill_signal(&request.command), Some(15));
        let shell = ["/bin/sh".to_string(), "-c".into(), "kill -9 1".into()];
        assert_eq!(kill_signal(&shell), Some(9));
        assert_eq!(kill_signal(&["ls".to_string()]), None);
        assert_eq!(parse_exec_target("/logs/x"), None);
        assert_eq!(
            parse_exec_target("/exec/ns/p/uid/c?command=a%20b").map(|r| r.command),
            Some(vec!["a b".to_string()])
        );
    }
}
