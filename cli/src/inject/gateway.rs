//! Routing a template's S3 artifacts through kfcache's S3 gateway (`kfcache inject --gateway`).
//!
//! In a real pod Argo's own `init` container (`argoexec init`) downloads every input artifact
//! before any container of the template runs, and Argo's `wait` container uploads the outputs.
//! Neither can be skipped per artifact while the path stays mounted for `main`. So kfcache does
//! not copy inputs into the pod itself: it points Argo's own loading at the gateway, an
//! S3-compatible endpoint that serves the objects kfcache has staged from the cache and reads
//! everything else from the origin.
//!
//! For a template this means, from Argo v3.7's source (`workflow/controller/workflowpod.go`
//! `addArchiveLocation`, `pkg/apis/workflow/v1alpha1/workflow_types.go` `Relocate`):
//! - a complete `archiveLocation` at the gateway (the repository's bucket, key format and
//!   credentials). Argo puts every input that has no complete location of its own — `from:`
//!   outputs of earlier tasks and key-only artifacts — on the template's `archiveLocation`, and
//!   saves the template's outputs there, so all of them go through the gateway;
//! - every input artifact with a complete S3 location at the origin gets the gateway as its
//!   `endpoint` (bucket, key and credentials stay);
//! - anything else (GCS, HTTP, git, raw artifacts, another S3 endpoint) is left as it is.
//!
//! The gateway verifies requests with the repository's credentials and re-signs them towards
//! the origin, so the Secrets the workflow already names keep working.

use anyhow::{bail, Context, Result};
use serde_yaml::{Mapping, Value};

/// What Argo's `archiveLocation` needs beside the key: the fields of an S3 artifact repository
/// that are also fields of an S3 artifact (`S3Bucket` in Argo's types).
const BUCKET_FIELDS: &[&str] = &[
    "bucket",
    "region",
    "accessKeySecret",
    "secretKeySecret",
    "sessionTokenSecret",
    "roleARN",
    "useSDKCreds",
    "encryptionOptions",
    "caSecret",
    "createBucketIfNotPresent",
];

/// Argo's key format when the repository gives none (`DefaultArchivePattern`).
pub const DEFAULT_KEY_FORMAT: &str = "{{workflow.name}}/{{pod.name}}";

/// The S3 artifact repository whose objects the gateway serves: what Argo's
/// `workflow-controller-configmap` holds under `artifactRepository`, or one entry of a
/// namespace's `artifact-repositories` ConfigMap.
#[derive(Debug, Clone, PartialEq)]
pub struct Repository {
    /// The origin's endpoint (`host:port`), as Argo's `s3.endpoint` spells it.
    pub endpoint: String,
    /// `keyFormat`, else Argo's default.
    pub key_format: String,
    /// The bucket fields copied into an `archiveLocation`.
    bucket: Mapping,
}

impl Repository {
    /// Reads an artifact repository from YAML: a mapping with an `s3` key (optionally under
    /// `artifactRepository`), or a ConfigMap whose `data` holds one (the controller's
    /// `artifactRepository` key, or the entry named by the
    /// `workflows.argoproj.io/default-artifact-repository` annotation, or the only entry).
    pub fn from_yaml(text: &str) -> Result<Repository> {
        let value: Value = serde_yaml::from_str(text).context("not YAML")?;
        let value = repository_value(&value)?;
        let Some(s3) = value.get("s3").and_then(Value::as_mapping) else {
            bail!("the artifact repository has no `s3` mapping (only S3 repositories can go through the gateway)");
        };
        let text = |key: &str| s3.get(key).and_then(Value::as_str).map(str::to_string);
        let endpoint = text("endpoint")
            .filter(|e| !e.is_empty())
            .context("the S3 artifact repository names no `endpoint`")?;
        if text("bucket").filter(|b| !b.is_empty()).is_none() {
            bail!("the S3 artifact repository names no `bucket`");
        }
        let key_format = match (text("keyFormat"), text("keyPrefix")) {
            (Some(format), _) if !format.is_empty() => format,
            (_, Some(prefix)) if !prefix.is_empty() => {
                format!("{}/{DEFAULT_KEY_FORMAT}", prefix.trim_end_matches('/'))
            }
            _ => DEFAULT_KEY_FORMAT.to_string(),
        };
        let bucket = BUCKET_FIELDS
            .iter()
            .filter_map(|k| s3.get(*k).map(|v| (Value::from(*k), v.clone())))
            .collect();
        Ok(Repository {
            endpoint,
            key_format,
            bucket,
        })
    }
}

/// The repository inside a parsed document: see [`Repository::from_yaml`].
fn repository_value(value: &Value) -> Result<Value> {
    if value.get("kind").and_then(Value::as_str) == Some("ConfigMap") {
        let data = value
            .get("data")
            .and_then(Value::as_mapping)
            .context("the ConfigMap has no `data`")?;
        let default = value
            .get("metadata")
            .and_then(|m| m.get("annotations"))
            .and_then(|a| a.get("workflows.argoproj.io/default-artifact-repository"))
            .and_then(Value::as_str);
        let entry = match (data.get("artifactRepository"), default) {
            (Some(entry), _) => entry,
            (None, Some(name)) => data
                .get(name)
                .with_context(|| format!("the ConfigMap has no entry `{name}`"))?,
            (None, None) if data.len() == 1 => data.values().next().context("empty data")?,
            _ => bail!(
                "the ConfigMap holds several repositories and names no default \
                 (annotation workflows.argoproj.io/default-artifact-repository)"
            ),
        };
        let text = entry
            .as_str()
            .context("the ConfigMap entry is not a YAML string")?;
        return serde_yaml::from_str(text).context("the ConfigMap entry is not YAML");
    }
    Ok(value
        .get("artifactRepository")
        .cloned()
        .unwrap_or_else(|| value.clone()))
}

/// The gateway as pods reach it, and the repository it serves.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    /// `host:port` of the gateway's S3 endpoint from inside the cluster.
    pub endpoint: String,
    /// Whether pods reach the gateway over plain HTTP (Argo's `insecure`).
    pub insecure: bool,
    pub repository: Repository,
}

/// What routing changed in one template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Routed {
    /// Input artifacts with their own S3 location now read through the gateway.
    pub located_inputs: Vec<String>,
    /// Whether the template's `archiveLocation` now points at the gateway.
    pub archive_location: bool,
    /// Input artifacts left alone, with why.
    pub left: Vec<(String, &'static str)>,
}

/// Points the template's S3 artifacts at the gateway; see the module documentation.
pub fn route(template: &mut Mapping, route: &Route) -> Result<Routed> {
    let mut routed = Routed {
        archive_location: route_archive_location(template, route)?,
        ..Routed::default()
    };
    let Some(artifacts) = template
        .get_mut("inputs")
        .and_then(|i| i.get_mut("artifacts"))
        .and_then(Value::as_sequence_mut)
    else {
        return Ok(routed);
    };
    for artifact in artifacts {
        let name = artifact
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_string();
        let Some(s3) = artifact.get_mut("s3").and_then(Value::as_mapping_mut) else {
            if has_other_location(artifact) {
                routed.left.push((name, "not an S3 artifact"));
            }
            continue;
        };
        match s3.get("endpoint").and_then(Value::as_str) {
            // Incomplete: Argo relocates it onto the archive location, the gateway.
            None | Some("") => {}
            Some(endpoint) if same_endpoint(endpoint, &route.repository.endpoint) => {
                point_at_gateway(s3, route);
                routed.located_inputs.push(name);
            }
            Some(endpoint) if same_endpoint(endpoint, &route.endpoint) => {
                routed.located_inputs.push(name);
            }
            Some(_) => routed
                .left
                .push((name, "its S3 endpoint is not the repository's")),
        }
    }
    Ok(routed)
}

/// Gives the template a complete archive location at the gateway: its own S3 location when it
/// names the origin, else the repository's. Returns whether it points at the gateway.
fn route_archive_location(template: &mut Mapping, route: &Route) -> Result<bool> {
    let slot = template
        .entry(Value::from("archiveLocation"))
        .or_insert(Value::Null);
    if slot.is_null() {
        *slot = Value::Mapping(Mapping::new());
    }
    let Some(location) = slot.as_mapping_mut() else {
        bail!("archiveLocation is not a mapping");
    };
    if let Some(s3) = location.get_mut("s3").and_then(Value::as_mapping_mut) {
        let complete = ["endpoint", "bucket", "key"].iter().all(|k| {
            s3.get(*k)
                .and_then(Value::as_str)
                .is_some_and(|v| !v.is_empty())
        });
        let endpoint = s3.get("endpoint").and_then(Value::as_str).unwrap_or("");
        if complete && same_endpoint(endpoint, &route.repository.endpoint) {
            point_at_gateway(s3, route);
            return Ok(true);
        }
        return Ok(complete && same_endpoint(endpoint, &route.endpoint));
    }
    if has_other_location(&Value::Mapping(location.clone())) {
        return Ok(false);
    }
    let mut s3 = route.repository.bucket.clone();
    s3.insert(
        "key".into(),
        Value::from(route.repository.key_format.clone()),
    );
    point_at_gateway(&mut s3, route);
    location.insert("s3".into(), Value::Mapping(s3));
    Ok(true)
}

fn point_at_gateway(s3: &mut Mapping, route: &Route) {
    s3.insert("endpoint".into(), Value::from(route.endpoint.clone()));
    s3.insert("insecure".into(), Value::Bool(route.insecure));
}

/// Whether an artifact (or archive location) names a location of a kind other than S3.
fn has_other_location(artifact: &Value) -> bool {
    const KINDS: &[&str] = &[
        "gcs",
        "http",
        "git",
        "raw",
        "hdfs",
        "oss",
        "azure",
        "artifactory",
        "plugin",
    ];
    KINDS.iter().any(|k| artifact.get(*k).is_some())
}

/// Endpoints compare without a scheme and without a trailing slash, ignoring case.
fn same_endpoint(a: &str, b: &str) -> bool {
    let bare = |e: &str| {
        let e = e.trim();
        let e = e
            .strip_prefix("http://")
            .or_else(|| e.strip_prefix("https://"))
            .unwrap_or(e);
        e.trim_end_matches('/').to_ascii_lowercase()
    };
    bare(a) == bare(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPOSITORY: &str = r#"
s3:
  endpoint: minio.store:9000
  bucket: artifacts
  insecure: true
  accessKeySecret: {name: store, key: accessKey}
  secretKeySecret: {name: store, key: secretKey}
"#;

    fn gateway() -> Route {
        Route {
            endpoint: "kfcache-gateway.kfcache.svc:9000".to_string(),
            insecure: true,
            repository: Repository::from_yaml(REPOSITORY).expect("repository"),
        }
    }

    fn template(text: &str) -> Mapping {
        serde_yaml::from_str(text).expect("template")
    }

    #[test]
    fn repositories_are_read_from_the_configmaps_argo_reads_them_from() {
        let bare = Repository::from_yaml(REPOSITORY).expect("bare");
        assert_eq!(bare.endpoint, "minio.store:9000");
        assert_eq!(bare.key_format, DEFAULT_KEY_FORMAT);
        let controller = r#"
apiVersion: v1
kind: ConfigMap
metadata: {name: workflow-controller-configmap}
data:
  artifactRepository: |
    s3:
      endpoint: minio.store:9000
      bucket: artifacts
      keyFormat: "runs/{{workflow.name}}/{{pod.name}}"
"#;
        let read = Repository::from_yaml(controller).expect("controller configmap");
        assert_eq!(read.key_format, "runs/{{workflow.name}}/{{pod.name}}");
        let namespace = r#"
apiVersion: v1
kind: ConfigMap
metadata:
  name: artifact-repositories
  annotations: {workflows.argoproj.io/default-artifact-repository: main}
data:
  other: |
    s3: {endpoint: elsewhere:9000, bucket: other}
  main: |
    s3: {endpoint: minio.store:9000, bucket: artifacts, keyPrefix: kfp}
"#;
        let read = Repository::from_yaml(namespace).expect("namespace configmap");
        assert_eq!(read.endpoint, "minio.store:9000");
        assert_eq!(read.key_format, "kfp/{{workflow.name}}/{{pod.name}}");
        let error = Repository::from_yaml("gcs: {bucket: b}").expect_err("not S3");
        assert!(error.to_string().contains("s3"), "{error}");
    }

    #[test]
    fn inputs_at_the_origin_and_the_archive_location_go_through_the_gateway() {
        let mut t = template(
            r#"
name: train
inputs:
  artifacts:
    - name: dataset
      path: /data/train.tar
      s3:
        endpoint: minio.store:9000
        bucket: datasets
        key: train.tar
        accessKeySecret: {name: store, key: accessKey}
        secretKeySecret: {name: store, key: secretKey}
    - name: features
      path: /data/features
    - name: shard
      path: /data/shard
      s3: {key: shards/0.bin}
    - name: weights
      path: /data/weights
      s3: {endpoint: s3.amazonaws.com, bucket: public, key: w.bin}
    - name: code
      path: /src
      git: {repo: "https://example.com/x.git"}
container: {image: trainer}
"#,
        );
        let routed = route(&mut t, &gateway()).expect("routed");
        assert!(routed.archive_location);
        assert_eq!(routed.located_inputs, vec!["dataset".to_string()]);
        assert_eq!(
            routed.left,
            vec![
                (
                    "weights".to_string(),
                    "its S3 endpoint is not the repository's"
                ),
                ("code".to_string(), "not an S3 artifact"),
            ]
        );
        let dataset = &t["inputs"]["artifacts"][0]["s3"];
        assert_eq!(dataset["endpoint"], "kfcache-gateway.kfcache.svc:9000");
        assert_eq!(dataset["bucket"], "datasets");
        assert_eq!(dataset["key"], "train.tar");
        assert_eq!(dataset["insecure"], true);
        assert_eq!(dataset["accessKeySecret"]["name"], "store");
        let archive = &t["archiveLocation"]["s3"];
        assert_eq!(archive["endpoint"], "kfcache-gateway.kfcache.svc:9000");
        assert_eq!(archive["bucket"], "artifacts");
        assert_eq!(archive["key"], DEFAULT_KEY_FORMAT);
        assert_eq!(archive["secretKeySecret"]["key"], "secretKey");
        assert_eq!(t["inputs"]["artifacts"][2]["s3"]["key"], "shards/0.bin");
        assert!(t["inputs"]["artifacts"][2]["s3"].get("endpoint").is_none());
        assert_eq!(
            t["inputs"]["artifacts"][3]["s3"]["endpoint"],
            "s3.amazonaws.com"
        );

        // Routing a routed template changes nothing.
        let again = t.clone();
        let routed = route(&mut t, &gateway()).expect("routed again");
        assert_eq!(t, again);
        assert_eq!(routed.located_inputs, vec!["dataset".to_string()]);
    }

    #[test]
    fn an_archive_location_of_its_own_is_kept_where_it_is_not_the_origin() {
        let mut own = template(
            r#"
name: t
archiveLocation:
  s3: {endpoint: "http://MINIO.store:9000/", bucket: mine, key: "x/{{pod.name}}"}
container: {image: i}
"#,
        );
        assert!(
            route(&mut own, &gateway())
                .expect("routed")
                .archive_location
        );
        assert_eq!(own["archiveLocation"]["s3"]["bucket"], "mine");
        assert_eq!(own["archiveLocation"]["s3"]["key"], "x/{{pod.name}}");
        let mut gcs = template(
            "name: t\narchiveLocation: {gcs: {bucket: g, key: k}}\ncontainer: {image: i}\n",
        );
        assert!(
            !route(&mut gcs, &gateway())
                .expect("routed")
                .archive_location
        );
        assert!(gcs["archiveLocation"].get("s3").is_none());
        let mut logs =
            template("name: t\narchiveLocation: {archiveLogs: true}\ncontainer: {image: i}\n");
        assert!(
            route(&mut logs, &gateway())
                .expect("routed")
                .archive_location
        );
        assert_eq!(logs["archiveLocation"]["archiveLogs"], true);
        assert_eq!(
            logs["archiveLocation"]["s3"]["endpoint"],
            "kfcache-gateway.kfcache.svc:9000"
        );
    }
}
