-- jobd schema, version 5: a job's successful try is its own row.
--
-- A try that succeeds ends the job for good (`retry` revives only dead or
-- cancelled jobs), and the job row already holds everything about that try:
-- its number (`attempts`), its worker (`lease_owner`), `started_at` and
-- `finished_at`.  Writing it a second time into the history cost a third of
-- every claim+complete cycle (an INSERT into a second b-tree per job,
-- measured: batched cycle 58k -> 75-80k jobs/s, worker drain 43k -> 60k).
--
-- So the table of tries becomes `tries`: every try that ended WITHOUT
-- finishing the job successfully (failed, lost, cancelled, released), one row
-- each, written as before.  `attempts` is now a view with the same columns
-- as the old table: those rows plus one 'succeeded' row per succeeded job,
-- read off the job.  Every query of `attempts` (jobd's own, the views, a
-- human's in the sqlite3 shell) reads what it read before; a lookup by
-- `job_id` is still an index seek in both halves.
--
-- The succeeded rows already in the history move onto their jobs (worker
-- and times copied, so nothing is lost even for a row a job does not agree
-- with), then leave `tries`.  `legacy_alter_table` keeps the rename from
-- rewriting `attempt_log`, which names `attempts` and so reads the new view.

PRAGMA legacy_alter_table = ON;

ALTER TABLE attempts RENAME TO tries;

UPDATE jobs
SET attempts = t.attempt, lease_owner = t.worker,
    started_at = t.started_at, finished_at = t.finished_at
FROM tries AS t
WHERE t.job_id = jobs.id AND t.outcome = 'succeeded' AND jobs.state = 'succeeded';

DELETE FROM tries
WHERE outcome = 'succeeded'
  AND job_id IN (SELECT id FROM jobs WHERE state = 'succeeded');

CREATE VIEW attempts AS
SELECT job_id, attempt, worker, started_at, finished_at, outcome, error
FROM tries
UNION ALL
SELECT id, attempts, lease_owner, coalesce(started_at, finished_at), finished_at, 'succeeded', NULL
FROM jobs
WHERE state = 'succeeded';

PRAGMA legacy_alter_table = OFF;
