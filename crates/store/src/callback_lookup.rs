//! What the authorization callback page needs to offer a way on after a failure: which
//! account a pending authorization belongs to, read without taking it (the engine takes it
//! once, in `take_oauth_state`).

use crate::{Result, Store};
use mailgate_core::AccountId;
use sqlx::Row;

impl Store {
    /// The account a pending authorization (by its state's SHA-256) is for, if it is still
    /// pending. Nothing is changed.
    pub async fn oauth_state_account(&self, state_hash: &str) -> Result<Option<AccountId>> {
        let row = sqlx::query("SELECT account_id FROM oauth_states WHERE state_hash = $1")
            .bind(state_hash.to_owned())
            .fetch_optional(&self.pool)
            .await?;
        Ok(match row {
            Some(row) => Some(AccountId(row.try_get("account_id")?)),
            None => None,
        })
    }
}
