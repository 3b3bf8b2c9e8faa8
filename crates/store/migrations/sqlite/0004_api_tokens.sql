-- API tokens for applications: only the SHA-256 of the token is kept.
CREATE TABLE api_tokens (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    token_hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    account_ids TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    last_used_at INTEGER
);
