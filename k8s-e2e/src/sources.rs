//! Reads of the Secrets and ConfigMaps a pod refers to (env, envFrom, volumes), fetched once per
//! pod through the API, the way the kubelet fetches them.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::{Api, Client};
use tokio::sync::Mutex;

use crate::error::{Error, Result};

/// The key → bytes contents of one Secret or ConfigMap.
pub type Data = BTreeMap<String, Vec<u8>>;

/// A per-pod cache of the Secrets and ConfigMaps of its namespace.
#[derive(Debug)]
pub struct Sources {
    namespace: String,
    secrets: Api<Secret>,
    config_maps: Api<ConfigMap>,
    secret_cache: Mutex<HashMap<String, Option<Data>>>,
    config_map_cache: Mutex<HashMap<String, Option<Data>>>,
}

impl Sources {
    pub fn new(client: Client, namespace: &str) -> Self {
        Sources {
            namespace: namespace.to_string(),
            secrets: Api::namespaced(client.clone(), namespace),
            config_maps: Api::namespaced(client, namespace),
            secret_cache: Mutex::new(HashMap::new()),
            config_map_cache: Mutex::new(HashMap::new()),
        }
    }

    /// The Secret's data, or `None` when it does not exist.
    pub async fn secret(&self, name: &str) -> Result<Option<Data>> {
        let mut cache = self.secret_cache.lock().await;
        if let Some(hit) = cache.get(name) {
            return Ok(hit.clone());
        }
        let secret = self
            .secrets
            .get_opt(name)
            .await
            .map_err(Error::kube(format!("get secret {}/{name}", self.namespace)))?;
        let data = secret.map(|s| {
            let mut data: Data = s
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.0))
                .collect();
            for (k, v) in s.string_data.unwrap_or_default() {
                data.insert(k, v.into_bytes());
            }
            data
        });
        cache.insert(name.to_string(), data.clone());
        Ok(data)
    }

    /// The ConfigMap's `data` and `binaryData`, or `None` when it does not exist.
    pub async fn config_map(&self, name: &str) -> Result<Option<Data>> {
        let mut cache = self.config_map_cache.lock().await;
        if let Some(hit) = cache.get(name) {
            return Ok(hit.clone());
        }
        let config_map = self
            .config_maps
            .get_opt(name)
            .await
            .map_err(Error::kube(format!(
                "get configmap {}/{name}",
                self.namespace
            )))?;
        let data = config_map.map(|c| {
            let mut data: Data = c
                .data
                .unwrap_or_default()
                .into_iter()
                .map(|(k, v)| (k, v.into_bytes()))
                .collect();
            for (k, v) in c.binary_data.unwrap_or_default() {
                data.insert(k, v.0);
            }
            data
        });
        cache.insert(name.to_string(), data.clone());
        Ok(data)
    }
}
