-- jobd schema, version 8: a job id is never handed out twice in the life of
-- the file.
--
-- With a plain `INTEGER PRIMARY KEY` SQLite gives a new row max(id) + 1, so
-- once the newest jobs were purged their ids came back: a client polling
-- /api/v1/jobs/7 for its PDF would read somebody else's job.
--
-- `job_id_floor` holds the largest id ever deleted (one row), kept by a
-- trigger on every delete — jobd's purge or a human's in the sqlite3 shell.
-- An insert asks for floor + 1 only when the floor is above every id left
-- (right after the newest jobs were deleted); otherwise SQLite's own
-- max(id) + 1 is above it already.  AUTOINCREMENT would keep the same
-- promise but writes its counter's page at every insert: one more page in
-- the WAL per enqueue, measured at a quarter of the single-job enqueue rate.

CREATE TABLE job_id_floor (
    id INTEGER NOT NULL
) STRICT;

INSERT INTO job_id_floor (id) SELECT coalesce(max(id), 0) FROM jobs;

CREATE TRIGGER jobs_keep_id_floor AFTER DELETE ON jobs
WHEN OLD.id > (SELECT id FROM job_id_floor)
BEGIN
    UPDATE job_id_floor SET id = OLD.id;
END;
