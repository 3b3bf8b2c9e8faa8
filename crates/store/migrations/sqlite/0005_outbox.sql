-- The durable send queue: a message is here before its id is returned to the caller.
CREATE TABLE outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    idempotency_key TEXT,
    recipients TEXT NOT NULL,
    message BLOB NOT NULL,
    message_id TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    lease_holder TEXT,
    lease_until INTEGER,
    last_error TEXT,
    server_reply TEXT,
    created_at INTEGER NOT NULL,
    sent_at INTEGER
);
CREATE UNIQUE INDEX outbox_idempotency ON outbox(account_id, idempotency_key);
CREATE INDEX outbox_due ON outbox(status, next_attempt_at);
