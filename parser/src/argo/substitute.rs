//! `{{...}}` placeholder substitution with the values known from the YAML.
//!
//! Only simple placeholders (`{{workflow.parameters.x}}`, `{{inputs.parameters.x}}`,
//! `{{item}}`, `{{item.field}}`) are replaced, and only when their value is known; anything
//! else (`{{tasks.a.outputs.result}}`, `{{workflow.name}}`, `{{=expr}}`) is kept verbatim so the
//! user still sees where the value comes from at run time.
//!
//! Substituted values are passed on as the arguments of nested templates and substituted
//! again there, so a result is bounded by [`MAX_VALUE_BYTES`]: a value doubled at each of a
//! few dozen levels of nesting is refused ([`TooLong`]) instead of outgrowing memory.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_yaml::Value;

use super::raw::value_to_string;
pub use crate::limits::TooLong;
use crate::limits::MAX_VALUE_BYTES;

/// Values placeholders may resolve to, keyed by the text between the braces
/// (e.g. `inputs.parameters.epochs`).
///
/// Every call of a workflow gets its own, so they are cheap to clone: the workflow's values are
/// shared by all of them ([`Vars::shared`]) and a call's own values (its inputs, loop items)
/// are copied only when a call adds to them. A workflow with thousands of parameters and tens
/// of thousands of calls would otherwise copy every parameter into every call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Vars {
    shared: Arc<BTreeMap<String, String>>,
    own: Arc<BTreeMap<String, String>>,
}

impl Vars {
    pub fn new() -> Vars {
        Vars::default()
    }

    /// Values shared by every clone (the workflow's), under which own values are added.
    pub fn shared(values: BTreeMap<String, String>) -> Vars {
        Vars {
            shared: Arc::new(values),
            own: Arc::default(),
        }
    }

    pub fn get(&self, key: &str) -> Option<&String> {
        self.own.get(key).or_else(|| self.shared.get(key))
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub fn is_empty(&self) -> bool {
        self.own.is_empty() && self.shared.is_empty()
    }

    /// Add (or override) an own value.
    pub fn insert(&mut self, key: String, value: String) {
        Arc::make_mut(&mut self.own).insert(key, value);
    }
}

impl Extend<(String, String)> for Vars {
    fn extend<I: IntoIterator<Item = (String, String)>>(&mut self, values: I) {
        let mut values = values.into_iter().peekable();
        if values.peek().is_some() {
            Arc::make_mut(&mut self.own).extend(values);
        }
    }
}

impl FromIterator<(String, String)> for Vars {
    fn from_iter<I: IntoIterator<Item = (String, String)>>(values: I) -> Vars {
        Vars::shared(values.into_iter().collect())
    }
}

/// Replace every known `{{ key }}` in `text`; [`TooLong`] when a replacement would make the
/// result longer than [`MAX_VALUE_BYTES`] (text without a known placeholder is returned as it
/// is, whatever its length).
pub fn substitute(text: &str, vars: &Vars) -> Result<String, TooLong> {
    if !text.contains("{{") || vars.is_empty() {
        return Ok(text.to_string());
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return Ok(out);
        };
        let key = after[..close].trim();
        match vars.get(key) {
            Some(value) => {
                if out.len().saturating_add(value.len()) > MAX_VALUE_BYTES {
                    return Err(TooLong);
                }
                out.push_str(value);
            }
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The `{{item...}}` values that are the same for every item of a loop, so substituting them
/// is exact. An item that is a map also offers `item.field` (and `item.a.b` for nested maps).
pub fn uniform_item_vars(items: &[Value]) -> BTreeMap<String, String> {
    let mut flattened = items.iter().map(item_vars);
    let Some(mut common) = flattened.next() else {
        return BTreeMap::new();
    };
    for vars in flattened {
        common.retain(|key, value| vars.get(key) == Some(value));
        if common.is_empty() {
            break;
        }
    }
    common
}

/// The `{{item...}}` values of one loop item: `item`, and for a map `item.field`.
pub fn item_vars(item: &Value) -> BTreeMap<String, String> {
    let mut vars = BTreeMap::new();
    flatten_item("item", item, 0, &mut vars);
    vars
}

fn flatten_item(prefix: &str, value: &Value, depth: usize, vars: &mut BTreeMap<String, String>) {
    vars.insert(prefix.to_string(), value_to_string(value));
    if depth >= 4 {
        return;
    }
    if let Value::Mapping(map) = value {
        for (key, value) in map {
            if let Some(key) = key.as_str() {
                flatten_item(&format!("{prefix}.{key}"), value, depth + 1, vars);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn known_placeholders_are_replaced_and_unknown_kept() {
        let v = vars(&[
            ("inputs.parameters.epochs", "50"),
            ("workflow.parameters.lr", "0.1"),
        ]);
        assert_eq!(
            substitute(
                "--epochs={{inputs.parameters.epochs}} --lr {{ workflow.parameters.lr }}",
                &v
            )
            .as_deref(),
            Ok("--epochs=50 --lr 0.1")
        );
        assert_eq!(
            substitute("{{workflow.name}}-{{tasks.a.outputs.result}}", &v).as_deref(),
            Ok("{{workflow.name}}-{{tasks.a.outputs.result}}")
        );
        assert_eq!(
            substitute("open {{ never closed", &v).as_deref(),
            Ok("open {{ never closed")
        );
    }

    #[test]
    fn a_result_longer_than_the_limit_is_refused() {
        let big = "x".repeat(MAX_VALUE_BYTES / 2 + 1);
        let v = vars(&[("p", big.as_str())]);
        assert_eq!(substitute("{{p}}", &v).map(|s| s.len()), Ok(big.len()));
        assert_eq!(substitute("{{p}}{{p}}", &v), Err(TooLong));
        // Text that is long by itself, without substitution, is not the limit's business.
        let long = "y".repeat(MAX_VALUE_BYTES + 1);
        assert_eq!(substitute(&long, &v).map(|s| s.len()), Ok(long.len()));
    }

    #[test]
    fn only_uniform_item_fields_are_substituted() {
        let items: Vec<Value> =
            serde_yaml::from_str("[{image: debian, tag: a}, {image: debian, tag: b}]")
                .expect("yaml");
        let common = uniform_item_vars(&items);
        assert_eq!(common.get("item.image").map(String::as_str), Some("debian"));
        assert!(!common.contains_key("item.tag"));
        assert!(!common.contains_key("item"));
        let same: Vec<Value> = serde_yaml::from_str("[7, 7]").expect("yaml");
        assert_eq!(
            uniform_item_vars(&same).get("item").map(String::as_str),
            Some("7")
        );
    }
}
