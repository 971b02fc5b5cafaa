-- jobd on PostgreSQL, version 1: the tables of the SQLite schema (version 10)
-- in PostgreSQL's types.  Times are milliseconds since the Unix epoch (UTC),
-- as in the file; jobd_time(given) is the time of a statement: the
-- database's clock (the transaction's start), unless a test's clock gave one.
-- JSON is stored as text, exactly as the caller's bytes were.

CREATE FUNCTION jobd_time(given bigint) RETURNS bigint
LANGUAGE sql STABLE PARALLEL SAFE
AS $$ SELECT coalesce(given, (extract(epoch FROM now()) * 1000)::bigint) $$;

CREATE TABLE jobs (
    id               bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,  -- never reused
    queue            text    NOT NULL,
    kind             text    NOT NULL,
    payload          text    NOT NULL DEFAULT '{}',
    state            text    NOT NULL
                     CHECK (state IN ('scheduled', 'ready', 'running', 'succeeded', 'dead', 'cancelled')),
    priority         bigint  NOT NULL DEFAULT 0,       -- lower runs first
    run_at           bigint  NOT NULL,                 -- not before this time
    attempts         bigint  NOT NULL DEFAULT 0,       -- tries started so far
    max_attempts     bigint  NOT NULL CHECK (max_attempts >= 1),
    attempt_limit    bigint  NOT NULL,                 -- `attempts` at which the job is out of tries
    backoff_base_ms  bigint  NOT NULL CHECK (backoff_base_ms >= 0),
    backoff_max_ms   bigint  NOT NULL CHECK (backoff_max_ms >= backoff_base_ms),
    timeout_ms       bigint  CHECK (timeout_ms IS NULL OR timeout_ms > 0),
    unique_key       text,
    tenant           text,
    lease_owner      text,                             -- worker of the current (or last) try
    lease_token      bigint,                           -- fencing token of the current try
    lease_expires_at bigint,
    cancel_requested boolean NOT NULL DEFAULT false,
    progress_percent double precision,
    progress_stage   text,
    progress_detail  text,
    result           text,                             -- JSON
    last_error       text,
    created_at       bigint  NOT NULL,
    started_at       bigint,
    finished_at      bigint,
    notify           text,                             -- JSON list of notifications
    notified_at      bigint
);
CREATE INDEX jobs_ready ON jobs (queue, priority, run_at, id) WHERE state = 'ready';
CREATE INDEX jobs_scheduled ON jobs (run_at) WHERE state = 'scheduled';
CREATE INDEX jobs_running ON jobs (lease_expires_at) WHERE state = 'running';
CREATE INDEX jobs_running_queue ON jobs (queue) WHERE state = 'running';
CREATE UNIQUE INDEX jobs_unique_key ON jobs (unique_key)
    WHERE unique_key IS NOT NULL AND state IN ('scheduled', 'ready', 'running');
CREATE INDEX jobs_notify_pending ON jobs (id)
    WHERE notify IS NOT NULL AND finished_at IS NOT NULL
      AND notified_at IS DISTINCT FROM finished_at
      AND state IN ('succeeded', 'dead', 'cancelled');
CREATE INDEX jobs_dead ON jobs (finished_at, id) WHERE state = 'dead';

CREATE TABLE tries (
    job_id      bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt     bigint NOT NULL,
    worker      text,
    started_at  bigint NOT NULL,
    finished_at bigint NOT NULL,
    outcome     text   NOT NULL
                CHECK (outcome IN ('succeeded', 'failed', 'lost', 'cancelled', 'released')),
    error       text,
    PRIMARY KEY (job_id, attempt)
);

CREATE TABLE progress (
    id      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    job_id  bigint NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    attempt bigint NOT NULL,
    at      bigint NOT NULL,
    percent double precision,
    stage   text,
    detail  text
);
CREATE INDEX progress_job ON progress (job_id, id);

CREATE TABLE queues (
    name        text PRIMARY KEY,
    paused      boolean NOT NULL DEFAULT false,
    concurrency bigint CHECK (concurrency IS NULL OR concurrency > 0),
    updated_at  bigint NOT NULL
);

CREATE TABLE workers (
    id                text PRIMARY KEY,
    host              text   NOT NULL,
    pid               bigint NOT NULL,
    queues            text   NOT NULL DEFAULT '[]',
    kinds             text   NOT NULL DEFAULT '[]',
    started_at        bigint NOT NULL,
    last_heartbeat_at bigint NOT NULL
);

CREATE TABLE schedules (
    name         text PRIMARY KEY,
    cron         text,
    interval_ms  bigint CHECK (interval_ms IS NULL OR interval_ms > 0),
    timezone     text   NOT NULL DEFAULT 'UTC',
    queue        text   NOT NULL,
    kind         text   NOT NULL,
    payload      text   NOT NULL DEFAULT '{}',
    priority     bigint NOT NULL DEFAULT 0,
    max_attempts bigint NOT NULL DEFAULT 3 CHECK (max_attempts >= 1),
    enabled      boolean NOT NULL DEFAULT true,
    misfire      text   NOT NULL DEFAULT 'once' CHECK (misfire IN ('skip', 'once', 'all')),
    misfire_cap  bigint NOT NULL DEFAULT 24 CHECK (misfire_cap >= 1),
    timeout_ms   bigint CHECK (timeout_ms IS NULL OR timeout_ms > 0),
    tenant       text,
    notify       text,
    last_error   text,
    last_fire_at bigint,
    next_fire_at bigint,
    created_at   bigint NOT NULL,
    updated_at   bigint NOT NULL,
    CHECK ((cron IS NULL) <> (interval_ms IS NULL))
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE enabled;

CREATE TABLE schedule_fires (
    schedule text   NOT NULL REFERENCES schedules (name) ON DELETE CASCADE,
    fire_at  bigint NOT NULL,
    job_id   bigint REFERENCES jobs (id) ON DELETE SET NULL,
    fired_at bigint,
    PRIMARY KEY (schedule, fire_at)
);
CREATE INDEX schedule_fires_job ON schedule_fires (job_id) WHERE job_id IS NOT NULL;

CREATE TABLE meta (
    key   text PRIMARY KEY,
    value text NOT NULL
);

CREATE TABLE purged_tries (
    queue   text   NOT NULL,
    outcome text   NOT NULL
            CHECK (outcome IN ('succeeded', 'failed', 'lost', 'cancelled', 'released')),
    tries   bigint NOT NULL CHECK (tries >= 0),
    run_ms  bigint NOT NULL,
    PRIMARY KEY (queue, outcome)
);

CREATE TABLE api_tokens (
    name       text PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    role       text  NOT NULL CHECK (role IN ('admin', 'producer', 'worker')),
    sha256     bytea NOT NULL UNIQUE CHECK (length(sha256) = 32),
    created_at bigint NOT NULL
);

-- Every try: the failed, lost, cancelled and released ones from `tries`, the
-- winning one from its job's row (as in the file, schema/0005).
CREATE VIEW attempts AS
SELECT job_id, attempt, worker, started_at, finished_at, outcome, error
FROM tries
UNION ALL
SELECT id, attempts, lease_owner, coalesce(started_at, finished_at), finished_at, 'succeeded', NULL
FROM jobs
WHERE state = 'succeeded';
