-- The last "Test configuration" of each account, for the account page and the accounts
-- list: when it finished, whether it passed, and where it failed (the step, its problem
-- code and what the step said). One row per account, replaced by each run.
CREATE TABLE test_results (
    account_id INTEGER PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    finished_at INTEGER NOT NULL,
    passed INTEGER NOT NULL,
    failed_step TEXT,
    code TEXT,
    detail TEXT
);
