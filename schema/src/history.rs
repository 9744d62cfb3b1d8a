//! Run history and predictions: what ran when (from Argo status or from the sidecar), and
//! what the predictor said would run when.
//!
//! Observations are plain values ([`RunObservation`], [`TaskObservation`]) so that every
//! producer — `kfcache history import` reading Argo status files, the sidecar reporting one
//! task at a time, the synthetic history of the backtest — hands the store the same thing.
//! [`Store::import_runs`] takes a whole batch in one transaction: either every run of it is
//! recorded or none is. Re-importing a run (same name and namespace) replaces what that
//! source said about it before and keeps what other sources said.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::sqlite::SqliteRow;
use sqlx::{Row, Sqlite, Transaction};

use crate::error::{Context, Error, Result};
use crate::records::{check_prediction, from_json, parse_timestamp, signed, timestamp, to_json};
use crate::store::Store;

type Tx = Transaction<'static, Sqlite>;

/// Who observed a run or a task run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum ObservationSource {
    /// Imported from an Argo Workflow's status.
    #[default]
    Argo,
    /// Reported by kfcache's sidecar from inside the pod.
    Sidecar,
}

impl ObservationSource {
    pub fn as_str(self) -> &'static str {
        match self {
            ObservationSource::Argo => "argo",
            ObservationSource::Sidecar => "sidecar",
        }
    }

    fn parse(text: &str) -> Result<ObservationSource> {
        match text {
            "argo" => Ok(ObservationSource::Argo),
            "sidecar" => Ok(ObservationSource::Sidecar),
            other => Err(Error::Corrupt {
                table: "task_run",
                column: "source",
                value: other.to_string(),
            }),
        }
    }
}

/// One pipeline run as observed.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RunObservation {
    /// The run's own name (the Argo Workflow name, e.g. `train-x7k2p`).
    pub name: String,
    pub namespace: Option<String>,
    pub uid: Option<String>,
    /// The pipeline it is a run of: its name with the generated suffix removed.
    pub pipeline_name: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    pub phase: Option<String>,
    /// Workflow arguments the run was submitted with.
    pub parameters: BTreeMap<String, String>,
    pub source: ObservationSource,
    pub tasks: Vec<TaskObservation>,
}

/// One attempt of one (instance of a) task.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct TaskObservation {
    /// The analysed task's id it corresponds to.
    pub task_key: String,
    /// Loop instance label (`0:a` for `train(0:a)`), empty outside loops.
    pub instance: String,
    /// 0 for the first try.
    pub attempt: u32,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// `Succeeded`, `Failed`, `Error`, `Skipped`, `Omitted`, `Running`, ...
    pub phase: Option<String>,
    /// The node (Argo node id, or the Kubernetes node for the sidecar).
    pub node: Option<String>,
    pub source: ObservationSource,
    pub template: Option<String>,
    pub display_name: Option<String>,
    /// The node's input parameters.
    pub parameters: BTreeMap<String, String>,
    pub input_bytes: Option<u64>,
    pub output_bytes: Option<u64>,
    pub message: Option<String>,
    pub artifacts: Vec<ArtifactObservation>,
}

impl TaskObservation {
    /// Seconds between start and finish, when both are known and in order.
    pub fn duration_s(&self) -> Option<f64> {
        let (start, end) = (self.started_at?, self.finished_at?);
        let seconds = (end - start).num_milliseconds() as f64 / 1000.0;
        (seconds >= 0.0).then_some(seconds)
    }

    pub fn succeeded(&self) -> bool {
        self.phase.as_deref() == Some("Succeeded")
    }

    pub fn failed(&self) -> bool {
        matches!(self.phase.as_deref(), Some("Failed" | "Error"))
    }

    pub fn skipped(&self) -> bool {
        matches!(self.phase.as_deref(), Some("Skipped" | "Omitted"))
    }
}

/// An output artifact of a task run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ArtifactObservation {
    pub name: String,
    pub uri: Option<String>,
    pub size_bytes: Option<u64>,
}

/// A recorded run, read back.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredRun {
    pub id: i64,
    pub run: RunObservation,
}

/// What [`Store::import_runs`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ImportSummary {
    pub runs: usize,
    /// Runs that had been imported before and were replaced.
    pub replaced: usize,
    pub task_runs: usize,
}

/// One task's line of a stored prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPredictionRecord {
    pub task_key: String,
    pub start_s: f64,
    pub end_s: f64,
    pub start_at: DateTime<Utc>,
    pub end_at: DateTime<Utc>,
    pub duration_s: f64,
    /// `history`, `scaled` or `prior`.
    pub duration_source: String,
    pub samples: u32,
    pub run_probability: f64,
    pub retry_s: f64,
    pub instances: u32,
}

/// A stored prediction of one version at one anchor.
#[derive(Debug, Clone, PartialEq)]
pub struct PredictionRecord {
    pub id: i64,
    pub version_id: i64,
    pub anchor: DateTime<Utc>,
    pub anchor_kind: String,
    pub history_runs: u32,
    pub tasks: Vec<TaskPredictionRecord>,
}

impl Store {
    /// Record a batch of runs in one transaction; on any error nothing of the batch is kept.
    pub async fn import_runs(&self, runs: &[RunObservation]) -> Result<ImportSummary> {
        let mut tx = self.write().await?;
        let mut summary = ImportSummary::default();
        for run in runs {
            let (run_id, replaced) = upsert_run(&mut tx, run).await?;
            sqlx::query("DELETE FROM task_run WHERE run_id = ?1 AND source = ?2")
                .bind(run_id)
                .bind(run.source.as_str())
                .execute(&mut *tx)
                .await
                .context("replacing a run's task observations")?;
            for task in &run.tasks {
                insert_task_run(&mut tx, run_id, task).await?;
                summary.task_runs += 1;
            }
            summary.runs += 1;
            summary.replaced += usize::from(replaced);
        }
        tx.commit().await.context("committing imported runs")?;
        Ok(summary)
    }

    /// Record one task observation (the sidecar's report) against the run called `run_name`
    /// (in `namespace`; without one, the only run of that name), creating the run if it is
    /// not known yet. Replaces an earlier report of the same attempt.
    pub async fn record_task_observation(
        &self,
        run_name: &str,
        namespace: Option<&str>,
        pipeline_name: &str,
        task: &TaskObservation,
    ) -> Result<()> {
        let mut tx = self.write().await?;
        let existing = match namespace {
            Some(_) => find_run(&mut tx, run_name, namespace).await?,
            // A report that does not know its namespace belongs to the one run of that name.
            None => {
                let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM run WHERE name = ?1")
                    .bind(run_name)
                    .fetch_all(&mut *tx)
                    .await
                    .context("looking up a run by name")?;
                match ids.as_slice() {
                    [id] => Some(*id),
                    _ => find_run(&mut tx, run_name, None).await?,
                }
            }
        };
        let run_id = match existing {
            Some(id) => id,
            None => {
                let run = RunObservation {
                    name: run_name.to_string(),
                    namespace: namespace.map(str::to_string),
                    pipeline_name: pipeline_name.to_string(),
                    source: task.source,
                    ..RunObservation::default()
                };
                upsert_run(&mut tx, &run).await?.0
            }
        };
        // A run known only from its tasks' reports starts with the first of them, so that it
        // takes its place among the pipeline's runs in time.
        if let Some(started) = task.started_at {
            sqlx::query(
                "UPDATE run SET started_at = ?2
                  WHERE id = ?1 AND (started_at IS NULL OR started_at > ?2)",
            )
            .bind(run_id)
            .bind(timestamp(started))
            .execute(&mut *tx)
            .await
            .context("placing a run in time by its first task")?;
        }
        sqlx::query(
            "DELETE FROM task_run WHERE run_id = ?1 AND task_key = ?2 AND instance = ?3
               AND attempt = ?4 AND source = ?5",
        )
        .bind(run_id)
        .bind(&task.task_key)
        .bind(&task.instance)
        .bind(task.attempt)
        .bind(task.source.as_str())
        .execute(&mut *tx)
        .await
        .context("replacing a task observation")?;
        insert_task_run(&mut tx, run_id, task).await?;
        tx.commit().await.context("committing a task observation")
    }

    /// The most recent `limit` runs of a pipeline (by start time), returned oldest first,
    /// with every task observation.
    pub async fn runs_of_pipeline(
        &self,
        pipeline_name: &str,
        limit: u32,
    ) -> Result<Vec<StoredRun>> {
        let rows = sqlx::query(
            "SELECT * FROM (
                SELECT id, name, namespace, uid, pipeline_name, started_at, finished_at, phase,
                       parameters, source
                  FROM run WHERE pipeline_name = ?1
                 ORDER BY ifnull(started_at, '') DESC, id DESC LIMIT ?2)
             ORDER BY ifnull(started_at, ''), id",
        )
        .bind(pipeline_name)
        .bind(limit)
        .fetch_all(&self.pool)
        .await
        .context("listing runs")?;
        let mut runs = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = get(row, "id")?;
            let mut run = run_observation(row)?;
            run.tasks = self.task_runs(id).await?;
            runs.push(StoredRun { id, run });
        }
        Ok(runs)
    }

    /// The Kubernetes namespace recorded for the run `run_name` of a pipeline (`None` when
    /// the run is not recorded or its namespace is unknown); with `run_name` `None`, that of
    /// the pipeline's most recent run.
    pub async fn run_namespace(
        &self,
        pipeline_name: &str,
        run_name: Option<&str>,
    ) -> Result<Option<String>> {
        let namespace: Option<Option<String>> = sqlx::query_scalar(
            "SELECT namespace FROM run
              WHERE pipeline_name = ?1 AND (?2 IS NULL OR name = ?2)
              ORDER BY ifnull(started_at, '') DESC, id DESC LIMIT 1",
        )
        .bind(pipeline_name)
        .bind(run_name)
        .fetch_optional(&self.pool)
        .await
        .context("reading a run's namespace")?;
        Ok(namespace.flatten())
    }

    /// How many runs are recorded for a pipeline.
    pub async fn run_count(&self, pipeline_name: &str) -> Result<u64> {
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM run WHERE pipeline_name = ?1")
            .bind(pipeline_name)
            .fetch_one(&self.pool)
            .await
            .context("counting runs")?;
        Ok(n.max(0) as u64)
    }

    async fn task_runs(&self, run_id: i64) -> Result<Vec<TaskObservation>> {
        let rows = sqlx::query(
            "SELECT id, task_key, instance, attempt, started_at, finished_at, phase, node, source,
                    template, display_name, parameters, input_bytes, output_bytes, message
               FROM task_run WHERE run_id = ?1 ORDER BY task_key, instance, attempt, source",
        )
        .bind(run_id)
        .fetch_all(&self.pool)
        .await
        .context("listing task runs")?;
        let mut tasks = Vec::with_capacity(rows.len());
        for row in &rows {
            let id: i64 = get(row, "id")?;
            let mut task = task_observation(row)?;
            let artifacts: Vec<(String, Option<String>, Option<i64>)> = sqlx::query_as(
                "SELECT name, uri, size_bytes FROM task_run_artifact WHERE task_run_id = ?1
                 ORDER BY name",
            )
            .bind(id)
            .fetch_all(&self.pool)
            .await
            .context("listing task run artifacts")?;
            task.artifacts = artifacts
                .into_iter()
                .map(|(name, uri, size)| ArtifactObservation {
                    name,
                    uri,
                    size_bytes: size.and_then(|s| u64::try_from(s).ok()),
                })
                .collect();
            tasks.push(task);
        }
        Ok(tasks)
    }

    /// Store a prediction of `version_id` for a run starting at `anchor`, replacing an earlier
    /// one at the same anchor, and set the version's tasks' predicted offsets to it.
    pub async fn record_prediction(
        &self,
        version_id: i64,
        anchor: DateTime<Utc>,
        anchor_kind: &str,
        history_runs: u32,
        tasks: &[TaskPredictionRecord],
    ) -> Result<i64> {
        for t in tasks {
            check_prediction(&t.task_key, t.start_s, t.end_s)?;
        }
        let mut tx = self.write().await?;
        let exists: Option<i64> =
            sqlx::query_scalar("SELECT id FROM pipeline_version WHERE id = ?1")
                .bind(version_id)
                .fetch_optional(&mut *tx)
                .await
                .context("looking up the pipeline version")?;
        if exists.is_none() {
            return Err(Error::UnknownVersion { version_id });
        }
        let anchor_text = timestamp(anchor);
        sqlx::query("DELETE FROM prediction WHERE version_id = ?1 AND anchor = ?2")
            .bind(version_id)
            .bind(&anchor_text)
            .execute(&mut *tx)
            .await
            .context("replacing a prediction")?;
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO prediction (version_id, anchor, anchor_kind, created_at, history_runs)
             VALUES (?1, ?2, ?3, ?4, ?5) RETURNING id",
        )
        .bind(version_id)
        .bind(&anchor_text)
        .bind(anchor_kind)
        .bind(timestamp(Utc::now()))
        .bind(history_runs)
        .fetch_one(&mut *tx)
        .await
        .context("inserting a prediction")?;
        for t in tasks {
            sqlx::query(
                "INSERT INTO task_prediction (prediction_id, task_key, start_s, end_s, start_at,
                     end_at, duration_s, duration_source, samples, run_probability, retry_s,
                     instances)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)",
            )
            .bind(id)
            .bind(&t.task_key)
            .bind(t.start_s)
            .bind(t.end_s)
            .bind(timestamp(t.start_at))
            .bind(timestamp(t.end_at))
            .bind(t.duration_s)
            .bind(&t.duration_source)
            .bind(t.samples)
            .bind(t.run_probability)
            .bind(t.retry_s)
            .bind(t.instances)
            .execute(&mut *tx)
            .await
            .context("inserting a task prediction")?;
            let updated = sqlx::query(
                "UPDATE task SET predicted_start_s = ?3, predicted_end_s = ?4
                  WHERE version_id = ?1 AND task_key = ?2",
            )
            .bind(version_id)
            .bind(&t.task_key)
            .bind(t.start_s)
            .bind(t.end_s)
            .execute(&mut *tx)
            .await
            .context("updating predicted times")?
            .rows_affected();
            if updated == 0 {
                return Err(Error::UnknownTask {
                    version_id,
                    task: t.task_key.clone(),
                });
            }
        }
        tx.commit().await.context("committing a prediction")?;
        Ok(id)
    }

    /// The stored prediction of `version_id` at `anchor`, if any.
    pub async fn prediction(
        &self,
        version_id: i64,
        anchor: DateTime<Utc>,
    ) -> Result<Option<PredictionRecord>> {
        let row = sqlx::query(
            "SELECT id, version_id, anchor, anchor_kind, history_runs FROM prediction
              WHERE version_id = ?1 AND anchor = ?2",
        )
        .bind(version_id)
        .bind(timestamp(anchor))
        .fetch_optional(&self.pool)
        .await
        .context("looking up a prediction")?;
        let Some(row) = row else { return Ok(None) };
        let id: i64 = get(&row, "id")?;
        let rows = sqlx::query(
            "SELECT task_key, start_s, end_s, start_at, end_at, duration_s, duration_source,
                    samples, run_probability, retry_s, instances
               FROM task_prediction WHERE prediction_id = ?1 ORDER BY start_s, task_key",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await
        .context("listing task predictions")?;
        let tasks = rows
            .iter()
            .map(|r| {
                Ok(TaskPredictionRecord {
                    task_key: get(r, "task_key")?,
                    start_s: get(r, "start_s")?,
                    end_s: get(r, "end_s")?,
                    start_at: parse_timestamp(
                        "task_prediction",
                        "start_at",
                        &get::<String>(r, "start_at")?,
                    )?,
                    end_at: parse_timestamp(
                        "task_prediction",
                        "end_at",
                        &get::<String>(r, "end_at")?,
                    )?,
                    duration_s: get(r, "duration_s")?,
                    duration_source: get(r, "duration_source")?,
                    samples: get(r, "samples")?,
                    run_probability: get(r, "run_probability")?,
                    retry_s: get(r, "retry_s")?,
                    instances: get(r, "instances")?,
                })
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(Some(PredictionRecord {
            id,
            version_id: get(&row, "version_id")?,
            anchor: parse_timestamp("prediction", "anchor", &get::<String>(&row, "anchor")?)?,
            anchor_kind: get(&row, "anchor_kind")?,
            history_runs: get(&row, "history_runs")?,
            tasks,
        }))
    }
}

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).context("decoding a row")
}

fn opt_time(at: Option<DateTime<Utc>>) -> Option<String> {
    at.map(timestamp)
}

fn read_time(
    table: &'static str,
    column: &'static str,
    text: Option<String>,
) -> Result<Option<DateTime<Utc>>> {
    text.map(|t| parse_timestamp(table, column, &t)).transpose()
}

fn opt_signed(what: &'static str, value: Option<u64>) -> Result<Option<i64>> {
    value.map(|v| signed(what, v)).transpose()
}

async fn find_run(tx: &mut Tx, name: &str, namespace: Option<&str>) -> Result<Option<i64>> {
    sqlx::query_scalar(
        "SELECT id FROM run WHERE name = ?1 AND ifnull(namespace, '') = ifnull(?2, '')",
    )
    .bind(name)
    .bind(namespace)
    .fetch_optional(&mut **tx)
    .await
    .context("looking up a run")
}

/// Insert the run, or update the recorded one of the same name and namespace. Returns the id
/// and whether it was there before.
async fn upsert_run(tx: &mut Tx, run: &RunObservation) -> Result<(i64, bool)> {
    let parameters = to_json("a run's parameters", &run.parameters)?;
    let now = timestamp(Utc::now());
    if let Some(id) = find_run(tx, &run.name, run.namespace.as_deref()).await? {
        sqlx::query(
            "UPDATE run SET uid = ifnull(?2, uid), pipeline_name = ?3,
                 started_at = ifnull(?4, started_at), finished_at = ifnull(?5, finished_at),
                 phase = ifnull(?6, phase), parameters = ?7, imported_at = ?8
              WHERE id = ?1",
        )
        .bind(id)
        .bind(&run.uid)
        .bind(&run.pipeline_name)
        .bind(opt_time(run.started_at))
        .bind(opt_time(run.finished_at))
        .bind(&run.phase)
        .bind(&parameters)
        .bind(&now)
        .execute(&mut **tx)
        .await
        .context("updating a run")?;
        return Ok((id, true));
    }
    let id = sqlx::query_scalar(
        "INSERT INTO run (name, namespace, uid, pipeline_name, started_at, finished_at, phase,
             parameters, source, imported_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
    )
    .bind(&run.name)
    .bind(&run.namespace)
    .bind(&run.uid)
    .bind(&run.pipeline_name)
    .bind(opt_time(run.started_at))
    .bind(opt_time(run.finished_at))
    .bind(&run.phase)
    .bind(&parameters)
    .bind(run.source.as_str())
    .bind(&now)
    .fetch_one(&mut **tx)
    .await
    .context("inserting a run")?;
    Ok((id, false))
}

async fn insert_task_run(tx: &mut Tx, run_id: i64, task: &TaskObservation) -> Result<()> {
    let id: i64 = sqlx::query_scalar(
        "INSERT INTO task_run (run_id, task_key, instance, attempt, started_at, finished_at,
             phase, node, source, template, display_name, parameters, input_bytes, output_bytes,
             message)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)
         ON CONFLICT (run_id, task_key, instance, attempt, source) DO UPDATE SET
             started_at = excluded.started_at, finished_at = excluded.finished_at,
             phase = excluded.phase, node = excluded.node, template = excluded.template,
             display_name = excluded.display_name, parameters = excluded.parameters,
             input_bytes = excluded.input_bytes, output_bytes = excluded.output_bytes,
             message = excluded.message
         RETURNING id",
    )
    .bind(run_id)
    .bind(&task.task_key)
    .bind(&task.instance)
    .bind(task.attempt)
    .bind(opt_time(task.started_at))
    .bind(opt_time(task.finished_at))
    .bind(&task.phase)
    .bind(&task.node)
    .bind(task.source.as_str())
    .bind(&task.template)
    .bind(&task.display_name)
    .bind(to_json("a task run's parameters", &task.parameters)?)
    .bind(opt_signed("input bytes", task.input_bytes)?)
    .bind(opt_signed("output bytes", task.output_bytes)?)
    .bind(&task.message)
    .fetch_one(&mut **tx)
    .await
    .context("inserting a task run")?;
    sqlx::query("DELETE FROM task_run_artifact WHERE task_run_id = ?1")
        .bind(id)
        .execute(&mut **tx)
        .await
        .context("replacing task run artifacts")?;
    for artifact in &task.artifacts {
        sqlx::query(
            "INSERT INTO task_run_artifact (task_run_id, name, uri, size_bytes)
             VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
        )
        .bind(id)
        .bind(&artifact.name)
        .bind(&artifact.uri)
        .bind(opt_signed("artifact size", artifact.size_bytes)?)
        .execute(&mut **tx)
        .await
        .context("inserting a task run artifact")?;
    }
    Ok(())
}

fn run_observation(row: &SqliteRow) -> Result<RunObservation> {
    Ok(RunObservation {
        name: get(row, "name")?,
        namespace: get(row, "namespace")?,
        uid: get(row, "uid")?,
        pipeline_name: get::<Option<String>>(row, "pipeline_name")?.unwrap_or_default(),
        started_at: read_time("run", "started_at", get(row, "started_at")?)?,
        finished_at: read_time("run", "finished_at", get(row, "finished_at")?)?,
        phase: get(row, "phase")?,
        parameters: from_json("run", "parameters", &get::<String>(row, "parameters")?)?,
        source: ObservationSource::parse(&get::<String>(row, "source")?)?,
        tasks: Vec::new(),
    })
}

fn task_observation(row: &SqliteRow) -> Result<TaskObservation> {
    let bytes = |column: &'static str| -> Result<Option<u64>> {
        Ok(get::<Option<i64>>(row, column)?.and_then(|v| u64::try_from(v).ok()))
    };
    Ok(TaskObservation {
        task_key: get(row, "task_key")?,
        instance: get(row, "instance")?,
        attempt: get(row, "attempt")?,
        started_at: read_time("task_run", "started_at", get(row, "started_at")?)?,
        finished_at: read_time("task_run", "finished_at", get(row, "finished_at")?)?,
        phase: get(row, "phase")?,
        node: get(row, "node")?,
        source: ObservationSource::parse(&get::<String>(row, "source")?)?,
        template: get(row, "template")?,
        display_name: get(row, "display_name")?,
        parameters: from_json("task_run", "parameters", &get::<String>(row, "parameters")?)?,
        input_bytes: bytes("input_bytes")?,
        output_bytes: bytes("output_bytes")?,
        message: get(row, "message")?,
        artifacts: Vec::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .expect("time")
            .with_timezone(&Utc)
    }

    fn run(name: &str, start: &str) -> RunObservation {
        RunObservation {
            name: name.into(),
            namespace: Some("ml".into()),
            pipeline_name: "train".into(),
            started_at: Some(at(start)),
            phase: Some("Succeeded".into()),
            tasks: vec![TaskObservation {
                task_key: "fit".into(),
                started_at: Some(at(start)),
                finished_at: Some(at(start) + chrono::Duration::seconds(90)),
                phase: Some("Succeeded".into()),
                artifacts: vec![ArtifactObservation {
                    name: "model".into(),
                    uri: Some("s3://b/m".into()),
                    size_bytes: Some(42),
                }],
                ..TaskObservation::default()
            }],
            ..RunObservation::default()
        }
    }

    #[tokio::test]
    async fn the_namespace_of_a_run_and_of_the_latest_run() {
        let store = Store::open_in_memory().await.expect("store");
        let mut other = run("train-b", "2024-01-02T00:00:00Z");
        other.namespace = Some("team-b".into());
        store
            .import_runs(&[run("train-a", "2024-01-01T00:00:00Z"), other])
            .await
            .expect("import");
        let namespace = |pipeline: &'static str, run: Option<&'static str>| {
            let store = store.clone();
            async move { store.run_namespace(pipeline, run).await.expect("namespace") }
        };
        assert_eq!(
            namespace("train", Some("train-a")).await.as_deref(),
            Some("ml")
        );
        assert_eq!(namespace("train", None).await.as_deref(), Some("team-b"));
        assert_eq!(namespace("train", Some("nope")).await, None);
        assert_eq!(namespace("other", None).await, None);
    }

    #[tokio::test]
    async fn runs_round_trip_and_reimport_replaces() {
        let store = Store::open_in_memory().await.expect("store");
        let summary = store
            .import_runs(&[
                run("train-b", "2024-01-02T00:00:00Z"),
                run("train-a", "2024-01-01T00:00:00Z"),
            ])
            .await
            .expect("import");
        assert_eq!(
            summary,
            ImportSummary {
                runs: 2,
                replaced: 0,
                task_runs: 2
            }
        );
        let again = store
            .import_runs(&[run("train-a", "2024-01-01T00:00:00Z")])
            .await
            .expect("import");
        assert_eq!(again.replaced, 1);
        let runs = store.runs_of_pipeline("train", 10).await.expect("runs");
        let names: Vec<&str> = runs.iter().map(|r| r.run.name.as_str()).collect();
        assert_eq!(names, ["train-a", "train-b"], "oldest first");
        assert_eq!(
            runs[0].run.tasks.len(),
            1,
            "re-import replaced, not duplicated"
        );
        assert_eq!(runs[0].run.tasks[0].duration_s(), Some(90.0));
        assert_eq!(runs[0].run.tasks[0].artifacts[0].size_bytes, Some(42));
        assert_eq!(
            store.runs_of_pipeline("train", 1).await.expect("runs")[0]
                .run
                .name,
            "train-b"
        );
    }

    #[tokio::test]
    async fn sidecar_observations_sit_beside_argo_ones() {
        let store = Store::open_in_memory().await.expect("store");
        store
            .import_runs(&[run("train-a", "2024-01-01T00:00:00Z")])
            .await
            .expect("import");
        let mut seen = run("x", "2024-01-01T00:00:10Z").tasks.remove(0);
        seen.source = ObservationSource::Sidecar;
        store
            .record_task_observation("train-a", Some("ml"), "train", &seen)
            .await
            .expect("sidecar");
        // A re-import from Argo keeps what the sidecar said.
        store
            .import_runs(&[run("train-a", "2024-01-01T00:00:00Z")])
            .await
            .expect("import");
        let runs = store.runs_of_pipeline("train", 10).await.expect("runs");
        let sources: Vec<_> = runs[0].run.tasks.iter().map(|t| t.source).collect();
        assert_eq!(
            sources,
            [ObservationSource::Argo, ObservationSource::Sidecar]
        );
    }

    #[tokio::test]
    async fn a_failing_batch_imports_nothing() {
        let store = Store::open_in_memory().await.expect("store");
        let mut bad = run("train-c", "2024-01-03T00:00:00Z");
        bad.tasks[0].input_bytes = Some(u64::MAX);
        let err = store
            .import_runs(&[run("train-a", "2024-01-01T00:00:00Z"), bad])
            .await
            .expect_err("out of range");
        assert!(matches!(err, Error::OutOfRange { .. }), "{err}");
        assert_eq!(store.run_count("train").await.expect("count"), 0);
    }
}
