//! Past runs, seen from one analysed pipeline: which observation belongs to which task, and
//! what each run says about each task (how long one instance took, how many instances ran,
//! how often attempts failed, whether its branch was skipped).
//!
//! Observations are matched to tasks by task key (the node path, see [`crate::status`]);
//! where the key is not one of the pipeline's task ids (a pipeline whose entry template was
//! renamed, KFP v2 driver/executor pods), by a unique key suffix, then by a unique template.

use std::collections::{BTreeMap, HashMap};

use kfcache_parser::Pipeline;
use kfcache_schema::{ObservationSource, RunObservation, TaskObservation};

/// What one run says about one task.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskSample {
    /// The task ran (at least one attempt of one instance).
    Ran(RanSample),
    /// The task's branch was skipped (`when` false) or omitted.
    Skipped,
}

/// One run of one task.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RanSample {
    /// Duration of the successful attempt of each instance that succeeded, in seconds.
    pub instance_durations: Vec<f64>,
    /// Loop instances seen (1 outside loops).
    pub instances: u32,
    pub attempts: u32,
    pub failed_attempts: u32,
    /// Durations of failed attempts.
    pub failed_durations: Vec<f64>,
    /// Workflow parameters overlaid with the node's input parameters.
    pub parameters: BTreeMap<String, String>,
    /// Bytes the task read, when observed.
    pub input_bytes: Option<u64>,
    /// Bytes written per output artifact name, when observed.
    pub output_bytes: BTreeMap<String, u64>,
    /// Start of the task (first attempt of first instance) in seconds after the run's start.
    pub start_offset_s: Option<f64>,
}

impl RanSample {
    /// The typical duration of one instance in this run: the median over instances.
    pub fn instance_duration_s(&self) -> Option<f64> {
        median(&self.instance_durations)
    }
}

/// The samples of every task of a pipeline, per run (oldest run first).
#[derive(Debug, Clone, Default)]
pub struct PipelineHistory {
    /// Indexed like `pipeline.tasks`; each list has one entry per run that observed the task.
    pub tasks: Vec<Vec<TaskSample>>,
    /// How many runs were read.
    pub runs: usize,
}

impl PipelineHistory {
    /// Match `runs` (oldest first) to `pipeline`'s tasks.
    pub fn build(pipeline: &Pipeline, runs: &[RunObservation]) -> PipelineHistory {
        let matcher = Matcher::new(pipeline);
        let mut tasks = vec![Vec::new(); pipeline.tasks.len()];
        for run in runs {
            let mut per_task: HashMap<usize, Vec<&TaskObservation>> = HashMap::new();
            let mut skipped_keys = Vec::new();
            for obs in &run.tasks {
                if obs.skipped() {
                    skipped_keys.push(obs.task_key.as_str());
                    continue;
                }
                if let Some(i) = matcher.find(obs) {
                    per_task.entry(i).or_default().push(obs);
                }
            }
            for (i, task) in pipeline.tasks.iter().enumerate() {
                if let Some(observations) = per_task.get(&i) {
                    let merged = prefer_sidecar(observations);
                    let merged: Vec<&TaskObservation> = merged.iter().collect();
                    tasks[i].push(TaskSample::Ran(ran_sample(run, &merged)));
                } else if skipped_keys.iter().any(|k| {
                    task.id == *k
                        || task.id.starts_with(&format!("{k}."))
                        || matcher.find_key(k) == Some(i)
                }) {
                    tasks[i].push(TaskSample::Skipped);
                }
            }
        }
        PipelineHistory {
            tasks,
            runs: runs.len(),
        }
    }
}

struct Matcher<'a> {
    pipeline: &'a Pipeline,
    by_id: HashMap<&'a str, usize>,
}

impl<'a> Matcher<'a> {
    fn new(pipeline: &'a Pipeline) -> Self {
        let by_id = pipeline
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        Matcher { pipeline, by_id }
    }

    fn find_key(&self, key: &str) -> Option<usize> {
        if let Some(&i) = self.by_id.get(key) {
            return Some(i);
        }
        let suffix = format!(".{key}");
        let mut found = self
            .pipeline
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.id.ends_with(&suffix) || key.ends_with(&format!(".{}", t.id)));
        match (found.next(), found.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    }

    fn find(&self, obs: &TaskObservation) -> Option<usize> {
        if let Some(i) = self.find_key(&obs.task_key) {
            return Some(i);
        }
        let template = obs.template.as_deref()?;
        let mut found = self
            .pipeline
            .tasks
            .iter()
            .enumerate()
            .filter(|(_, t)| t.template == template);
        match (found.next(), found.next()) {
            (Some((i, _)), None) => Some(i),
            _ => None,
        }
    }
}

/// One observation per attempt. Where the sidecar reported an attempt that Argo's status also
/// has, Argo's start and end stay: the pod's whole life, from scheduling through loading its
/// inputs to writing its outputs, is what the tasks after it wait for and when it reads its
/// inputs (the sidecar's report of the work alone would predict every later task too early).
/// The sidecar adds the bytes it read where Argo has none, and a phase where Argo has none.
fn prefer_sidecar(observations: &[&TaskObservation]) -> Vec<TaskObservation> {
    let sidecar: HashMap<(&str, u32), &TaskObservation> = observations
        .iter()
        .filter(|o| o.source == ObservationSource::Sidecar)
        .map(|o| ((o.instance.as_str(), o.attempt), *o))
        .collect();
    let mut merged = Vec::with_capacity(observations.len());
    for obs in observations {
        let twin = sidecar.get(&(obs.instance.as_str(), obs.attempt));
        match (obs.source, twin) {
            // A sidecar report of work still running says less than Argo's finished one.
            (ObservationSource::Argo, Some(seen)) if seen.finished_at.is_none() => {
                merged.push((*obs).clone());
            }
            (ObservationSource::Argo, Some(seen)) => {
                let mut both = (*obs).clone();
                both.started_at = obs.started_at.or(seen.started_at);
                both.finished_at = obs.finished_at.or(seen.finished_at);
                both.phase = both.phase.or_else(|| seen.phase.clone());
                both.input_bytes = obs.input_bytes.or(seen.input_bytes);
                both.source = ObservationSource::Sidecar;
                merged.push(both);
            }
            (ObservationSource::Sidecar, _) => {
                let has_argo_twin = observations.iter().any(|o| {
                    o.source == ObservationSource::Argo
                        && o.instance == obs.instance
                        && o.attempt == obs.attempt
                });
                let running = obs.finished_at.is_none();
                if !has_argo_twin && !running {
                    merged.push((*obs).clone());
                }
            }
            (ObservationSource::Argo, None) => merged.push((*obs).clone()),
        }
    }
    merged
}

fn ran_sample(run: &RunObservation, observations: &[&TaskObservation]) -> RanSample {
    let mut sample = RanSample {
        parameters: run.parameters.clone(),
        ..RanSample::default()
    };
    let mut instances: BTreeMap<&str, ()> = BTreeMap::new();
    let mut input_bytes: Option<u64> = None;
    for obs in observations {
        instances.insert(obs.instance.as_str(), ());
        sample.attempts += 1;
        for (k, v) in &obs.parameters {
            sample.parameters.insert(k.clone(), v.clone());
        }
        if obs.failed() {
            sample.failed_attempts += 1;
            if let Some(d) = obs.duration_s() {
                sample.failed_durations.push(d);
            }
        } else if obs.succeeded() {
            if let Some(d) = obs.duration_s() {
                sample.instance_durations.push(d);
            }
        }
        if let Some(b) = obs.input_bytes {
            input_bytes = Some(input_bytes.unwrap_or(0).saturating_add(b));
        }
        for a in &obs.artifacts {
            if let Some(size) = a.size_bytes {
                *sample.output_bytes.entry(a.name.clone()).or_default() += size;
            }
        }
        if let (Some(start), Some(run_start)) = (obs.started_at, run.started_at) {
            let offset = (start - run_start).num_milliseconds() as f64 / 1000.0;
            sample.start_offset_s =
                Some(sample.start_offset_s.map_or(offset, |o: f64| o.min(offset)));
        }
    }
    sample.instances = instances.len() as u32;
    sample.input_bytes = input_bytes;
    sample
}

/// The median of `values`, `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    Some(if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    })
}
