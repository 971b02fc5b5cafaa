-- jobd schema, version 3: the analytics cache (what the seeds kept in Redis
-- with SETEX).  One row per distinct query; a row past `expires_at` is stale
-- and is recomputed on the next request, and deleted by `cleanup`.

CREATE TABLE analytics_cache (
    key         TEXT PRIMARY KEY,                        -- the query as canonical JSON
    result      TEXT    NOT NULL CHECK (json_valid(result)),
    computed_at INTEGER NOT NULL,
    expires_at  INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
CREATE INDEX analytics_cache_expiry ON analytics_cache (expires_at);
