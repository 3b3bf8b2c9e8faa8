//! Authorization: browser (authorization code + PKCE), device code, and app-only flows.

use crate::{Engine, EngineError, Result, STATE_TTL_SECS, problem_from};
use mailgate_core::account::MailAccount;
use mailgate_core::app::{OAuthApp, OAuthFlow};
use mailgate_core::{AccountId, AccountState, Grant, Identity, Secret, Timestamp};
use mailgate_oauth::idtoken::{self, Expected};
use mailgate_oauth::{
    DeviceAuthorization, DevicePoll, Failure, Remediation, TokenResponse, random,
};
use mailgate_store::PendingAuthorization;

pub struct AuthorizationStarted {
    /// Where to send the administrator's browser.
    pub url: url::Url,
    pub expires_at: Timestamp,
    /// Who must sign in.
    pub sign_in_as: String,
}

/// A finished authorization.
#[derive(Debug)]
pub struct Completed {
    pub account_id: AccountId,
    pub account_name: String,
    pub signed_in_as: String,
    pub state: AccountState,
}

impl Engine {
    async fn account_and_app(&self, id: AccountId) -> Result<(MailAccount, OAuthApp)> {
        let account = self.store.account(id).await?;
        let app = self.store.app(account.spec.app_id).await?;
        Ok((account, app))
    }

    fn refuse_disabled(account: &MailAccount) -> Result<()> {
        if account.state == AccountState::Disabled {
            return Err(EngineError::BadState(
                "the account is disabled; enable it before authorizing",
            ));
        }
        Ok(())
    }

    /// Starts a browser authorization: a one-time state (bound to `initiator` and the
    /// account, valid ten minutes), a PKCE verifier and a nonce, kept server-side.
    pub async fn start_authorization(
        &self,
        id: AccountId,
        initiator: &str,
        redirect_uri: &str,
    ) -> Result<AuthorizationStarted> {
        let (account, app) = self.account_and_app(id).await?;
        Self::refuse_disabled(&account)?;
        if app.spec.flow != OAuthFlow::AuthorizationCode {
            return Err(EngineError::Unsupported(format!(
                "app {} uses the {} flow; {}",
                app.spec.name,
                app.spec.flow,
                match app.spec.flow {
                    OAuthFlow::DeviceCode => "use `mailgate authorize --device`",
                    _ =>
                        "no browser sign-in is needed: `mailgate authorize` fetches the first token directly",
                }
            )));
        }
        let now = self.clock.now();
        let state = random::token(32)?;
        let nonce = random::token(16)?;
        let verifier = Secret::new(random::token(32)?);
        let challenge = random::pkce_challenge(verifier.expose());
        let url = mailgate_oauth::authorize_url(
            &app.spec,
            &mailgate_oauth::AuthorizeParams {
                redirect_uri,
                state: &state,
                nonce: &nonce,
                code_challenge: &challenge,
                login_hint: Some(account.spec.sign_in_user().as_str()),
            },
        )
        .map_err(EngineError::OAuth)?;
        let expires_at = now.plus_secs(STATE_TTL_SECS);
        let pending = PendingAuthorization {
            account_id: id,
            initiator: initiator.to_owned(),
            verifier,
            nonce,
            redirect_uri: redirect_uri.to_owned(),
            created_at: now,
            expires_at,
        };
        self.store
            .put_oauth_state(&random::sha256_hex(&state), &pending)
            .await?;
        tracing::info!(account = %account.spec.name, %initiator, "authorization started");
        Ok(AuthorizationStarted {
            url,
            expires_at,
            sign_in_as: account.spec.mailbox.to_string(),
        })
    }

    /// Handles the callback. `session` is the caller's session id when the callback came
    /// through a browser session; states started from a session must come back to it.
    pub async fn complete_authorization(
        &self,
        state: &str,
        code: Option<&str>,
        provider_error: Option<(&str, Option<&str>)>,
        session: Option<&str>,
    ) -> Result<Completed> {
        let pending = self
            .store
            .take_oauth_state(&random::sha256_hex(state))
            .await?
            .ok_or(EngineError::BadState("this authorization response is unknown or was already used (a replayed or foreign state); start the authorization again from mailgate"))?;
        let now = self.clock.now();
        if pending.expires_at < now {
            return Err(EngineError::BadState(
                "the authorization request expired (it is valid for 10 minutes); start it again",
            ));
        }
        if let Some(bound) = pending.initiator.strip_prefix("session:")
            && session != Some(bound)
        {
            return Err(EngineError::BadState(
                "this authorization was started in another browser session; start it again here",
            ));
        }
        // The audit trail: the callback comes from the signed-in person's browser, but the
        // authorization is its initiator's (an API token, the CLI); a session's user is named
        // by the callback itself.
        if !pending.initiator.starts_with("session:") {
            mailgate_store::audit::identify(pending.initiator.clone());
        }
        let id = pending.account_id;
        let result = self.finish_code_flow(pending, code, provider_error).await;
        if let Err(e) = &result {
            // `mailgate authorize` and the dashboard learn of the failure from this event.
            self.record_failed_authorization(id, e).await;
        }
        result
    }

    async fn finish_code_flow(
        &self,
        pending: PendingAuthorization,
        code: Option<&str>,
        provider_error: Option<(&str, Option<&str>)>,
    ) -> Result<Completed> {
        let (account, app) = self.account_and_app(pending.account_id).await?;
        Self::refuse_disabled(&account)?;
        if let Some((error, description)) = provider_error {
            let body =
                serde_json::json!({"error": error, "error_description": description.unwrap_or("")})
                    .to_string();
            return Err(EngineError::OAuth(
                mailgate_oauth::failure::classify("sign-in", 400, &body)
                    .for_app_kind(app.spec.kind),
            ));
        }
        let code = code.ok_or(EngineError::BadState(
            "the provider's response has neither a code nor an error",
        ))?;
        let tokens = self
            .client
            .exchange_code(&app.spec, code, &pending.verifier, &pending.redirect_uri)
            .await
            .map_err(EngineError::OAuth)?;
        let identity = self
            .who_consented(&app, &tokens, Some(&pending.nonce))
            .await?;
        self.store_new_grant(&account, &app, tokens, identity, &pending.initiator, true)
            .await
    }

    /// Validates the id_token (signature via JWKS, iss, aud, nonce, exp), or asks
    /// userinfo when there is none.
    async fn who_consented(
        &self,
        app: &OAuthApp,
        tokens: &TokenResponse,
        nonce: Option<&str>,
    ) -> Result<Identity> {
        let now = self.clock.now();
        let e = &app.spec.endpoints;
        if let (Some(id_token), Some(jwks_url)) = (&tokens.id_token, &e.jwks) {
            let jwks = self
                .client
                .fetch_jwks(jwks_url)
                .await
                .map_err(EngineError::OAuth)?;
            let claims = idtoken::validate(
                id_token.expose(),
                &jwks,
                &Expected {
                    issuer: e.issuer.as_deref(),
                    client_id: app.spec.client_id.as_str(),
                    nonce,
                    now,
                },
            )
            .map_err(|err| {
                EngineError::OAuth(
                    Failure::new("identity check", Remediation::IdTokenInvalid)
                        .with_detail(err.to_string()),
                )
            })?;
            return Ok(claims.identity());
        }
        if let Some(userinfo) = &e.userinfo {
            let info = self
                .client
                .userinfo(userinfo, &tokens.access_token)
                .await
                .map_err(EngineError::OAuth)?;
            let field = |k: &str| info.get(k).and_then(|v| v.as_str()).map(str::to_owned);
            return Ok(Identity {
                username: field("email").or_else(|| field("preferred_username")),
                subject: field("sub"),
                oid: None,
                tid: None,
            });
        }
        Err(EngineError::OAuth(Failure::config(
            "identity check",
            "the provider returned no id_token and the app has no userinfo endpoint, so mailgate cannot tell who signed in; add the openid scope and a JWKS or userinfo URL",
        )))
    }

    /// The identity check and the one transaction that stores the grant and activates the
    /// account. Nothing is stored on any failure.
    async fn store_new_grant(
        &self,
        account: &MailAccount,
        app: &OAuthApp,
        tokens: TokenResponse,
        identity: Identity,
        initiator: &str,
        needs_refresh_token: bool,
    ) -> Result<Completed> {
        let signed_in_as = identity.username.clone().unwrap_or_default();
        let spec = &account.spec;
        if !spec.accepts_sign_in(&signed_in_as) {
            tracing::warn!(account = %spec.name, %signed_in_as, expected = %spec.sign_in_user(), "authorization refused: wrong user");
            return Err(EngineError::WrongUser {
                signed_in_as: if signed_in_as.is_empty() {
                    "an unknown user".into()
                } else {
                    signed_in_as
                },
                expected: spec.sign_in_user().to_string(),
            });
        }
        if needs_refresh_token && tokens.refresh_token.is_none() {
            return Err(EngineError::OAuth(Failure::new(
                "token exchange",
                Remediation::NoRefreshToken,
            )));
        }
        let now = self.clock.now();
        let grant = Grant {
            account_id: account.id,
            access_expires_at: tokens.expires_in.map(|s| now.plus_secs(s)),
            access_token: Some(tokens.access_token),
            refresh_token: tokens.refresh_token,
            scopes: tokens.scope.unwrap_or_else(|| app.spec.scopes.clone()),
            identity,
            authorized_at: now,
            authorized_by: initiator
                .strip_prefix("session:")
                .map(|_| "admin")
                .unwrap_or(initiator)
                .to_owned(),
        };
        let state = self.store.complete_authorization(&grant, now, now).await?;
        tracing::info!(account = %spec.name, %signed_in_as, "account authorized");
        Ok(Completed {
            account_id: account.id,
            account_name: spec.name.to_string(),
            signed_in_as,
            state,
        })
    }

    /// RFC 8628, step 1: the code the user types at the provider.
    pub async fn start_device(&self, id: AccountId) -> Result<DeviceAuthorization> {
        let (account, app) = self.account_and_app(id).await?;
        Self::refuse_disabled(&account)?;
        self.client
            .start_device(&app.spec)
            .await
            .map_err(EngineError::OAuth)
    }

    /// RFC 8628, step 2: polls at the given interval (slower on `slow_down`) until the
    /// user approves, declines, or the code expires; then the identity check and storage.
    pub async fn finish_device(
        &self,
        id: AccountId,
        device: &DeviceAuthorization,
        initiator: &str,
    ) -> Result<Completed> {
        let (account, app) = self.account_and_app(id).await?;
        let deadline = tokio::time::Instant::now()
            + std::time::Duration::from_secs(device.expires_in.max(1) as u64);
        let mut interval = device.interval;
        let tokens = loop {
            tokio::time::sleep(std::time::Duration::from_secs(interval as u64)).await;
            if tokio::time::Instant::now() > deadline {
                return Err(EngineError::OAuth(Failure::new(
                    "device authorization",
                    Remediation::DeviceCodeExpired,
                )));
            }
            match self
                .client
                .poll_device(&app.spec, &device.device_code)
                .await
            {
                Ok(DevicePoll::Pending) => {}
                Ok(DevicePoll::SlowDown) => interval += 5,
                Ok(DevicePoll::Done(tokens)) => break tokens,
                Err(f) if f.is_transient() => {
                    tracing::warn!(failure = %f, "device polling: transient failure, polling on")
                }
                Err(f) => return Err(EngineError::OAuth(f)),
            }
        };
        let identity = self.who_consented(&app, &tokens, None).await?;
        self.store_new_grant(&account, &app, tokens, identity, initiator, true)
            .await
    }

    /// App-only flows (Microsoft client credentials, Google service account): no one
    /// signs in; the first token proves the configuration works and is stored as the grant.
    pub async fn authorize_app_only(&self, id: AccountId, initiator: &str) -> Result<Completed> {
        let (account, app) = self.account_and_app(id).await?;
        Self::refuse_disabled(&account)?;
        let tokens = self.app_only_token(&account, &app).await.map_err(|f| {
            if !f.is_transient() {
                tracing::warn!(account = %account.spec.name, failure = %f, "app-only authorization failed");
            }
            EngineError::OAuth(f)
        })?;
        // The token acts for the mailbox by configuration, not by someone's sign-in.
        let identity = Identity {
            username: Some(account.spec.mailbox.to_string()),
            subject: None,
            oid: None,
            tid: None,
        };
        self.store_new_grant(&account, &app, tokens, identity, initiator, false)
            .await
    }

    pub(crate) async fn app_only_token(
        &self,
        account: &MailAccount,
        app: &OAuthApp,
    ) -> std::result::Result<TokenResponse, Failure> {
        match app.spec.flow {
            OAuthFlow::ClientCredentials => self.client.client_credentials(&app.spec).await,
            OAuthFlow::ServiceAccount => {
                let key = app.spec.service_account_key.as_ref().ok_or_else(|| {
                    Failure::config("service account", "the app has no service-account key file; add one with `mailgate app update --service-account-key-file`")
                })?;
                let key: mailgate_oauth::ServiceAccountKey = serde_json::from_str(key.expose())
                    .map_err(|_| {
                        Failure::config(
                            "service account",
                            "the stored key file is not a Google service-account JSON key",
                        )
                    })?;
                self.client
                    .jwt_bearer(
                        &app.spec,
                        &key,
                        account.spec.sasl_user().as_str(),
                        self.clock.now(),
                    )
                    .await
            }
            other => Err(Failure::config(
                "authorize",
                &format!("the {other} flow needs a user to sign in"),
            )),
        }
    }

    /// Records a failed authorization as an event (the account keeps its state).
    pub async fn record_failed_authorization(&self, id: AccountId, err: &EngineError) {
        let now = self.clock.now();
        let message = match err {
            // The provider's own words too, as the callback page shows them: `mailgate
            // authorize` prints this message, and without them "access denied" says little.
            EngineError::OAuth(f) => {
                let problem = problem_from(f, now);
                let said = problem
                    .detail
                    .map(|d| format!(" The provider said: {d}"))
                    .unwrap_or_default();
                format!(
                    "authorization failed: {} [{}]{said}",
                    problem.remediation,
                    f.remediation.code()
                )
            }
            other => format!("authorization failed: {other} [{}]", other.code()),
        };
        let _ = self
            .store
            .record_event(
                now,
                mailgate_core::event::EventKind::AuthorizationFailed,
                None,
                Some(id),
                &message,
            )
            .await;
    }
}
