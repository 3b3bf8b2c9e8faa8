//! Users, browser sessions, login throttling and the one-time setup token.

use crate::{Result, Store, StoreError};
use mailgate_core::Timestamp;
use mailgate_core::event::EventKind;
use mailgate_core::user::{Role, User, Username};
use sqlx::Row;
use sqlx::any::AnyRow;

/// A live session: who, and the CSRF token its forms must carry.
#[derive(Debug, Clone)]
pub struct SessionInfo {
    pub user: User,
    pub csrf: String,
    pub expires_at: Timestamp,
}

/// Lock-out policy: after `max_failures` failed logins within `window_secs`, the key is
/// locked for `lock_secs` (doubling with each further lock; see
/// [`Store::reserve_login_attempt`]).
#[derive(Debug, Clone, Copy)]
pub struct LoginThrottle {
    pub max_failures: i64,
    pub window_secs: i64,
    pub lock_secs: i64,
}

impl Default for LoginThrottle {
    fn default() -> Self {
        LoginThrottle {
            max_failures: 5,
            window_secs: 900,
            lock_secs: 900,
        }
    }
}

/// The answer of [`Store::reserve_login_attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginAttempt {
    /// Check the password. `locks_if_wrong`: this was the last attempt before a lock, which
    /// lasts until then unless the password is right (a success clears it).
    Allowed { locks_if_wrong: Option<Timestamp> },
    /// Refused without checking the password.
    Locked { until: Timestamp },
}

/// The answer of [`Store::setup_link`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupLink {
    Valid,
    /// The current token, but issued too long ago.
    Expired,
    /// Not the current token (used, replaced by a restart, or never issued).
    Unknown,
}

/// When the setup token with this hash was issued; None when it is not the current one. A
/// token stored before issue times were recorded counts as issued at 0 (long expired). One
/// statement, so the token and its time are read together.
async fn setup_token_issued_at(
    conn: &mut sqlx::AnyConnection,
    token_hash: &str,
) -> Result<Option<Timestamp>> {
    let row = sqlx::query(
        "SELECT (SELECT value FROM settings WHERE key = 'setup_token_issued_at') AS issued FROM settings WHERE key = 'setup_token' AND value = $1",
    )
    .bind(token_hash.to_owned())
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let issued: Option<String> = row.try_get("issued")?;
    Ok(Some(Timestamp(
        issued.and_then(|v| v.parse().ok()).unwrap_or(0),
    )))
}

fn user_from(row: &AnyRow) -> Result<User> {
    let role: String = row.try_get("role")?;
    Ok(User {
        id: row.try_get("id")?,
        username: row.try_get("username")?,
        role: Role::parse(&role).map_err(|e| StoreError::Corrupt(format!("users.role: {e}")))?,
        created_at: Timestamp(row.try_get("created_at")?),
        last_login_at: row
            .try_get::<Option<i64>, _>("last_login_at")?
            .map(Timestamp),
    })
}

const USER_COLUMNS: &str = "id, username, role, created_at, last_login_at";

/// Refuses the change that would leave no administrator: then nobody could change settings
/// or add users again except through the command line.
fn last_admin(name: &str) -> StoreError {
    StoreError::InUse(format!(
        "{name:?} is the last administrator; make another user an administrator first, so that someone can still manage mailgate"
    ))
}

async fn user_in_tx(tx: &mut sqlx::Transaction<'static, sqlx::Any>, id: i64) -> Result<User> {
    let row = crate::fetch_or_not_found(
        sqlx::query(&format!("SELECT {USER_COLUMNS} FROM users WHERE id = $1")).bind(id),
        &mut **tx,
        "user",
        id,
    )
    .await?;
    user_from(&row)
}

/// Records a change to users or API tokens (an event about no app or account) and commits
/// it with the change: how every such change ends.
async fn commit_with_event(
    mut tx: sqlx::Transaction<'static, sqlx::Any>,
    now: Timestamp,
    kind: EventKind,
    message: &str,
) -> Result<()> {
    crate::record(&mut tx, now, kind, None, None, message).await?;
    tx.commit().await?;
    Ok(())
}

/// Ends every session of a user: the next request of their browser goes to the login page.
async fn end_sessions(tx: &mut sqlx::Transaction<'static, sqlx::Any>, user_id: i64) -> Result<u64> {
    Ok(sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut **tx)
        .await?
        .rows_affected())
}

impl Store {
    pub async fn user_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get("n")?)
    }

    /// Creates a user; `password_hash` is an argon2id PHC string made by the caller. `by`
    /// names who asked (a user name, or "the command line") for the `user.created` event
    /// written in the same transaction.
    pub async fn create_user(
        &self,
        username: &Username,
        password_hash: &str,
        role: Role,
        by: &str,
        now: Timestamp,
    ) -> Result<User> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("INSERT INTO users (username, password_hash, role, created_at) VALUES ($1, $2, $3, $4) RETURNING id")
            .bind(username.as_str().to_owned())
            .bind(password_hash.to_owned())
            .bind(role.as_str())
            .bind(now.0)
            .fetch_one(&mut *tx)
            .await
            .map_err(|e| crate::unique(e, "user", username.as_str()))?;
        let user = User {
            id: row.try_get("id")?,
            username: username.as_str().to_owned(),
            role,
            created_at: now,
            last_login_at: None,
        };
        commit_with_event(
            tx,
            now,
            EventKind::UserCreated,
            &format!("{by} added the {role} {:?}", user.username),
        )
        .await?;
        Ok(user)
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<User>> {
        let rows = sqlx::query(&format!(
            "SELECT {USER_COLUMNS} FROM users ORDER BY username"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(user_from).collect()
    }

    /// The user with this exact name (`NotFound` otherwise).
    pub async fn user_by_name(&self, username: &str) -> Result<User> {
        let row = crate::fetch_or_not_found(
            sqlx::query(&format!(
                "SELECT {USER_COLUMNS} FROM users WHERE username = $1"
            ))
            .bind(username.trim().to_owned()),
            &self.pool,
            "user",
            username.trim(),
        )
        .await?;
        user_from(&row)
    }

    /// Gives a user another role. Taking the role `admin` from the last administrator is
    /// refused (`InUse`), checked in the UPDATE itself so two demotions at once cannot both
    /// pass. A user who loses `admin` is signed out everywhere at once, so no open page
    /// keeps powers they no longer have. No change, no event.
    pub async fn set_user_role(
        &self,
        id: i64,
        role: Role,
        by: &str,
        now: Timestamp,
    ) -> Result<User> {
        let mut tx = self.begin_write().await?;
        let mut user = user_in_tx(&mut tx, id).await?;
        if user.role == role {
            return Ok(user);
        }
        let changed = sqlx::query("UPDATE users SET role = $1 WHERE id = $2 AND ($1 = 'admin' OR (SELECT COUNT(*) FROM users WHERE role = 'admin' AND id <> $2) > 0)")
            .bind(role.as_str())
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if changed != 1 {
            return Err(last_admin(&user.username));
        }
        let ended = if role == Role::Admin {
            String::new()
        } else {
            end_sessions(&mut tx, id).await?;
            "; their sessions were ended".to_owned()
        };
        commit_with_event(
            tx,
            now,
            EventKind::UserUpdated,
            &format!(
                "{by} changed the role of {:?} from {} to {role}{ended}",
                user.username, user.role
            ),
        )
        .await?;
        user.role = role;
        Ok(user)
    }

    /// Replaces a user's password (an argon2id PHC string made by the caller), ends their
    /// sessions and lifts a sign-in lock-out on their name, in one transaction.
    pub async fn reset_user_password(
        &self,
        id: i64,
        password_hash: &str,
        by: &str,
        now: Timestamp,
    ) -> Result<User> {
        let mut tx = self.begin_write().await?;
        let user = user_in_tx(&mut tx, id).await?;
        sqlx::query("UPDATE users SET password_hash = $1 WHERE id = $2")
            .bind(password_hash.to_owned())
            .bind(id)
            .execute(&mut *tx)
            .await?;
        end_sessions(&mut tx, id).await?;
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(format!("user:{}", user.username.to_lowercase()))
            .execute(&mut *tx)
            .await?;
        commit_with_event(
            tx,
            now,
            EventKind::UserUpdated,
            &format!(
                "{by} set a new password for {:?}; their sessions were ended",
                user.username
            ),
        )
        .await?;
        Ok(user)
    }

    /// Removes a user and their sessions. Removing the last administrator is refused
    /// (`InUse`), checked in the DELETE itself.
    pub async fn remove_user(&self, id: i64, by: &str, now: Timestamp) -> Result<User> {
        let mut tx = self.begin_write().await?;
        let user = user_in_tx(&mut tx, id).await?;
        end_sessions(&mut tx, id).await?;
        let removed = sqlx::query("DELETE FROM users WHERE id = $1 AND (role <> 'admin' OR (SELECT COUNT(*) FROM users WHERE role = 'admin' AND id <> $1) > 0)")
            .bind(id)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if removed != 1 {
            // Dropping the transaction rolls back the ended sessions too.
            return Err(last_admin(&user.username));
        }
        commit_with_event(
            tx,
            now,
            EventKind::UserRemoved,
            &format!(
                "{by} removed the {} {:?}; their sessions were ended",
                user.role, user.username
            ),
        )
        .await?;
        Ok(user)
    }

    /// The first administrator, only while there is none and only with a setup token that
    /// matches and was issued after `issued_after` (older links have expired). The token
    /// is consumed in the same transaction.
    pub async fn create_first_admin(
        &self,
        setup_token_hash: &str,
        issued_after: Timestamp,
        username: &str,
        password_hash: &str,
        now: Timestamp,
    ) -> Result<Option<User>> {
        let mut tx = self.begin_write().await?;
        let issued = setup_token_issued_at(&mut tx, setup_token_hash).await?;
        if issued.is_none_or(|at| at.0 < issued_after.0) {
            return Ok(None);
        }
        let consumed = sqlx::query(
            "DELETE FROM settings WHERE key = 'setup_token' AND value = $1 RETURNING key",
        )
        .bind(setup_token_hash.to_owned())
        .fetch_optional(&mut *tx)
        .await?;
        let none_yet: i64 = sqlx::query("SELECT COUNT(*) AS n FROM users")
            .fetch_one(&mut *tx)
            .await?
            .try_get("n")?;
        if consumed.is_none() || none_yet != 0 {
            return Ok(None);
        }
        let row = sqlx::query("INSERT INTO users (username, password_hash, role, created_at) VALUES ($1, $2, 'admin', $3) RETURNING id")
            .bind(username.to_owned())
            .bind(password_hash.to_owned())
            .bind(now.0)
            .fetch_one(&mut *tx)
            .await?;
        let id: i64 = row.try_get("id")?;
        commit_with_event(
            tx,
            now,
            EventKind::UserCreated,
            &format!("the setup link created the first administrator {username:?}"),
        )
        .await?;
        Ok(Some(User {
            id,
            username: username.to_owned(),
            role: Role::Admin,
            created_at: now,
            last_login_at: None,
        }))
    }

    /// Replaces the setup token (stored as its hash) and records when it was issued, for
    /// its expiry. Both live in `settings`: `setup_token` and `setup_token_issued_at`.
    pub async fn set_setup_token(&self, token_hash: &str, now: Timestamp) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM settings WHERE key IN ('setup_token', 'setup_token_issued_at')")
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO settings (key, value) VALUES ('setup_token', $1), ('setup_token_issued_at', $2)")
            .bind(token_hash.to_owned())
            .bind(now.0.to_string())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Whether a setup token (by its hash) is the current one, and still young enough: it
    /// must have been issued after `issued_after`.
    pub async fn setup_link(&self, token_hash: &str, issued_after: Timestamp) -> Result<SetupLink> {
        let mut conn = self.pool.acquire().await?;
        let issued = setup_token_issued_at(&mut conn, token_hash).await?;
        Ok(match issued {
            None => SetupLink::Unknown,
            Some(at) if at.0 < issued_after.0 => SetupLink::Expired,
            Some(_) => SetupLink::Valid,
        })
    }

    /// The user and their password hash, for login.
    pub async fn user_for_login(&self, username: &str) -> Result<Option<(User, String)>> {
        let row = sqlx::query(
            "SELECT id, username, role, created_at, last_login_at, password_hash FROM users WHERE username = $1",
        )
        .bind(username.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((user_from(&r)?, r.try_get::<String, _>("password_hash")?)))
            .transpose()
    }

    /// Starts a session (a sign-in) and notes it as the user's last sign-in.
    pub async fn create_session(
        &self,
        id_hash: &str,
        user_id: i64,
        csrf: &str,
        now: Timestamp,
        expires_at: Timestamp,
    ) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query("DELETE FROM sessions WHERE expires_at < $1")
            .bind(now.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO sessions (id_hash, user_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id_hash.to_owned())
            .bind(user_id)
            .bind(csrf.to_owned())
            .bind(now.0)
            .bind(expires_at.0)
            .execute(&mut *tx)
            .await?;
        sqlx::query("UPDATE users SET last_login_at = $1 WHERE id = $2")
            .bind(now.0)
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn session(&self, id_hash: &str, now: Timestamp) -> Result<Option<SessionInfo>> {
        let row = sqlx::query(
            "SELECT u.id, u.username, u.role, u.created_at, u.last_login_at, s.csrf, s.expires_at FROM sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = $1 AND s.expires_at >= $2",
        )
        .bind(id_hash.to_owned())
        .bind(now.0)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(SessionInfo {
                user: user_from(&r)?,
                csrf: r.try_get("csrf")?,
                expires_at: Timestamp(r.try_get("expires_at")?),
            })
        })
        .transpose()
    }

    pub async fn delete_session(&self, id_hash: &str) -> Result<()> {
        sqlx::query("DELETE FROM sessions WHERE id_hash = $1")
            .bind(id_hash.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Reserves one sign-in attempt for `key` BEFORE the password is checked, in one write
    /// transaction: a locked key is refused, otherwise the attempt is counted as a failure
    /// now (a success clears it afterwards). Counting first is what makes the limit hold
    /// for parallel guesses: 60 concurrent requests get at most `max_failures` checks,
    /// because each reservation sees the ones before it.
    ///
    /// Failures count up across locks until a quiet `window_secs` passes; every
    /// `max_failures`-th failure locks the key, for `lock_secs` the first time and twice as
    /// long each time after (at most a day), so a patient guesser gets slower and slower.
    pub async fn reserve_login_attempt(
        &self,
        key: &str,
        policy: LoginThrottle,
        now: Timestamp,
    ) -> Result<LoginAttempt> {
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "SELECT failures, window_start, locked_until FROM login_failures WHERE key = $1",
        )
        .bind(key.to_owned())
        .fetch_optional(&mut *tx)
        .await?;
        // `locked_until` stays after a lock has ended: the quiet window counts from it.
        let (failures, window_start, last_lock_end) = match row {
            Some(r) => {
                let failures: i64 = r.try_get("failures")?;
                let window_start: i64 = r.try_get("window_start")?;
                let locked_until: i64 = r.try_get("locked_until")?;
                if locked_until > now.0 {
                    return Ok(LoginAttempt::Locked {
                        until: Timestamp(locked_until),
                    });
                }
                // Forgiven after a quiet window: since the series began, or since the
                // last lock ended.
                let quiet_since = window_start.max(locked_until);
                if now.0 - quiet_since > policy.window_secs {
                    (1, now.0, 0)
                } else {
                    (failures + 1, window_start, locked_until)
                }
            }
            None => (1, now.0, 0),
        };
        let max = policy.max_failures.max(1);
        let locks_after = failures % max == 0;
        let new_lock = locks_after.then(|| {
            // 1, 2, 4, … times lock_secs for the first, second, third lock; at most a day.
            let nth_lock = (failures / max - 1).clamp(0, 20) as u32;
            now.0 + (policy.lock_secs.saturating_mul(1 << nth_lock)).min(24 * 3600)
        });
        let locked_until = new_lock.unwrap_or(last_lock_end);
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(key.to_owned())
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO login_failures (key, failures, window_start, locked_until) VALUES ($1, $2, $3, $4)")
            .bind(key.to_owned())
            .bind(failures)
            .bind(window_start)
            .bind(locked_until)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(LoginAttempt::Allowed {
            locks_if_wrong: new_lock.map(Timestamp),
        })
    }

    pub async fn clear_login_failures(&self, key: &str) -> Result<()> {
        sqlx::query("DELETE FROM login_failures WHERE key = $1")
            .bind(key.to_owned())
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

fn api_token_from(row: &AnyRow) -> Result<mailgate_core::user::ApiToken> {
    use mailgate_core::user::{ApiToken, TokenScope};
    let scopes: String = row.try_get("scopes")?;
    let accounts: String = row.try_get("account_ids")?;
    Ok(ApiToken {
        id: row.try_get("id")?,
        name: row.try_get("name")?,
        scopes: scopes
            .split_whitespace()
            .map(|s| {
                TokenScope::parse(s)
                    .map_err(|e| StoreError::Corrupt(format!("api_tokens.scopes: {e}")))
            })
            .collect::<Result<_>>()?,
        account_ids: serde_json::from_str::<Vec<i64>>(&accounts)
            .map_err(|e| StoreError::Corrupt(format!("api_tokens.account_ids: {e}")))?
            .into_iter()
            .map(mailgate_core::AccountId)
            .collect(),
        created_at: Timestamp(row.try_get("created_at")?),
        last_used_at: row
            .try_get::<Option<i64>, _>("last_used_at")?
            .map(Timestamp),
        revoked_at: row.try_get::<Option<i64>, _>("revoked_at")?.map(Timestamp),
    })
}

const API_TOKEN_COLUMNS: &str =
    "id, name, scopes, account_ids, created_at, last_used_at, revoked_at";

/// How often an API token's `last_used_at` is written at most.
const LAST_USED_EVERY_SECS: i64 = 60;

impl Store {
    /// Stores an API token by the SHA-256 of its value (the value itself is shown once).
    pub async fn create_api_token(
        &self,
        name: &str,
        token_hash: &str,
        scopes: &[mailgate_core::user::TokenScope],
        accounts: &[mailgate_core::AccountId],
        now: Timestamp,
    ) -> Result<mailgate_core::user::ApiToken> {
        let scope_text = scopes
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join(" ");
        let account_text = serde_json::to_string(&accounts.iter().map(|a| a.0).collect::<Vec<_>>())
            .map_err(|e| StoreError::Corrupt(e.to_string()))?;
        let message = format!(
            "API token {name:?} created (scopes {scope_text}; {})",
            if accounts.is_empty() {
                "every account".to_owned()
            } else {
                format!("accounts {account_text}")
            }
        );
        let result = async {
            let mut tx = self.begin_write().await?;
            let row = sqlx::query("INSERT INTO api_tokens (name, token_hash, scopes, account_ids, created_at) VALUES ($1, $2, $3, $4, $5) RETURNING id")
                .bind(name.to_owned())
                .bind(token_hash.to_owned())
                .bind(scope_text)
                .bind(account_text)
                .bind(now.0)
                .fetch_all(&mut *tx)
                .await
                .map_err(|e| crate::unique(e, "API token", name))?
                .into_iter()
                .next()
                .ok_or_else(|| StoreError::Corrupt("INSERT … RETURNING gave no row".into()))?;
            commit_with_event(tx, now, EventKind::ApiTokenCreated, &message).await?;
            Ok(row)
        }
        .await;
        let row = self.track_write(result)?;
        Ok(mailgate_core::user::ApiToken {
            id: row.try_get("id")?,
            name: name.to_owned(),
            scopes: scopes.to_vec(),
            account_ids: accounts.to_vec(),
            created_at: now,
            last_used_at: None,
            revoked_at: None,
        })
    }

    /// Creates the token an administrator asked for (CLI or admin form) and returns its value,
    /// to be shown once: minted and hashed here only, so the CLI and the form cannot differ.
    /// Its accounts, given by name or id, must exist (`NotFound` for the first that does
    /// not), and its name must be free (`Duplicate`, revoked tokens included).
    pub async fn issue_api_token(
        &self,
        new: &mailgate_core::user::NewApiToken,
        now: Timestamp,
    ) -> Result<(mailgate_core::Secret, mailgate_core::user::ApiToken)> {
        let value = mailgate_core::user::new_api_token_value()?;
        let mut ids = Vec::new();
        for key in &new.accounts {
            let id = self.find_account(key).await?.id;
            if !ids.contains(&id) {
                ids.push(id);
            }
        }
        let token_hash = api_token_hash(value.expose());
        let created = self
            .create_api_token(new.name.as_str(), &token_hash, &new.scopes, &ids, now)
            .await?;
        Ok((value, created))
    }

    /// The live (not revoked) token with this hash, marking it used. `last_used_at` is
    /// written at most once a minute per token, so a busy API does not turn every request
    /// into a database write.
    ///
    /// A token found is kept in memory with the commit marker read before the query, and
    /// served from there while nothing has been committed since (a revocation, by this
    /// process or the CLI, is a commit) and its `last_used_at` needs no write.
    pub async fn api_token_by_hash(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<mailgate_core::user::ApiToken>> {
        if let Some(token) = self.cached_api_token(token_hash, now).await {
            return Ok(Some(token));
        }
        // One lookup reads the database at a time, so a burst after a commit reads it once
        // per token, not once per request; the others find its answer in the cache. One
        // that queued behind a fill which began after it asked takes that fill's answer
        // without another check: the fill read the database after this caller arrived.
        let asked = API_TOKEN_FILLS_BEGUN.load(std::sync::atomic::Ordering::SeqCst);
        let _filling = self.api_token_fill.lock().await;
        if let Some(token) = self.api_token_filled_since(token_hash, now, asked) {
            return Ok(Some(token));
        }
        if let Some(token) = self.cached_api_token(token_hash, now).await {
            return Ok(Some(token));
        }
        let fill = API_TOKEN_FILLS_BEGUN.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
        let seen = self.commit_marker().await;
        let found = self.api_token_by_hash_uncached(token_hash, now).await?;
        if let Ok(mut cache) = self.api_tokens.lock() {
            match &found {
                Some(token) => {
                    cache.insert(
                        token_hash.to_owned(),
                        CachedApiToken {
                            seen,
                            fill,
                            token: token.clone(),
                        },
                    );
                }
                None => {
                    cache.remove(token_hash);
                }
            }
        }
        Ok(found)
    }

    /// The cached token, if a fill that began after `asked` stored it and its
    /// `last_used_at` needs no write.
    fn api_token_filled_since(
        &self,
        token_hash: &str,
        now: Timestamp,
        asked: u64,
    ) -> Option<mailgate_core::user::ApiToken> {
        let cache = self.api_tokens.lock().ok()?;
        let cached = cache.get(token_hash).filter(|c| c.fill > asked)?;
        let used_recently = cached
            .token
            .last_used_at
            .is_some_and(|t| now.0 - t.0 < LAST_USED_EVERY_SECS);
        used_recently.then(|| cached.token.clone())
    }

    async fn cached_api_token(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Option<mailgate_core::user::ApiToken> {
        let (seen, token) = {
            let cache = self.api_tokens.lock().ok()?;
            let cached = cache.get(token_hash)?;
            (cached.seen, cached.token.clone())
        };
        let used_recently = token
            .last_used_at
            .is_some_and(|t| now.0 - t.0 < LAST_USED_EVERY_SECS);
        (used_recently && self.unchanged_since(seen).await).then_some(token)
    }

    async fn api_token_by_hash_uncached(
        &self,
        token_hash: &str,
        now: Timestamp,
    ) -> Result<Option<mailgate_core::user::ApiToken>> {
        let row = sqlx::query(&format!(
            "SELECT {API_TOKEN_COLUMNS} FROM api_tokens WHERE token_hash = $1 AND revoked_at IS NULL"
        ))
        .bind(token_hash.to_owned())
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let mut token = api_token_from(&row)?;
        if token
            .last_used_at
            .is_none_or(|t| now.0 - t.0 >= LAST_USED_EVERY_SECS)
        {
            sqlx::query("UPDATE api_tokens SET last_used_at = $1 WHERE id = $2")
                .bind(now.0)
                .bind(token.id)
                .execute(&self.pool)
                .await?;
            token.last_used_at = Some(now);
        }
        Ok(Some(token))
    }

    /// Every token, revoked ones included (they keep their row for the record).
    pub async fn list_api_tokens(&self) -> Result<Vec<mailgate_core::user::ApiToken>> {
        let rows = sqlx::query(&format!(
            "SELECT {API_TOKEN_COLUMNS} FROM api_tokens ORDER BY name"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_token_from).collect()
    }

    /// Revokes a live token by name or id; false if there is no live one (unknown, or
    /// revoked already). The row stays, so its name stays taken.
    pub async fn revoke_api_token(&self, key: &str, now: Timestamp) -> Result<bool> {
        let result = async {
            let mut tx = self.begin_write().await?;
            let revoked = sqlx::query("UPDATE api_tokens SET revoked_at = $1 WHERE (name = $2 OR CAST(id AS TEXT) = $2) AND revoked_at IS NULL RETURNING name")
                .bind(now.0)
                .bind(key.trim().to_owned())
                .fetch_all(&mut *tx)
                .await?;
            let Some(row) = revoked.first() else {
                return Ok(false);
            };
            let name: String = row.try_get("name")?;
            commit_with_event(tx, now, EventKind::ApiTokenRevoked, &format!("API token {name:?} revoked")).await?;
            Ok(true)
        }
        .await;
        self.track_write(result)
    }
}

/// API-token fills begun so far, by every store of the process (only compared for order):
/// the number a fill takes when it begins tells a caller that read the counter earlier
/// whether the fill began after it asked.
static API_TOKEN_FILLS_BEGUN: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// An API token as read at `seen` (see `Store::api_token_by_hash`).
pub(crate) struct CachedApiToken {
    seen: Option<crate::CommitMarker>,
    /// The fill's number ([`API_TOKEN_FILLS_BEGUN`]).
    fill: u64,
    token: mailgate_core::user::ApiToken,
}

/// How a token value is stored and looked up: lowercase hex of its SHA-256 (the API looks a
/// bearer token up by the same hash, `oauth::random::sha256_hex`).
fn api_token_hash(value: &str) -> String {
    hex::encode(ring::digest::digest(
        &ring::digest::SHA256,
        value.as_bytes(),
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_token_is_stored_as_the_lowercase_hex_of_its_sha256() {
        // SHA-256("abc") (FIPS 180-2), the form the API's bearer lookup computes too.
        assert_eq!(
            super::api_token_hash("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
