-- Version 12: throughput and timing per queue and minute, kept apart from
-- the jobs so that purging old jobs does not erase them (the dashboard's
-- charts, `/metrics`' histograms).  Written by the store in the same
-- transaction that ends a try (one upsert per queue and minute touched, for
-- a whole batch of completions) and deleted after a configured time by the
-- upkeep (`Store::purge_rollups`).
--
-- `minute` is the minute since the Unix epoch (ms / 60000) in which the
-- tries ended.  `succeeded`, `dead` and `cancelled` count jobs that ended so;
-- `failed` counts tries that failed (retried or not).  `run_*` is the run
-- time of ended tries (started -> ended) and `wait_*` the queue wait of
-- those tries (due -> started), each as a histogram: a column per bucket
-- counts the tries up to that bound and above the previous one
-- (`run_10ms` up to 10 ms, `run_50ms` 10–50 ms, … `run_more` above 5 min);
-- `run_ms` and `wait_ms` are their sums in milliseconds.
CREATE TABLE rollups (
    queue      TEXT    NOT NULL,
    minute     INTEGER NOT NULL,
    succeeded  INTEGER NOT NULL DEFAULT 0,
    failed     INTEGER NOT NULL DEFAULT 0,
    dead       INTEGER NOT NULL DEFAULT 0,
    cancelled  INTEGER NOT NULL DEFAULT 0,
    run_ms     INTEGER NOT NULL DEFAULT 0,
    wait_ms    INTEGER NOT NULL DEFAULT 0,
    run_10ms   INTEGER NOT NULL DEFAULT 0,
    run_50ms   INTEGER NOT NULL DEFAULT 0,
    run_100ms  INTEGER NOT NULL DEFAULT 0,
    run_250ms  INTEGER NOT NULL DEFAULT 0,
    run_500ms  INTEGER NOT NULL DEFAULT 0,
    run_1s     INTEGER NOT NULL DEFAULT 0,
    run_2500ms INTEGER NOT NULL DEFAULT 0,
    run_5s     INTEGER NOT NULL DEFAULT 0,
    run_10s    INTEGER NOT NULL DEFAULT 0,
    run_30s    INTEGER NOT NULL DEFAULT 0,
    run_1m     INTEGER NOT NULL DEFAULT 0,
    run_5m     INTEGER NOT NULL DEFAULT 0,
    run_more   INTEGER NOT NULL DEFAULT 0,
    wait_10ms  INTEGER NOT NULL DEFAULT 0,
    wait_50ms  INTEGER NOT NULL DEFAULT 0,
    wait_100ms INTEGER NOT NULL DEFAULT 0,
    wait_250ms INTEGER NOT NULL DEFAULT 0,
    wait_500ms INTEGER NOT NULL DEFAULT 0,
    wait_1s    INTEGER NOT NULL DEFAULT 0,
    wait_2500ms INTEGER NOT NULL DEFAULT 0,
    wait_5s    INTEGER NOT NULL DEFAULT 0,
    wait_10s   INTEGER NOT NULL DEFAULT 0,
    wait_30s   INTEGER NOT NULL DEFAULT 0,
    wait_1m    INTEGER NOT NULL DEFAULT 0,
    wait_5m    INTEGER NOT NULL DEFAULT 0,
    wait_more  INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (queue, minute)
) STRICT, WITHOUT ROWID;
CREATE INDEX rollups_minute ON rollups (minute);
