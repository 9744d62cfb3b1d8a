//! Values that flow through a KFP pipeline while it is flattened: input parameters (known
//! constants or run-time placeholders) and artifact sources, plus the small interpreters for
//! what the IR writes as strings: `parseJson(string_value)["key"]` selectors,
//! `{{$.inputs.parameters['name']}}` placeholders, importer URIs and accelerator types.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::limits::{TooLong, MAX_VALUE_BYTES};
use crate::model::task_output_uri;

/// The value of an input parameter as far as the YAML tells.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ParamValue {
    /// A constant or a default: known before the run.
    Known(Value),
    /// Known only at run time; the string is a placeholder naming where it comes from, e.g.
    /// `{{tasks.train.outputs.accuracy}}` or `{{item}}`.
    Runtime(String),
}

impl ParamValue {
    /// The value as a task parameter: strings as they are, everything else as compact JSON.
    pub fn render(&self) -> String {
        match self {
            ParamValue::Known(value) => render_json(value),
            ParamValue::Runtime(placeholder) => placeholder.clone(),
        }
    }

    /// Apply a `parameterExpressionSelector`. Only the shape the KFP compiler emits for loop
    /// item fields, `parseJson(string_value)["key"]` (possibly chained, or with list indices),
    /// is evaluated; anything else makes the value a run-time one.
    pub fn select(self, selector: &str) -> ParamValue {
        let Some(path) = parse_selector(selector) else {
            return match self {
                ParamValue::Runtime(p) => ParamValue::Runtime(p),
                ParamValue::Known(_) => ParamValue::Runtime(format!("{{{{{selector}}}}}")),
            };
        };
        match self {
            ParamValue::Known(value) => {
                let mut current = match value {
                    Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                    other => other,
                };
                for step in &path {
                    let next = match step {
                        SelectorStep::Key(key) => current.get(key.as_str()).cloned(),
                        SelectorStep::Index(i) => current.get(*i).cloned(),
                    };
                    match next {
                        Some(v) => current = v,
                        None => return ParamValue::Runtime(format!("{{{{{selector}}}}}")),
                    }
                }
                ParamValue::Known(current)
            }
            ParamValue::Runtime(placeholder) => {
                let suffix: String = path
                    .iter()
                    .map(|step| match step {
                        SelectorStep::Key(key) => format!(".{key}"),
                        SelectorStep::Index(i) => format!(".{i}"),
                    })
                    .collect();
                match placeholder
                    .strip_prefix("{{")
                    .and_then(|p| p.strip_suffix("}}"))
                {
                    Some(inner) => ParamValue::Runtime(format!("{{{{{inner}{suffix}}}}}")),
                    None => ParamValue::Runtime(format!("{placeholder}{suffix}")),
                }
            }
        }
    }

    /// The list this value holds, if it is a known list (or a string holding a JSON list).
    pub fn as_known_list_len(&self) -> Option<usize> {
        match self {
            ParamValue::Known(Value::Array(items)) => Some(items.len()),
            ParamValue::Known(Value::String(s)) => match serde_json::from_str::<Value>(s) {
                Ok(Value::Array(items)) => Some(items.len()),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Strings as they are; other JSON values compactly serialised.
pub(crate) fn render_json(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[derive(Debug, Clone, PartialEq)]
enum SelectorStep {
    Key(String),
    Index(usize),
}

/// `parseJson(string_value)["a"][0]` → `[Key(a), Index(0)]`; `None` for other expressions.
fn parse_selector(selector: &str) -> Option<Vec<SelectorStep>> {
    let mut rest = selector.trim().strip_prefix("parseJson(string_value)")?;
    let mut steps = Vec::new();
    while !rest.is_empty() {
        rest = rest.strip_prefix('[')?;
        let end = rest.find(']')?;
        let inner = rest.get(..end)?.trim();
        rest = rest.get(end + 1..)?;
        let quoted = inner
            .strip_prefix('"')
            .and_then(|s| s.strip_suffix('"'))
            .or_else(|| inner.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')));
        match quoted {
            Some(key) => steps.push(SelectorStep::Key(key.to_string())),
            None => steps.push(SelectorStep::Index(inner.parse().ok()?)),
        }
    }
    (!steps.is_empty()).then_some(steps)
}

/// Where an input artifact comes from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ArtifactValue {
    /// A location known from the YAML (an importer's URI).
    Uri(String),
    /// An output of an upstream executable task.
    Task { producer: String, key: String },
    /// Not knowable from the YAML (e.g. a pipeline input artifact).
    Unknown,
}

impl ArtifactValue {
    pub fn source(&self) -> Option<String> {
        match self {
            ArtifactValue::Uri(uri) => Some(uri.clone()),
            ArtifactValue::Task { producer, key } => Some(task_output_uri(producer, key)),
            ArtifactValue::Unknown => None,
        }
    }
}

/// Normalise an importer URI to the model's schemes: `minio://` is S3-compatible storage, and a
/// bare absolute path is a local file. Empty strings and placeholders are not locations.
pub(crate) fn normalize_uri(uri: &str) -> Option<String> {
    let uri = uri.trim();
    if uri.is_empty() || uri.contains("{{") {
        return None;
    }
    if let Some(rest) = uri.strip_prefix("minio://") {
        return Some(format!("s3://{rest}"));
    }
    if uri.starts_with('/') {
        return Some(format!("file://{uri}"));
    }
    Some(uri.to_string())
}

/// Replace `{{$.inputs.parameters['name']}}` (single or double quotes) with the resolved
/// parameter; placeholders of unknown parameters and of other kinds are left as they are.
/// [`TooLong`] when the result would be longer than [`MAX_VALUE_BYTES`].
pub(crate) fn substitute_placeholders(
    text: &str,
    params: &BTreeMap<String, ParamValue>,
) -> Result<String, TooLong> {
    replace_quoted_references(text, "{{$.inputs.parameters[", "]}}", |name| {
        params.get(name).map(ParamValue::render)
    })
}

/// Make a `triggerPolicy.condition` readable on its own: each
/// `inputs.parameter_values['name']` (the condition's view of the task's inputs) becomes the
/// resolved value: a placeholder such as `{{tasks.flip-coin.outputs.Output}}` for run-time
/// values, a quoted string or a JSON literal for known ones. Unknown names are left as they are.
/// [`TooLong`] when the result would be longer than [`MAX_VALUE_BYTES`].
pub(crate) fn rewrite_condition(
    condition: &str,
    params: &BTreeMap<String, ParamValue>,
) -> Result<String, TooLong> {
    replace_quoted_references(condition, "inputs.parameter_values[", "]", |name| {
        Some(match params.get(name)? {
            ParamValue::Runtime(placeholder) => placeholder.clone(),
            ParamValue::Known(Value::String(s)) => format!("'{}'", s.replace('\'', "\\'")),
            ParamValue::Known(other) => other.to_string(),
        })
    })
}

/// Replace every `OPEN 'name' CLOSE` (the name in single or double quotes) in `text` with
/// `render(name)`; references `render` does not know, or that are not closed, stay verbatim.
/// Substituted values flow into nested components' inputs and may be substituted again there,
/// so a result longer than [`MAX_VALUE_BYTES`] is refused.
fn replace_quoted_references(
    text: &str,
    open: &str,
    close: &str,
    render: impl Fn(&str) -> Option<String>,
) -> Result<String, TooLong> {
    if !text.contains(open) {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find(open) {
        out.push_str(&rest[..start]);
        let after = &rest[start + open.len()..];
        let replaced = after.find(close).and_then(|end| {
            let quoted = after.get(..end)?.trim();
            let name = quoted
                .strip_prefix('\'')
                .and_then(|s| s.strip_suffix('\''))
                .or_else(|| quoted.strip_prefix('"').and_then(|s| s.strip_suffix('"')))?;
            Some((render(name)?, end + close.len()))
        });
        match replaced {
            Some((value, consumed)) => {
                if out.len().saturating_add(value.len()) > MAX_VALUE_BYTES {
                    return Err(TooLong);
                }
                out.push_str(&value);
                rest = &after[consumed..];
            }
            None => {
                out.push_str(open);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    Ok(out)
}

/// A non-negative count from a JSON number or a numeric string (`2`, `"2"`, `2.0`).
pub(crate) fn as_count(value: &Value) -> Option<u32> {
    let number = match value {
        Value::Number(n) => n.as_f64()?,
        Value::String(s) => s.trim().parse::<f64>().ok()?,
        _ => return None,
    };
    (number.is_finite() && number >= 0.0).then(|| number.min(u32::MAX as f64) as u32)
}

/// Whether an accelerator type names a GPU: Kubernetes extended resources (`nvidia.com/gpu`,
/// `amd.com/gpu`, anything ending in `/gpu`), Vertex types (`NVIDIA_TESLA_T4`, `NVIDIA_L4`),
/// or a type mentioning NVIDIA, AMD or GPU. TPUs (`tpu-v3`, `TPU_V2`) and other accelerators
/// do not count: kfcache predicts GPU tasks.
pub(crate) fn is_gpu_type(kind: &str) -> bool {
    let lower = kind.trim().to_ascii_lowercase();
    if lower.contains("tpu") {
        return false;
    }
    lower.contains("gpu") || lower.contains("nvidia") || lower.starts_with("amd")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn selectors_pick_fields_of_known_and_runtime_values() {
        let item = ParamValue::Known(json!({"A_a": "heads", "B_b": ["A", "B"]}));
        assert_eq!(
            item.clone().select("parseJson(string_value)[\"B_b\"]"),
            ParamValue::Known(json!(["A", "B"]))
        );
        let as_string = ParamValue::Known(json!("{\"A_a\": \"tails\"}"));
        assert_eq!(
            as_string
                .select("parseJson(string_value)[\"A_a\"]")
                .render(),
            "tails"
        );
        let runtime = ParamValue::Runtime("{{item}}".into());
        assert_eq!(
            runtime.select("parseJson(string_value)[\"A_a\"]").render(),
            "{{item.A_a}}"
        );
    }

    #[test]
    fn placeholders_are_substituted_with_resolved_parameters() {
        let mut params = BTreeMap::new();
        params.insert("epochs".to_string(), ParamValue::Known(json!(50)));
        params.insert("lr".to_string(), ParamValue::Known(json!("0.01")));
        let text = "--epochs={{$.inputs.parameters['epochs']}} {{$.inputs.parameters[\"lr\"]}} \
                    {{$.inputs.parameters['missing']}}";
        assert_eq!(
            substitute_placeholders(text, &params).as_deref(),
            Ok("--epochs=50 0.01 {{$.inputs.parameters['missing']}}")
        );
        let big = ParamValue::Known(json!("x".repeat(MAX_VALUE_BYTES / 2 + 1)));
        params.insert("big".to_string(), big);
        let twice = "{{$.inputs.parameters['big']}}{{$.inputs.parameters['big']}}";
        assert_eq!(substitute_placeholders(twice, &params), Err(TooLong));
    }

    #[test]
    fn conditions_name_their_sources() {
        let mut params = BTreeMap::new();
        params.insert(
            "pipelinechannel--flip-Output".to_string(),
            ParamValue::Runtime("{{tasks.flip.outputs.Output}}".into()),
        );
        params.insert(
            "pipelinechannel--n".to_string(),
            ParamValue::Known(json!(3)),
        );
        params.insert(
            "pipelinechannel--s".to_string(),
            ParamValue::Known(json!("a")),
        );
        assert_eq!(
            rewrite_condition(
                "inputs.parameter_values['pipelinechannel--flip-Output'] == 'heads' && \
                 int(inputs.parameter_values['pipelinechannel--n']) > 2 && \
                 inputs.parameter_values['pipelinechannel--s'] == 'a' && \
                 inputs.parameter_values['other'] == 1",
                &params
            )
            .as_deref(),
            Ok(
                "{{tasks.flip.outputs.Output}} == 'heads' && int(3) > 2 && 'a' == 'a' && \
             inputs.parameter_values['other'] == 1"
            )
        );
    }

    #[test]
    fn uris_are_normalised() {
        assert_eq!(
            normalize_uri("minio://bucket/k").as_deref(),
            Some("s3://bucket/k")
        );
        assert_eq!(
            normalize_uri("/data/x.csv").as_deref(),
            Some("file:///data/x.csv")
        );
        assert_eq!(normalize_uri("gs://b/k").as_deref(), Some("gs://b/k"));
        assert_eq!(normalize_uri(""), None);
    }

    #[test]
    fn gpu_types() {
        assert!(is_gpu_type("nvidia.com/gpu"));
        assert!(is_gpu_type("NVIDIA_TESLA_T4"));
        assert!(is_gpu_type("amd.com/gpu"));
        assert!(!is_gpu_type("tpu-v3"));
        assert!(!is_gpu_type("TPU_V2"));
        assert_eq!(as_count(&json!("2")), Some(2));
        assert_eq!(as_count(&json!(1.0)), Some(1));
        assert_eq!(as_count(&json!("{{x}}")), None);
    }
}
