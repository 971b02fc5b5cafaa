-- Version 2: state that libraries built on jobd keep beside the queue, as
-- the file's version 11 (see crates/jobd/schema/0011_state.sql).
CREATE TABLE state (
    key        text PRIMARY KEY CHECK (length(key) BETWEEN 1 AND 512),
    value      text   NOT NULL,
    updated_at bigint NOT NULL,
    expires_at bigint
);
CREATE INDEX state_expiry ON state (expires_at) WHERE expires_at IS NOT NULL;
