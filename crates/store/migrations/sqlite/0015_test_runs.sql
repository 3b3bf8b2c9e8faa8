-- "Test configuration" runs in progress and recently finished, so that a poll reaches the
-- run's state on whichever instance answers it (several instances behind one address).
-- `run` is the JSON the web layer keeps of it; rows older than a day are dropped.
CREATE TABLE test_runs (
    id TEXT PRIMARY KEY,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    run TEXT NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX test_runs_updated ON test_runs(updated_at);
