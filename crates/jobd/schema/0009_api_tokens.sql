-- jobd schema, version 9: API tokens with a role, kept as hashes.
--
-- `jobd token add NAME --role worker` prints a new token once and keeps
-- only its SHA-256 here: a copy of the file (a backup, a bug report) gives
-- nobody a way in.  The role says what a token may do over HTTP: `admin`
-- everything, `producer` enqueue and read jobs, `worker` the worker
-- protocol and the jobs its workers ran.  A remote worker's name in
-- `workers` (and in `jobs.lease_owner`) starts with its token's name and a
-- slash, which is how a worker token's own jobs are told from others'.
-- The daemon's configured `api_token` is an admin token outside this table.

CREATE TABLE api_tokens (
    name       TEXT PRIMARY KEY CHECK (length(name) BETWEEN 1 AND 64),
    role       TEXT NOT NULL CHECK (role IN ('admin', 'producer', 'worker')),
    sha256     BLOB NOT NULL UNIQUE CHECK (length(sha256) = 32),
    created_at INTEGER NOT NULL
) STRICT, WITHOUT ROWID;
