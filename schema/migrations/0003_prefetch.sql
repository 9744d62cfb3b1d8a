-- What the prefetcher copied: one row per object staged, with how long it took and whether it
-- was in the cache by its deadline. The plans of later runs take their bandwidth from these
-- rows (bytes over seconds of recent transfers), and `kfcache prefetch` reports from them.

CREATE TABLE prefetch_transfer (
    id            INTEGER PRIMARY KEY,
    -- The pipeline version planned, and the run it was planned for (its name, when given).
    version_id    INTEGER REFERENCES pipeline_version (id) ON DELETE SET NULL,
    run_name      TEXT,
    uri           TEXT NOT NULL,
    bytes         INTEGER NOT NULL CHECK (bytes >= 0),
    seconds       REAL NOT NULL CHECK (seconds >= 0),
    finished_at   TEXT NOT NULL,
    -- RFC 3339 UTC time the object had to be in the cache by; NULL when the plan gave none.
    deadline_at   TEXT,
    met_deadline  INTEGER CHECK (met_deadline IS NULL OR met_deadline IN (0, 1))
);
CREATE INDEX prefetch_transfer_finished ON prefetch_transfer (finished_at);
CREATE INDEX prefetch_transfer_uri ON prefetch_transfer (uri);
