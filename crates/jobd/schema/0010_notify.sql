-- jobd schema, version 10: notifications when a job ends.
--
-- A job (and the jobs a schedule fires) may carry `notify`: a JSON array of
-- entries, each with `on` — the end states it fires on — and a target the
-- `notify` handler delivers (src/store/notify.rs).  NULL for the jobs
-- without, so the trigger's first test fails at once for them: measured
-- within noise of the batched claim+complete.
--
-- When a job with a list enters succeeded, dead or cancelled, the trigger
-- enqueues one job of kind `notify` on queue `notify` per matching entry, in
-- the same transaction: the end and its notifications commit together.  A
-- notification job is an ordinary job, due at once, retried with backoff
-- (the entry's `max_attempts` and `backoff_ms`, else 10 tries from 10 s
-- doubling to an hour), and carries no list itself.  Its id follows
-- `job_id_floor` as the one-row enqueue's does (schema 8), the entry's index
-- keeping two entries of one end apart.

ALTER TABLE jobs ADD COLUMN notify TEXT;
ALTER TABLE schedules ADD COLUMN notify TEXT;

CREATE TRIGGER jobs_notify AFTER UPDATE OF state ON jobs
WHEN NEW.notify IS NOT NULL
 AND (NEW.state = 'succeeded' OR NEW.state = 'dead' OR NEW.state = 'cancelled')
 AND OLD.state <> NEW.state
BEGIN
    INSERT INTO jobs (id, queue, kind, payload, state, priority, run_at, max_attempts,
                      attempt_limit, backoff_base_ms, backoff_max_ms, tenant, created_at)
    SELECT (SELECT f.id + 1 + n.key FROM job_id_floor AS f
            WHERE f.id > (SELECT coalesce(max(id), 0) FROM jobs)),
           'notify', 'notify',
           json_object(
               'job', json_object(
                   'id', NEW.id, 'queue', NEW.queue, 'kind', NEW.kind, 'state', NEW.state,
                   'attempts', NEW.attempts, 'tenant', NEW.tenant,
                   'result', CASE WHEN NEW.state = 'succeeded' THEN json(NEW.result) END,
                   'error', CASE WHEN NEW.state <> 'succeeded' THEN NEW.last_error END,
                   'finished_at', NEW.finished_at),
               'notify', json(n.value)),
           'ready', 0,
           coalesce(NEW.finished_at, NEW.run_at),
           coalesce(n.value ->> '$.max_attempts', 10),
           coalesce(n.value ->> '$.max_attempts', 10),
           coalesce(n.value ->> '$.backoff_ms', 10000),
           max(coalesce(n.value ->> '$.backoff_ms', 10000), 3600000),
           NEW.tenant,
           coalesce(NEW.finished_at, NEW.run_at)
    FROM json_each(NEW.notify) AS n
    WHERE EXISTS (SELECT 1 FROM json_each(n.value, '$.on') AS o WHERE o.value = NEW.state);
END;

-- Dead jobs by when they died: the dead-job alerts read what died since
-- their last look without walking the table.
CREATE INDEX jobs_dead ON jobs (finished_at, id) WHERE state = 'dead';
