-- PostgreSQL twin of sqlite/0014_test_results.sql: the same schema with BIGINT for INTEGER (sqlx's Any
-- driver decodes both as i64), identity columns for AUTOINCREMENT and BYTEA for BLOB.
-- The last "Test configuration" of each account, for the account page and the accounts
-- list: when it finished, whether it passed, and where it failed (the step, its problem
-- code and what the step said). One row per account, replaced by each run.
CREATE TABLE test_results (
    account_id BIGINT PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    finished_at BIGINT NOT NULL,
    passed BIGINT NOT NULL,
    failed_step TEXT,
    code TEXT,
    detail TEXT
);
