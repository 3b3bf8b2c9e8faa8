-- PostgreSQL twin of sqlite/0011_account_delegate.sql: the same schema with BIGINT for INTEGER (sqlx's Any
-- driver decodes both as i64), identity columns for AUTOINCREMENT and BYTEA for BLOB.
-- A shared mailbox (support@) is authorized by a delegate who signs in for it; the
-- delegate also chooses between SendAs (From the mailbox) and SendOnBehalf (Sender: the
-- delegate). NULL / 0: the mailbox signs in itself.
ALTER TABLE accounts ADD COLUMN delegate TEXT;
ALTER TABLE accounts ADD COLUMN send_on_behalf BIGINT NOT NULL DEFAULT 0;
