-- The schema of a tenant database (one SQLite file per tenant under
-- <data dir>/tenants/), as `jobd tenants seed` creates it and the built-in
-- handlers read it.  Times are integer milliseconds since the Unix epoch, UTC.

CREATE TABLE IF NOT EXISTS tenant (
    key   TEXT PRIMARY KEY,          -- 'name', 'domain'
    value TEXT NOT NULL
) STRICT, WITHOUT ROWID;

-- QR-code templates: what a code points at and how it is printed.
CREATE TABLE IF NOT EXISTS templates (
    id         INTEGER PRIMARY KEY,
    name       TEXT    NOT NULL,
    target_url TEXT    NOT NULL,
    label      TEXT    NOT NULL,
    options    TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(options)),
    created_at INTEGER NOT NULL
) STRICT;

-- One row per scan of a printed code.
CREATE TABLE IF NOT EXISTS scans (
    id          INTEGER PRIMARY KEY,
    template_id INTEGER NOT NULL REFERENCES templates (id),
    scanned_at  INTEGER NOT NULL,
    country     TEXT    NOT NULL,
    device      TEXT    NOT NULL,
    referrer    TEXT
) STRICT;
CREATE INDEX IF NOT EXISTS scans_time ON scans (scanned_at, template_id);
