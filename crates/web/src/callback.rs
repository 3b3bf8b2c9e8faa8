//! `GET /oauth/callback`: the one redirect URI.
//!
//! Every outcome page keeps a way on: the navigation (when signed in), "Back to the
//! account" and "Try again" (a new authorization), and the problem code linked to its help
//! entry. The page's script drops `?code=…&state=…` from the address bar; the code is
//! single-use, but it should not sit in the history either.

use crate::AppState;
use crate::auth::Session;
use crate::html::{Frame, Nav, PageError, render};
use askama::Template;
use axum::extract::{OptionalFromRequestParts, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailgate_core::app::AppKind;
use mailgate_core::{AccountId, OAuthApp};
use mailgate_grants::EngineError;
use serde::Deserialize;

#[derive(Debug, Deserialize)]
pub struct CallbackParams {
    state: Option<String>,
    code: Option<String>,
    error: Option<String>,
    error_description: Option<String>,
}

/// Where the signed-in user can sign out of the provider the app uses, at the app's own
/// sign-in host (a sovereign cloud or a test provider has its own): Microsoft's
/// `…/{tenant}/oauth2/v2.0/logout` beside the authorize endpoint, Google's `/Logout`.
/// Other providers have no standard sign-out address: none.
pub(crate) fn sign_out_link(app: &OAuthApp) -> Option<(String, &'static str)> {
    let authorize = app.spec.endpoints.authorize.as_ref()?;
    match app.spec.kind {
        AppKind::Microsoft => {
            let url = authorize.as_str();
            let base = url.strip_suffix("/authorize")?;
            Some((format!("{base}/logout"), "Sign out of Microsoft"))
        }
        AppKind::Google => {
            let u = authorize.url();
            let origin = match u.port() {
                Some(p) => format!("{}://{}:{p}", u.scheme(), u.host_str()?),
                None => format!("{}://{}", u.scheme(), u.host_str()?),
            };
            Some((format!("{origin}/Logout"), "Sign out of Google"))
        }
        AppKind::Generic => None,
    }
}

#[derive(Template)]
#[template(path = "callback.html")]
struct OutcomePage {
    frame: Frame,
    title: &'static str,
    ok: bool,
    heading: &'static str,
    /// Text paragraphs of what happened.
    lines: Vec<String>,
    /// (the name shown, the name expected), for the wrong-user page.
    wrong_user: Option<(String, String)>,
    code: Option<String>,
    provider_says: Option<String>,
    sign_out: Option<(String, &'static str)>,
    account: Option<i64>,
    /// The session's CSRF token, for the "Try again" form.
    csrf: Option<String>,
}

pub async fn oauth_callback(
    State(app): State<AppState>,
    mut parts: axum::http::request::Parts,
) -> Result<Response, PageError> {
    let Query(p) = Query::<CallbackParams>::try_from_uri(&parts.uri)
        .map_err(|_| PageError::Other {
            status: StatusCode::BAD_REQUEST,
            title: "Authorization failed".into(),
            message: "The provider's response could not be read. Start the authorization again from mailgate.".into(),
        })?;
    // A browser session, if the authorization was started from the admin UI.
    let session =
        <Session as OptionalFromRequestParts<AppState>>::from_request_parts(&mut parts, &app)
            .await?;
    let session_hash = crate::auth::read_cookie(&parts.headers, crate::auth::SESSION_COOKIE)
        .map(mailgate_oauth::random::sha256_hex);
    let frame = match &session {
        Some(s) => s.frame(Nav::Accounts),
        None => Frame::public(),
    };
    let mut page = OutcomePage {
        frame,
        title: "Authorization failed",
        ok: false,
        heading: "Authorization failed",
        lines: Vec::new(),
        wrong_user: None,
        code: None,
        provider_says: None,
        sign_out: None,
        account: None,
        csrf: session.as_ref().map(|s| s.csrf.clone()),
    };
    let Some(state) = p.state.as_deref().filter(|s| !s.is_empty()) else {
        page.lines.push(
            "The provider's response has no state. Start the authorization again from mailgate."
                .into(),
        );
        page.code = Some("invalid_state".into());
        return Ok(render(StatusCode::BAD_REQUEST, &page));
    };
    // Read before the engine takes the pending authorization, for the way back.
    let account = app
        .store
        .oauth_state_account(&mailgate_oauth::random::sha256_hex(state))
        .await
        .ok()
        .flatten();
    page.account = account.map(|a| a.0);
    let provider_error = p
        .error
        .as_deref()
        .map(|e| (e, p.error_description.as_deref()));
    let result = app
        .engine
        .complete_authorization(
            state,
            p.code.as_deref(),
            provider_error,
            session_hash.as_deref(),
        )
        .await;
    let done = match result {
        // Started from the admin UI: back to the account page, which says it worked.
        Ok(done) if session.is_some() => {
            return Ok(Redirect::to(&format!(
                "/admin/accounts/{}?done=authorized",
                done.account_id
            ))
            .into_response());
        }
        Ok(done) => done,
        Err(e) => return Ok(failed(&app, page, account, e).await),
    };
    page.ok = true;
    page.title = "Authorized";
    page.heading = "Authorized";
    page.account = Some(done.account_id.0);
    page.lines.push(format!(
        "Account {} is authorized as {} and is now {}. mailgate keeps its tokens fresh from here on.",
        done.account_name, done.signed_in_as, done.state
    ));
    page.lines.push("You can close this window.".into());
    Ok(render(StatusCode::OK, &page))
}

async fn failed(
    app: &AppState,
    mut page: OutcomePage,
    account: Option<AccountId>,
    e: EngineError,
) -> Response {
    tracing::warn!(code = e.code(), error = %e, "authorization callback failed");
    page.code = Some(e.code().to_owned());
    let status = match e {
        EngineError::WrongUser {
            signed_in_as,
            expected,
        } => {
            page.heading = "Signed in as the wrong user";
            if let Some(id) = account
                && let Ok(acc) = app.store.account(id).await
                && let Ok(a) = app.store.app(acc.spec.app_id).await
            {
                page.sign_out = sign_out_link(&a);
            }
            page.wrong_user = Some((signed_in_as, expected));
            StatusCode::FORBIDDEN
        }
        EngineError::BadState(msg) => {
            page.lines.push(format!("{msg}."));
            StatusCode::BAD_REQUEST
        }
        EngineError::OAuth(f) => {
            page.lines.push(f.remediation.sentence().to_owned());
            page.provider_says = f.provider_says;
            StatusCode::BAD_GATEWAY
        }
        other => {
            page.lines.push(other.to_string());
            StatusCode::INTERNAL_SERVER_ERROR
        }
    };
    render(status, &page)
}
