//! A pod's volumes as directories under its state directory, filled the way the kubelet fills
//! them: emptyDir, secret, configMap, downwardAPI, projected (service account token through the
//! TokenRequest API, `kube-root-ca.crt`, namespace), hostPath, and persistentVolumeClaim as a
//! directory per claim shared by the pods of the node. Every other kind fails the pod with
//! `UnsupportedVolume`.

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use k8s_openapi::api::core::v1::{DownwardAPIVolumeFile, KeyToPath, Pod, ServiceAccount, Volume};
use kube::api::PostParams;
use kube::{Api, Client};

use crate::config::AgentConfig;
use crate::env::{field_value, resource_value};
use crate::error::{Error, Result};
use crate::sources::{Data, Sources};

/// Name of the ConfigMap the kube-controller-manager would publish in every namespace.
pub const ROOT_CA_CONFIG_MAP: &str = "kube-root-ca.crt";

/// The host directory (or file) of each volume, by volume name.
pub type VolumePaths = HashMap<String, PathBuf>;

/// Creates and fills every volume of `pod` under `pod_dir/volumes`.
pub async fn prepare(
    client: &Client,
    pod: &Pod,
    pod_dir: &Path,
    sources: &Sources,
    config: &AgentConfig,
) -> Result<VolumePaths> {
    let mut paths = VolumePaths::new();
    let volumes_dir = pod_dir.join("volumes");
    for volume in pod.spec.iter().flat_map(|s| s.volumes.iter().flatten()) {
        let path = prepare_one(client, pod, volume, &volumes_dir, sources, config).await?;
        paths.insert(volume.name.clone(), path);
    }
    Ok(paths)
}

async fn prepare_one(
    client: &Client,
    pod: &Pod,
    volume: &Volume,
    volumes_dir: &Path,
    sources: &Sources,
    config: &AgentConfig,
) -> Result<PathBuf> {
    let name = volume.name.as_str();
    let dir = volumes_dir.join(name);
    let source_error = |message: String| Error::VolumeSource {
        volume: name.to_string(),
        message,
    };
    if let Some(host) = &volume.host_path {
        let path = PathBuf::from(&host.path);
        match host.type_.as_deref().unwrap_or_default() {
            "DirectoryOrCreate" => create_dir(&path, 0o755)?,
            "FileOrCreate" if !path.exists() => {
                if let Some(parent) = path.parent() {
                    create_dir(parent, 0o755)?;
                }
                std::fs::write(&path, b"").map_err(Error::io("create", &path))?;
            }
            "" | "FileOrCreate" => {}
            _ if !path.exists() => {
                return Err(source_error(format!(
                    "hostPath {} does not exist",
                    host.path
                )))
            }
            _ => {}
        }
        return Ok(path);
    }
    if let Some(claim) = &volume.persistent_volume_claim {
        let namespace = pod.metadata.namespace.as_deref().unwrap_or("default");
        let path = config
            .state_dir
            .join("claims")
            .join(namespace)
            .join(&claim.claim_name);
        create_dir(&path, 0o777)?;
        return Ok(path);
    }
    if volume.empty_dir.is_some() {
        create_dir(&dir, 0o777)?;
        return Ok(dir);
    }
    create_dir(&dir, 0o755)?;
    if let Some(secret) = &volume.secret {
        let secret_name = secret.secret_name.clone().unwrap_or_default();
        let mode = secret.default_mode.unwrap_or(0o644);
        write_found(
            &dir,
            sources.secret(&secret_name).await?,
            secret.items.as_deref(),
            mode,
            name,
            secret.optional == Some(true),
            || format!("secret {secret_name:?} not found"),
        )?;
        return Ok(dir);
    }
    if let Some(config_map) = &volume.config_map {
        let mode = config_map.default_mode.unwrap_or(0o644);
        write_found(
            &dir,
            sources.config_map(&config_map.name).await?,
            config_map.items.as_deref(),
            mode,
            name,
            config_map.optional == Some(true),
            || format!("configMap {:?} not found", config_map.name),
        )?;
        return Ok(dir);
    }
    if let Some(downward) = &volume.downward_api {
        let mode = downward.default_mode.unwrap_or(0o644);
        write_downward(
            &dir,
            pod,
            downward.items.as_deref().unwrap_or_default(),
            mode,
            name,
            config,
        )?;
        return Ok(dir);
    }
    if let Some(projected) = &volume.projected {
        let mode = projected.default_mode.unwrap_or(0o644);
        for source in projected.sources.iter().flatten() {
            if let Some(token) = &source.service_account_token {
                let value = request_token(
                    client,
                    pod,
                    token.audience.as_deref(),
                    token.expiration_seconds,
                )
                .await?;
                write_file(&dir.join(&token.path), value.as_bytes(), mode)?;
            } else if let Some(secret) = &source.secret {
                write_found(
                    &dir,
                    sources.secret(&secret.name).await?,
                    secret.items.as_deref(),
                    mode,
                    name,
                    secret.optional == Some(true),
                    || format!("secret {:?} not found", secret.name),
                )?;
            } else if let Some(config_map) = &source.config_map {
                let data = match sources.config_map(&config_map.name).await? {
                    Some(data) => Some(data),
                    None if config_map.name == ROOT_CA_CONFIG_MAP => root_ca_fallback(config)?,
                    None => None,
                };
                match data {
                    Some(data) => write_items(
                        &dir,
                        &data,
                        config_map.items.as_deref(),
                        mode,
                        name,
                        config_map.optional == Some(true),
                    )?,
                    None if config_map.optional == Some(true) => {}
                    None if config_map.name == ROOT_CA_CONFIG_MAP => {
                        return Err(source_error(format!(
                            "configMap {ROOT_CA_CONFIG_MAP:?} not found and the agent has no --ca-file \
                             (there is no kube-controller-manager to publish it)"
                        )))
                    }
                    None => return Err(source_error(format!("configMap {:?} not found", config_map.name))),
                }
            } else if let Some(downward) = &source.downward_api {
                write_downward(
                    &dir,
                    pod,
                    downward.items.as_deref().unwrap_or_default(),
                    mode,
                    name,
                    config,
                )?;
            } else {
                return Err(Error::UnsupportedVolume {
                    volume: name.to_string(),
                    what: "a projected source other than serviceAccountToken, secret, configMap and downwardAPI"
                        .into(),
                });
            }
        }
        return Ok(dir);
    }
    Err(Error::UnsupportedVolume {
        volume: name.to_string(),
        what: volume_kind(volume),
    })
}

fn volume_kind(volume: &Volume) -> String {
    serde_json::to_value(volume)
        .ok()
        .and_then(|v| {
            v.as_object().map(|o| {
                o.keys()
                    .filter(|k| *k != "name")
                    .cloned()
                    .collect::<Vec<_>>()
            })
        })
        .map(|keys| format!("volume source {}", keys.join(", ")))
        .unwrap_or_else(|| "this volume source".into())
}

fn root_ca_fallback(config: &AgentConfig) -> Result<Option<Data>> {
    match &config.ca_file {
        Some(path) => {
            let ca = std::fs::read(path).map_err(Error::io("read", path))?;
            Ok(Some(Data::from([("ca.crt".to_string(), ca)])))
        }
        None => Ok(None),
    }
}

/// A bound service account token for the pod, from the TokenRequest API.
async fn request_token(
    client: &Client,
    pod: &Pod,
    audience: Option<&str>,
    expiration: Option<i64>,
) -> Result<String> {
    let namespace = pod
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let account = pod
        .spec
        .as_ref()
        .and_then(|s| s.service_account_name.clone())
        .unwrap_or_else(|| "default".into());
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), &namespace);
    let mut spec = serde_json::json!({
        "expirationSeconds": expiration.unwrap_or(3607),
        "boundObjectRef": {
            "apiVersion": "v1",
            "kind": "Pod",
            "name": pod.metadata.name,
            "uid": pod.metadata.uid,
        },
    });
    if let Some(audience) = audience.filter(|a| !a.is_empty()) {
        spec["audiences"] = serde_json::json!([audience]);
    }
    let request = serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": spec,
    });
    let response: serde_json::Value = api
        .create_subresource("token", &account, &PostParams::default(), &request)
        .await
        .map_err(Error::kube(format!(
            "token request for serviceaccount {namespace}/{account}"
        )))?;
    response["status"]["token"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::VolumeSource {
            volume: "serviceAccountToken".into(),
            message: format!("token request for {namespace}/{account} returned no token"),
        })
}

/// Writes the keys of a Secret or ConfigMap that was found; a missing one is an error unless
/// the volume calls it optional.
fn write_found(
    dir: &Path,
    found: Option<Data>,
    items: Option<&[KeyToPath]>,
    mode: i32,
    volume: &str,
    optional: bool,
    missing: impl FnOnce() -> String,
) -> Result<()> {
    match found {
        Some(data) => write_items(dir, &data, items, mode, volume, optional),
        None if optional => Ok(()),
        None => Err(Error::VolumeSource {
            volume: volume.to_string(),
            message: missing(),
        }),
    }
}

fn write_items(
    dir: &Path,
    data: &Data,
    items: Option<&[KeyToPath]>,
    mode: i32,
    volume: &str,
    optional: bool,
) -> Result<()> {
    match items {
        None => {
            for (key, value) in data {
                write_file(&dir.join(key), value, mode)?;
            }
        }
        Some(items) => {
            for item in items {
                match data.get(&item.key) {
                    Some(value) => {
                        write_file(&dir.join(&item.path), value, item.mode.unwrap_or(mode))?
                    }
                    None if optional => {}
                    None => {
                        return Err(Error::VolumeSource {
                            volume: volume.to_string(),
                            message: format!("key {:?} not found", item.key),
                        })
                    }
                }
            }
        }
    }
    Ok(())
}

fn write_downward(
    dir: &Path,
    pod: &Pod,
    items: &[DownwardAPIVolumeFile],
    mode: i32,
    volume: &str,
    config: &AgentConfig,
) -> Result<()> {
    for item in items {
        let value = if let Some(field) = &item.field_ref {
            field_value(pod, &field.field_path, &config.node_ip).ok_or_else(|| {
                Error::VolumeSource {
                    volume: volume.to_string(),
                    message: format!(
                        "downwardAPI fieldRef {:?} is not supported",
                        field.field_path
                    ),
                }
            })?
        } else if let Some(res) = &item.resource_field_ref {
            let container = pod
                .spec
                .as_ref()
                .and_then(|s| {
                    s.containers
                        .iter()
                        .find(|c| Some(&c.name) == res.container_name.as_ref())
                })
                .ok_or_else(|| Error::VolumeSource {
                    volume: volume.to_string(),
                    message: format!(
                        "downwardAPI resourceFieldRef names no container: {:?}",
                        res.container_name
                    ),
                })?;
            resource_value(
                container,
                &res.resource,
                res.divisor.as_ref().map(|d| d.0.as_str()),
            )
            .ok_or_else(|| Error::VolumeSource {
                volume: volume.to_string(),
                message: format!("downwardAPI resource {:?} is not supported", res.resource),
            })?
        } else {
            continue;
        };
        write_file(
            &dir.join(&item.path),
            value.as_bytes(),
            item.mode.unwrap_or(mode),
        )?;
    }
    Ok(())
}

fn create_dir(path: &Path, mode: u32) -> Result<()> {
    std::fs::create_dir_all(path).map_err(Error::io("create directory", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(Error::io("chmod", path))
}

fn write_file(path: &Path, contents: &[u8], mode: i32) -> Result<()> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(Error::io("create directory", parent))?;
    }
    std::fs::write(path, contents).map_err(Error::io("write", path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode as u32 & 0o7777))
        .map_err(Error::io("chmod", path))
}
