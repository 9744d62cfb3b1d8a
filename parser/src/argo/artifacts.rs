//! Artifact locations as URIs, and `from` / `fromExpression` references to other tasks'
//! outputs.
//!
//! A location block (`s3`, `gcs`, `http`, ...) becomes the URI the prefetcher reads from; a
//! reference (`{{tasks.train.outputs.artifacts.model}}`) is parsed into an [`ArtifactRef`]
//! that the flattener resolves to `task://<producer>/<artifact>`.

use super::raw::Artifact;
use super::substitute::{substitute, TooLong, Vars};

/// The URI of an artifact's explicit location, if it declares one; [`TooLong`] when
/// substituting its placeholders would make it too long.
pub fn location(artifact: &Artifact, vars: &Vars) -> Result<Option<String>, TooLong> {
    let s = |text: &str| substitute(text, vars);
    let bucket_key = |scheme: &str, bucket: &Option<String>, key: &Option<String>| {
        let key = key
            .as_deref()
            .map(|k| s(k.trim_start_matches('/')))
            .transpose()?;
        let bucket = bucket
            .as_deref()
            .map(s)
            .transpose()?
            .filter(|b| !b.is_empty());
        Ok(match (bucket, key) {
            (Some(bucket), Some(key)) => Some(format!("{scheme}://{bucket}/{key}")),
            (Some(bucket), None) => Some(format!("{scheme}://{bucket}")),
            (None, Some(key)) => Some(format!("artifact-repository://{key}")),
            (None, None) => None,
        })
    };
    if let Some(loc) = &artifact.s3 {
        return bucket_key("s3", &loc.bucket, &loc.key);
    }
    if let Some(loc) = &artifact.gcs {
        return bucket_key("gs", &loc.bucket, &loc.key);
    }
    if let Some(loc) = &artifact.oss {
        return bucket_key("oss", &loc.bucket, &loc.key);
    }
    if let Some(loc) = &artifact.http {
        return loc.url.as_deref().map(s).transpose();
    }
    if let Some(loc) = &artifact.artifactory {
        return loc.url.as_deref().map(s).transpose();
    }
    if let Some(loc) = &artifact.git {
        return Ok(match loc.repo.as_deref() {
            Some(repo) => Some(format!("git+{}", s(repo)?)),
            None => None,
        });
    }
    if artifact.raw.is_some() {
        return Ok(Some("raw:".to_string()));
    }
    if let Some(loc) = &artifact.azure {
        let container = loc.container.as_deref().map(s).transpose()?;
        let blob = loc
            .blob
            .as_deref()
            .map(|b| s(b.trim_start_matches('/')))
            .transpose()?;
        return Ok(Some(format!(
            "azure://{}/{}",
            container.unwrap_or_default(),
            blob.unwrap_or_default()
        )));
    }
    if let Some(loc) = &artifact.hdfs {
        let addresses = loc
            .addresses
            .iter()
            .map(|a| s(a))
            .collect::<Result<Vec<_>, _>>()?
            .join(",");
        let path = loc
            .path
            .as_deref()
            .map(|p| s(p.trim_start_matches('/')))
            .transpose()?
            .unwrap_or_default();
        return Ok(Some(format!("hdfs://{addresses}/{path}")));
    }
    if let Some(loc) = &artifact.plugin {
        let name = loc.name.as_deref().map(s).transpose()?.unwrap_or_default();
        let key = loc
            .key
            .as_deref()
            .map(|k| s(k.trim_start_matches('/')))
            .transpose()?
            .unwrap_or_default();
        return Ok(Some(format!("plugin://{name}/{key}")));
    }
    if let Some(key) = &artifact.key {
        return Ok(Some(format!(
            "artifact-repository://{}",
            s(key.trim_start_matches('/'))?
        )));
    }
    Ok(None)
}

/// A reference to another artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ArtifactRef {
    /// `tasks.X.outputs.artifacts.Y` or `steps.X.outputs.artifacts.Y`.
    Sibling { task: String, artifact: String },
    /// `inputs.artifacts.Y` of the enclosing template.
    Input { artifact: String },
}

/// Parse `from: "{{tasks.X.outputs.artifacts.Y}}"` (or `steps.`, `inputs.artifacts.`).
pub fn parse_from(from: &str) -> Option<ArtifactRef> {
    let inner = from.trim().strip_prefix("{{")?.strip_suffix("}}")?.trim();
    parse_path(inner)
}

/// Parse a `fromExpression`. Bracketed keys (`tasks['X']`) are accepted; when the expression
/// names more than one artifact (a ternary), the producer is not known statically.
pub fn parse_from_expression(expression: &str) -> Option<ArtifactRef> {
    let normalized = normalize_brackets(expression);
    let mut found: Vec<ArtifactRef> = Vec::new();
    for word in normalized
        .split(|c: char| c.is_whitespace() || matches!(c, '(' | ')' | '?' | ':' | ',' | '!'))
    {
        if let Some(reference) = parse_path(word) {
            if !found.contains(&reference) {
                found.push(reference);
            }
        }
    }
    match found.as_slice() {
        [one] => Some(one.clone()),
        _ => None,
    }
}

fn parse_path(path: &str) -> Option<ArtifactRef> {
    let parts: Vec<&str> = path.split('.').collect();
    match parts.as_slice() {
        ["tasks" | "steps", task, "outputs", "artifacts", artifact] => Some(ArtifactRef::Sibling {
            task: task.to_string(),
            artifact: artifact.to_string(),
        }),
        ["inputs", "artifacts", artifact] => Some(ArtifactRef::Input {
            artifact: artifact.to_string(),
        }),
        _ => None,
    }
}

/// `tasks['a-b'].outputs.artifacts["x"]` → `tasks.a-b.outputs.artifacts.x`.
fn normalize_brackets(expression: &str) -> String {
    let mut out = String::with_capacity(expression.len());
    let mut rest = expression;
    while let Some(open) = rest.find('[') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let quoted = after
            .strip_prefix('\'')
            .map(|a| ('\'', a))
            .or_else(|| after.strip_prefix('"').map(|a| ('"', a)));
        match quoted.and_then(|(q, a)| a.find(q).map(|end| (q, a, end))) {
            Some((_, a, end)) if a[end + 1..].starts_with(']') => {
                out.push('.');
                out.push_str(&a[..end]);
                rest = &a[end + 2..];
            }
            _ => {
                out.push('[');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn artifact(yaml: &str) -> Artifact {
        serde_yaml::from_str(yaml).expect("artifact yaml")
    }

    #[test]
    fn every_location_type_becomes_a_uri() {
        let v: Vars = [("inputs.parameters.b".to_string(), "my-bucket".to_string())]
            .into_iter()
            .collect();
        let cases = [
            (
                "{name: a, s3: {bucket: '{{inputs.parameters.b}}', key: /data/x.csv}}",
                Some("s3://my-bucket/data/x.csv"),
            ),
            (
                "{name: a, s3: {key: data/x.csv}}",
                Some("artifact-repository://data/x.csv"),
            ),
            ("{name: a, gcs: {bucket: b, key: k/v}}", Some("gs://b/k/v")),
            ("{name: a, oss: {bucket: b, key: k}}", Some("oss://b/k")),
            (
                "{name: a, http: {url: 'https://x.io/f'}}",
                Some("https://x.io/f"),
            ),
            (
                "{name: a, artifactory: {url: 'https://art.io/f'}}",
                Some("https://art.io/f"),
            ),
            (
                "{name: a, git: {repo: 'https://github.com/a/b.git'}}",
                Some("git+https://github.com/a/b.git"),
            ),
            ("{name: a, raw: {data: hello}}", Some("raw:")),
            (
                "{name: a, azure: {container: c, blob: d/e}}",
                Some("azure://c/d/e"),
            ),
            (
                "{name: a, hdfs: {addresses: ['n1:8020', 'n2:8020'], path: /p/q}}",
                Some("hdfs://n1:8020,n2:8020/p/q"),
            ),
            (
                "{name: a, plugin: {name: my-plugin, key: k}}",
                Some("plugin://my-plugin/k"),
            ),
            (
                "{name: a, key: some/key}",
                Some("artifact-repository://some/key"),
            ),
            ("{name: a, path: /tmp/a}", None),
        ];
        for (yaml, expected) in cases {
            assert_eq!(
                location(&artifact(yaml), &v).ok().flatten().as_deref(),
                expected,
                "{yaml}"
            );
        }
    }

    #[test]
    fn from_references_parse() {
        assert_eq!(
            parse_from("{{tasks.train.outputs.artifacts.model}}"),
            Some(ArtifactRef::Sibling {
                task: "train".into(),
                artifact: "model".into()
            })
        );
        assert_eq!(
            parse_from("{{ steps.gen.outputs.artifacts.out }}"),
            Some(ArtifactRef::Sibling {
                task: "gen".into(),
                artifact: "out".into()
            })
        );
        assert_eq!(
            parse_from("{{inputs.artifacts.data}}"),
            Some(ArtifactRef::Input {
                artifact: "data".into()
            })
        );
        assert_eq!(parse_from("{{workflow.outputs.artifacts.x}}"), None);
    }

    #[test]
    fn from_expressions_with_one_reference_parse() {
        assert_eq!(
            parse_from_expression("tasks['flip-coin'].outputs.artifacts[\"result\"]"),
            Some(ArtifactRef::Sibling {
                task: "flip-coin".into(),
                artifact: "result".into()
            })
        );
        assert_eq!(
            parse_from_expression(
                "tasks.f.outputs.result == 'heads' ? tasks.heads.outputs.artifacts.r : tasks.tails.outputs.artifacts.r"
            ),
            None
        );
    }
}
