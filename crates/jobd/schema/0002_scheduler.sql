-- jobd schema, version 2: what the cron scheduler needs beyond version 1's
-- `schedules` and `schedule_fires` tables.  Applied by src/store/schema.rs in
-- the same transaction as any earlier migration still missing.

-- The job a schedule enqueues: version 1 had queue, kind, payload, priority
-- and max_attempts; these complete it.
ALTER TABLE schedules ADD COLUMN timeout_ms INTEGER CHECK (timeout_ms IS NULL OR timeout_ms > 0);
ALTER TABLE schedules ADD COLUMN tenant TEXT;
-- Misfire policy `all` fires at most this many missed ticks after downtime.
ALTER TABLE schedules ADD COLUMN misfire_cap INTEGER NOT NULL DEFAULT 24 CHECK (misfire_cap >= 1);
-- Why the scheduler disabled the schedule (a row edited by hand into
-- something it cannot fire, such as an unknown timezone); NULL when healthy.
ALTER TABLE schedules ADD COLUMN last_error TEXT;

-- When a tick was actually fired (its `fire_at` is when it was due).
ALTER TABLE schedule_fires ADD COLUMN fired_at INTEGER;

-- Facts about the file itself, such as whether `jobd init` already installed
-- the default schedules (so that a removed default stays removed).
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;

CREATE VIEW schedule_overview AS
SELECT
    s.name,
    coalesce(s.cron, 'every ' || (s.interval_ms / 1000.0) || ' s')          AS "when",
    s.timezone,
    s.queue,
    s.kind,
    s.enabled,
    s.misfire,
    s.last_error,
    strftime('%Y-%m-%dT%H:%M:%fZ', s.last_fire_at / 1000.0, 'unixepoch')    AS last_fire,
    strftime('%Y-%m-%dT%H:%M:%fZ', s.next_fire_at / 1000.0, 'unixepoch')    AS next_fire,
    (SELECT count(*) FROM schedule_fires AS f WHERE f.schedule = s.name)    AS fires,
    s.payload
FROM schedules AS s;
