//! Serde structs that mirror the Argo YAML, as leniently as Argo itself reads it.
//!
//! Only the fields kfcache uses are declared; unknown fields are ignored. Every struct takes
//! `#[serde(default)]`, and null values are stripped from the document when it is
//! loaded (see [`crate::document::strip_nulls`]), so `foo: null` reads like an absent `foo`. Fields that
//! Argo types as `IntOrString` or `AnyString` read through [`Scalar`], which accepts strings,
//! numbers and booleans alike.

use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer};
use serde_yaml::Value;

/// A scalar read as text: strings as they are, numbers and booleans in their YAML spelling,
/// lists and maps as compact JSON (Argo's `AnyString` accepts them too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scalar(pub String);

impl Scalar {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for Scalar {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = Value::deserialize(deserializer)?;
        Ok(Scalar(value_to_string(&value)))
    }
}

/// Text of a YAML value, the way Argo stringifies parameter values and loop items.
pub fn value_to_string(value: &Value) -> String {
    match value {
        Value::Null => String::new(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => s.clone(),
        Value::Tagged(tagged) => value_to_string(&tagged.value),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Document {
    pub metadata: Metadata,
    pub spec: Spec,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Metadata {
    pub name: Option<String>,
    pub generate_name: Option<String>,
}

/// `spec` of a Workflow / WorkflowTemplate / ClusterWorkflowTemplate, and of a CronWorkflow
/// (whose workflow spec sits under `workflowSpec`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Spec {
    pub entrypoint: Option<String>,
    pub templates: Vec<Template>,
    pub arguments: Arguments,
    pub on_exit: Option<String>,
    pub hooks: BTreeMap<String, LifecycleHook>,
    pub parallelism: Option<Scalar>,
    pub node_selector: BTreeMap<String, Scalar>,
    pub volumes: Vec<Volume>,
    pub volume_claim_templates: Vec<VolumeClaimTemplate>,
    pub workflow_template_ref: Option<WorkflowTemplateRef>,
    // CronWorkflow only.
    pub schedule: Option<String>,
    pub schedules: Vec<String>,
    pub timezone: Option<String>,
    pub workflow_spec: Option<Box<Spec>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct WorkflowTemplateRef {
    pub name: String,
    pub cluster_scope: Option<Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Arguments {
    pub parameters: Vec<Parameter>,
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Parameter {
    pub name: String,
    pub value: Option<Scalar>,
    pub default: Option<Scalar>,
    pub value_from: Option<ValueFrom>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ValueFrom {
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Inputs {
    pub parameters: Vec<Parameter>,
    pub artifacts: Vec<Artifact>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Artifact {
    pub name: String,
    pub path: Option<String>,
    pub from: Option<String>,
    pub from_expression: Option<String>,
    /// Key in the default artifact repository.
    pub key: Option<String>,
    pub s3: Option<BucketKey>,
    pub gcs: Option<BucketKey>,
    pub oss: Option<BucketKey>,
    pub http: Option<UrlLocation>,
    pub artifactory: Option<UrlLocation>,
    pub git: Option<GitLocation>,
    pub raw: Option<RawLocation>,
    pub azure: Option<AzureLocation>,
    pub hdfs: Option<HdfsLocation>,
    pub plugin: Option<PluginLocation>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct BucketKey {
    pub bucket: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct UrlLocation {
    pub url: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct GitLocation {
    pub repo: Option<String>,
    pub revision: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RawLocation {
    pub data: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct AzureLocation {
    pub container: Option<String>,
    pub blob: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct HdfsLocation {
    pub addresses: Vec<String>,
    pub path: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PluginLocation {
    pub name: Option<String>,
    pub key: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Volume {
    pub name: String,
    pub persistent_volume_claim: Option<ClaimSource>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ClaimSource {
    pub claim_name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VolumeClaimTemplate {
    pub metadata: Metadata,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct VolumeMount {
    pub name: String,
    pub mount_path: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Resources {
    pub limits: BTreeMap<String, Scalar>,
    pub requests: BTreeMap<String, Scalar>,
}

/// A `container`, a `script` (which adds `source`) or one container of a `containerSet`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Container {
    pub name: Option<String>,
    pub image: Option<String>,
    pub command: Vec<Scalar>,
    pub args: Vec<Scalar>,
    pub resources: Resources,
    pub volume_mounts: Vec<VolumeMount>,
    pub source: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ContainerSet {
    pub containers: Vec<Container>,
    pub volume_mounts: Vec<VolumeMount>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct RetryStrategy {
    pub limit: Option<Scalar>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Template {
    pub name: String,
    pub inputs: Inputs,
    pub outputs: Inputs,
    pub container: Option<Container>,
    pub script: Option<Container>,
    pub container_set: Option<ContainerSet>,
    pub resource: Option<Value>,
    pub suspend: Option<Value>,
    pub http: Option<Value>,
    pub plugin: Option<Value>,
    pub data: Option<Value>,
    pub dag: Option<DagTemplate>,
    pub steps: Option<Vec<StepGroup>>,
    pub retry_strategy: Option<RetryStrategy>,
    pub node_selector: BTreeMap<String, Scalar>,
    pub parallelism: Option<Scalar>,
    pub volumes: Vec<Volume>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DagTemplate {
    pub tasks: Vec<Call>,
}

/// One group of parallel steps: a list in Argo's YAML, or (rarely) `{steps: [...]}`.
#[derive(Debug, Clone, Default)]
pub struct StepGroup(pub Vec<Call>);

impl<'de> Deserialize<'de> for StepGroup {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Shape {
            List(Vec<Call>),
            Object {
                #[serde(default)]
                steps: Vec<Call>,
            },
        }
        let value = Value::deserialize(deserializer)?;
        if value.is_null() {
            return Ok(StepGroup(Vec::new()));
        }
        match value {
            Value::Sequence(_) => Vec::<Call>::deserialize(value)
                .map(StepGroup)
                .map_err(serde::de::Error::custom),
            other => match Shape::deserialize(other).map_err(serde::de::Error::custom)? {
                Shape::List(calls) | Shape::Object { steps: calls } => Ok(StepGroup(calls)),
            },
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct TemplateRef {
    pub name: String,
    pub template: String,
    pub cluster_scope: Option<Scalar>,
}

/// A DAG task or a step: both call a template with arguments.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Call {
    pub name: String,
    pub template: Option<String>,
    pub template_ref: Option<TemplateRef>,
    pub inline: Option<Box<Template>>,
    pub arguments: Arguments,
    pub dependencies: Vec<String>,
    pub depends: Option<String>,
    pub when: Option<Scalar>,
    pub with_items: Option<Vec<Value>>,
    pub with_param: Option<Scalar>,
    pub with_sequence: Option<Sequence>,
    pub on_exit: Option<String>,
    pub hooks: BTreeMap<String, LifecycleHook>,
    pub retry_strategy: Option<RetryStrategy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Sequence {
    pub count: Option<Scalar>,
    pub start: Option<Scalar>,
    pub end: Option<Scalar>,
    /// A printf format for the items (`%02d`); items are then not known exactly.
    pub format: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LifecycleHook {
    pub template: Option<String>,
    pub template_ref: Option<TemplateRef>,
    pub arguments: Arguments,
    pub expression: Option<String>,
}
