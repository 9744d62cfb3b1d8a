//! Writing an analysed pipeline: [`Store::record_analysis`] and the small updates the
//! predictor and prefetcher make afterwards.
//!
//! A version is keyed by (pipeline name, content hash). Recording content that is already
//! there changes nothing but the predicted times and the version's `analysed_at` (so that
//! [`Store::latest_version`] follows the file's current content); anything else makes a new
//! version with its own tasks, so runs recorded against an old version keep their tasks.
//! Each call is one transaction: on any error nothing of it is left behind.

use std::collections::HashMap;

use kfcache_parser::model::task_output_uri;
use kfcache_parser::schedule::TaskTimes;
use kfcache_parser::{Pipeline, Task};
use sqlx::{Sqlite, Transaction};

use crate::error::{Context, Error, Result};
use crate::location::{classify, StorageKind};
use crate::records::{
    check_prediction, fan_out_str, now, signed, task_role_str, to_json, AnalysisRecord,
    ArtifactRole,
};
use crate::store::Store;

type Tx = Transaction<'static, Sqlite>;

impl Store {
    /// Record an analysed pipeline and its predicted task times.
    ///
    /// `content_hash` identifies the analysed content (see [`content_hash`](crate::content_hash));
    /// it should cover everything the model was built from. `times` is indexed like
    /// `pipeline.tasks`, or empty when nothing is predicted yet.
    ///
    /// Errors with [`Error::UnknownDependency`] when a task depends on an id that is not one of
    /// the pipeline's tasks (the parser's DAG check rules this out for parsed pipelines).
    pub async fn record_analysis(
        &self,
        pipeline: &Pipeline,
        content_hash: &str,
        times: &[TaskTimes],
    ) -> Result<AnalysisRecord> {
        if !times.is_empty() && times.len() != pipeline.tasks.len() {
            return Err(Error::TimesMismatch {
                pipeline: pipeline.name.clone(),
                tasks: pipeline.tasks.len(),
                times: times.len(),
            });
        }
        for (task, t) in pipeline.tasks.iter().zip(times) {
            check_prediction(&task.id, t.start_s, t.end_s)?;
        }

        let mut tx = self.write().await?;
        let at = now();
        let existing_pipeline: Option<i64> =
            sqlx::query_scalar("SELECT id FROM pipeline WHERE name = ?1 AND namespace IS NULL")
                .bind(&pipeline.name)
                .fetch_optional(&mut *tx)
                .await
                .context("looking up the pipeline")?;

        if let Some(pipeline_id) = existing_pipeline {
            let existing_version: Option<i64> = sqlx::query_scalar(
                "SELECT id FROM pipeline_version WHERE pipeline_id = ?1 AND content_hash = ?2",
            )
            .bind(pipeline_id)
            .bind(content_hash)
            .fetch_optional(&mut *tx)
            .await
            .context("looking up the pipeline version")?;
            if let Some(version_id) = existing_version {
                sqlx::query("UPDATE pipeline_version SET analysed_at = ?2 WHERE id = ?1")
                    .bind(version_id)
                    .bind(&at)
                    .execute(&mut *tx)
                    .await
                    .context("refreshing the version's analysis time")?;
                let predictions = pipeline
                    .tasks
                    .iter()
                    .zip(times)
                    .map(|(task, t)| (task.id.as_str(), t.start_s, t.end_s));
                write_predictions(&mut tx, version_id, predictions).await?;
                tx.commit().await.context("committing the analysis")?;
                return Ok(AnalysisRecord {
                    pipeline_id,
                    version_id,
                    created: false,
                });
            }
        }

        let pipeline_id = match existing_pipeline {
            Some(id) => {
                sqlx::query("UPDATE pipeline SET kind = ?2 WHERE id = ?1")
                    .bind(id)
                    .bind(pipeline.kind.as_str())
                    .execute(&mut *tx)
                    .await
                    .context("updating the pipeline's kind")?;
                id
            }
            None => sqlx::query_scalar(
                "INSERT INTO pipeline (name, namespace, kind, created_at)
                 VALUES (?1, NULL, ?2, ?3) RETURNING id",
            )
            .bind(&pipeline.name)
            .bind(pipeline.kind.as_str())
            .bind(&at)
            .fetch_one(&mut *tx)
            .await
            .context("inserting the pipeline")?,
        };

        let version_id: i64 = sqlx::query_scalar(
            "INSERT INTO pipeline_version (pipeline_id, content_hash, kind, source, source_line,
                 schedules, timezone, parameters, parallelism, analysed_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) RETURNING id",
        )
        .bind(pipeline_id)
        .bind(content_hash)
        .bind(pipeline.kind.as_str())
        .bind(&pipeline.source)
        .bind(pipeline.line.map(|l| l as i64))
        .bind(to_json("the pipeline's schedules", &pipeline.schedules)?)
        .bind(&pipeline.timezone)
        .bind(to_json("the pipeline's parameters", &pipeline.parameters)?)
        .bind(pipeline.parallelism)
        .bind(&at)
        .fetch_one(&mut *tx)
        .await
        .context("inserting the pipeline version")?;

        let mut task_ids: HashMap<&str, i64> = HashMap::with_capacity(pipeline.tasks.len());
        for (position, task) in pipeline.tasks.iter().enumerate() {
            let time = times.get(position);
            let id = insert_task(&mut tx, version_id, position, task, time).await?;
            task_ids.insert(task.id.as_str(), id);
        }

        for task in &pipeline.tasks {
            let to_task = task_ids[task.id.as_str()];
            for (position, dependency) in task.depends_on.iter().enumerate() {
                let Some(&from_task) = task_ids.get(dependency.as_str()) else {
                    return Err(Error::UnknownDependency {
                        pipeline: pipeline.name.clone(),
                        task: task.id.clone(),
                        dependency: dependency.clone(),
                    });
                };
                // A dependency listed twice is one edge; the first position is kept.
                sqlx::query(
                    "INSERT INTO task_edge (version_id, from_task, to_task, position)
                     VALUES (?1, ?2, ?3, ?4) ON CONFLICT DO NOTHING",
                )
                .bind(version_id)
                .bind(from_task)
                .bind(to_task)
                .bind(position as i64)
                .execute(&mut *tx)
                .await
                .context("inserting a task edge")?;
            }
        }

        for task in &pipeline.tasks {
            let task_id = task_ids[task.id.as_str()];
            for (position, input) in task.inputs.iter().enumerate() {
                let link = Link {
                    task_id,
                    role: ArtifactRole::Input,
                    position,
                    name: &input.name,
                    path: input.path.as_deref(),
                    item: input.item,
                };
                match input.source.as_deref() {
                    Some(uri) => link_uri(&mut tx, &link, uri, false, &at).await?,
                    None => link_unlinked(&mut tx, &link, None).await?,
                }
            }
            for (position, output) in task.outputs.iter().enumerate() {
                let link = Link {
                    task_id,
                    role: ArtifactRole::Output,
                    position,
                    name: &output.name,
                    path: output.path.as_deref(),
                    item: None,
                };
                match output.location.as_deref() {
                    Some(uri) => link_uri(&mut tx, &link, uri, false, &at).await?,
                    None => {
                        let identity = task_output_uri(&task.id, &output.name);
                        link_uri(&mut tx, &link, &identity, true, &at).await?
                    }
                }
            }
        }

        tx.commit().await.context("committing the analysis")?;
        Ok(AnalysisRecord {
            pipeline_id,
            version_id,
            created: true,
        })
    }

    /// Replace the predicted times of some tasks of a version: `(task key, start s, end s)`.
    /// All or nothing: an unknown version or task key, or an invalid interval, changes nothing.
    pub async fn update_predictions<K: AsRef<str>>(
        &self,
        version_id: i64,
        predictions: &[(K, f64, f64)],
    ) -> Result<()> {
        for (task, start_s, end_s) in predictions {
            check_prediction(task.as_ref(), *start_s, *end_s)?;
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
        let predictions = predictions
            .iter()
            .map(|(task, start_s, end_s)| (task.as_ref(), *start_s, *end_s));
        write_predictions(&mut tx, version_id, predictions).await?;
        tx.commit().await.context("committing predictions")
    }

    /// Record the size of a data object (e.g. from a HEAD request).
    pub async fn set_data_size(&self, uri: &str, size_bytes: u64) -> Result<()> {
        let updated = sqlx::query("UPDATE data SET size_bytes = ?2 WHERE uri = ?1")
            .bind(uri)
            .bind(signed("data size", size_bytes)?)
            .execute(&self.pool)
            .await
            .context("setting a data size")?
            .rows_affected();
        if updated == 0 {
            return Err(Error::UnknownUri {
                uri: uri.to_string(),
            });
        }
        Ok(())
    }

    /// Record the total size and object count of a directory (e.g. from a listing).
    pub async fn set_directory_size(
        &self,
        uri: &str,
        size_bytes: u64,
        object_count: u64,
    ) -> Result<()> {
        let updated =
            sqlx::query("UPDATE directory SET size_bytes = ?2, object_count = ?3 WHERE uri = ?1")
                .bind(uri)
                .bind(signed("directory size", size_bytes)?)
                .bind(signed("directory object count", object_count)?)
                .execute(&self.pool)
                .await
                .context("setting a directory size")?
                .rows_affected();
        if updated == 0 {
            return Err(Error::UnknownUri {
                uri: uri.to_string(),
            });
        }
        Ok(())
    }
}

async fn insert_task(
    tx: &mut Tx,
    version_id: i64,
    position: usize,
    task: &Task,
    time: Option<&TaskTimes>,
) -> Result<i64> {
    sqlx::query_scalar(
        "INSERT INTO task (version_id, position, task_key, name, template, kind, gpus, fan_out,
             condition, retries, role, image, source_line, params, node_selector, parallelism,
             predicted_start_s, predicted_end_s)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)
         RETURNING id",
    )
    .bind(version_id)
    .bind(position as i64)
    .bind(&task.id)
    .bind(&task.name)
    .bind(&task.template)
    .bind(task.kind.as_str())
    .bind(task.gpus)
    .bind(fan_out_str(task.fan_out))
    .bind(&task.condition)
    .bind(task.retries)
    .bind(task_role_str(task.role))
    .bind(&task.image)
    .bind(task.line.map(|l| l as i64))
    .bind(to_json("a task's parameters", &task.params)?)
    .bind(to_json("a task's node selector", &task.node_selector)?)
    .bind(task.parallelism)
    .bind(time.map(|t| t.start_s))
    .bind(time.map(|t| t.end_s))
    .fetch_one(&mut **tx)
    .await
    .context("inserting a task")
}

async fn write_predictions(
    tx: &mut Tx,
    version_id: i64,
    predictions: impl Iterator<Item = (&str, f64, f64)>,
) -> Result<()> {
    for (task, start_s, end_s) in predictions {
        let updated = sqlx::query(
            "UPDATE task SET predicted_start_s = ?3, predicted_end_s = ?4
             WHERE version_id = ?1 AND task_key = ?2",
        )
        .bind(version_id)
        .bind(task)
        .bind(start_s)
        .bind(end_s)
        .execute(&mut **tx)
        .await
        .context("updating predicted times")?
        .rows_affected();
        if updated == 0 {
            return Err(Error::UnknownTask {
                version_id,
                task: task.to_string(),
            });
        }
    }
    Ok(())
}

/// The task-side half of an artifact link.
struct Link<'a> {
    task_id: i64,
    role: ArtifactRole,
    position: usize,
    name: &'a str,
    path: Option<&'a str>,
    item: Option<u32>,
}

/// Link a task to the data or directory row for `uri`, creating or touching it.
async fn link_uri(tx: &mut Tx, link: &Link<'_>, uri: &str, implicit: bool, at: &str) -> Result<()> {
    match classify(uri) {
        StorageKind::Data => {
            let data_id: i64 = sqlx::query_scalar(
                "INSERT INTO data (uri, last_seen) VALUES (?1, ?2)
                 ON CONFLICT (uri) DO UPDATE SET last_seen = excluded.last_seen
                 RETURNING id",
            )
            .bind(uri)
            .bind(at)
            .fetch_one(&mut **tx)
            .await
            .context("recording a data URI")?;
            sqlx::query(
                "INSERT INTO data_has_task
                   (data_id, task_id, role, position, name, path, implicit, item)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )
            .bind(data_id)
            .bind(link.task_id)
            .bind(link.role.as_str())
            .bind(link.position as i64)
            .bind(link.name)
            .bind(link.path)
            .bind(implicit)
            .bind(link.item)
            .execute(&mut **tx)
            .await
            .context("linking a task to data")?;
        }
        StorageKind::Directory => {
            let directory_id: i64 = sqlx::query_scalar(
                "INSERT INTO directory (uri, last_seen) VALUES (?1, ?2)
                 ON CONFLICT (uri) DO UPDATE SET last_seen = excluded.last_seen
                 RETURNING id",
            )
            .bind(uri)
            .bind(at)
            .fetch_one(&mut **tx)
            .await
            .context("recording a directory URI")?;
            sqlx::query(
                "INSERT INTO task_has_directory
                   (directory_id, task_id, role, position, name, path, item)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )
            .bind(directory_id)
            .bind(link.task_id)
            .bind(link.role.as_str())
            .bind(link.position as i64)
            .bind(link.name)
            .bind(link.path)
            .bind(link.item)
            .execute(&mut **tx)
            .await
            .context("linking a task to a directory")?;
        }
        StorageKind::Inline => link_unlinked(tx, link, Some(uri)).await?,
    }
    Ok(())
}

/// Keep an artifact that names nothing to fetch (inline content, unknown source).
async fn link_unlinked(tx: &mut Tx, link: &Link<'_>, source: Option<&str>) -> Result<()> {
    sqlx::query(
        "INSERT INTO task_unlinked_artifact (task_id, role, position, name, path, source, item)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .bind(link.task_id)
    .bind(link.role.as_str())
    .bind(link.position as i64)
    .bind(link.name)
    .bind(link.path)
    .bind(source)
    .bind(link.item)
    .execute(&mut **tx)
    .await
    .context("recording an unlinked artifact")?;
    Ok(())
}
