-- jobd schema, version 10: notifications when a job ends.
--
-- A job (and the jobs a schedule fires) may carry `notify`: a JSON array of
-- entries, each with `on` — the end states it fires on — and a target the
-- `notify` handler delivers (src/store/notify.rs).  NULL for the jobs
-- without.
--
-- Every store transaction that ends jobs (complete, fail, reap, cancel)
-- enqueues, before it commits, one job of kind `notify` on queue `notify`
-- per entry naming the end, for each job the index `jobs_notify_pending`
-- holds: the jobs with a list that ended and were not yet notified of
-- that end (`notified_at`, set to the `finished_at` it notified).  The end
-- and its notifications commit together.  The index is empty but for
-- those, so the look costs one probe per transaction, and a job without a
-- list only has its predicate evaluated — a trigger on `state` instead
-- measured 15-20% of the batched claim+complete (a sub-program entered for
-- every row).

ALTER TABLE jobs ADD COLUMN notify TEXT;
ALTER TABLE jobs ADD COLUMN notified_at INTEGER;
ALTER TABLE schedules ADD COLUMN notify TEXT;

CREATE INDEX jobs_notify_pending ON jobs (id)
WHERE notify IS NOT NULL AND finished_at IS NOT NULL AND notified_at IS NOT finished_at
  AND (state = 'succeeded' OR state = 'dead' OR state = 'cancelled');

-- Dead jobs by when they died: the dead-job alerts read what died since
-- their last look without walking the table.
CREATE INDEX jobs_dead ON jobs (finished_at, id) WHERE state = 'dead';
