//! `GET /oauth/callback`: the one redirect URI.

use crate::AppState;
use crate::html::{escape, page};
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use mailgate_grants::EngineError;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct CallbackParams {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Where to sign out, per provider, for the wrong-user page.
fn sign_out_links() -> &'static str {
    "<a href=\"https://login.microsoftonline.com/common/oauth2/v2.0/logout\">Sign out of Microsoft</a> or <a href=\"https://accounts.google.com/Logout\">sign out of Google</a>"
}

pub async fn oauth_callback(
    State(app): State<AppState>,
    headers: axum::http::HeaderMap,
    Query(p): Query<CallbackParams>,
) -> Response {
    // A browser session, if the authorization was started from the admin UI.
    let session = crate::auth::read_cookie(&headers, crate::auth::SESSION_COOKIE)
        .map(mailgate_oauth::random::sha256_hex);
    // The audit trail: an authorization completed in an admin's browser is that admin's.
    if let Some(hash) = &session
        && let Ok(Some(signed_in)) = app.store.session(hash, app.clock.now()).await
    {
        mailgate_store::audit::identify(signed_in.user.username.to_string());
    }
    let Some(state) = p.state.as_deref().filter(|s| !s.is_empty()) else {
        return page(
            StatusCode::BAD_REQUEST,
            "Authorization failed",
            "<h1 class=\"bad\">Authorization failed</h1><p>The provider's response has no <code>state</code>. Start the authorization again from mailgate.</p>",
        );
    };
    let provider_error = p
        .error
        .as_deref()
        .map(|e| (e, p.error_description.as_deref()));
    let result = app
        .engine
        .complete_authorization(state, p.code.as_deref(), provider_error, session.as_deref())
        .await;
    match result {
        // Started from the admin UI: back to the account page, which shows the new state.
        Ok(done) if session.is_some() => {
            axum::response::Redirect::to(&format!("/admin/accounts/{}", done.account_id))
                .into_response()
        }
        Ok(done) => page(
            StatusCode::OK,
            "Authorized",
            &format!(
                "<h1 class=\"ok\">Authorized</h1><p>Account <strong>{}</strong> is authorized as <strong>{}</strong> and is now <strong>{}</strong>. mailgate keeps its tokens fresh from here on.</p><p>You can close this window.</p>",
                escape(&done.account_name),
                escape(&done.signed_in_as),
                done.state
            ),
        ),
        Err(e) => {
            tracing::warn!(code = e.code(), error = %e, "authorization callback failed");
            let (status, body) = match &e {
                EngineError::WrongUser {
                    signed_in_as,
                    expected,
                } => (
                    StatusCode::FORBIDDEN,
                    format!(
                        "<h1 class=\"bad\">Signed in as the wrong user</h1><p>You signed in as <strong>{s}</strong>, but this account is <strong>{x}</strong>. Nothing was stored.</p>\
<p>{links}, or open a private window, then authorize again and sign in as <strong>{x}</strong>.</p>",
                        s = escape(signed_in_as),
                        x = escape(expected),
                        links = sign_out_links()
                    ),
                ),
                EngineError::BadState(msg) => (
                    StatusCode::BAD_REQUEST,
                    format!(
                        "<h1 class=\"bad\">Authorization failed</h1><p>{}.</p>",
                        escape(msg)
                    ),
                ),
                EngineError::OAuth(f) => (
                    StatusCode::BAD_GATEWAY,
                    format!(
                        "<h1 class=\"bad\">Authorization failed</h1><p><strong>{}</strong> <code>{}</code></p>{}",
                        escape(f.remediation.sentence()),
                        escape(f.remediation.code()),
                        f.provider_says
                            .as_deref()
                            .map(|p| format!(
                                "<p>The provider said: <code>{}</code></p>",
                                escape(p)
                            ))
                            .unwrap_or_default()
                    ),
                ),
                other => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "<h1 class=\"bad\">Authorization failed</h1><p>{}</p>",
                        escape(&other.to_string())
                    ),
                ),
            };
            page(status, "Authorization failed", &body)
        }
    }
}
