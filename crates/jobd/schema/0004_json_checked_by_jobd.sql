-- jobd schema, version 4: `jobs.payload` and `jobs.result` lose their
-- `CHECK (json_valid(...))`.
--
-- Parsing every payload inside SQLite at insert was 17% of the instructions
-- of `enqueue_many` (measured with callgrind) — and it parsed JSON that
-- jobd had just produced or checked: every way into the queue (the library's
-- `NewJob::payload`/`payload_json`, the CLI, the HTTP API, the scheduler)
-- validates JSON in Rust before it reaches SQL.  A row written behind jobd's
-- back (with the sqlite3 shell) is still found: `jobd check` reports any job
-- whose payload or result is not JSON, and a worker fails such a job for good
-- with the JSON parse error instead of running it.
--
-- SQLite cannot drop an unnamed CHECK, so the table is rebuilt as the SQLite
-- manual prescribes (lang_altertable.html, "other kinds of table schema
-- changes"): new table, copy, drop the old, rename.  src/store/schema.rs
-- runs migrations with foreign keys off (so dropping the old table deletes
-- no attempts) and checks `PRAGMA foreign_key_check` before committing;
-- `legacy_alter_table` keeps the rename from rewriting the views, which name
-- `jobs` and so see the new table.  One copy of the table: on a file with a
-- million jobs, a few seconds once.

PRAGMA legacy_alter_table = ON;

CREATE TABLE jobs_v4 (
    id               INTEGER PRIMARY KEY,
    queue            TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    payload          TEXT    NOT NULL DEFAULT '{}',
    state            TEXT    NOT NULL
                     CHECK (state = 'scheduled' OR state = 'ready' OR state = 'running'
                            OR state = 'succeeded' OR state = 'dead' OR state = 'cancelled'),
    priority         INTEGER NOT NULL DEFAULT 0,      -- lower runs first
    run_at           INTEGER NOT NULL,                -- not before this time
    attempts         INTEGER NOT NULL DEFAULT 0,      -- tries started so far
    max_attempts     INTEGER NOT NULL CHECK (max_attempts >= 1),
    attempt_limit    INTEGER NOT NULL,                -- `attempts` at which the job is out of tries
    backoff_base_ms  INTEGER NOT NULL CHECK (backoff_base_ms >= 0),
    backoff_max_ms   INTEGER NOT NULL CHECK (backoff_max_ms >= backoff_base_ms),
    timeout_ms       INTEGER CHECK (timeout_ms IS NULL OR timeout_ms > 0),
    unique_key       TEXT,
    tenant           TEXT,
    lease_owner      TEXT,                            -- worker of the current (or last) try
    lease_token      INTEGER,                         -- fencing token of the current try
    lease_expires_at INTEGER,
    cancel_requested INTEGER NOT NULL DEFAULT 0,
    progress_percent REAL,
    progress_stage   TEXT,
    progress_detail  TEXT,
    result           TEXT,                            -- JSON
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER
) STRICT;

INSERT INTO jobs_v4 SELECT * FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v4 RENAME TO jobs;

CREATE INDEX jobs_ready ON jobs (queue, priority, run_at, id) WHERE state = 'ready';
CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND (state = 'scheduled' OR state = 'ready' OR state = 'running');

PRAGMA legacy_alter_table = OFF;
