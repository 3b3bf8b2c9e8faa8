-- PostgreSQL twin of sqlite/0012_proxy_passwords.sql: the same schema with BIGINT for INTEGER (sqlx's Any
-- driver decodes both as i64), identity columns for AUTOINCREMENT and BYTEA for BLOB.
-- Proxy passwords: the one password per account that password-only IMAP/POP3/SMTP clients
-- use to log in to mailgate's proxy. Only its SHA-256 is kept: the value is 128+ random
-- bits, so a fast hash is enough (no guessable password to stretch).
CREATE TABLE proxy_passwords (
    account_id BIGINT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    password_hash TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);
