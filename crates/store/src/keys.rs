//! Key rotation and the sealing of secret columns: which columns hold sealed values, the
//! associated data that binds each to its table, column and row, and re-encrypting them all
//! under a new key.

use crate::crypto::{self, CryptoError, KeySource, Keyring, MasterKey};
use crate::{LoadedKeys, Result, Store, StoreError, mtime, record};
use mailgate_core::event::EventKind;
use mailgate_core::{Secret, Timestamp};
use sqlx::Row;

/// What `keys rotate` did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotation {
    pub new_key_id: String,
    pub old_key_ids: Vec<String>,
    pub reencrypted: usize,
}

/// Columns that hold sealed secrets: (table, id column, column). Key rotation walks this
/// list, so a new secret column is added here or it is not rotated.
pub(crate) const SEALED_COLUMNS: &[(&str, &str, &str)] = &[
    ("apps", "id", "client_secret"),
    ("apps", "id", "service_account_key"),
    ("oauth_states", "id", "verifier"),
    ("grants", "account_id", "access_token"),
    ("grants", "account_id", "refresh_token"),
    ("webhooks", "id", "secret"),
];

pub(crate) fn seal_context(table: &str, column: &str, id: i64) -> String {
    format!("{table}.{column}:{id}")
}

impl Store {
    pub(crate) fn reload_keys_if_changed(&self) -> Result<()> {
        let KeySource::File(path) = &self.source else {
            return Ok(());
        };
        let now = mtime(&self.source);
        let stale = self
            .keys
            .read()
            .map(|k| k.file_mtime != now)
            .unwrap_or(true);
        if stale {
            let ring = crypto::read_key_file(path)?.ok_or_else(|| CryptoError::KeyFile {
                path: path.clone(),
                message: "it was removed while mailgate was running; restore it from a backup"
                    .into(),
            })?;
            if let Ok(mut k) = self.keys.write() {
                *k = LoadedKeys {
                    ring,
                    file_mtime: now,
                };
            }
        }
        Ok(())
    }

    /// Seals `secret` for row `id` of `table.column` and writes it there, inside the
    /// caller's transaction (a row gets its id first, then its sealed values, since the
    /// seal is bound to the id). `table` and `column` are names from this crate, never input.
    pub(crate) async fn seal_into(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        table: &'static str,
        column: &'static str,
        id: i64,
        secret: &Secret,
    ) -> Result<()> {
        let sealed = self.seal(table, column, id, secret)?;
        sqlx::query(&format!("UPDATE {table} SET {column} = $1 WHERE id = $2"))
            .bind(sealed)
            .bind(id)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    pub(crate) fn seal(
        &self,
        table: &str,
        column: &str,
        id: i64,
        secret: &Secret,
    ) -> Result<String> {
        self.reload_keys_if_changed()?;
        let keys = self
            .keys
            .read()
            .map_err(|_| StoreError::Corrupt("key lock poisoned".into()))?;
        Ok(keys
            .ring
            .encrypt(&seal_context(table, column, id), secret)?)
    }

    pub(crate) fn open_sealed(
        &self,
        table: &str,
        column: &str,
        id: i64,
        stored: &str,
    ) -> Result<Secret> {
        let ctx = seal_context(table, column, id);
        let first = {
            let keys = self
                .keys
                .read()
                .map_err(|_| StoreError::Corrupt("key lock poisoned".into()))?;
            keys.ring.decrypt(&ctx, stored)
        };
        match first {
            Err(CryptoError::UnknownKey { .. }) => {
                // Another process may have rotated the keys since we loaded them.
                self.reload_keys_if_changed()?;
                let keys = self
                    .keys
                    .read()
                    .map_err(|_| StoreError::Corrupt("key lock poisoned".into()))?;
                Ok(keys.ring.decrypt(&ctx, stored)?)
            }
            other => Ok(other?),
        }
    }

    /// Re-encrypts every sealed value under `new_ring`'s primary key in one transaction.
    /// Returns how many values were re-encrypted. The caller has already made `new_ring`
    /// durable (key file written, its lock held) so a crash at any point leaves every value
    /// readable; the key file is read again just before the commit, and a file that no
    /// longer holds every key of `new_ring` rolls the re-encryption back.
    pub async fn reencrypt_all(&self, new_ring: Keyring, now: Timestamp) -> Result<usize> {
        let mut tx = self.begin_write().await?;
        let mut count = 0;
        for (table, id_col, col) in SEALED_COLUMNS {
            let rows = sqlx::query(&format!(
                "SELECT {id_col} AS id, {col} AS v FROM {table} WHERE {col} IS NOT NULL"
            ))
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let id: i64 = row.try_get("id")?;
                let stored: String = row.try_get("v")?;
                let ctx = seal_context(table, col, id);
                let plain = new_ring.decrypt(&ctx, &stored)?;
                let resealed = new_ring.encrypt(&ctx, &plain)?;
                sqlx::query(&format!(
                    "UPDATE {table} SET {col} = $1 WHERE {id_col} = $2"
                ))
                .bind(resealed)
                .bind(id)
                .execute(&mut *tx)
                .await?;
                count += 1;
            }
        }
        let primary = new_ring.primary_id().to_owned();
        record(
            &mut tx,
            now,
            EventKind::KeysRotated,
            None,
            None,
            &format!("{count} secret(s) re-encrypted under key {primary}"),
        )
        .await?;
        if let KeySource::File(path) = &self.source {
            let on_disk = crypto::read_key_file(path)?;
            let on_disk_ids = on_disk.as_ref().map(|r| r.key_ids()).unwrap_or_default();
            if on_disk.as_ref().map(|r| r.primary_id()) != Some(new_ring.primary_id())
                || new_ring
                    .key_ids()
                    .iter()
                    .any(|id| !on_disk_ids.contains(id))
            {
                // Dropping the transaction rolls it back: every value stays as it was.
                return Err(CryptoError::KeyFile {
                    path: path.clone(),
                    message: "it changed while the secrets were being re-encrypted (another mailgate wrote it); nothing was re-encrypted, run the command again".into(),
                }
                .into());
            }
        }
        tx.commit().await?;
        if let Ok(mut k) = self.keys.write() {
            *k = LoadedKeys {
                ring: new_ring,
                file_mtime: mtime(&self.source),
            };
        }
        Ok(count)
    }

    /// `keys rotate`: makes `new_key` the primary and re-encrypts every secret under it.
    ///
    /// With a key file, the file is rewritten first (atomically, new key first, old keys
    /// kept), then the database is re-encrypted in one transaction: a crash at any point
    /// leaves every value readable. Old keys stay in the file for decryption until
    /// [`Store::prune_keys`], so a server still running with the old key never writes a
    /// value nobody can read. With `MAILGATE_MASTER_KEY` the operator sets the new value.
    ///
    /// The key-file lock is held from reading the file to the commit, so a concurrent
    /// `keys rotate`, `keys prune` or first start waits instead of losing keys.
    pub async fn rotate_keys(&self, new_key: MasterKey, now: Timestamp) -> Result<Rotation> {
        let lock = match &self.source {
            KeySource::File(path) => Some(crypto::lock_key_file(path)?),
            KeySource::Env => None,
        };
        let current = match (&self.source, &lock) {
            (KeySource::File(path), Some(lock)) => crypto::load_or_create_locked(path, lock)?,
            _ => self
                .keys
                .read()
                .map_err(|_| StoreError::Corrupt("key lock poisoned".into()))?
                .ring
                .clone(),
        };
        let old_ids: Vec<String> = current.key_ids().iter().map(|s| s.to_string()).collect();
        let combined = current.with_primary(new_key);
        if let (KeySource::File(path), Some(lock)) = (&self.source, &lock) {
            crypto::write_key_file(path, &combined, lock)?;
        }
        let new_id = combined.primary_id().to_owned();
        let reencrypted = self.reencrypt_all(combined, now).await?;
        drop(lock);
        Ok(Rotation {
            new_key_id: new_id,
            old_key_ids: old_ids,
            reencrypted,
        })
    }

    /// Drops keys from the key file that no stored value uses any more. Holds the key-file
    /// lock throughout, so a rotation in another process cannot run between the look at
    /// which keys are in use and the write.
    pub async fn prune_keys(&self) -> Result<Vec<String>> {
        let KeySource::File(path) = &self.source else {
            return Ok(Vec::new());
        };
        let lock = crypto::lock_key_file(path)?;
        let ring = crypto::load_or_create_locked(path, &lock)?;
        let in_use = self.key_ids_in_use().await?;
        let kept = ring.retain(&in_use);
        let dropped: Vec<String> = ring
            .key_ids()
            .iter()
            .filter(|id| !kept.key_ids().contains(id))
            .map(|s| s.to_string())
            .collect();
        if !dropped.is_empty() {
            crypto::write_key_file(path, &kept, &lock)?;
        }
        Ok(dropped)
    }

    /// Key ids that sealed values still reference (to know which old keys may be dropped).
    pub async fn key_ids_in_use(&self) -> Result<Vec<String>> {
        let mut ids = Vec::new();
        for (table, _, col) in SEALED_COLUMNS {
            let rows = sqlx::query(&format!(
                "SELECT {col} AS v FROM {table} WHERE {col} IS NOT NULL"
            ))
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                let v: String = row.try_get("v")?;
                if let Some(id) = Keyring::key_id_of(&v)
                    && !ids.iter().any(|x| x == id)
                {
                    ids.push(id.to_owned());
                }
            }
        }
        Ok(ids)
    }

    pub fn key_source(&self) -> &KeySource {
        &self.source
    }
}
