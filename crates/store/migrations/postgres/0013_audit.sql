-- PostgreSQL twin of sqlite/0013_audit.sql: the same schema with BIGINT for INTEGER (sqlx's Any
-- driver decodes both as i64), identity columns for AUTOINCREMENT and BYTEA for BLOB.
-- Who made a change and from where (issue 19, audit trail): the administrator's user name,
-- `api-token:<name>`, or `cli:<os user>`; the client address for changes over HTTP. NULL for
-- what mailgate does by itself (refreshes, sends, watchers). Never a secret.
ALTER TABLE events ADD COLUMN actor TEXT;
ALTER TABLE events ADD COLUMN source TEXT;
CREATE INDEX events_actor ON events(actor, id);
