-- PostgreSQL twin of sqlite/0010_outbox_quota_and_request_hash.sql: the same schema with BIGINT for INTEGER (sqlx's Any
-- driver decodes both as i64), identity columns for AUTOINCREMENT and BYTEA for BLOB.
-- The outbox quota counts bytes without reading every message: each row carries its size.
-- An Idempotency-Key is bound to the request that first used it (a SHA-256 of method, path,
-- Content-Type and body), so the same key with another request is refused, not answered
-- with the first message.
ALTER TABLE outbox ADD COLUMN size BIGINT NOT NULL DEFAULT 0;
ALTER TABLE outbox ADD COLUMN request_hash TEXT;
UPDATE outbox SET size = LENGTH(message);
CREATE INDEX outbox_account_status ON outbox(account_id, status);
