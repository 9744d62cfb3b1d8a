//! `{{...}}` placeholder substitution with the values known from the YAML.
//!
//! Only simple placeholders (`{{workflow.parameters.x}}`, `{{inputs.parameters.x}}`,
//! `{{item}}`, `{{item.field}}`) are replaced, and only when their value is known; anything
//! else (`{{tasks.a.outputs.result}}`, `{{workflow.name}}`, `{{=expr}}`) is kept verbatim so the
//! user still sees where the value comes from at run time.

use std::collections::BTreeMap;

use serde_yaml::Value;

use super::raw::value_to_string;

/// Values placeholders may resolve to, keyed by the text between the braces
/// (e.g. `inputs.parameters.epochs`).
pub type Vars = BTreeMap<String, String>;

/// Replace every known `{{ key }}` in `text`.
pub fn substitute(text: &str, vars: &Vars) -> String {
    if !text.contains("{{") || vars.is_empty() {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find("{{") {
        out.push_str(&rest[..open]);
        let after = &rest[open + 2..];
        let Some(close) = after.find("}}") else {
            out.push_str(&rest[open..]);
            return out;
        };
        let key = after[..close].trim();
        match vars.get(key) {
            Some(value) => out.push_str(value),
            None => out.push_str(&rest[open..open + 2 + close + 2]),
        }
        rest = &after[close + 2..];
    }
    out.push_str(rest);
    out
}

/// The `{{item...}}` values that are the same for every item of a loop, so substituting them
/// is exact. An item that is a map also offers `item.field` (and `item.a.b` for nested maps).
pub fn uniform_item_vars(items: &[Value]) -> Vars {
    let mut flattened = items.iter().map(|item| {
        let mut vars = Vars::new();
        flatten_item("item", item, 0, &mut vars);
        vars
    });
    let Some(mut common) = flattened.next() else {
        return Vars::new();
    };
    for vars in flattened {
        common.retain(|key, value| vars.get(key) == Some(value));
        if common.is_empty() {
            break;
        }
    }
    common
}

fn flatten_item(prefix: &str, value: &Value, depth: usize, vars: &mut Vars) {
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
            ),
            "--epochs=50 --lr 0.1"
        );
        assert_eq!(
            substitute("{{workflow.name}}-{{tasks.a.outputs.result}}", &v),
            "{{workflow.name}}-{{tasks.a.outputs.result}}"
        );
        assert_eq!(
            substitute("open {{ never closed", &v),
            "open {{ never closed"
        );
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
