-- Revoking an API token keeps its row (name, scopes, when it was last used) for the record;
-- a token with revoked_at set opens nothing.
ALTER TABLE api_tokens ADD COLUMN revoked_at INTEGER;
