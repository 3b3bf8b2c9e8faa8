-- The messages still to send, in id order: what the sender claims from. Without it a claim
-- read every message the account (or the whole outbox) ever sent, since sent rows are kept:
-- each claim cost grew with the outbox's history. Only pending rows are indexed, so the
-- index stays as small as the queue. Queries must repeat the condition to use it.
CREATE INDEX outbox_pending ON outbox(id) WHERE status IN ('queued', 'sending');
CREATE INDEX outbox_pending_account ON outbox(account_id, id) WHERE status IN ('queued', 'sending');
