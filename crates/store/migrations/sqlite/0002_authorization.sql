-- One-time authorization requests (state), looked up by the SHA-256 of the state value.
CREATE TABLE oauth_states (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    state_hash TEXT NOT NULL UNIQUE,
    account_id INTEGER NOT NULL REFERENCES accounts(id) ON DELETE CASCADE,
    initiator TEXT NOT NULL,
    verifier TEXT NOT NULL,
    nonce TEXT NOT NULL,
    redirect_uri TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL
);
CREATE INDEX oauth_states_expiry ON oauth_states(expires_at);

-- Google service-account key file (JSON), sealed.
ALTER TABLE apps ADD COLUMN service_account_key TEXT;
-- Last time a secret-expiry warning was raised, in days before expiry (30, 14, 7, 1, 0).
ALTER TABLE apps ADD COLUMN secret_warned_days INTEGER;
