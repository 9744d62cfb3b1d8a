//! What the sidecar knows about the task it serves, and who it is.
//!
//! `kfcache inject` writes a [`TaskSpec`] as JSON into the `KFCACHE_TASK` environment variable
//! of the init container and of the sidecar container of every template it instruments: the
//! pipeline's name, the template, and the template's inputs and outputs as the parser sees them
//! (their origin URIs and the paths the main container expects). Argo substitutes the
//! template's `{{inputs.parameters.x}}` / `{{workflow.parameters.x}}` placeholders in container
//! environments, so a URI that depends on a parameter is concrete by the time the pod starts.
//!
//! The run-time identity ([`Identity`]) comes from the pod: the workflow name (`{{workflow.name}}`),
//! the Argo node name (the pod annotation `workflows.argoproj.io/node-name`, through the downward
//! API), the Kubernetes node and the `kfcache.io/deadline` annotation. The node name carries the
//! task path, the loop instance and the retry attempt (`wf.outer(0:a).train(1)`), which is how
//! a template used by several tasks still reports the right task.

use std::path::{Component, Path, PathBuf};

use chrono::{DateTime, Utc};
use kfcache_parser::model::TASK_URI_SCHEME;
use kfcache_parser::Task;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Environment variable carrying the [`TaskSpec`] as JSON.
pub const TASK_ENV: &str = "KFCACHE_TASK";
/// Scheme of the cache URIs under which a task's outputs are written through:
/// `kfcache-run://RUN/TASK/ARTIFACT`.
pub const RUN_OUTPUT_SCHEME: &str = "kfcache-run://";

/// A task's inputs and outputs, as handed to the sidecar.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct TaskSpec {
    /// The pipeline the run belongs to (as `kfcache analyze` names it).
    pub pipeline: String,
    /// The task id, when the template is used by exactly one task; otherwise the task comes
    /// from the Argo node name at run time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub task: Option<String>,
    /// The template (Argo) or component (KFP) it runs.
    #[serde(default)]
    pub template: String,
    #[serde(default)]
    pub gpus: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inputs: Vec<SpecInput>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub outputs: Vec<SpecOutput>,
}

/// One input artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecInput {
    pub name: String,
    /// Origin URI (`s3://…`, `pvc://…`) or `task://PRODUCER/ARTIFACT` for an upstream output.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Where the main container expects it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

/// One output artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpecOutput {
    pub name: String,
    /// Where the pipeline stores it, when the YAML says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub location: Option<String>,
    /// The path inside the container it is collected from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
}

impl TaskSpec {
    /// The spec of an analysed task (what `kfcache inject` embeds).
    pub fn of_task(pipeline: &str, task: &Task, unique: bool) -> TaskSpec {
        TaskSpec {
            pipeline: pipeline.to_string(),
            task: unique.then(|| task.id.clone()),
            template: task.template.clone(),
            gpus: task.gpus,
            inputs: task
                .inputs
                .iter()
                .map(|i| SpecInput {
                    name: i.name.clone(),
                    source: i.source.clone(),
                    path: i.path.clone(),
                })
                .collect(),
            outputs: task
                .outputs
                .iter()
                .map(|o| SpecOutput {
                    name: o.name.clone(),
                    location: o.location.clone(),
                    path: o.path.clone(),
                })
                .collect(),
        }
    }

    /// Parses the JSON form; `origin` names where it came from for the error.
    pub fn from_json(origin: &str, text: &str) -> Result<TaskSpec> {
        serde_json::from_str(text).map_err(|e| Error::Spec {
            origin: origin.to_string(),
            reason: e.to_string(),
        })
    }

    pub fn to_json(&self) -> String {
        // A struct of strings and numbers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Who is running: the run, the task instance and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Identity {
    /// The run's name (the Argo Workflow name).
    pub run: String,
    /// The Kubernetes namespace of the run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub pipeline: String,
    /// The analysed task's id.
    pub task: String,
    /// Loop instance label (`0:a`), empty outside loops.
    #[serde(default)]
    pub instance: String,
    /// Retry attempt, 0 for the first.
    #[serde(default)]
    pub attempt: u32,
    /// The pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pod: Option<String>,
    /// The Kubernetes node the pod runs on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
}

impl Identity {
    /// The identity of a task run from the run name, the task given on the command line and/or
    /// the Argo node name (`wf.outer(0:a).train(1)`): the node name gives instance and attempt,
    /// and the task when none is given.
    pub fn resolve(
        run: &str,
        pipeline: &str,
        task: Option<&str>,
        node_name: Option<&str>,
    ) -> Result<Identity> {
        if run.is_empty() {
            return Err(Error::Spec {
                origin: "--run".to_string(),
                reason: "the run name is empty".to_string(),
            });
        }
        let path = node_name.and_then(|n| kfcache_predictor::status::node_path(run, n));
        let task = match (task, &path) {
            (Some(task), _) if !task.is_empty() => task.to_string(),
            (_, Some(path)) if !path.task_key.is_empty() => path.task_key.clone(),
            _ => {
                return Err(Error::Spec {
                    origin: "--task".to_string(),
                    reason: match node_name {
                        Some(n) => {
                            format!("no task given and node name {n:?} is not under run {run:?}")
                        }
                        None => "no task given and no Argo node name to read it from".to_string(),
                    },
                })
            }
        };
        Ok(Identity {
            run: run.to_string(),
            pipeline: pipeline.to_string(),
            task,
            instance: path
                .as_ref()
                .map(|p| p.instance.clone())
                .unwrap_or_default(),
            attempt: path.as_ref().map_or(0, |p| p.attempt),
            ..Identity::default()
        })
    }

    /// The lease holder name of this task run.
    pub fn holder(&self) -> String {
        format!("{}/{}", self.run, self.task)
    }
}

/// The cache URI a task's output is written through under:
/// `kfcache-run://RUN/TASK/ARTIFACT`, or with the loop instance
/// `kfcache-run://RUN/TASK[INSTANCE]/ARTIFACT`.
pub fn run_output_uri(run: &str, task: &str, instance: &str, artifact: &str) -> String {
    if instance.is_empty() {
        format!("{RUN_OUTPUT_SCHEME}{run}/{task}/{artifact}")
    } else {
        format!("{RUN_OUTPUT_SCHEME}{run}/{task}[{instance}]/{artifact}")
    }
}

/// The cache URI to read an input from: the origin URI itself, or for an upstream output
/// (`task://PRODUCER/ARTIFACT`) the producer's write-through URI in this run (same loop
/// instance when the producer runs in the same loop, else the plain one).
pub fn input_cache_uri(identity: &Identity, source: &str) -> String {
    match source.strip_prefix(TASK_URI_SCHEME) {
        Some(rest) => {
            let (producer, artifact) = rest.rsplit_once('/').unwrap_or((rest, ""));
            run_output_uri(&identity.run, producer, "", artifact)
        }
        None => source.to_string(),
    }
}

/// When the deadline annotation is set: an RFC 3339 time, or a duration after `start`
/// (see [`parse_duration`]).
pub fn parse_deadline(text: &str, start: DateTime<Utc>) -> Result<DateTime<Utc>> {
    let text = text.trim();
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let bad = || Error::Spec {
        origin: "kfcache.io/deadline".to_string(),
        reason: format!("{text:?} is neither an RFC 3339 time nor a duration like 90s, 15m, 1h30m"),
    };
    let duration = parse_duration(text).ok_or_else(bad)?;
    let duration = chrono::Duration::from_std(duration).map_err(|_| bad())?;
    start.checked_add_signed(duration).ok_or_else(bad)
}

/// A duration written with units, as kfcache's flags and annotations take it: `20ms`, `90s`, `15m`,
/// `2h`, `1d`, `1h30m`, `0.5h`. `None` for anything else (a bare number has no unit).
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    let mut total = 0.0;
    while !rest.is_empty() {
        let split = rest.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
        let (number, after) = rest.split_at(split);
        let number: f64 = number.parse().ok()?;
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        total += number
            * match unit {
                "ms" => 0.001,
                "s" => 1.0,
                "m" => 60.0,
                "h" => 3600.0,
                "d" => 86400.0,
                _ => return None,
            };
        rest = after;
    }
    std::time::Duration::try_from_secs_f64(total).ok()
}

/// `target` joined with an artifact's declared `path`, refusing anything that would leave
/// `target`: `..` components, and absolute paths are taken relative to `target`.
pub fn contained_path(target: &Path, name: &str, path: &str) -> Result<PathBuf> {
    let escape = || Error::PathEscape {
        name: name.to_string(),
        path: path.to_string(),
        target: target.to_path_buf(),
    };
    if path.is_empty() || path.contains('\0') {
        return Err(escape());
    }
    let mut joined = target.to_path_buf();
    let mut depth = 0usize;
    for component in Path::new(path).components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Prefix(_) | Component::ParentDir => return Err(escape()),
            Component::Normal(part) => {
                joined.push(part);
                depth += 1;
            }
        }
    }
    if depth == 0 {
        return Err(escape());
    }
    refuse_symlinks(target, &joined, name, path)?;
    Ok(joined)
}

/// Refuses a symbolic link at `joined` or at any directory between `target` and it (the
/// target itself may be one): a link planted in a shared volume would otherwise carry a write
/// or a read out of the target directory. Components that do not exist yet are fine.
fn refuse_symlinks(target: &Path, joined: &Path, name: &str, path: &str) -> Result<()> {
    let Ok(below) = joined.strip_prefix(target) else {
        return Ok(());
    };
    let mut current = target.to_path_buf();
    for part in below.components() {
        current.push(part);
        match std::fs::symlink_metadata(&current) {
            Ok(meta) if meta.file_type().is_symlink() => {
                return Err(Error::SymlinkEscape {
                    name: name.to_string(),
                    path: path.to_string(),
                    link: current,
                    target: target.to_path_buf(),
                })
            }
            Ok(_) => {}
            Err(_) => break,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_give_task_instance_and_attempt() {
        let id = Identity::resolve(
            "train-x7k2p",
            "train",
            None,
            Some("train-x7k2p.outer(0:a).fit(1)"),
        )
        .expect("identity");
        assert_eq!(
            (id.task.as_str(), id.instance.as_str(), id.attempt),
            ("outer.fit", "0:a", 1)
        );
        let given = Identity::resolve("train-x7k2p", "train", Some("fit"), None).expect("identity");
        assert_eq!(given.task, "fit");
        let err = Identity::resolve("train-x7k2p", "train", None, Some("other.fit"))
            .expect_err("foreign");
        assert!(err.to_string().contains("other.fit"), "{err}");
    }

    #[test]
    fn paths_stay_inside_the_target() {
        let target = Path::new("/work/in");
        assert_eq!(
            contained_path(target, "data", "/tmp/inputs/data").expect("inside"),
            Path::new("/work/in/tmp/inputs/data")
        );
        for bad in ["../etc/passwd", "/tmp/../../etc", "a/../../b", "", "/"] {
            let err = contained_path(target, "evil", bad).expect_err(bad);
            assert!(matches!(err, Error::PathEscape { .. }), "{bad}: {err}");
            assert!(err.to_string().contains("evil"), "{err}");
        }
    }

    #[test]
    fn deadlines_are_times_or_durations() {
        let start = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        let at = |s: &str| parse_deadline(s, start).expect(s).to_rfc3339();
        assert_eq!(at("1h30m"), "2026-01-01T01:30:00+00:00");
        assert_eq!(at("90s"), "2026-01-01T00:01:30+00:00");
        assert_eq!(at("2026-01-02T00:00:00Z"), "2026-01-02T00:00:00+00:00");
        assert!(parse_deadline("soon", start).is_err());
        assert!(parse_deadline("15", start).is_err());
    }

    #[test]
    fn upstream_outputs_map_to_run_uris() {
        let id = Identity::resolve("wf-1", "p", Some("train"), None).expect("id");
        assert_eq!(
            input_cache_uri(&id, "task://prep/data"),
            "kfcache-run://wf-1/prep/data"
        );
        assert_eq!(input_cache_uri(&id, "s3://b/k"), "s3://b/k");
        assert_eq!(
            run_output_uri("wf-1", "fit", "0:a", "model"),
            "kfcache-run://wf-1/fit[0:a]/model"
        );
    }

    #[cfg(unix)]
    #[test]
    fn symbolic_links_inside_the_target_are_refused() {
        let root = tempfile::tempdir().expect("tempdir");
        let outside = tempfile::tempdir().expect("tempdir");
        let target = root.path().join("target");
        std::fs::create_dir_all(target.join("data")).expect("mkdir");
        // A directory link on the way, and a link at the file itself.
        std::os::unix::fs::symlink(outside.path(), target.join("data/shared")).expect("link");
        std::os::unix::fs::symlink(outside.path().join("f"), target.join("data/model.bin"))
            .expect("link");
        for path in ["/data/shared/train.bin", "/data/model.bin"] {
            let error = contained_path(&target, "input", path).expect_err(path);
            assert!(matches!(error, Error::SymlinkEscape { .. }), "{error}");
            assert!(error.to_string().contains("symbolic link"), "{error}");
        }
        // Paths that do not exist yet, and real directories, are fine.
        assert_eq!(
            contained_path(&target, "input", "/data/new/train.bin").expect("contained"),
            target.join("data/new/train.bin")
        );
        // The target itself may be reached through a link.
        let linked = root.path().join("linked-target");
        std::os::unix::fs::symlink(&target, &linked).expect("link");
        assert_eq!(
            contained_path(&linked, "input", "/data/x").expect("contained"),
            linked.join("data/x")
        );
        assert_eq!(std::fs::read_dir(outside.path()).expect("list").count(), 0);
    }
}
