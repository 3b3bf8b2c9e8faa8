//! OAuth apps: create, read, change (dropping the grants whose endpoints changed) and remove.

use crate::{Result, Store, StoreError, drop_grant_in_tx, ensure_name_free, record, rows, unique};
use mailgate_core::app::{AppSpec, OAuthApp};
use mailgate_core::event::EventKind;
use mailgate_core::{AccountId, AppId, Timestamp};
use sqlx::Row;
use sqlx::any::AnyRow;

impl Store {
    /// Each app's client-secret expiry date, for `/metrics`: read without opening any sealed
    /// value (a scrape decrypts nothing, and works while a key is missing).
    pub async fn secret_expiry_dates(&self) -> Result<Vec<(AppId, time::Date)>> {
        let rows = sqlx::query(
            "SELECT id, secret_expires FROM apps WHERE secret_expires IS NOT NULL ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(rows::secret_expiry).collect()
    }

    pub async fn create_app(&self, spec: &AppSpec, now: Timestamp) -> Result<OAuthApp> {
        let mut tx = self.begin_write().await?;
        ensure_name_free(&mut tx, "apps", "app", spec.name.as_str(), None).await?;
        let row = sqlx::query(
            "INSERT INTO apps (name, kind, tenant, client_id, client_secret, secret_expires, authorize_url, token_url, device_url, jwks_url, userinfo_url, revoke_url, issuer, scopes, extra_params, flow, created_at, updated_at)
             VALUES ($1, $2, $3, $4, NULL, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $16) RETURNING id",
        );
        let row = rows::bind_app(row, spec)
            .bind(now.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| unique(e, "app", spec.name.as_str()))?;
        let id: i64 = row.try_get("id")?;
        if let Some(secret) = &spec.client_secret {
            self.seal_into(&mut tx, "apps", "client_secret", id, secret)
                .await?;
        }
        if let Some(key) = &spec.service_account_key {
            self.seal_into(&mut tx, "apps", "service_account_key", id, key)
                .await?;
        }
        record(
            &mut tx,
            now,
            EventKind::AppCreated,
            Some(AppId(id)),
            None,
            &format!("app {} ({}) created", spec.name, spec.kind),
        )
        .await?;
        tx.commit().await?;
        self.app(AppId(id)).await
    }

    pub async fn app(&self, id: AppId) -> Result<OAuthApp> {
        let row = crate::fetch_or_not_found(
            sqlx::query(&format!(
                "SELECT {} FROM apps WHERE id = $1",
                rows::APP_COLUMNS
            ))
            .bind(id.0),
            &self.pool,
            "app",
            id,
        )
        .await?;
        self.app_from_row(&row)
    }

    /// By name, or by numeric id.
    pub async fn find_app(&self, key: &str) -> Result<OAuthApp> {
        let row = crate::fetch_or_not_found(
            sqlx::query(&format!(
                "SELECT {} FROM apps WHERE name = $1 OR CAST(id AS TEXT) = $1",
                rows::APP_COLUMNS
            ))
            .bind(key.trim()),
            &self.pool,
            "app",
            key,
        )
        .await?;
        self.app_from_row(&row)
    }

    pub async fn list_apps(&self) -> Result<Vec<OAuthApp>> {
        let rows = sqlx::query(&format!(
            "SELECT {} FROM apps ORDER BY name",
            rows::APP_COLUMNS
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| self.app_from_row(r)).collect()
    }

    pub(crate) fn app_from_row(&self, row: &AnyRow) -> Result<OAuthApp> {
        let mut app = rows::app(row)?;
        let sealed: Option<String> = row.try_get("client_secret")?;
        app.spec.client_secret = sealed
            .map(|s| self.open_sealed("apps", "client_secret", app.id.0, &s))
            .transpose()?;
        let key: Option<String> = row.try_get("service_account_key")?;
        app.spec.service_account_key = key
            .map(|s| self.open_sealed("apps", "service_account_key", app.id.0, &s))
            .transpose()?;
        Ok(app)
    }

    /// Replaces the app's settings. `spec.client_secret == None` keeps the stored secret
    /// unless `clear_secret` is set (secrets are write-only: the caller never had it).
    pub async fn update_app(
        &self,
        id: AppId,
        spec: &AppSpec,
        clear_secret: bool,
        now: Timestamp,
    ) -> Result<OAuthApp> {
        let previous = self.app(id).await?.spec;
        let previous_expiry = previous.secret_expires;
        let moved = previous.endpoints.changed_destinations(&spec.endpoints);
        let mut tx = self.begin_write().await?;
        if previous_expiry != spec.secret_expires {
            // A new expiry date (a new secret): its warnings start over.
            sqlx::query("UPDATE apps SET secret_warned_days = NULL WHERE id = $1")
                .bind(id.0)
                .execute(&mut *tx)
                .await?;
        }
        ensure_name_free(&mut tx, "apps", "app", spec.name.as_str(), Some(id.0)).await?;
        let q = sqlx::query(
            "UPDATE apps SET name = $1, kind = $2, tenant = $3, client_id = $4, secret_expires = $5, authorize_url = $6, token_url = $7, device_url = $8, jwks_url = $9, userinfo_url = $10, revoke_url = $11, issuer = $12, scopes = $13, extra_params = $14, flow = $15, updated_at = $16 WHERE id = $17",
        );
        let done = rows::bind_app(q, spec)
            .bind(now.0)
            .bind(id.0)
            .execute(&mut *tx)
            .await
            .map_err(|e| unique(e, "app", spec.name.as_str()))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::NotFound {
                what: "app",
                key: id.to_string(),
            });
        }
        match (&spec.client_secret, clear_secret) {
            (Some(secret), _) => {
                self.seal_into(&mut tx, "apps", "client_secret", id.0, secret)
                    .await?;
            }
            (None, true) => {
                sqlx::query("UPDATE apps SET client_secret = NULL WHERE id = $1")
                    .bind(id.0)
                    .execute(&mut *tx)
                    .await?;
            }
            (None, false) => {}
        }
        if let Some(key) = &spec.service_account_key {
            self.seal_into(&mut tx, "apps", "service_account_key", id.0, key)
                .await?;
        }
        record(
            &mut tx,
            now,
            EventKind::AppUpdated,
            Some(id),
            None,
            &format!("app {} updated", spec.name),
        )
        .await?;
        if !moved.is_empty() {
            let why = format!(
                "the app's {} changed, so the grants obtained through the old ones were dropped; authorize the account again",
                moved.join(", ")
            );
            let accounts: Vec<i64> = sqlx::query("SELECT id FROM accounts WHERE app_id = $1")
                .bind(id.0)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get("id"))
                .collect::<Result<_, _>>()?;
            for account in accounts {
                drop_grant_in_tx(&mut tx, AccountId(account), &why, now).await?;
            }
        }
        tx.commit().await?;
        self.app(id).await
    }

    /// Removes an app no account uses.
    pub async fn remove_app(&self, id: AppId, now: Timestamp) -> Result<()> {
        let mut tx = self.begin_write().await?;
        let users: Vec<String> =
            sqlx::query("SELECT name FROM accounts WHERE app_id = $1 ORDER BY name")
                .bind(id.0)
                .fetch_all(&mut *tx)
                .await?
                .iter()
                .map(|r| r.try_get::<String, _>("name"))
                .collect::<Result<_, _>>()?;
        if !users.is_empty() {
            return Err(StoreError::InUse(format!(
                "the app is used by account(s) {}; remove them or move them to another app first",
                users.join(", ")
            )));
        }
        let gone = crate::fetch_or_not_found(
            sqlx::query("DELETE FROM apps WHERE id = $1 RETURNING name").bind(id.0),
            &mut *tx,
            "app",
            id,
        )
        .await?;
        let name: String = gone.try_get("name")?;
        record(
            &mut tx,
            now,
            EventKind::AppRemoved,
            Some(id),
            None,
            &format!("app {name} removed"),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }
}
