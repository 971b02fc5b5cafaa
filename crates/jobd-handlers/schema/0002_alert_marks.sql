-- jobd-handlers tables, version 2: how far the dead-job alerts have read.
-- One row per alert (today only 'dead'): the (finished_at, id) of the last
-- dead job an alert covered, and when the last alert mail was enqueued —
-- updated in the transaction that enqueues the mail, so a crash neither
-- repeats nor drops an alert.

CREATE TABLE IF NOT EXISTS alert_marks (
    name        TEXT PRIMARY KEY,
    through_at  INTEGER NOT NULL,
    through_id  INTEGER NOT NULL,
    sent_at     INTEGER
) STRICT, WITHOUT ROWID;
