-- Run history for the predictor, and the predictions it makes.
--
-- * `run` gains what identifies a run across imports (namespace, uid), the pipeline it ran
--   (its name with Argo's generated suffix removed, so runs of one pipeline group together
--   whatever version they ran), its workflow parameters and where it came from.
-- * `task_run` is rebuilt so that loop instances of one task (`train(0:a)`, `train(1:b)`)
--   are separate rows (`instance`), with the template, the node's input parameters, the
--   bytes read and written where known, and 'skipped' observations for `when` branches that
--   did not run. Nothing referenced the old table; its rows are copied.
-- * `prediction` / `task_prediction` keep every prediction, keyed by pipeline version and
--   anchor (the wall-clock time the run is assumed to start).

ALTER TABLE run ADD COLUMN namespace TEXT;
ALTER TABLE run ADD COLUMN uid TEXT;
ALTER TABLE run ADD COLUMN pipeline_name TEXT;
ALTER TABLE run ADD COLUMN parameters TEXT NOT NULL DEFAULT '{}';
ALTER TABLE run ADD COLUMN source TEXT NOT NULL DEFAULT 'argo' CHECK (source IN ('argo', 'sidecar'));
ALTER TABLE run ADD COLUMN imported_at TEXT;
CREATE UNIQUE INDEX run_identity ON run (name, ifnull(namespace, ''));
CREATE INDEX run_pipeline ON run (pipeline_name, started_at);

CREATE TABLE task_run_v2 (
    id            INTEGER PRIMARY KEY,
    run_id        INTEGER NOT NULL REFERENCES run (id) ON DELETE CASCADE,
    -- The analysed task's id (Task.id), derived from the node's place in the run.
    task_key      TEXT NOT NULL,
    -- Loop instance label (`0:a` of `train(0:a)`), '' outside loops.
    instance      TEXT NOT NULL DEFAULT '',
    -- 0 for the first try, n for the n-th retry.
    attempt       INTEGER NOT NULL DEFAULT 0 CHECK (attempt >= 0),
    started_at    TEXT,
    finished_at   TEXT,
    -- Argo node phase (Succeeded, Failed, Error, Skipped, Omitted, Running, ...).
    phase         TEXT,
    node          TEXT,
    source        TEXT NOT NULL CHECK (source IN ('argo', 'sidecar')),
    template      TEXT,
    display_name  TEXT,
    -- JSON object of the node's input parameters.
    parameters    TEXT NOT NULL DEFAULT '{}',
    input_bytes   INTEGER CHECK (input_bytes IS NULL OR input_bytes >= 0),
    output_bytes  INTEGER CHECK (output_bytes IS NULL OR output_bytes >= 0),
    message       TEXT,
    UNIQUE (run_id, task_key, instance, attempt, source)
);
INSERT INTO task_run_v2 (id, run_id, task_key, attempt, started_at, finished_at, phase, node, source)
    SELECT id, run_id, task_key, attempt, started_at, finished_at, phase, node, source FROM task_run;
DROP TABLE task_run;
ALTER TABLE task_run_v2 RENAME TO task_run;
CREATE INDEX task_run_key ON task_run (task_key);

-- Output artifacts a task run produced, with their size where the status says.
CREATE TABLE task_run_artifact (
    task_run_id  INTEGER NOT NULL REFERENCES task_run (id) ON DELETE CASCADE,
    name         TEXT NOT NULL,
    uri          TEXT,
    size_bytes   INTEGER CHECK (size_bytes IS NULL OR size_bytes >= 0),
    PRIMARY KEY (task_run_id, name)
);

CREATE TABLE prediction (
    id          INTEGER PRIMARY KEY,
    version_id  INTEGER NOT NULL REFERENCES pipeline_version (id) ON DELETE CASCADE,
    -- RFC 3339 UTC time the run is assumed to start.
    anchor      TEXT NOT NULL,
    -- 'start-at', 'now' or 'next-run'.
    anchor_kind TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    -- Runs of the pipeline the prediction used.
    history_runs INTEGER NOT NULL DEFAULT 0 CHECK (history_runs >= 0),
    UNIQUE (version_id, anchor)
);

CREATE TABLE task_prediction (
    prediction_id  INTEGER NOT NULL REFERENCES prediction (id) ON DELETE CASCADE,
    task_key       TEXT NOT NULL,
    start_s        REAL NOT NULL CHECK (start_s >= 0),
    end_s          REAL NOT NULL,
    start_at       TEXT NOT NULL,
    end_at         TEXT NOT NULL,
    -- Duration of one instance, and where it came from: 'history', 'scaled' or 'prior'.
    duration_s     REAL NOT NULL CHECK (duration_s >= 0),
    duration_source TEXT NOT NULL CHECK (duration_source IN ('history', 'scaled', 'prior')),
    samples        INTEGER NOT NULL CHECK (samples >= 0),
    -- Probability that the task runs at all (its `when` branch), from history.
    run_probability REAL NOT NULL CHECK (run_probability >= 0 AND run_probability <= 1),
    -- Expected seconds lost to retries.
    retry_s        REAL NOT NULL DEFAULT 0 CHECK (retry_s >= 0),
    instances      INTEGER NOT NULL DEFAULT 1 CHECK (instances >= 0),
    CHECK (end_s >= start_s),
    PRIMARY KEY (prediction_id, task_key)
);
