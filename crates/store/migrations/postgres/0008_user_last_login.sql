-- PostgreSQL twin of sqlite/0008_user_last_login.sql: the same schema with BIGINT for INTEGER (sqlx's Any
-- driver decodes both as i64), identity columns for AUTOINCREMENT and BYTEA for BLOB.
-- When each user last signed in to the admin UI, for the users page; written with the
-- session at sign-in. NULL until the first sign-in.
ALTER TABLE users ADD COLUMN last_login_at BIGINT;
