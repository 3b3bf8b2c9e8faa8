//! The account page's "Generate proxy password" (administrators only): the password that
//! password-only IMAP/POP3/SMTP clients use at the legacy proxy (docs/proxy.md). Shown
//! once, in the page that answers the form, never in a URL or log; only its SHA-256 is kept.

use crate::AppState;
use crate::auth::{AdminForm, NoFields};
use crate::html::{Frame, Nav, PageError, render};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use mailgate_core::AccountId;

#[derive(Template)]
#[template(path = "proxy_password.html")]
struct ProxyPasswordPage<'a> {
    frame: Frame,
    title: String,
    id: i64,
    name: &'a str,
    mailbox: &'a str,
    password: &'a str,
}

pub async fn generate(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    AdminForm(session, NoFields {}): AdminForm<NoFields>,
) -> Result<Response, PageError> {
    let account = state.store.account(AccountId(id)).await?;
    // 24 random bytes: 192 bits, as `mailgate account proxy-password` makes.
    let password = mailgate_oauth::random::token(24)?;
    state
        .store
        .set_proxy_password(
            account.id,
            &mailgate_oauth::random::sha256_hex(&password),
            state.clock.now(),
        )
        .await?;
    tracing::info!(account = %account.spec.name.as_str(), user = %session.user.username, "proxy password generated");
    Ok(render(
        StatusCode::OK,
        &ProxyPasswordPage {
            frame: session.frame(Nav::Accounts),
            title: format!("Proxy password for {}", account.spec.name),
            id,
            name: account.spec.name.as_str(),
            mailbox: account.spec.mailbox.as_str(),
            password: &password,
        },
    ))
}
