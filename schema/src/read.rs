//! Reading back: pipelines, versions, tasks rebuilt into the parser's model, a task's inputs,
//! and who reads or writes a URI. Reads take no write lock and see a consistent snapshot per
//! query (WAL), so they can run while an analysis is being recorded.

use std::collections::HashMap;

use kfcache_parser::{Input, Output, Pipeline, Task};
use sqlx::sqlite::SqliteRow;
use sqlx::Row;

use crate::error::{Context, Error, Result};
use crate::records::{
    from_json, parse_artifact_role, parse_fan_out, parse_pipeline_kind, parse_task_kind,
    parse_task_role, parse_timestamp, predicted, unsigned, unsigned_opt, ArtifactRecord,
    ArtifactRole, ArtifactStorage, DataRecord, DirectoryRecord, PipelineRecord, TaskRecord,
    VersionRecord,
};
use crate::store::Store;

const PIPELINE_COLUMNS: &str = "id, name, namespace, kind, created_at";
const VERSION_COLUMNS: &str = "v.id, v.pipeline_id, v.content_hash, v.kind, v.source, \
     v.source_line, v.schedules, v.timezone, v.parameters, v.parallelism, v.analysed_at";

/// Every artifact link of the tasks selected by `{filter}` (on `t`, the task, and `l`, the
/// link), from the three link tables, in task / role / position order.
const ARTIFACTS_QUERY: &str = "
    SELECT l.task_id, l.role, l.position, l.name, l.path, d.uri, l.implicit, l.item,
           'data' AS storage, d.id AS storage_id, d.size_bytes, NULL AS object_count
      FROM data_has_task l JOIN data d ON d.id = l.data_id JOIN task t ON t.id = l.task_id
     WHERE {filter}
    UNION ALL
    SELECT l.task_id, l.role, l.position, l.name, l.path, r.uri, 0, l.item,
           'directory', r.id, r.size_bytes, r.object_count
      FROM task_has_directory l JOIN directory r ON r.id = l.directory_id
      JOIN task t ON t.id = l.task_id
     WHERE {filter}
    UNION ALL
    SELECT l.task_id, l.role, l.position, l.name, l.path, l.source, 0, l.item,
           'unlinked', NULL, NULL, NULL
      FROM task_unlinked_artifact l JOIN task t ON t.id = l.task_id
     WHERE {filter}
    ORDER BY 1, 2, 3";

/// Tasks that link to `uri` (as data or as a directory) in the given role, oldest version
/// first, in task order.
const LINKED_TASKS_QUERY: &str = "
    SELECT version_id, task_key FROM (
        SELECT t.version_id, t.position, t.task_key
          FROM data_has_task l JOIN data d ON d.id = l.data_id JOIN task t ON t.id = l.task_id
         WHERE d.uri = ?1 AND l.role = ?2
        UNION
        SELECT t.version_id, t.position, t.task_key
          FROM task_has_directory l JOIN directory r ON r.id = l.directory_id
          JOIN task t ON t.id = l.task_id
         WHERE r.uri = ?1 AND l.role = ?2)
    ORDER BY version_id, position";

fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).context("decoding a row")
}

impl Store {
    /// Every pipeline, by name.
    pub async fn pipelines(&self) -> Result<Vec<PipelineRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipeline ORDER BY name, namespace"
        ))
        .fetch_all(&self.pool)
        .await
        .context("listing pipelines")?;
        rows.iter().map(pipeline_record).collect()
    }

    /// The pipeline called `name` (without a namespace), if recorded.
    pub async fn pipeline_by_name(&self, name: &str) -> Result<Option<PipelineRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {PIPELINE_COLUMNS} FROM pipeline WHERE name = ?1 AND namespace IS NULL"
        ))
        .bind(name)
        .fetch_optional(&self.pool)
        .await
        .context("looking up a pipeline")?;
        row.as_ref().map(pipeline_record).transpose()
    }

    /// The versions of a pipeline, oldest first.
    pub async fn versions(&self, pipeline_id: i64) -> Result<Vec<VersionRecord>> {
        let rows = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM pipeline_version v WHERE v.pipeline_id = ?1 ORDER BY v.id"
        ))
        .bind(pipeline_id)
        .fetch_all(&self.pool)
        .await
        .context("listing pipeline versions")?;
        rows.iter().map(version_record).collect()
    }

    /// One version by id.
    pub async fn version(&self, version_id: i64) -> Result<Option<VersionRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM pipeline_version v WHERE v.id = ?1"
        ))
        .bind(version_id)
        .fetch_optional(&self.pool)
        .await
        .context("looking up a pipeline version")?;
        row.as_ref().map(version_record).transpose()
    }

    /// The most recently analysed version of the pipeline called `name`: re-analysing an
    /// older content makes that version the latest again.
    pub async fn latest_version(&self, pipeline_name: &str) -> Result<Option<VersionRecord>> {
        let row = sqlx::query(&format!(
            "SELECT {VERSION_COLUMNS} FROM pipeline_version v JOIN pipeline p ON p.id = v.pipeline_id
              WHERE p.name = ?1 AND p.namespace IS NULL
              ORDER BY v.analysed_at DESC, v.id DESC LIMIT 1"
        ))
        .bind(pipeline_name)
        .fetch_optional(&self.pool)
        .await
        .context("looking up the latest pipeline version")?;
        row.as_ref().map(version_record).transpose()
    }

    /// The tasks of a version in model order, with `depends_on`, inputs and outputs rebuilt.
    pub async fn tasks(&self, version_id: i64) -> Result<Vec<TaskRecord>> {
        let rows = sqlx::query(
            "SELECT id, version_id, task_key, name, template, kind, gpus, fan_out, condition,
                    retries, role, image, source_line, params, node_selector, parallelism,
                    predicted_start_s, predicted_end_s
               FROM task WHERE version_id = ?1 ORDER BY position",
        )
        .bind(version_id)
        .fetch_all(&self.pool)
        .await
        .context("listing tasks")?;
        let mut records = rows.iter().map(task_record).collect::<Result<Vec<_>>>()?;
        let index: HashMap<i64, usize> =
            records.iter().enumerate().map(|(i, r)| (r.id, i)).collect();

        let edges: Vec<(i64, String)> = sqlx::query_as(
            "SELECT e.to_task, f.task_key FROM task_edge e JOIN task f ON f.id = e.from_task
              WHERE e.version_id = ?1 ORDER BY e.to_task, e.position",
        )
        .bind(version_id)
        .fetch_all(&self.pool)
        .await
        .context("listing task edges")?;
        for (to_task, dependency) in edges {
            if let Some(&i) = index.get(&to_task) {
                records[i].task.depends_on.push(dependency);
            }
        }

        for artifact in self.artifacts("t.version_id = ?1", version_id).await? {
            let Some(&i) = index.get(&artifact.task_id) else {
                continue;
            };
            let task = &mut records[i].task;
            let uri = if artifact.implicit {
                None
            } else {
                artifact.uri
            };
            match artifact.role {
                ArtifactRole::Input => task.inputs.push(Input {
                    item: artifact.item,
                    name: artifact.name,
                    source: uri,
                    path: artifact.path,
                }),
                ArtifactRole::Output => task.outputs.push(Output {
                    name: artifact.name,
                    location: uri,
                    path: artifact.path,
                }),
            }
        }
        Ok(records)
    }

    /// A recorded version rebuilt into the parser's model (predicted times are on
    /// [`Store::tasks`]).
    pub async fn pipeline(&self, version_id: i64) -> Result<Pipeline> {
        let version = self
            .version(version_id)
            .await?
            .ok_or(Error::UnknownVersion { version_id })?;
        let name: String = sqlx::query_scalar("SELECT name FROM pipeline WHERE id = ?1")
            .bind(version.pipeline_id)
            .fetch_one(&self.pool)
            .await
            .context("looking up a pipeline")?;
        let tasks = self.tasks(version_id).await?;
        Ok(Pipeline {
            name,
            kind: version.kind,
            schedules: version.schedules,
            timezone: version.timezone,
            source: version.source,
            line: version.source_line,
            parameters: version.parameters,
            parallelism: version.parallelism,
            tasks: tasks.into_iter().map(|t| t.task).collect(),
        })
    }

    /// What a task reads, in declaration order, with the data or directory row of each.
    pub async fn task_inputs(&self, task_id: i64) -> Result<Vec<ArtifactRecord>> {
        self.artifacts("l.task_id = ?1 AND l.role = 'input'", task_id)
            .await
    }

    /// What a task writes, in declaration order, with the data or directory row of each.
    pub async fn task_outputs(&self, task_id: i64) -> Result<Vec<ArtifactRecord>> {
        self.artifacts("l.task_id = ?1 AND l.role = 'output'", task_id)
            .await
    }

    /// The tasks that read `uri` (data or directory), across every recorded version:
    /// `(version id, task key)`, oldest version first.
    pub async fn consumers(&self, uri: &str) -> Result<Vec<(i64, String)>> {
        self.linked_tasks(uri, ArtifactRole::Input).await
    }

    /// The tasks that write `uri`, like [`Store::consumers`]. An output without a declared
    /// location is found under its `task://producer/artifact` URI.
    pub async fn producers(&self, uri: &str) -> Result<Vec<(i64, String)>> {
        self.linked_tasks(uri, ArtifactRole::Output).await
    }

    /// The data row for `uri`, if any task has named it.
    pub async fn data(&self, uri: &str) -> Result<Option<DataRecord>> {
        let row = sqlx::query(
            "SELECT id, uri, size_bytes, checksum, etag, last_seen FROM data WHERE uri = ?1",
        )
        .bind(uri)
        .fetch_optional(&self.pool)
        .await
        .context("looking up data")?;
        row.as_ref().map(data_record).transpose()
    }

    /// The directory row for `uri`, if any task has named it.
    pub async fn directory(&self, uri: &str) -> Result<Option<DirectoryRecord>> {
        let row = sqlx::query(
            "SELECT id, uri, size_bytes, object_count, last_seen FROM directory WHERE uri = ?1",
        )
        .bind(uri)
        .fetch_optional(&self.pool)
        .await
        .context("looking up a directory")?;
        row.as_ref().map(directory_record).transpose()
    }

    async fn linked_tasks(&self, uri: &str, role: ArtifactRole) -> Result<Vec<(i64, String)>> {
        sqlx::query_as(LINKED_TASKS_QUERY)
            .bind(uri)
            .bind(role.as_str())
            .fetch_all(&self.pool)
            .await
            .context("listing the tasks linked to a URI")
    }

    /// `filter` is one of this module's constant conditions, with one integer parameter.
    async fn artifacts(&self, filter: &'static str, value: i64) -> Result<Vec<ArtifactRecord>> {
        let rows = sqlx::query(&ARTIFACTS_QUERY.replace("{filter}", filter))
            .bind(value)
            .fetch_all(&self.pool)
            .await
            .context("listing task artifacts")?;
        rows.iter().map(artifact_record).collect()
    }
}

fn pipeline_record(row: &SqliteRow) -> Result<PipelineRecord> {
    Ok(PipelineRecord {
        id: get(row, "id")?,
        name: get(row, "name")?,
        namespace: get(row, "namespace")?,
        kind: parse_pipeline_kind("pipeline", &get::<String>(row, "kind")?)?,
        created_at: parse_timestamp("pipeline", "created_at", &get::<String>(row, "created_at")?)?,
    })
}

fn version_record(row: &SqliteRow) -> Result<VersionRecord> {
    const TABLE: &str = "pipeline_version";
    Ok(VersionRecord {
        id: get(row, "id")?,
        pipeline_id: get(row, "pipeline_id")?,
        content_hash: get(row, "content_hash")?,
        kind: parse_pipeline_kind(TABLE, &get::<String>(row, "kind")?)?,
        source: get(row, "source")?,
        source_line: unsigned_opt(TABLE, "source_line", get(row, "source_line")?)?,
        schedules: from_json(TABLE, "schedules", &get::<String>(row, "schedules")?)?,
        timezone: get(row, "timezone")?,
        parameters: from_json(TABLE, "parameters", &get::<String>(row, "parameters")?)?,
        parallelism: unsigned_opt(TABLE, "parallelism", get(row, "parallelism")?)?,
        analysed_at: parse_timestamp(TABLE, "analysed_at", &get::<String>(row, "analysed_at")?)?,
    })
}

/// A task row, with empty `depends_on`, inputs and outputs for the caller to fill.
fn task_record(row: &SqliteRow) -> Result<TaskRecord> {
    let kind = parse_task_kind(&get::<String>(row, "kind")?)?;
    let mut task = Task::new(
        get::<String>(row, "task_key")?,
        get::<String>(row, "template")?,
        kind,
    );
    task.name = get(row, "name")?;
    task.gpus = unsigned("task", "gpus", get(row, "gpus")?)?;
    task.fan_out = parse_fan_out(get::<Option<String>>(row, "fan_out")?.as_deref())?;
    task.condition = get(row, "condition")?;
    task.retries = unsigned("task", "retries", get(row, "retries")?)?;
    task.role = parse_task_role(&get::<String>(row, "role")?)?;
    task.image = get(row, "image")?;
    task.line = unsigned_opt("task", "source_line", get(row, "source_line")?)?;
    task.params = from_json("task", "params", &get::<String>(row, "params")?)?;
    task.node_selector = from_json(
        "task",
        "node_selector",
        &get::<String>(row, "node_selector")?,
    )?;
    task.parallelism = unsigned_opt("task", "parallelism", get(row, "parallelism")?)?;
    Ok(TaskRecord {
        id: get(row, "id")?,
        version_id: get(row, "version_id")?,
        task,
        predicted: predicted(get(row, "predicted_start_s")?, get(row, "predicted_end_s")?),
    })
}

fn data_record(row: &SqliteRow) -> Result<DataRecord> {
    Ok(DataRecord {
        id: get(row, "id")?,
        uri: get(row, "uri")?,
        size_bytes: unsigned_opt("data", "size_bytes", get(row, "size_bytes")?)?,
        checksum: get(row, "checksum")?,
        etag: get(row, "etag")?,
        last_seen: parse_timestamp("data", "last_seen", &get::<String>(row, "last_seen")?)?,
    })
}

fn directory_record(row: &SqliteRow) -> Result<DirectoryRecord> {
    const TABLE: &str = "directory";
    Ok(DirectoryRecord {
        id: get(row, "id")?,
        uri: get(row, "uri")?,
        size_bytes: unsigned_opt(TABLE, "size_bytes", get(row, "size_bytes")?)?,
        object_count: unsigned_opt(TABLE, "object_count", get(row, "object_count")?)?,
        last_seen: parse_timestamp(TABLE, "last_seen", &get::<String>(row, "last_seen")?)?,
    })
}

fn artifact_record(row: &SqliteRow) -> Result<ArtifactRecord> {
    let storage = match get::<String>(row, "storage")?.as_str() {
        "data" => ArtifactStorage::Data {
            id: get(row, "storage_id")?,
            size_bytes: unsigned_opt("data", "size_bytes", get(row, "size_bytes")?)?,
        },
        "directory" => ArtifactStorage::Directory {
            id: get(row, "storage_id")?,
            size_bytes: unsigned_opt("directory", "size_bytes", get(row, "size_bytes")?)?,
            object_count: unsigned_opt("directory", "object_count", get(row, "object_count")?)?,
        },
        _ => ArtifactStorage::Unlinked,
    };
    Ok(ArtifactRecord {
        task_id: get(row, "task_id")?,
        role: parse_artifact_role("data_has_task", &get::<String>(row, "role")?)?,
        position: unsigned("data_has_task", "position", get(row, "position")?)?,
        name: get(row, "name")?,
        path: get(row, "path")?,
        uri: get(row, "uri")?,
        implicit: get(row, "implicit")?,
        item: unsigned_opt("data_has_task", "item", get(row, "item")?)?,
        storage,
    })
}
