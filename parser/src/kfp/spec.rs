//! Serde structs mirroring the parts of the KFP v2 `PipelineSpec` IR (and the Kubernetes
//! `PlatformSpec` that may follow it) that kfcache reads.
//!
//! The structs are deliberately lenient: every field is optional or defaulted and unknown
//! fields are ignored, because the IR grows new fields with each SDK release and a renamed
//! top-level key (e.g. `components_1`) must surface as a dangling reference with a useful
//! message rather than a serde error. Values whose type varies between SDK versions (counts
//! written as numbers or strings, parameter defaults of any type) are kept as JSON values and
//! interpreted by the flattening code. Maps whose order matters (DAG tasks, inputs) are read
//! into [`Ordered`], which keeps declaration order.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, MapAccess, Visitor};
use serde::Deserialize as DeriveDeserialize;
use serde_json::Value;

/// A map that keeps its keys in declaration order (the IR is a protobuf JSON/YAML rendering,
/// so duplicate keys do not occur; if they do, the later entry wins like in a map).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Ordered<T>(pub Vec<(String, T)>);

impl<T> Default for Ordered<T> {
    fn default() -> Self {
        Ordered(Vec::new())
    }
}

impl<T> Ordered<T> {
    pub fn iter(&self) -> impl Iterator<Item = (&String, &T)> {
        self.0.iter().map(|(k, v)| (k, v))
    }

    pub fn get(&self, key: &str) -> Option<&T> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn keys(&self) -> impl Iterator<Item = &String> {
        self.0.iter().map(|(k, _)| k)
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Ordered<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct OrderedVisitor<T>(PhantomData<T>);

        impl<'de, T: Deserialize<'de>> Visitor<'de> for OrderedVisitor<T> {
            type Value = Ordered<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map")
            }

            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Ordered::default())
            }

            fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(Ordered::default())
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut entries: Vec<(String, T)> = Vec::new();
                // Where each key is, so that a map of tens of thousands of tasks is read in
                // linear time.
                let mut positions: HashMap<String, usize> = HashMap::new();
                while let Some((key, value)) = map.next_entry::<String, T>()? {
                    match positions.get(&key) {
                        Some(&i) => {
                            if let Some(slot) = entries.get_mut(i) {
                                slot.1 = value;
                            }
                        }
                        None => {
                            positions.insert(key.clone(), entries.len());
                            entries.push((key, value));
                        }
                    }
                }
                Ok(Ordered(entries))
            }
        }

        deserializer.deserialize_any(OrderedVisitor(PhantomData))
    }
}

/// Deserialize `null` as the type's default (protobuf renderings write empty messages as
/// `null` or `{}` interchangeably).
fn null_default<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(deserializer)?.unwrap_or_default())
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PipelineSpec {
    #[serde(deserialize_with = "null_default")]
    pub pipeline_info: PipelineInfo,
    pub root: Option<ComponentSpec>,
    #[serde(deserialize_with = "null_default")]
    pub components: BTreeMap<String, ComponentSpec>,
    #[serde(deserialize_with = "null_default")]
    pub deployment_spec: DeploymentSpec,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PipelineInfo {
    pub name: Option<String>,
    pub display_name: Option<String>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ComponentSpec {
    pub dag: Option<DagSpec>,
    pub executor_label: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub input_definitions: Definitions,
    #[serde(deserialize_with = "null_default")]
    pub output_definitions: Definitions,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Definitions {
    #[serde(deserialize_with = "null_default")]
    pub parameters: Ordered<ParameterDefinition>,
    #[serde(deserialize_with = "null_default")]
    pub artifacts: Ordered<Value>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ParameterDefinition {
    pub default_value: Option<Value>,
    pub parameter_type: Option<String>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct DagSpec {
    #[serde(deserialize_with = "null_default")]
    pub tasks: Ordered<TaskSpec>,
    #[serde(deserialize_with = "null_default")]
    pub outputs: DagOutputs,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct DagOutputs {
    #[serde(deserialize_with = "null_default")]
    pub parameters: Ordered<DagOutputParameter>,
    #[serde(deserialize_with = "null_default")]
    pub artifacts: Ordered<DagOutputArtifact>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct DagOutputParameter {
    pub value_from_parameter: Option<ParameterSelector>,
    pub value_from_oneof: Option<OneOfParameters>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct OneOfParameters {
    #[serde(deserialize_with = "null_default")]
    pub parameter_selectors: Vec<ParameterSelector>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ParameterSelector {
    pub producer_subtask: Option<String>,
    pub output_parameter_key: Option<String>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct DagOutputArtifact {
    #[serde(deserialize_with = "null_default")]
    pub artifact_selectors: Vec<ArtifactSelector>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ArtifactSelector {
    pub producer_subtask: Option<String>,
    pub output_artifact_key: Option<String>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TaskSpec {
    pub component_ref: Option<ComponentRef>,
    #[serde(deserialize_with = "null_default")]
    pub dependent_tasks: Vec<String>,
    #[serde(deserialize_with = "null_default")]
    pub inputs: TaskInputs,
    pub trigger_policy: Option<TriggerPolicy>,
    pub parameter_iterator: Option<ParameterIterator>,
    pub artifact_iterator: Option<ArtifactIterator>,
    pub iterator_policy: Option<IteratorPolicy>,
    pub retry_policy: Option<RetryPolicy>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ComponentRef {
    pub name: Option<String>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TaskInputs {
    #[serde(deserialize_with = "null_default")]
    pub parameters: Ordered<ParameterInput>,
    #[serde(deserialize_with = "null_default")]
    pub artifacts: Ordered<ArtifactInput>,
}

/// Where an input parameter's value comes from (a `oneof` in the protobuf; the first field
/// present wins, in the order the flattening code checks them).
#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ParameterInput {
    pub component_input_parameter: Option<String>,
    pub task_output_parameter: Option<TaskOutputParameter>,
    pub runtime_value: Option<RuntimeValue>,
    pub task_final_status: Option<TaskFinalStatus>,
    pub parameter_expression_selector: Option<String>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TaskOutputParameter {
    pub producer_task: Option<String>,
    pub output_parameter_key: Option<String>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TaskFinalStatus {
    pub producer_task: Option<String>,
}

/// `runtimeValue.constant` (any JSON value), or the pre-2.0 `constantValue` wrapper
/// (`{stringValue|intValue|doubleValue: …}`).
#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct RuntimeValue {
    pub constant: Option<Value>,
    pub constant_value: Option<Value>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ArtifactInput {
    pub task_output_artifact: Option<TaskOutputArtifact>,
    pub component_input_artifact: Option<String>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TaskOutputArtifact {
    pub producer_task: Option<String>,
    pub output_artifact_key: Option<String>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct TriggerPolicy {
    pub condition: Option<String>,
    pub strategy: Option<String>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ParameterIterator {
    pub item_input: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub items: ParameterItems,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ParameterItems {
    /// A JSON list, as a string (the compiler's rendering) or, leniently, a list.
    pub raw: Option<Value>,
    pub input_parameter: Option<String>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ArtifactIterator {
    pub item_input: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub items: ArtifactItems,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ArtifactItems {
    pub input_artifact: Option<String>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct IteratorPolicy {
    pub parallelism_limit: Option<Value>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct RetryPolicy {
    pub max_retry_count: Option<Value>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct DeploymentSpec {
    #[serde(deserialize_with = "null_default")]
    pub executors: BTreeMap<String, ExecutorSpec>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ExecutorSpec {
    pub container: Option<ContainerSpec>,
    pub importer: Option<ImporterSpec>,
    pub resolver: Option<Value>,
    pub custom_job: Option<Value>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ContainerSpec {
    pub image: Option<String>,
    #[serde(deserialize_with = "null_default")]
    pub command: Vec<Value>,
    #[serde(deserialize_with = "null_default")]
    pub args: Vec<Value>,
    #[serde(deserialize_with = "null_default")]
    pub resources: Resources,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Resources {
    pub accelerator: Option<Accelerator>,
}

/// `resources.accelerator`: the SDK writes both the old (`type`, `count`) and the new
/// (`resourceType`, `resourceCount`) fields; counts may be numbers, numeric strings or
/// `{{$.inputs.parameters['…']}}` placeholders.
#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Accelerator {
    #[serde(rename = "type")]
    pub kind: Option<Value>,
    pub count: Option<Value>,
    pub resource_type: Option<Value>,
    pub resource_count: Option<Value>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ImporterSpec {
    pub artifact_uri: Option<ImporterUri>,
}

/// `importer.artifactUri`: a `ValueOrRuntimeParameter`.
#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct ImporterUri {
    pub constant: Option<Value>,
    pub constant_value: Option<Value>,
    pub runtime_parameter: Option<String>,
}

/// The document that follows an IR document in a multi-document file.
#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PlatformSpec {
    #[serde(deserialize_with = "null_default")]
    pub platforms: Platforms,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct Platforms {
    #[serde(deserialize_with = "null_default")]
    pub kubernetes: KubernetesPlatform,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct KubernetesPlatform {
    #[serde(deserialize_with = "null_default")]
    pub deployment_spec: KubernetesDeploymentSpec,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct KubernetesDeploymentSpec {
    /// Keyed by executor label.
    #[serde(deserialize_with = "null_default")]
    pub executors: BTreeMap<String, KubernetesExecutorConfig>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct KubernetesExecutorConfig {
    #[serde(deserialize_with = "null_default")]
    pub pvc_mount: Vec<PvcMount>,
    pub node_selector: Option<NodeSelector>,
}

/// A PVC mount. The claim is named by `pvcNameParameter` (newer SDKs) or by the older
/// flattened `constant` / `taskOutputParameter` / `componentInputParameter` fields.
#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct PvcMount {
    pub mount_path: Option<String>,
    pub pvc_name_parameter: Option<ParameterInput>,
    pub constant: Option<Value>,
    pub task_output_parameter: Option<TaskOutputParameter>,
    pub component_input_parameter: Option<String>,
}

#[derive(Debug, Clone, Default, DeriveDeserialize)]
#[serde(rename_all = "camelCase", default)]
pub(crate) struct NodeSelector {
    #[serde(deserialize_with = "null_default")]
    pub labels: BTreeMap<String, Value>,
    pub node_selector_json: Option<ParameterInput>,
}
