//! `$(VAR)` expansion of env values, command and args, as the kubelet does it.
//!
//! Follows `third_party/forked/golang/expansion` of Kubernetes: `$(NAME)` becomes the value of
//! NAME when it is defined and stays as written otherwise, `$$` becomes `$`, and any other `$`
//! is kept.

use std::collections::HashMap;

/// Expands `$(NAME)` references in `input` from `vars`.
pub fn expand(input: &str, vars: &HashMap<String, String>) -> String {
    let bytes = input.as_bytes();
    let mut out = String::with_capacity(input.len());
    let mut i = 0;
    let mut literal_start = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' && i + 1 < bytes.len() {
            out.push_str(&input[literal_start..i]);
            match bytes[i + 1] {
                b'$' => {
                    out.push('$');
                    i += 2;
                }
                b'(' => match input[i + 2..].find(')') {
                    Some(end) => {
                        let name = &input[i + 2..i + 2 + end];
                        match vars.get(name) {
                            Some(value) => out.push_str(value),
                            None => {
                                out.push_str("$(");
                                out.push_str(name);
                                out.push(')');
                            }
                        }
                        i += 2 + end + 1;
                    }
                    None => {
                        out.push_str(&input[i..]);
                        i = bytes.len();
                    }
                },
                _ => {
                    out.push('$');
                    i += 1;
                }
            }
            literal_start = i;
        } else {
            i += 1;
        }
    }
    if literal_start < bytes.len() {
        out.push_str(&input[literal_start..]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars() -> HashMap<String, String> {
        HashMap::from([
            ("A".to_string(), "x".to_string()),
            ("B".to_string(), "y z".to_string()),
        ])
    }

    #[test]
    fn defined_names_are_replaced_and_others_kept() {
        assert_eq!(expand("$(A)-$(B)-$(C)", &vars()), "x-y z-$(C)");
    }

    #[test]
    fn double_dollar_escapes() {
        assert_eq!(expand("$$(A) $$ $ $x", &vars()), "$(A) $ $ $x");
    }

    #[test]
    fn unterminated_reference_is_literal() {
        assert_eq!(expand("a$(A", &vars()), "a$(A");
        assert_eq!(expand("end$", &vars()), "end$");
    }
}
