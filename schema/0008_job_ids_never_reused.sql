-- jobd schema, version 8: a job id is never handed out twice in the life of
-- the file.
--
-- With a plain `INTEGER PRIMARY KEY` SQLite gives a new row max(id) + 1, so
-- once the newest jobs were purged their ids came back: a client polling
-- /api/v1/jobs/7 for its PDF would read somebody else's job.  AUTOINCREMENT
-- keeps the high-water mark in `sqlite_sequence` (one small row, updated by
-- each INSERT statement), and a new id is always above every id the file
-- ever held.
--
-- SQLite cannot add AUTOINCREMENT to a table, so it is rebuilt as 0004 was:
-- new table, copy (which sets the mark to today's max(id)), drop, rename
-- (the rename carries the mark to `jobs`), indexes again.  Foreign keys are
-- off while migrations run; `legacy_alter_table` keeps the views as they are.

PRAGMA legacy_alter_table = ON;

CREATE TABLE jobs_v8 (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
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

INSERT INTO jobs_v8 SELECT * FROM jobs;
DROP TABLE jobs;
ALTER TABLE jobs_v8 RENAME TO jobs;

CREATE INDEX jobs_ready ON jobs (queue, priority, run_at, id) WHERE state = 'ready';
CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND (state = 'scheduled' OR state = 'ready' OR state = 'running');

PRAGMA legacy_alter_table = OFF;
