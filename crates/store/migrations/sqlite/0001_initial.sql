-- Portable subset: INTEGER ids and unix-second timestamps, TEXT everything else, JSON in
-- TEXT. Encrypted columns hold `mg1:<key id>:<base64>` (see src/crypto.rs).
CREATE TABLE apps (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    tenant TEXT,
    client_id TEXT NOT NULL,
    client_secret TEXT,
    secret_expires TEXT,
    authorize_url TEXT,
    token_url TEXT NOT NULL,
    device_url TEXT,
    jwks_url TEXT,
    userinfo_url TEXT,
    revoke_url TEXT,
    issuer TEXT,
    scopes TEXT NOT NULL,
    extra_params TEXT NOT NULL,
    flow TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);

CREATE TABLE accounts (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    description TEXT NOT NULL,
    enabled INTEGER NOT NULL,
    mailbox TEXT NOT NULL,
    shared_mailbox TEXT,
    aliases TEXT NOT NULL,
    app_id INTEGER NOT NULL REFERENCES apps(id),
    inbound_protocol TEXT,
    inbound_host TEXT,
    inbound_port INTEGER,
    inbound_tls TEXT,
    outbound_host TEXT,
    outbound_port INTEGER,
    outbound_tls TEXT,
    from_name TEXT,
    reply_to TEXT,
    signature TEXT,
    on_received TEXT NOT NULL,
    state TEXT NOT NULL,
    problem_code TEXT,
    problem_remediation TEXT,
    problem_detail TEXT,
    problem_at INTEGER,
    created_at INTEGER NOT NULL,
    updated_at INTEGER NOT NULL
);
CREATE INDEX accounts_app ON accounts(app_id);

CREATE TABLE grants (
    account_id INTEGER PRIMARY KEY REFERENCES accounts(id) ON DELETE CASCADE,
    access_token TEXT,
    access_expires_at INTEGER,
    access_issued_at INTEGER,
    refresh_token TEXT,
    scopes TEXT NOT NULL,
    identity TEXT NOT NULL,
    authorized_at INTEGER NOT NULL,
    authorized_by TEXT NOT NULL,
    version INTEGER NOT NULL
);

CREATE TABLE events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at INTEGER NOT NULL,
    kind TEXT NOT NULL,
    app_id INTEGER,
    account_id INTEGER,
    message TEXT NOT NULL
);
CREATE INDEX events_account ON events(account_id, id);

-- Work claimed by one process at a time (refresh single-flight, outbox, watchers).
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    expires_at INTEGER NOT NULL
);
