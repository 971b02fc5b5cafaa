-- jobd-handlers tables in the queue file, version 1: the analytics cache
-- (what the platform kept in Redis with SETEX).  One row per distinct
-- query; a row past `expires_at` is stale, recomputed on the next request
-- and deleted by `cleanup`.  IF NOT EXISTS: files from before the handlers
-- had migrations of their own already hold this table.

CREATE TABLE IF NOT EXISTS analytics_cache (
    key         TEXT PRIMARY KEY,                        -- the query as canonical JSON
    result      TEXT    NOT NULL CHECK (json_valid(result)),
    computed_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS analytics_cache_expiry ON analytics_cache (expires_at);
