-- When each user last signed in to the admin UI, for the users page; written with the
-- session at sign-in. NULL until the first sign-in.
ALTER TABLE users ADD COLUMN last_login_at INTEGER;
