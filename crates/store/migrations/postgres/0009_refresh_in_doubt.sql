-- PostgreSQL twin of sqlite/0009_refresh_in_doubt.sql: the same schema with BIGINT for INTEGER (sqlx's Any
-- driver decodes both as i64), identity columns for AUTOINCREMENT and BYTEA for BLOB.
-- A refresh request whose outcome mailgate does not know (it timed out, or the process died
-- waiting) may still have rotated the refresh token at the provider. While such a request
-- is in doubt, no other refresh with the same token is sent before refresh_not_before, by
-- any process. A successful refresh or a re-authorization clears all three.
ALTER TABLE grants ADD COLUMN refresh_sent_at BIGINT;
-- Refresh requests sent with the current refresh token whose answers never arrived.
ALTER TABLE grants ADD COLUMN refresh_unanswered BIGINT NOT NULL DEFAULT 0;
ALTER TABLE grants ADD COLUMN refresh_not_before BIGINT;
