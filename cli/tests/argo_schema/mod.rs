//! Argo's published JSON schema (`schema/argo-jsonschema.json` of the shared corpus), read the
//! way Argo's Go decoder reads YAML, for the inject tests (the in-process corpus round trip in
//! `src/inject/tests.rs` and the CLI tests in `tests/inject.rs` both include this file).
//!
//! The schema types `IntOrString` and `Quantity` as strings and parameter values as strings,
//! but Argo accepts `parallelism: 2`, `retryStrategy.limit: 3`, `nvidia.com/gpu: 1` and
//! `value: 5`; its decoder also drops `key: null` and ignores `status`. So, as the corpus's own
//! "lenient" column does: IntOrString accepts integers, Quantity numbers, parameter
//! `value`/`default`/`enum` any scalar; nulls in mappings are dropped and `status` is left
//! out before validating. Each document is validated against the definition of its own kind,
//! so an error points into the document rather than at the schema's `oneOf`.
//!
//! The corpus lives outside the repository (`../shared/corpus` beside the checkout, or
//! `$KFCACHE_CORPUS`). Without it the tests fail and say where they looked.
#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde_json::{json, Value as Json};
use serde_yaml::Value as Yaml;

/// The shared corpus directory.
pub fn corpus_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("KFCACHE_CORPUS") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/corpus")
}

/// Reads a file of the shared corpus, failing the test with where it looked.
pub fn read_corpus_file(relative: &str) -> String {
    let path = corpus_dir().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the shared corpus is missing: cannot read {} ({e}); put ../shared beside the \
             checkout or set KFCACHE_CORPUS",
            path.display()
        )
    })
}

/// The Argo kinds the schema describes, with their definitions.
const KINDS: &[(&str, &str)] = &[
    ("Workflow", "io.argoproj.workflow.v1alpha1.Workflow"),
    (
        "WorkflowTemplate",
        "io.argoproj.workflow.v1alpha1.WorkflowTemplate",
    ),
    (
        "ClusterWorkflowTemplate",
        "io.argoproj.workflow.v1alpha1.ClusterWorkflowTemplate",
    ),
    ("CronWorkflow", "io.argoproj.workflow.v1alpha1.CronWorkflow"),
];

/// One compiled validator per Argo kind.
pub struct ArgoSchema {
    validators: HashMap<&'static str, jsonschema::Validator>,
}

impl std::fmt::Debug for ArgoSchema {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ArgoSchema").finish_non_exhaustive()
    }
}

impl ArgoSchema {
    /// Loads and compiles the schema; panics (failing the test) when the corpus is missing.
    pub fn load() -> ArgoSchema {
        let text = read_corpus_file("schema/argo-jsonschema.json");
        let mut schema: Json = serde_json::from_str(&text).expect("the Argo schema is JSON");
        make_lenient(&mut schema);
        let mut validators = HashMap::new();
        for (kind, definition) in KINDS {
            let mut for_kind = schema.clone();
            let object = for_kind.as_object_mut().expect("the schema is an object");
            object.remove("oneOf");
            object.insert(
                "$ref".to_string(),
                json!(format!("#/definitions/{definition}")),
            );
            let validator = jsonschema::validator_for(&for_kind)
                .unwrap_or_else(|e| panic!("the Argo schema for {kind} compiles: {e}"));
            validators.insert(*kind, validator);
        }
        ArgoSchema { validators }
    }

    /// The errors of one YAML document, keyed by instance path and schema keyword path (so the
    /// errors of two versions of a document compare), with their messages; `None` when the
    /// document is not of an Argo kind the schema describes.
    pub fn errors(&self, document: &Yaml) -> Option<BTreeMap<String, String>> {
        let kind = document.get("kind")?.as_str()?;
        let validator = self.validators.get(kind)?;
        let mut instance = to_json(document);
        if let Some(object) = instance.as_object_mut() {
            object.remove("status");
        }
        Some(
            validator
                .iter_errors(&instance)
                .map(|e| {
                    let mut message = e.to_string();
                    if message.len() > 300 {
                        let mut end = 300;
                        while !message.is_char_boundary(end) {
                            end -= 1;
                        }
                        message.truncate(end);
                        message.push('…');
                    }
                    (format!("{} ({})", e.instance_path, e.schema_path), message)
                })
                .collect(),
        )
    }

    /// The errors of every Argo document of a file's text.
    pub fn file_errors(&self, text: &str) -> Vec<Option<BTreeMap<String, String>>> {
        documents(text).iter().map(|d| self.errors(d)).collect()
    }
}

/// The YAML documents of a file (empty ones left out).
pub fn documents(text: &str) -> Vec<Yaml> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(text)
        .map(|d| Yaml::deserialize(d).expect("valid YAML"))
        .filter(|d| !d.is_null())
        .collect()
}

/// Argo's leniency, written into the schema.
fn make_lenient(schema: &mut Json) {
    let definitions = schema
        .get_mut("definitions")
        .and_then(Json::as_object_mut)
        .expect("the schema has definitions");
    definitions.insert(
        "io.k8s.apimachinery.pkg.util.intstr.IntOrString".to_string(),
        json!({"type": ["string", "integer"]}),
    );
    definitions.insert(
        "io.k8s.apimachinery.pkg.api.resource.Quantity".to_string(),
        json!({"type": ["string", "number"]}),
    );
    let any_scalar = json!({"type": ["string", "number", "boolean"]});
    if let Some(properties) = definitions
        .get_mut("io.argoproj.workflow.v1alpha1.Parameter")
        .and_then(|p| p.get_mut("properties"))
        .and_then(Json::as_object_mut)
    {
        properties.insert("value".to_string(), any_scalar.clone());
        properties.insert("default".to_string(), any_scalar.clone());
        properties.insert(
            "enum".to_string(),
            json!({"type": "array", "items": any_scalar}),
        );
    }
}

/// YAML as JSON the way Argo's decoder sees it: nulls in mappings dropped, keys as strings.
pub fn to_json(value: &Yaml) -> Json {
    match value {
        Yaml::Null => Json::Null,
        Yaml::Bool(b) => Json::Bool(*b),
        Yaml::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(u) = n.as_u64() {
                json!(u)
            } else {
                n.as_f64()
                    .and_then(serde_json::Number::from_f64)
                    .map_or(Json::Null, Json::Number)
            }
        }
        Yaml::String(s) => Json::String(s.clone()),
        Yaml::Sequence(items) => Json::Array(items.iter().map(to_json).collect()),
        Yaml::Mapping(map) => Json::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        other => serde_yaml::to_string(other)
                            .unwrap_or_default()
                            .trim()
                            .to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Tagged(tagged) => to_json(&tagged.value),
    }
}
