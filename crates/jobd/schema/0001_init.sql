-- jobd schema, version 1.
--
-- Constraints on hot rows are written as OR chains, never `x IN ('a', 'b',
-- 'c', ...)`: SQLite evaluates an IN list of more than two constants by
-- building a temporary b-tree, every time the row is inserted or its column
-- changes — measured at more than half the cost of a bulk insert.
--
-- Every time is an INTEGER of milliseconds since the Unix epoch (UTC); the
-- views below render them as ISO-8601 for humans.  Applied in one transaction
-- by src/store/schema.rs, which then sets PRAGMA user_version = 1.

-- One row per job.  `state` moves along:
--   scheduled -> ready -> running -> succeeded
--                           |-> scheduled (failed, retried after a backoff)
--                           |-> dead      (attempts exhausted / not retryable)
--                           |-> cancelled
-- See src/store/mod.rs for the full state machine.
CREATE TABLE jobs (
    id               INTEGER PRIMARY KEY,
    queue            TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    payload          TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(payload)),
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
    result           TEXT CHECK (result IS NULL OR json_valid(result)),
    last_error       TEXT,
    created_at       INTEGER NOT NULL,
    started_at       INTEGER,
    finished_at      INTEGER
) STRICT;

-- Claim: the next ready jobs of one queue, in priority order.
CREATE INDEX jobs_ready ON jobs (queue, priority, run_at, id) WHERE state = 'ready';
-- Promotion of due delayed jobs and retries.
CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE state = 'scheduled';
-- Lease-expiry sweep (reap) and heartbeats.
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
-- At most one live job per unique key.
CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND (state = 'scheduled' OR state = 'ready' OR state = 'running');

-- One row per finished try (the running try lives on the job row until it ends).
CREATE TABLE attempts (
    job_id      INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     INTEGER NOT NULL,
    worker      TEXT,
    started_at  INTEGER NOT NULL,
    finished_at INTEGER NOT NULL,
    outcome     TEXT    NOT NULL
                CHECK (outcome = 'succeeded' OR outcome = 'failed' OR outcome = 'lost'
                       OR outcome = 'cancelled' OR outcome = 'released'),
    error       TEXT,
    PRIMARY KEY (job_id, attempt)
) STRICT, WITHOUT ROWID;

-- A log of progress reports; the latest one is also on the job row.
CREATE TABLE progress (
    id      INTEGER PRIMARY KEY,
    job_id  INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    percent REAL,
    stage   TEXT,
    detail  TEXT
) STRICT;
CREATE INDEX progress_job ON progress (job_id, id);

-- Queue settings.  A queue exists as soon as a job names it; a row here only
-- records settings (paused, concurrency limit).
CREATE TABLE queues (
    name        TEXT PRIMARY KEY,
    paused      INTEGER NOT NULL DEFAULT 0 CHECK (paused IN (0, 1)),
    concurrency INTEGER CHECK (concurrency IS NULL OR concurrency > 0),
    updated_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Worker processes, with their heartbeat.
CREATE TABLE workers (
    id                TEXT PRIMARY KEY,
    host              TEXT    NOT NULL,
    pid               INTEGER NOT NULL,
    queues            TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(queues)),
    started_at        INTEGER NOT NULL,
    last_heartbeat_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;

-- Recurring jobs (used by the scheduler).
CREATE TABLE schedules (
    name         TEXT PRIMARY KEY,
    cron         TEXT,
    interval_ms  INTEGER CHECK (interval_ms IS NULL OR interval_ms > 0),
    timezone     TEXT    NOT NULL DEFAULT 'UTC',
    queue        TEXT    NOT NULL,
    kind         TEXT    NOT NULL,
    payload      TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(payload)),
    priority     INTEGER NOT NULL DEFAULT 0,
    max_attempts INTEGER NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    enabled      INTEGER NOT NULL DEFAULT 1 CHECK (enabled IN (0, 1)),
    misfire      TEXT    NOT NULL DEFAULT 'once' CHECK (misfire IN ('skip', 'once', 'all')),
    last_fire_at INTEGER,
    next_fire_at INTEGER,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    CHECK ((cron IS NULL) <> (interval_ms IS NULL))
) STRICT, WITHOUT ROWID;
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled = 1;

-- One row per fired tick: the UNIQUE key makes a tick fire once, whoever fires it.
CREATE TABLE schedule_fires (
    schedule TEXT    NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    fire_at  INTEGER NOT NULL,
    job_id   INTEGER REFERENCES jobs (id) ON DELETE SET NULL,
    PRIMARY KEY (schedule, fire_at)
) STRICT, WITHOUT ROWID;
CREATE INDEX schedule_fires_job ON schedule_fires (job_id) WHERE job_id IS NOT NULL;

-- ---------------------------------------------------------------------------
-- Views for humans: `sqlite3 queue.db 'select * from queue_stats'`.
-- ---------------------------------------------------------------------------

CREATE VIEW job_overview AS
SELECT
    id,
    queue,
    kind,
    state,
    priority,
    attempts || '/' || attempt_limit                                  AS tries,
    tenant,
    progress_percent                                                  AS progress,
    progress_stage                                                    AS stage,
    strftime('%Y-%m-%dT%H:%M:%fZ', created_at / 1000.0, 'unixepoch')  AS created,
    strftime('%Y-%m-%dT%H:%M:%fZ', run_at / 1000.0, 'unixepoch')      AS run_at,
    strftime('%Y-%m-%dT%H:%M:%fZ', started_at / 1000.0, 'unixepoch')  AS started,
    strftime('%Y-%m-%dT%H:%M:%fZ', finished_at / 1000.0, 'unixepoch') AS finished,
    round((unixepoch('subsec') * 1000 - created_at) / 1000.0, 1)      AS age_s,
    round((coalesce(finished_at, unixepoch('subsec') * 1000) - started_at) / 1000.0, 3)
                                                                      AS run_s,
    lease_owner                                                       AS worker,
    strftime('%Y-%m-%dT%H:%M:%fZ', lease_expires_at / 1000.0, 'unixepoch')
                                                                      AS lease_expires,
    cancel_requested,
    unique_key,
    last_error,
    payload,
    result
FROM jobs;

CREATE VIEW queue_stats AS
WITH names AS (
    SELECT DISTINCT queue AS name FROM jobs
    UNION
    SELECT name FROM queues
)
SELECT
    n.name                                                           AS queue,
    coalesce(q.paused, 0)                                            AS paused,
    q.concurrency                                                    AS concurrency,
    count(j.id) FILTER (WHERE j.state = 'scheduled')                 AS scheduled,
    count(j.id) FILTER (WHERE j.state = 'ready')                     AS ready,
    count(j.id) FILTER (WHERE j.state = 'running')                   AS running,
    count(j.id) FILTER (WHERE j.state = 'succeeded')                 AS succeeded,
    count(j.id) FILTER (WHERE j.state = 'dead')                      AS dead,
    count(j.id) FILTER (WHERE j.state = 'cancelled')                 AS cancelled,
    strftime('%Y-%m-%dT%H:%M:%fZ',
             min(j.run_at) FILTER (WHERE j.state = 'ready') / 1000.0, 'unixepoch')
                                                                     AS oldest_ready,
    round((unixepoch('subsec') * 1000
           - min(j.run_at) FILTER (WHERE j.state = 'ready')) / 1000.0, 1)
                                                                     AS oldest_ready_age_s
FROM names AS n
LEFT JOIN queues AS q ON q.name = n.name
LEFT JOIN jobs AS j ON j.queue = n.name
GROUP BY n.name;

CREATE VIEW attempt_log AS
SELECT
    a.job_id,
    j.queue,
    j.kind,
    a.attempt,
    a.worker,
    a.outcome,
    strftime('%Y-%m-%dT%H:%M:%fZ', a.started_at / 1000.0, 'unixepoch')  AS started,
    strftime('%Y-%m-%dT%H:%M:%fZ', a.finished_at / 1000.0, 'unixepoch') AS finished,
    round((a.finished_at - a.started_at) / 1000.0, 3)                   AS run_s,
    a.error
FROM attempts AS a
JOIN jobs AS j ON j.id = a.job_id;
