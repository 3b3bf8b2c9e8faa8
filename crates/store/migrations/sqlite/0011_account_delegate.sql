-- A shared mailbox (support@) is authorized by a delegate who signs in for it; the
-- delegate also chooses between SendAs (From the mailbox) and SendOnBehalf (Sender: the
-- delegate). NULL / 0: the mailbox signs in itself.
ALTER TABLE accounts ADD COLUMN delegate TEXT;
ALTER TABLE accounts ADD COLUMN send_on_behalf INTEGER NOT NULL DEFAULT 0;
