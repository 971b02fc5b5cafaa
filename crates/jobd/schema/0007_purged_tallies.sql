-- jobd schema, version 7: what purged jobs leave behind.
--
-- `/metrics` exports the finished tries per queue and outcome
-- (`jobd_attempts_total`, `jobd_attempt_duration_seconds`) as Prometheus
-- counters, read off the `tries` rows and the succeeded jobs in the file.  A
-- purge deletes old jobs with their tries, so those counters went DOWN, which
-- Prometheus takes for a restart: `rate()` and `increase()` then count every
-- try still in the file a second time (a spike of "failures" at each
-- nightly cleanup).
--
-- So a purge first adds what it deletes to these tallies, in the same
-- transaction: per queue and outcome, how many tries and their run time.
-- A counter is then what the file holds plus what was purged from it, and
-- never goes down.  Purge is rare and batched; the hot paths do not touch
-- this table.

CREATE TABLE purged_tries (
    queue   TEXT    NOT NULL,
    outcome TEXT    NOT NULL
            CHECK (outcome = 'succeeded' OR outcome = 'failed' OR outcome = 'lost'
                   OR outcome = 'cancelled' OR outcome = 'released'),
    tries   INTEGER NOT NULL CHECK (tries >= 0),
    run_ms  INTEGER NOT NULL,                 -- summed finished_at - started_at
    PRIMARY KEY (queue, outcome)
) STRICT, WITHOUT ROWID;
