//! The agent's validated settings: which nodes it serves, where it keeps pod state, and how
//! image names map to host binaries.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// How one image (by name prefix) maps to binaries on this host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageMapping {
    /// Image references starting with this prefix use the mapping (`quay.io/argoproj/argoexec`).
    pub prefix: String,
    /// Host directory bind-mounted read-only at [`IMAGE_BIN_DIR`] inside the container and put
    /// first on `PATH`.
    pub bin_dir: Option<PathBuf>,
    /// The image's default entrypoint, used when the container has no `command`.
    pub entrypoint: Option<Vec<String>>,
}

/// Where an image's host binaries appear inside a container.
pub const IMAGE_BIN_DIR: &str = "/kfcache-image/bin";

/// The `PATH` every container gets unless it sets one (the usual image default).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Settings of the node agent, validated once by the binary.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// Nodes to serve; empty means every node annotated `kwok.x-k8s.io/node=fake`.
    pub nodes: Vec<String>,
    /// Per-pod directories (volumes, container roots, logs) live under here.
    pub state_dir: PathBuf,
    /// Image prefix → host binaries; the longest matching prefix wins.
    pub images: Vec<ImageMapping>,
    /// CA bundle written as `ca.crt` into service account volumes when the namespace has no
    /// `kube-root-ca.crt` ConfigMap (there is no kube-controller-manager to publish one).
    pub ca_file: Option<PathBuf>,
    /// `KUBERNETES_SERVICE_HOST` / `_PORT` given to containers (pods share the host network).
    pub api_host: String,
    pub api_port: u16,
    /// The address reported as `hostIP` and `podIP`.
    pub node_ip: String,
    /// Host system directories bound read-only into every container root.
    pub host_dirs: Vec<PathBuf>,
    /// Port of the kubelet stand-in endpoint (`/exec` for Argo's kill commands) on `node_ip`;
    /// 0 picks a free one, `None` serves none. Written into the managed nodes' status.
    pub kubelet_port: Option<u16>,
}

impl AgentConfig {
    /// Default host directories that make up a container's root file system.
    pub fn default_host_dirs() -> Vec<PathBuf> {
        [
            "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc", "/opt",
        ]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect()
    }

    /// The image mapping for `image`, longest prefix first.
    pub fn image(&self, image: &str) -> Option<&ImageMapping> {
        self.images
            .iter()
            .filter(|m| image.starts_with(&m.prefix))
            .max_by_key(|m| m.prefix.len())
    }
}

/// Parses `PREFIX=VALUE` as given to `--image-bin` and `--image-entrypoint`.
pub fn split_prefix_setting(setting: &str, text: &str) -> Result<(String, String)> {
    match text.split_once('=') {
        Some((prefix, value)) if !prefix.is_empty() && !value.is_empty() => {
            Ok((prefix.to_string(), value.to_string()))
        }
        _ => Err(Error::Config {
            setting: setting.to_string(),
            message: format!("{text:?} is not PREFIX=VALUE"),
        }),
    }
}

/// Builds the image mappings from `--image-bin` and `--image-entrypoint` values. An entrypoint
/// is a JSON array of strings or a whitespace-separated command line.
pub fn image_mappings(bins: &[String], entrypoints: &[String]) -> Result<Vec<ImageMapping>> {
    let mut mappings: Vec<ImageMapping> = Vec::new();
    for text in bins {
        let (prefix, dir) = split_prefix_setting("--image-bin", text)?;
        let dir = PathBuf::from(dir);
        if !dir.is_dir() {
            return Err(Error::Config {
                setting: "--image-bin".into(),
                message: format!("{} is not a directory", dir.display()),
            });
        }
        entry(&mut mappings, &prefix).bin_dir = Some(absolute(&dir)?);
    }
    for text in entrypoints {
        let (prefix, command) = split_prefix_setting("--image-entrypoint", text)?;
        let command = if command.trim_start().starts_with('[') {
            serde_json::from_str::<Vec<String>>(&command).map_err(|e| Error::Config {
                setting: "--image-entrypoint".into(),
                message: format!("{command:?}: {e}"),
            })?
        } else {
            command.split_whitespace().map(str::to_string).collect()
        };
        entry(&mut mappings, &prefix).entrypoint = Some(command);
    }
    Ok(mappings)
}

fn entry<'a>(mappings: &'a mut Vec<ImageMapping>, prefix: &str) -> &'a mut ImageMapping {
    let index = match mappings.iter().position(|m| m.prefix == prefix) {
        Some(index) => index,
        None => {
            mappings.push(ImageMapping {
                prefix: prefix.to_string(),
                bin_dir: None,
                entrypoint: None,
            });
            mappings.len() - 1
        }
    };
    &mut mappings[index]
}

fn absolute(path: &Path) -> Result<PathBuf> {
    std::fs::canonicalize(path).map_err(Error::io("resolve", path))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins_and_entrypoints_parse() {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display().to_string();
        let mappings = image_mappings(
            &[
                format!("quay.io/argoproj/={d}"),
                format!("quay.io/argoproj/argoexec={d}"),
            ],
            &[
                "kfcache=[\"kfcache\",\"run\"]".into(),
                "busybox=sh -c".into(),
            ],
        )
        .expect("mappings");
        let config = AgentConfig {
            nodes: vec![],
            state_dir: dir.path().into(),
            images: mappings,
            ca_file: None,
            api_host: "127.0.0.1".into(),
            api_port: 6443,
            node_ip: "127.0.0.1".into(),
            host_dirs: vec![],
            kubelet_port: None,
        };
        assert_eq!(
            config
                .image("quay.io/argoproj/argoexec:v3.7.4")
                .map(|m| m.prefix.as_str()),
            Some("quay.io/argoproj/argoexec")
        );
        assert_eq!(
            config.image("kfcache:1").and_then(|m| m.entrypoint.clone()),
            Some(vec!["kfcache".to_string(), "run".to_string()])
        );
        assert_eq!(
            config.image("busybox").and_then(|m| m.entrypoint.clone()),
            Some(vec!["sh".to_string(), "-c".to_string()])
        );
        assert!(image_mappings(&["nodir".into()], &[]).is_err());
    }
}
