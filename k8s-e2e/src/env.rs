//! A container's environment, resolved the way the kubelet resolves it
//! (`makeEnvironmentVariables`): image defaults, then the service variables, then `envFrom`, then
//! `env` with `$(VAR)` expansion over what is defined so far; plus the pod field and resource
//! lookups shared with downward API volumes.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Container, Pod};

use crate::config::{AgentConfig, DEFAULT_PATH, IMAGE_BIN_DIR};
use crate::error::{Error, Result};
use crate::expand::expand;
use crate::quantity;
use crate::sources::Sources;

/// An ordered environment: later entries win, order kept for reproducible spawning.
#[derive(Debug, Default, Clone)]
pub struct Environment {
    order: Vec<String>,
    values: HashMap<String, String>,
}

impl Environment {
    pub fn set(&mut self, name: &str, value: String) {
        if !self.values.contains_key(name) {
            self.order.push(name.to_string());
        }
        self.values.insert(name.to_string(), value);
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn vars(&self) -> &HashMap<String, String> {
        &self.values
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.order
            .iter()
            .filter_map(|k| self.values.get(k).map(|v| (k.as_str(), v.as_str())))
    }
}

/// The value of a downward API `fieldRef` path, or `None` when the path is not supported.
pub fn field_value(pod: &Pod, field_path: &str, node_ip: &str) -> Option<String> {
    let meta = &pod.metadata;
    let spec = pod.spec.as_ref();
    if let Some(key) = subscript(field_path, "metadata.annotations") {
        return Some(
            meta.annotations
                .as_ref()
                .and_then(|a| a.get(key))
                .cloned()
                .unwrap_or_default(),
        );
    }
    if let Some(key) = subscript(field_path, "metadata.labels") {
        return Some(
            meta.labels
                .as_ref()
                .and_then(|a| a.get(key))
                .cloned()
                .unwrap_or_default(),
        );
    }
    match field_path {
        "metadata.name" => meta.name.clone(),
        "metadata.namespace" => Some(meta.namespace.clone().unwrap_or_else(|| "default".into())),
        "metadata.uid" => meta.uid.clone(),
        "metadata.annotations" => Some(format_map(meta.annotations.as_ref())),
        "metadata.labels" => Some(format_map(meta.labels.as_ref())),
        "spec.nodeName" => spec.and_then(|s| s.node_name.clone()),
        "spec.serviceAccountName" => Some(
            spec.and_then(|s| s.service_account_name.clone())
                .unwrap_or_else(|| "default".into()),
        ),
        "status.podIP" | "status.podIPs" | "status.hostIP" | "status.hostIPs" => {
            Some(node_ip.to_string())
        }
        _ => None,
    }
}

fn subscript<'a>(path: &'a str, prefix: &str) -> Option<&'a str> {
    let rest = path.strip_prefix(prefix)?.strip_prefix("['")?;
    rest.strip_suffix("']")
}

/// The kubelet's rendering of a label or annotation map: sorted `key="value"` lines (Go `%q`),
/// no trailing newline.
pub fn format_map(map: Option<&std::collections::BTreeMap<String, String>>) -> String {
    map.map(|m| {
        m.iter()
            .map(|(k, v)| format!("{k}={}", go_quote(v)))
            .collect::<Vec<_>>()
            .join("\n")
    })
    .unwrap_or_default()
}

/// Go's `strconv.Quote` for the characters that matter in labels and annotations.
pub fn go_quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The value of a `resourceFieldRef` for `container`: its limit (or request), falling back to
/// the host's capacity for unset limits, as the kubelet falls back to node allocatable.
pub fn resource_value(
    container: &Container,
    resource: &str,
    divisor: Option<&str>,
) -> Option<String> {
    let resources = container.resources.as_ref();
    let (section, name) = resource.split_once('.')?;
    let map = match section {
        "limits" => resources.and_then(|r| r.limits.as_ref()),
        "requests" => resources.and_then(|r| r.requests.as_ref()),
        _ => return None,
    };
    let set = map
        .and_then(|m| m.get(name))
        .and_then(|q| quantity::parse(&q.0));
    let value = match set {
        Some(v) => v,
        None if section == "requests" => 0.0,
        None => match name {
            "cpu" => std::thread::available_parallelism()
                .map(|n| n.get() as f64)
                .unwrap_or(1.0),
            "memory" => host_memory_bytes().unwrap_or(0.0),
            "ephemeral-storage" => 0.0,
            _ => return None,
        },
    };
    Some(quantity::render(value, divisor))
}

fn host_memory_bytes() -> Option<f64> {
    let meminfo = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = meminfo.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

/// Resolves the full environment of `container` in `pod`.
pub async fn container_env(
    pod: &Pod,
    container: &Container,
    sources: &Sources,
    config: &AgentConfig,
) -> Result<Environment> {
    let name = container.name.as_str();
    let fail = |variable: &str, message: String| Error::Env {
        container: name.to_string(),
        variable: variable.to_string(),
        message,
    };
    let mut env = Environment::default();
    // What the image and the runtime would give.
    let image = container.image.as_deref().unwrap_or_default();
    let path = match config.image(image).and_then(|m| m.bin_dir.as_ref()) {
        Some(_) => format!("{IMAGE_BIN_DIR}:{DEFAULT_PATH}"),
        None => DEFAULT_PATH.to_string(),
    };
    env.set("PATH", path);
    env.set("HOSTNAME", pod.metadata.name.clone().unwrap_or_default());
    env.set("HOME", "/root".into());
    // The service variables of the `kubernetes` Service (pods share the host network).
    let host = config.api_host.clone();
    let port = config.api_port.to_string();
    env.set("KUBERNETES_SERVICE_HOST", host.clone());
    env.set("KUBERNETES_SERVICE_PORT", port.clone());
    env.set("KUBERNETES_SERVICE_PORT_HTTPS", port.clone());
    env.set("KUBERNETES_PORT", format!("tcp://{host}:{port}"));
    env.set(
        &format!("KUBERNETES_PORT_{port}_TCP"),
        format!("tcp://{host}:{port}"),
    );
    env.set(&format!("KUBERNETES_PORT_{port}_TCP_PROTO"), "tcp".into());
    env.set(&format!("KUBERNETES_PORT_{port}_TCP_PORT"), port.clone());
    env.set(&format!("KUBERNETES_PORT_{port}_TCP_ADDR"), host);

    for from in container.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        let (data, what, optional) = if let Some(r) = &from.config_map_ref {
            (
                sources.config_map(&r.name).await?,
                format!("configMap {:?}", r.name),
                r.optional == Some(true),
            )
        } else if let Some(r) = &from.secret_ref {
            (
                sources.secret(&r.name).await?,
                format!("secret {:?}", r.name),
                r.optional == Some(true),
            )
        } else {
            continue;
        };
        match data {
            Some(data) => {
                for (k, v) in data {
                    env.set(
                        &format!("{prefix}{k}"),
                        String::from_utf8_lossy(&v).into_owned(),
                    );
                }
            }
            None if optional => {}
            None => return Err(fail("envFrom", format!("{what} not found"))),
        }
    }

    for var in container.env.iter().flatten() {
        let value = if let Some(from) = &var.value_from {
            if let Some(field) = &from.field_ref {
                field_value(pod, &field.field_path, &config.node_ip).ok_or_else(|| {
                    fail(
                        &var.name,
                        format!("fieldRef {:?} is not supported", field.field_path),
                    )
                })?
            } else if let Some(res) = &from.resource_field_ref {
                let target = match res.container_name.as_deref() {
                    Some(other) if other != name => pod
                        .spec
                        .as_ref()
                        .and_then(|s| {
                            s.containers
                                .iter()
                                .chain(s.init_containers.iter().flatten())
                                .find(|c| c.name == other)
                        })
                        .ok_or_else(|| fail(&var.name, format!("no container {other:?}")))?,
                    _ => container,
                };
                resource_value(
                    target,
                    &res.resource,
                    res.divisor.as_ref().map(|d| d.0.as_str()),
                )
                .ok_or_else(|| {
                    fail(
                        &var.name,
                        format!("resource {:?} is not supported", res.resource),
                    )
                })?
            } else if let Some(key) = &from.secret_key_ref {
                match sources
                    .secret(&key.name)
                    .await?
                    .and_then(|d| d.get(&key.key).cloned())
                {
                    Some(v) => String::from_utf8_lossy(&v).into_owned(),
                    None if key.optional == Some(true) => continue,
                    None => {
                        return Err(fail(
                            &var.name,
                            format!("secret {:?} key {:?} not found", key.name, key.key),
                        ))
                    }
                }
            } else if let Some(key) = &from.config_map_key_ref {
                match sources
                    .config_map(&key.name)
                    .await?
                    .and_then(|d| d.get(&key.key).cloned())
                {
                    Some(v) => String::from_utf8_lossy(&v).into_owned(),
                    None if key.optional == Some(true) => continue,
                    None => {
                        return Err(fail(
                            &var.name,
                            format!("configMap {:?} key {:?} not found", key.name, key.key),
                        ))
                    }
                }
            } else {
                return Err(fail(&var.name, "valueFrom has no supported source".into()));
            }
        } else {
            expand(var.value.as_deref().unwrap_or_default(), env.vars())
        };
        env.set(&var.name, value);
    }
    Ok(env)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    #[test]
    fn annotations_render_in_the_kubelet_format() {
        let map = BTreeMap::from([
            ("b".to_string(), "say \"hi\"\n".to_string()),
            ("a".to_string(), "1".to_string()),
        ]);
        assert_eq!(format_map(Some(&map)), "a=\"1\"\nb=\"say \\\"hi\\\"\\n\"");
    }

    #[test]
    fn field_paths_resolve() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "ns", "uid": "u", "annotations": {"x": "y"}},
            "spec": {"nodeName": "n", "containers": []}
        }))
        .expect("pod");
        assert_eq!(
            field_value(&pod, "metadata.annotations['x']", "1.2.3.4").as_deref(),
            Some("y")
        );
        assert_eq!(
            field_value(&pod, "spec.nodeName", "1.2.3.4").as_deref(),
            Some("n")
        );
        assert_eq!(
            field_value(&pod, "status.podIP", "1.2.3.4").as_deref(),
            Some("1.2.3.4")
        );
        assert_eq!(
            field_value(&pod, "spec.serviceAccountName", "").as_deref(),
            Some("default")
        );
        assert_eq!(field_value(&pod, "metadata.bogus", ""), None);
    }
}
