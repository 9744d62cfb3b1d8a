//! Training parameters read from a task's command line: `--flag value` and `--flag=value`
//! pairs (e.g. `--epochs 50` → `epochs: "50"`). Shared by both front ends.

use std::collections::BTreeMap;

/// Collect `--flag value` / `--flag=value` pairs from `args` (command followed by args).
///
/// A `--flag` followed by another `--flag` (or by nothing) is a switch and maps to `"true"`.
/// Single-dash options are left alone: they are too often short aliases with no clear name.
pub fn flags_from_args<S: AsRef<str>>(args: &[S]) -> BTreeMap<String, String> {
    let mut flags = BTreeMap::new();
    let mut i = 0;
    while i < args.len() {
        let arg = args[i].as_ref().trim();
        i += 1;
        let Some(rest) = arg.strip_prefix("--") else {
            continue;
        };
        if rest.is_empty() || !rest.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            continue;
        }
        if let Some((name, value)) = rest.split_once('=') {
            if is_flag_name(name) {
                flags.insert(name.to_string(), value.to_string());
            }
            continue;
        }
        if !is_flag_name(rest) {
            continue;
        }
        match args.get(i).map(|a| a.as_ref()) {
            Some(next) if !next.trim().starts_with("--") => {
                flags.insert(rest.to_string(), next.to_string());
                i += 1;
            }
            _ => {
                flags.insert(rest.to_string(), "true".to_string());
            }
        }
    }
    flags
}

fn is_flag_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_both_flag_forms() {
        let flags = flags_from_args(&[
            "python",
            "train.py",
            "--epochs",
            "50",
            "--lr=0.01",
            "--verbose",
            "--batch-size",
            "32",
        ]);
        assert_eq!(flags["epochs"], "50");
        assert_eq!(flags["lr"], "0.01");
        assert_eq!(flags["verbose"], "true");
        assert_eq!(flags["batch-size"], "32");
        assert_eq!(flags.len(), 4);
    }

    #[test]
    fn ignores_positional_and_single_dash_arguments() {
        let flags = flags_from_args(&["sh", "-c", "echo --not-a-flag", "--", "x"]);
        assert!(flags.is_empty(), "{flags:?}");
    }
}
