//! Proxy passwords: one per account, kept as the SHA-256 of a random value shown once.

use crate::{Result, Store, StoreError, record};
use mailgate_core::event::EventKind;
use mailgate_core::{AccountId, MailAccount, Timestamp};
use sqlx::Row;

impl Store {
    /// Sets (or replaces) the account's proxy password by its hash and records an event.
    /// A replaced password stops working at once: logins look the hash up each time.
    pub async fn set_proxy_password(
        &self,
        account: AccountId,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<()> {
        let acc = self.account(account).await?;
        let mut tx = self.begin_write().await?;
        let replaced = sqlx::query("DELETE FROM proxy_passwords WHERE account_id = $1")
            .bind(account.0)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        sqlx::query(
            "INSERT INTO proxy_passwords (account_id, password_hash, created_at) VALUES ($1, $2, $3)",
        )
        .bind(account.0)
        .bind(password_hash.to_owned())
        .bind(now.0)
        .execute(&mut *tx)
        .await?;
        let verb = if replaced { "replaced" } else { "set" };
        record(
            &mut tx,
            now,
            EventKind::ProxyPasswordSet,
            Some(acc.spec.app_id),
            Some(account),
            &format!(
                "proxy password of account {} {verb}",
                acc.spec.name.as_str()
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Revokes the account's proxy password; false when it had none.
    pub async fn revoke_proxy_password(&self, account: AccountId, now: Timestamp) -> Result<bool> {
        let acc = self.account(account).await?;
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM proxy_passwords WHERE account_id = $1")
            .bind(account.0)
            .execute(&mut *tx)
            .await?
            .rows_affected()
            > 0;
        if done {
            record(
                &mut tx,
                now,
                EventKind::ProxyPasswordRevoked,
                Some(acc.spec.app_id),
                Some(account),
                &format!(
                    "proxy password of account {} revoked",
                    acc.spec.name.as_str()
                ),
            )
            .await?;
        }
        tx.commit().await?;
        Ok(done)
    }

    /// The account a proxy client logs in to: `login` is its mailbox address (any case) or
    /// its name, and `password_hash` must be that account's current proxy password. One
    /// account's password never opens another: both must match the same row.
    pub async fn account_by_proxy_login(
        &self,
        login: &str,
        password_hash: &str,
    ) -> Result<Option<MailAccount>> {
        let row = sqlx::query(
            "SELECT a.id FROM accounts a JOIN proxy_passwords p ON p.account_id = a.id \
             WHERE p.password_hash = $1 AND (LOWER(a.mailbox) = LOWER($2) OR a.name = $2)",
        )
        .bind(password_hash.to_owned())
        .bind(login.trim().to_owned())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let id: i64 = row.try_get("id")?;
        match self.account(AccountId(id)).await {
            Ok(acc) => Ok(Some(acc)),
            // Removed between the two reads: as if the password were wrong.
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Whether the account has a proxy password, and since when.
    pub async fn proxy_password_since(&self, account: AccountId) -> Result<Option<Timestamp>> {
        let row = sqlx::query("SELECT created_at FROM proxy_passwords WHERE account_id = $1")
            .bind(account.0)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| r.try_get::<i64, _>("created_at").map(Timestamp))
            .transpose()
            .map_err(Into::into)
    }

    /// Every account's current proxy password hash: the proxy ends sessions whose
    /// password has been revoked or replaced since their login.
    pub async fn proxy_password_hashes(&self) -> Result<Vec<(AccountId, String)>> {
        let rows = sqlx::query("SELECT account_id, password_hash FROM proxy_passwords")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    AccountId(r.try_get::<i64, _>("account_id")?),
                    r.try_get::<String, _>("password_hash")?,
                ))
            })
            .collect()
    }
}
