//! `kfcache predict FILE|PIPELINE`: predict when each task of the next run starts and ends
//! and what it reads by then, store the prediction, print it (table, JSON or a Gantt SVG).
//!
//! The pipeline is a file (analysed and stored like `kfcache analyze` does) or the name of
//! one already stored. History comes from the database (`kfcache history import`); with
//! `--probe-sizes` the external inputs' sizes are asked from their storage first and stored.
//! Predictions are kept per pipeline version and anchor (the run's start time).

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use clap::{Args, ValueEnum};
use comfy_table::{presets, Cell, CellAlignment, ContentArrangement, Table};
pub use kfcache_ops::analysis::resolve_targets;
use kfcache_ops::analysis::Target;
use kfcache_ops::predict::{predict_from_store, DEFAULT_HISTORY_RUNS};
use kfcache_ops::units::{at, duration, human_size, parse_time, rfc3339, tail};
use kfcache_parser::{Pipeline, TaskKind};
use kfcache_predictor::probe::{
    probe_sizes, probeable, ProbeConfig, ProbedSize, PvcRoot, S3Config,
};
use kfcache_predictor::{anchor, gantt, EstimatorConfig, Prediction, PriorConfig};
use kfcache_schema::{classify, StorageKind, Store, TaskPredictionRecord};
use serde_json::{json, Value};

use crate::settings::GlobalArgs;

#[derive(Debug, Args)]
pub struct PredictArgs {
    /// A pipeline file (as for `analyze`), or the name of a pipeline already analysed.
    #[arg(value_name = "FILE|PIPELINE")]
    pub target: String,

    /// When the run starts (RFC 3339, e.g. 2024-06-01T02:00:00+02:00) [default: now].
    #[arg(long, value_name = "TIME", conflicts_with = "next_run", value_parser = parse_time)]
    pub start_at: Option<DateTime<Utc>>,

    /// Start at the CronWorkflow's next fire time, in its timezone.
    #[arg(long)]
    pub next_run: bool,

    /// Ask S3 / GCS / HTTP / file / mapped PVC storage for each external input's size first
    /// (S3 credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
    #[arg(long)]
    pub probe_sizes: bool,

    /// S3 endpoint for --probe-sizes, as `prefetch --s3-endpoint` (a local server such as
    /// MinIO or moto) [default: AWS_ENDPOINT_URL_S3, else AWS_ENDPOINT_URL, else AWS].
    #[arg(long, value_name = "URL")]
    pub s3_endpoint: Option<String>,

    /// S3 region for --probe-sizes, as `prefetch --s3-region` [default: AWS_REGION, else
    /// AWS_DEFAULT_REGION, else us-east-1].
    #[arg(long, value_name = "REGION")]
    pub s3_region: Option<String>,

    /// Output format.
    #[arg(long, short = 'f', value_enum, default_value_t = PredictFormat::Table)]
    pub format: PredictFormat,

    /// Also write the Gantt chart of the prediction to this SVG file.
    #[arg(long, value_name = "OUT.svg")]
    pub gantt: Option<PathBuf>,

    /// Template directories for `templateRef`, as for `analyze`.
    #[arg(long, value_name = "DIR")]
    pub templates: Vec<PathBuf>,

    /// Where a PVC claim's files are readable here, for --probe-sizes: CLAIM=DIR, or
    /// CLAIM:/mount/path=DIR when the URIs name paths under the pod's mount path.
    #[arg(long, value_name = "CLAIM[:MOUNT]=DIR")]
    pub pvc_map: Vec<String>,

    /// Read bandwidth of a task, for tasks without history [env: KFCACHE_READ_BANDWIDTH_MBPS].
    #[arg(long, value_name = "MB/s")]
    pub read_bandwidth: Option<f64>,

    /// Compute prior of a CPU task kind without history, e.g. container=120; repeatable.
    #[arg(long, value_name = "KIND=SECONDS")]
    pub compute_prior: Vec<String>,

    /// Compute prior of a GPU task kind without history, e.g. container=1800; repeatable.
    #[arg(long, value_name = "KIND=SECONDS")]
    pub gpu_compute_prior: Vec<String>,

    /// How many recent runs of history to learn from.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_HISTORY_RUNS)]
    pub history: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PredictFormat {
    /// One row per task: times, duration source, inputs with sizes.
    Table,
    /// Machine-readable: one object per pipeline (an array when several).
    Json,
    /// The Gantt chart as SVG.
    Svg,
}

/// One predicted pipeline, ready to print.
struct Predicted {
    pipeline: Pipeline,
    version_id: i64,
    anchor: DateTime<Utc>,
    anchor_kind: &'static str,
    prediction: Prediction,
}

/// The estimator settings from flags and environment.
fn estimator_config(args: &PredictArgs) -> Result<EstimatorConfig> {
    let mut prior = PriorConfig::default();
    let bandwidth =
        match args.read_bandwidth {
            Some(b) => Some(b),
            None => match std::env::var("KFCACHE_READ_BANDWIDTH_MBPS") {
                Ok(v) if !v.is_empty() => Some(v.parse::<f64>().with_context(|| {
                    format!("KFCACHE_READ_BANDWIDTH_MBPS={v:?} is not a number")
                })?),
                _ => None,
            },
        };
    if let Some(mbps) = bandwidth {
        if !(mbps > 0.0 && mbps.is_finite()) {
            bail!("the read bandwidth must be a positive number of MB/s, not {mbps}");
        }
        prior.read_bandwidth_bytes_per_s = mbps * 1e6;
    }
    prior.compute_s = kind_table(&args.compute_prior, "--compute-prior")?;
    prior.gpu_compute_s = kind_table(&args.gpu_compute_prior, "--gpu-compute-prior")?;
    Ok(EstimatorConfig {
        prior,
        ..EstimatorConfig::default()
    })
}

fn kind_table(entries: &[String], flag: &str) -> Result<HashMap<TaskKind, f64>> {
    let mut table = HashMap::new();
    for entry in entries {
        let (kind, seconds) = entry
            .split_once('=')
            .with_context(|| format!("{flag} {entry:?}: expected KIND=SECONDS"))?;
        let kind = match kind {
            "container" => TaskKind::Container,
            "script" => TaskKind::Script,
            "resource" => TaskKind::Resource,
            "importer" => TaskKind::Importer,
            "suspend" => TaskKind::Suspend,
            "http" => TaskKind::Http,
            "plugin" => TaskKind::Plugin,
            "other" => TaskKind::Other,
            other => bail!("{flag} {entry:?}: unknown task kind `{other}` (container, script, resource, importer, suspend, http, plugin, other)"),
        };
        let seconds: f64 = seconds
            .parse()
            .ok()
            .filter(|s: &f64| *s >= 0.0 && s.is_finite())
            .with_context(|| format!("{flag} {entry:?}: SECONDS must be a non-negative number"))?;
        table.insert(kind, seconds);
    }
    Ok(table)
}

/// S3 / GCS / PVC settings from the standard environment and `--pvc-map`.
fn probe_config(args: &PredictArgs) -> Result<ProbeConfig> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let mut pvc_roots = BTreeMap::new();
    for entry in &args.pvc_map {
        let (claim, dir) = entry.split_once('=').with_context(|| {
            format!("--pvc-map {entry:?}: expected CLAIM=DIR or CLAIM:/mount=DIR")
        })?;
        let (claim, mount) = match claim.split_once(':') {
            Some((c, m)) => (c, Some(m.to_string())),
            None => (claim, None),
        };
        pvc_roots.insert(
            claim.to_string(),
            PvcRoot {
                mount,
                local: PathBuf::from(dir),
            },
        );
    }
    Ok(ProbeConfig {
        s3: S3Config {
            endpoint: args
                .s3_endpoint
                .clone()
                .or_else(|| var("AWS_ENDPOINT_URL_S3"))
                .or_else(|| var("AWS_ENDPOINT_URL")),
            region: args
                .s3_region
                .clone()
                .or_else(|| var("AWS_REGION"))
                .or_else(|| var("AWS_DEFAULT_REGION")),
            access_key_id: var("AWS_ACCESS_KEY_ID"),
            secret_access_key: var("AWS_SECRET_ACCESS_KEY"),
            session_token: var("AWS_SESSION_TOKEN"),
            virtual_hosted_style: var("AWS_S3_VIRTUAL_HOSTED_STYLE")
                .is_some_and(|v| v == "true" || v == "1"),
        },
        gcs_service_account_path: var("GOOGLE_APPLICATION_CREDENTIALS"),
        pvc_roots,
    })
}

async fn probe_and_store(store: &Store, pipeline: &Pipeline, config: &ProbeConfig) -> Result<()> {
    let mut uris: Vec<String> = pipeline
        .tasks
        .iter()
        .flat_map(|t| t.inputs.iter())
        .filter_map(|i| i.source.clone())
        .filter(|u| probeable(u))
        .collect();
    uris.sort();
    uris.dedup();
    for (uri, result) in probe_sizes(&uris, config).await {
        match result {
            Ok(size) => {
                let (bytes, count) = match size {
                    ProbedSize::Object { size_bytes } => (size_bytes, 1),
                    ProbedSize::Directory {
                        size_bytes,
                        object_count,
                    } => (size_bytes, object_count),
                };
                match classify(&uri) {
                    StorageKind::Directory => store.set_directory_size(&uri, bytes, count).await?,
                    _ => store.set_data_size(&uri, bytes).await?,
                }
                tracing::info!(%uri, bytes, "probed input size");
            }
            Err(error) => {
                let mut message = error.to_string();
                let mut source = std::error::Error::source(&error);
                while let Some(cause) = source {
                    let _ = write!(message, ": {cause}");
                    source = cause.source();
                }
                eprintln!("warning: {message}");
            }
        }
    }
    Ok(())
}

pub async fn run(global: &GlobalArgs, args: PredictArgs) -> Result<()> {
    let config = estimator_config(&args)?;
    let db = global.db_path()?;
    let store = Store::open(&db)
        .await
        .with_context(|| format!("cannot open the database {}", db.display()))?;

    let targets = resolve_targets(&store, &args.target, &args.templates).await?;

    let probe = if args.probe_sizes {
        Some(probe_config(&args)?)
    } else {
        None
    };
    let now = Utc::now();
    let mut predicted = Vec::new();
    for Target {
        pipeline,
        dag,
        version_id,
    } in targets
    {
        if let Some(probe) = &probe {
            probe_and_store(&store, &pipeline, probe).await?;
        }
        let (anchor, anchor_kind) = if let Some(at) = args.start_at {
            (at, "start-at")
        } else if args.next_run {
            (anchor::next_run(&pipeline, now)?, "next-run")
        } else {
            (now, "now")
        };
        let prediction = predict_from_store(&store, &pipeline, &dag, &config, args.history).await?;
        let records: Vec<TaskPredictionRecord> = prediction
            .tasks
            .iter()
            .map(|t| TaskPredictionRecord {
                task_key: t.task.clone(),
                start_s: t.start_s,
                end_s: t.end_s,
                start_at: at(anchor, t.start_s),
                end_at: at(anchor, t.end_s),
                duration_s: t.estimate.duration_s,
                duration_source: t.estimate.source.as_str().to_string(),
                samples: t.estimate.samples,
                run_probability: t.estimate.run_probability,
                retry_s: t.estimate.retry_s,
                instances: t.estimate.instances,
            })
            .collect();
        store
            .record_prediction(
                version_id,
                anchor,
                anchor_kind,
                prediction.history_runs as u32,
                &records,
            )
            .await
            .with_context(|| format!("cannot store the prediction of `{}`", pipeline.name))?;
        predicted.push(Predicted {
            pipeline,
            version_id,
            anchor,
            anchor_kind,
            prediction,
        });
    }

    if let Some(out) = &args.gantt {
        let svg = gantt_svgs(&predicted)?;
        std::fs::write(out, svg).with_context(|| format!("cannot write {}", out.display()))?;
    }
    let out = match args.format {
        PredictFormat::Table => table(&predicted),
        PredictFormat::Json => json_output(&predicted)?,
        PredictFormat::Svg => gantt_svgs(&predicted)?,
    };
    print!("{out}");
    Ok(())
}

fn gantt_svgs(predicted: &[Predicted]) -> Result<String> {
    // One chart per pipeline; several pipelines of one file are drawn one after the other.
    let mut out = String::new();
    for p in predicted {
        out.push_str(&gantt::svg(&p.pipeline.name, &p.prediction)?);
    }
    Ok(out)
}

fn table(predicted: &[Predicted]) -> String {
    let mut out = String::new();
    for (n, p) in predicted.iter().enumerate() {
        if n > 0 {
            out.push('\n');
        }
        let _ = writeln!(
            out,
            "{} `{}` (version {})",
            p.pipeline.kind, p.pipeline.name, p.version_id
        );
        let _ = writeln!(
            out,
            "run starts {} ({}), predicted makespan {}, from {} runs of history",
            rfc3339(p.anchor),
            p.anchor_kind,
            duration(p.prediction.makespan_s()),
            p.prediction.history_runs
        );
        let mut table = Table::new();
        table
            .load_preset(presets::UTF8_HORIZONTAL_ONLY)
            .set_content_arrangement(ContentArrangement::Disabled)
            .set_header([
                "TASK",
                "GPU",
                "START",
                "END",
                "DURATION",
                "INPUTS (needed at START)",
            ]);
        for t in &p.prediction.tasks {
            let mut source = format!("{} {}", duration(t.estimate.duration_s), t.estimate.source);
            if t.estimate.samples > 0 {
                let _ = write!(source, " ×{}", t.estimate.samples);
            }
            if t.estimate.retry_s >= 0.5 {
                let _ = write!(source, "\n+{} retries", duration(t.estimate.retry_s));
            }
            if t.estimate.run_probability < 1.0 {
                let _ = write!(source, "\nruns {:.0}%", t.estimate.run_probability * 100.0);
            }
            let inputs: Vec<String> = t
                .inputs
                .iter()
                .map(|i| {
                    let uri = tail(i.uri.as_deref().unwrap_or(&i.name), 28);
                    match i.size_bytes {
                        Some(b) => format!("{uri} {}", human_size(b)),
                        None => uri,
                    }
                })
                .collect();
            let mut id = tail(&t.task, 24);
            if t.estimate.instances != 1 {
                let _ = write!(id, " ×{}", t.estimate.instances);
            }
            table.add_row(vec![
                Cell::new(id),
                Cell::new(if t.gpus > 0 {
                    t.gpus.to_string()
                } else {
                    "-".into()
                })
                .set_alignment(CellAlignment::Right),
                Cell::new(duration(t.start_s)).set_alignment(CellAlignment::Right),
                Cell::new(if t.runs {
                    duration(t.end_s)
                } else {
                    "skip".into()
                })
                .set_alignment(CellAlignment::Right),
                Cell::new(source),
                Cell::new(if inputs.is_empty() {
                    "-".to_string()
                } else {
                    inputs.join("\n")
                }),
            ]);
        }
        let _ = writeln!(out, "{table}");
    }
    out
}

fn prediction_json(p: &Predicted) -> Value {
    let tasks: Vec<Value> = p
        .prediction
        .tasks
        .iter()
        .zip(&p.pipeline.tasks)
        .map(|(t, task)| {
            json!({
                "id": t.task,
                "depends_on": task.depends_on,
                "gpus": t.gpus,
                "start_s": t.start_s,
                "end_s": t.end_s,
                "start_at": rfc3339(at(p.anchor, t.start_s)),
                "end_at": rfc3339(at(p.anchor, t.end_s)),
                "runs": t.runs,
                "duration_s": t.estimate.duration_s,
                "duration_source": t.estimate.source.as_str(),
                "samples": t.estimate.samples,
                "retry_s": t.estimate.retry_s,
                "failure_rate": t.estimate.failure_rate,
                "run_probability": t.estimate.run_probability,
                "instances": t.estimate.instances,
                "inputs": t.inputs.iter().map(|i| json!({
                    "name": i.name,
                    "uri": i.uri,
                    "size_bytes": i.size_bytes,
                    "needed_by_s": i.needed_by_s,
                    "needed_by": rfc3339(at(p.anchor, i.needed_by_s)),
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    json!({
        "pipeline": p.pipeline.name,
        "version_id": p.version_id,
        "anchor": rfc3339(p.anchor),
        "anchor_kind": p.anchor_kind,
        "history_runs": p.prediction.history_runs,
        "makespan_s": p.prediction.makespan_s(),
        "tasks": tasks,
    })
}

fn json_output(predicted: &[Predicted]) -> Result<String> {
    let value = match predicted {
        [one] => prediction_json(one),
        many => Value::Array(many.iter().map(prediction_json).collect()),
    };
    Ok(serde_json::to_string_pretty(&value)? + "\n")
}
