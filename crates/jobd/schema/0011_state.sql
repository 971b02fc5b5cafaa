-- Version 11: state that libraries built on jobd keep beside the queue (a
-- cache of computed answers, how far an alert has read), by key, with an
-- optional expiry — the same table on every backend, so such a library
-- runs unchanged on a file or on PostgreSQL.  Read and written only through
-- the store (`Store::state_get`, `state_put`, `state_purge`).
CREATE TABLE state (
    key        TEXT PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 512),
    value      TEXT    NOT NULL,
    updated_at INTEGER NOT NULL,
    expires_at INTEGER
) STRICT, WITHOUT ROWID;
CREATE INDEX state_expiry ON state (expires_at) WHERE expires_at IS NOT NULL;
