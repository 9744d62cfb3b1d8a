-- kfcache's initial schema: the analysed pipeline model (the DAG database of the paper's
-- section II: pipeline, task with predicted start/end, data, directory, data_has_task and
-- task_has_directory), plus run history and cache state kept deliberately small so that
-- later migrations can extend them.
--
-- Conventions:
-- * timestamps are RFC 3339 text in UTC;
-- * JSON columns hold compact JSON written by the store (arrays / objects of strings);
-- * a re-analysed file whose content did not change reuses its `pipeline_version`;
--   any change makes a new version, so old runs keep pointing at the tasks they ran.

CREATE TABLE pipeline (
    id          INTEGER PRIMARY KEY,
    name        TEXT NOT NULL,
    -- Kubernetes namespace, when known; YAML files alone usually do not say.
    namespace   TEXT,
    -- Kind of the most recently recorded version (Workflow, CronWorkflow, PipelineSpec, ...).
    kind        TEXT NOT NULL,
    created_at  TEXT NOT NULL
);
CREATE UNIQUE INDEX pipeline_identity ON pipeline (name, ifnull(namespace, ''));

CREATE TABLE pipeline_version (
    id            INTEGER PRIMARY KEY,
    pipeline_id   INTEGER NOT NULL REFERENCES pipeline (id) ON DELETE CASCADE,
    -- sha256 hex of the analysed file's bytes.
    content_hash  TEXT NOT NULL,
    kind          TEXT NOT NULL,
    -- The file the pipeline was read from, as the user named it, and the document's line.
    source        TEXT NOT NULL,
    source_line   INTEGER,
    -- JSON array of cron schedules (CronWorkflow only; otherwise []).
    schedules     TEXT NOT NULL DEFAULT '[]',
    timezone      TEXT,
    -- JSON object: workflow arguments / KFP root parameters with their defaults.
    parameters    TEXT NOT NULL DEFAULT '{}',
    parallelism   INTEGER CHECK (parallelism IS NULL OR parallelism >= 0),
    analysed_at   TEXT NOT NULL,
    UNIQUE (pipeline_id, content_hash)
);

CREATE TABLE task (
    id                 INTEGER PRIMARY KEY,
    version_id         INTEGER NOT NULL REFERENCES pipeline_version (id) ON DELETE CASCADE,
    -- Index of the task in the model's task list (declaration order, depth first).
    position           INTEGER NOT NULL CHECK (position >= 0),
    -- The model's Task.id: unique within the pipeline, e.g. `condition-1.deploy`.
    task_key           TEXT NOT NULL,
    name               TEXT NOT NULL,
    template           TEXT NOT NULL,
    kind               TEXT NOT NULL CHECK (kind IN ('container', 'script', 'resource', 'importer',
                                                     'suspend', 'http', 'plugin', 'other')),
    gpus               INTEGER NOT NULL DEFAULT 0 CHECK (gpus >= 0),
    -- Decimal instance count, 'dynamic' (known only at run time), or NULL (no loop).
    fan_out            TEXT CHECK (fan_out IS NULL OR fan_out = 'dynamic' OR fan_out GLOB '[0-9]*'),
    condition          TEXT,
    retries            INTEGER NOT NULL DEFAULT 0 CHECK (retries >= 0),
    role               TEXT NOT NULL DEFAULT 'main' CHECK (role IN ('main', 'exit_handler', 'hook')),
    image              TEXT,
    source_line        INTEGER,
    -- JSON object of resolved parameters (training parameters included).
    params             TEXT NOT NULL DEFAULT '{}',
    -- JSON object of node selector labels.
    node_selector      TEXT NOT NULL DEFAULT '{}',
    parallelism        INTEGER CHECK (parallelism IS NULL OR parallelism >= 0),
    -- Seconds from the pipeline's start; NULL until predicted.
    predicted_start_s  REAL,
    predicted_end_s    REAL,
    UNIQUE (version_id, task_key),
    UNIQUE (version_id, position),
    -- Lets task_edge check that both ends belong to the edge's version.
    UNIQUE (version_id, id),
    CHECK (predicted_start_s IS NULL OR predicted_start_s >= 0),
    CHECK (predicted_start_s IS NULL OR predicted_end_s IS NULL
           OR predicted_end_s >= predicted_start_s)
);

-- `to_task` depends on `from_task`: edges point the way data and time flow.
CREATE TABLE task_edge (
    version_id  INTEGER NOT NULL REFERENCES pipeline_version (id) ON DELETE CASCADE,
    from_task   INTEGER NOT NULL,
    to_task     INTEGER NOT NULL,
    -- Index of `from_task` in `to_task`'s depends_on list.
    position    INTEGER NOT NULL CHECK (position >= 0),
    PRIMARY KEY (from_task, to_task),
    CHECK (from_task <> to_task),
    FOREIGN KEY (version_id, from_task) REFERENCES task (version_id, id) ON DELETE CASCADE,
    FOREIGN KEY (version_id, to_task) REFERENCES task (version_id, id) ON DELETE CASCADE
);
CREATE INDEX task_edge_to ON task_edge (to_task);
CREATE INDEX task_edge_version ON task_edge (version_id);

-- One object (file) a task reads or writes: s3://b/k, gs://, http(s)://, file://,
-- artifact-repository://key, and task://<producer>/<artifact> for an upstream output whose
-- storage location the YAML does not give. Shared by every task that names the same URI.
CREATE TABLE data (
    id          INTEGER PRIMARY KEY,
    uri         TEXT NOT NULL UNIQUE,
    size_bytes  INTEGER CHECK (size_bytes IS NULL OR size_bytes >= 0),
    checksum    TEXT,
    -- ETag or object version the size/checksum were read from.
    etag        TEXT,
    -- When an analysis last referenced it.
    last_seen   TEXT NOT NULL
);

-- A directory a task reads or writes as a whole: a URI ending in '/', or a PVC mount
-- (pvc://claim/path).
CREATE TABLE directory (
    id            INTEGER PRIMARY KEY,
    uri           TEXT NOT NULL UNIQUE,
    size_bytes    INTEGER CHECK (size_bytes IS NULL OR size_bytes >= 0),
    object_count  INTEGER CHECK (object_count IS NULL OR object_count >= 0),
    last_seen     TEXT NOT NULL
);

CREATE TABLE data_has_task (
    data_id   INTEGER NOT NULL REFERENCES data (id),
    task_id   INTEGER NOT NULL REFERENCES task (id) ON DELETE CASCADE,
    role      TEXT NOT NULL CHECK (role IN ('input', 'output')),
    -- Index of the artifact in the task's inputs or outputs.
    position  INTEGER NOT NULL CHECK (position >= 0),
    -- Artifact name and the path inside the container, when declared.
    name      TEXT NOT NULL,
    path      TEXT,
    -- 1 when the YAML gave no location for this output and the URI is its
    -- task://<producer>/<artifact> identity.
    implicit  INTEGER NOT NULL DEFAULT 0 CHECK (implicit IN (0, 1)),
    PRIMARY KEY (task_id, role, position)
);
CREATE INDEX data_has_task_data ON data_has_task (data_id);

CREATE TABLE task_has_directory (
    directory_id  INTEGER NOT NULL REFERENCES directory (id),
    task_id       INTEGER NOT NULL REFERENCES task (id) ON DELETE CASCADE,
    role          TEXT NOT NULL CHECK (role IN ('input', 'output')),
    position      INTEGER NOT NULL CHECK (position >= 0),
    name          TEXT NOT NULL,
    path          TEXT,
    PRIMARY KEY (task_id, role, position)
);
CREATE INDEX task_has_directory_directory ON task_has_directory (directory_id);

-- Artifacts that name nothing to fetch: inline `raw:` inputs and inputs whose source the YAML
-- does not reveal (source NULL). Kept so a task's inputs and outputs read back complete.
CREATE TABLE task_unlinked_artifact (
    task_id   INTEGER NOT NULL REFERENCES task (id) ON DELETE CASCADE,
    role      TEXT NOT NULL CHECK (role IN ('input', 'output')),
    position  INTEGER NOT NULL CHECK (position >= 0),
    name      TEXT NOT NULL,
    path      TEXT,
    source    TEXT,
    PRIMARY KEY (task_id, role, position)
);

-- Run history, filled by later crates from Argo and from the sidecar.
CREATE TABLE run (
    id           INTEGER PRIMARY KEY,
    -- The recorded version it ran, when known.
    version_id   INTEGER REFERENCES pipeline_version (id) ON DELETE SET NULL,
    -- External run name: the Argo Workflow name or the KFP run id.
    name         TEXT NOT NULL,
    started_at   TEXT,
    finished_at  TEXT,
    phase        TEXT
);
CREATE INDEX run_name ON run (name);
CREATE INDEX run_version ON run (version_id);

CREATE TABLE task_run (
    id           INTEGER PRIMARY KEY,
    run_id       INTEGER NOT NULL REFERENCES run (id) ON DELETE CASCADE,
    task_key     TEXT NOT NULL,
    attempt      INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    started_at   TEXT,
    finished_at  TEXT,
    phase        TEXT,
    node         TEXT,
    source       TEXT NOT NULL CHECK (source IN ('argo', 'sidecar')),
    UNIQUE (run_id, task_key, attempt, source)
);

-- What is staged in the cache for a data object.
CREATE TABLE cache_entry (
    id              INTEGER PRIMARY KEY,
    data_id         INTEGER NOT NULL REFERENCES data (id),
    cache_key       TEXT NOT NULL UNIQUE,
    state           TEXT NOT NULL CHECK (state IN ('staging', 'ready', 'evicted')),
    bytes           INTEGER CHECK (bytes IS NULL OR bytes >= 0),
    chunk_size      INTEGER CHECK (chunk_size IS NULL OR chunk_size > 0),
    chunk_count     INTEGER CHECK (chunk_count IS NULL OR chunk_count >= 0),
    checksum        TEXT,
    staged_at       TEXT,
    -- ETag / object version of the data the entry was staged from.
    source_version  TEXT,
    -- Row revision for compare-and-set updates.
    version         INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX cache_entry_data ON cache_entry (data_id);
