//! Where the inbound watchers resume, and recording a received message together with the
//! webhooks it triggers (one transaction: a message is either processed with its webhooks
//! queued, or not processed at all).

use crate::webhooks::fan_out;
use crate::{Result, Store};
use mailgate_core::webhook::WebhookEvent;
use mailgate_core::{AccountId, Timestamp};
use serde_json::Value;
use sqlx::Row;
use std::collections::HashSet;

/// An IMAP watcher's position: the mailbox's UIDVALIDITY and the last UID processed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImapPosition {
    pub uid_validity: u32,
    pub last_uid: u32,
}

/// How far a watcher got, recorded with each processed message.
#[derive(Debug, Clone, Copy)]
pub enum Progress<'a> {
    Imap(ImapPosition),
    Pop3(&'a str),
}

impl Store {
    pub async fn imap_position(&self, account: AccountId) -> Result<Option<ImapPosition>> {
        let row =
            sqlx::query("SELECT uid_validity, last_uid FROM inbound_state WHERE account_id = $1")
                .bind(account.0)
                .fetch_optional(&self.pool)
                .await?;
        row.map(|r| {
            Ok(ImapPosition {
                uid_validity: r.try_get::<i64, _>("uid_validity")? as u32,
                last_uid: r.try_get::<i64, _>("last_uid")? as u32,
            })
        })
        .transpose()
    }

    /// Sets the position without processing anything: the baseline when a watcher first
    /// sees a mailbox (or its UIDVALIDITY changed), so old mail is not replayed.
    pub async fn set_imap_position(
        &self,
        account: AccountId,
        pos: ImapPosition,
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        upsert_position(&mut tx, account, pos, now).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Records a message as processed (the IMAP position advances, or the POP3 UIDL is
    /// remembered) and queues its `message.received` webhooks, in one transaction. Returns
    /// the number of deliveries queued.
    pub async fn record_received(
        &self,
        account: AccountId,
        progress: Progress<'_>,
        data: Value,
        now: Timestamp,
    ) -> Result<usize> {
        let mut tx = self.begin_write().await?;
        let n = fan_out(
            &mut tx,
            WebhookEvent::MessageReceived,
            None,
            Some(account),
            data,
            now,
        )
        .await?;
        match progress {
            Progress::Imap(pos) => upsert_position(&mut tx, account, pos, now).await?,
            Progress::Pop3(uidl) => insert_seen(&mut tx, account, uidl, now).await?,
        }
        tx.commit().await?;
        Ok(n)
    }

    /// The POP3 UIDLs already processed for this account.
    pub async fn pop3_seen(&self, account: AccountId) -> Result<HashSet<String>> {
        let rows = sqlx::query("SELECT uidl FROM inbound_seen WHERE account_id = $1")
            .bind(account.0)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| Ok(r.try_get::<String, _>("uidl")?))
            .collect()
    }

    /// Marks UIDLs as seen without processing them (the baseline).
    pub async fn mark_pop3_seen(
        &self,
        account: AccountId,
        uidls: &[String],
        now: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for u in uidls {
            insert_seen(&mut tx, account, u, now).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    /// Forgets seen UIDLs that are no longer on the server (deleted), keeping the table
    /// as small as the mailbox.
    pub async fn prune_pop3_seen(&self, account: AccountId, present: &[String]) -> Result<u64> {
        let keep: HashSet<&str> = present.iter().map(String::as_str).collect();
        let seen = self.pop3_seen(account).await?;
        let mut tx = self.begin_write().await?;
        let mut removed = 0;
        for gone in seen.iter().filter(|u| !keep.contains(u.as_str())) {
            removed += sqlx::query("DELETE FROM inbound_seen WHERE account_id = $1 AND uidl = $2")
                .bind(account.0)
                .bind(gone.clone())
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(removed)
    }
}

async fn upsert_position(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    account: AccountId,
    pos: ImapPosition,
    now: Timestamp,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO inbound_state (account_id, uid_validity, last_uid, updated_at) VALUES ($1, $2, $3, $4)
         ON CONFLICT (account_id) DO UPDATE SET uid_validity = excluded.uid_validity, last_uid = excluded.last_uid, updated_at = excluded.updated_at",
    )
    .bind(account.0)
    .bind(i64::from(pos.uid_validity))
    .bind(i64::from(pos.last_uid))
    .bind(now.0)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn insert_seen(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    account: AccountId,
    uidl: &str,
    now: Timestamp,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO inbound_seen (account_id, uidl, seen_at) VALUES ($1, $2, $3) ON CONFLICT (account_id, uidl) DO NOTHING",
    )
    .bind(account.0)
    .bind(uidl.to_owned())
    .bind(now.0)
    .execute(&mut **tx)
    .await?;
    Ok(())
}
