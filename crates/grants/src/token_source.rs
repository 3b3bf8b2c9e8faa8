//! The engine as the mail clients' [`TokenSource`]: `mailgate-mail` depends on that trait
//! (in `core`), not on this crate, so it does not link the store.

use crate::{Engine, EngineError, FreshToken};
use mailgate_core::app::OAuthFlow;
use mailgate_core::event::EventKind;
use mailgate_core::token_source::{AccessToken, TokenFuture, TokenSource, TokenUnavailable};
use mailgate_core::{AccountId, AppId, Timestamp};

impl From<FreshToken> for AccessToken {
    fn from(t: FreshToken) -> Self {
        AccessToken {
            token: t.access_token,
            expires_at: t.expires_at,
        }
    }
}

impl From<EngineError> for TokenUnavailable {
    fn from(e: EngineError) -> Self {
        match &e {
            EngineError::OAuth(f) => TokenUnavailable::Provider {
                step: f.step,
                code: f.remediation.code(),
                sentence: f.remediation.sentence(),
                provider_says: f.provider_says.clone(),
                message: e.to_string(),
            },
            EngineError::ForcedRefreshLimited { .. } => {
                TokenUnavailable::ForcedRefreshLimited(e.to_string())
            }
            _ => TokenUnavailable::Other(e.to_string()),
        }
    }
}

impl TokenSource for Engine {
    fn access_token(
        &self,
        account: AccountId,
    ) -> TokenFuture<'_, Result<AccessToken, TokenUnavailable>> {
        Box::pin(async move {
            Engine::access_token(self, account)
                .await
                .map(AccessToken::from)
                .map_err(TokenUnavailable::from)
        })
    }

    fn force_refresh<'a>(
        &'a self,
        account: AccountId,
        refused: Option<&'a str>,
    ) -> TokenFuture<'a, Result<AccessToken, TokenUnavailable>> {
        Box::pin(async move {
            Engine::force_refresh(self, account, refused)
                .await
                .map(AccessToken::from)
                .map_err(TokenUnavailable::from)
        })
    }

    fn app_flow(&self, app: AppId) -> TokenFuture<'_, Option<OAuthFlow>> {
        Box::pin(async move { self.store.app(app).await.ok().map(|app| app.spec.flow) })
    }

    fn record_event<'a>(
        &'a self,
        at: Timestamp,
        kind: EventKind,
        app: Option<AppId>,
        account: Option<AccountId>,
        message: &'a str,
    ) -> TokenFuture<'a, ()> {
        Box::pin(async move {
            if let Err(e) = self
                .store
                .record_event(at, kind, app, account, message)
                .await
            {
                tracing::warn!(error = %e, "could not record the test outcome");
            }
        })
    }
}
