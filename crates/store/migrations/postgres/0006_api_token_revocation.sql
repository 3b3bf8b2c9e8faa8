-- PostgreSQL twin of sqlite/0006_api_token_revocation.sql: the same schema with BIGINT for INTEGER (sqlx's Any
-- driver decodes both as i64), identity columns for AUTOINCREMENT and BYTEA for BLOB.
-- Revoking an API token keeps its row (name, scopes, when it was last used) for the record;
-- a token with revoked_at set opens nothing.
ALTER TABLE api_tokens ADD COLUMN revoked_at BIGINT;
