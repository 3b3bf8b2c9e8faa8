//! `/admin/api-tokens`: administrators list, create and revoke the API tokens applications
//! use for `/api/v1`. Operators are refused (403) on every route here.
//!
//! A new token is shown once, in the page that answers the form: it is never put in a URL
//! (no redirect after creating), never on a later page and never in a log, and the store
//! keeps only its SHA-256. The form goes through `mailgate_usecase::access::issue_api_token`,
//! as `mailgate api-token create` does, so both say the same thing; errors come back beside their field with the values kept, and nothing is
//! stored unless the whole form is valid.

use crate::AppState;
use crate::auth::{AdminForm, AdminSession, NoFields, Session};
use crate::forms::Errors;
use crate::html::{Frame, Nav, PageError, render};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailgate_core::MailAccount;
use mailgate_core::user::{ApiToken, TokenScope};
use mailgate_store::StoreError;
use mailgate_usecase::access::{IssueTokenError, issue_api_token};

/// The submitted form. Scopes (checkboxes) and accounts (a multi-select) repeat their key,
/// which a struct's fields cannot take, so it is read from the list of pairs.
#[derive(Default, serde::Deserialize)]
#[serde(from = "Vec<(String, String)>")]
pub struct Submitted {
    name: String,
    scopes: Vec<String>,
    accounts: Vec<String>,
}

impl From<Vec<(String, String)>> for Submitted {
    fn from(pairs: Vec<(String, String)>) -> Submitted {
        let mut s = Submitted::default();
        for (key, value) in pairs {
            match key.as_str() {
                "name" => s.name = value,
                "scope" => s.scopes.push(value),
                "account" => s.accounts.push(value),
                _ => {}
            }
        }
        s
    }
}

/// What each scope opens, in the words of the README's API section.
fn scope_meaning(scope: TokenScope) -> &'static str {
    match scope {
        TokenScope::AccountsRead => "list and read apps and accounts, and their events",
        TokenScope::AccountsWrite => {
            "create, change and remove apps and accounts; start an authorization or a test configuration"
        }
        TokenScope::MessagesSend => "send mail through the outbox and see its status",
        TokenScope::MessagesRead => "read an account's inbox (reading never marks a message seen)",
        TokenScope::TokensRead => {
            "fetch a fresh OAuth access token for an account (for IMAP/SMTP clients)"
        }
        TokenScope::WebhooksWrite => "create, change and delete webhook subscriptions",
    }
}

fn account_label(accounts: &[MailAccount], id: mailgate_core::AccountId) -> String {
    accounts
        .iter()
        .find(|a| a.id == id)
        .map(|a| a.spec.name.to_string())
        .unwrap_or_else(|| format!("account {id} (removed)"))
}

/// Which accounts a token reaches, for the list and the shown-once page.
fn reach(accounts: &[MailAccount], token: &ApiToken, all: &str) -> String {
    if token.account_ids.is_empty() {
        all.to_owned()
    } else {
        token
            .account_ids
            .iter()
            .map(|id| account_label(accounts, *id))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// One row of the token list.
struct TokenRow {
    token: ApiToken,
    reach: String,
}

#[derive(Template)]
#[template(path = "api_tokens.html")]
struct TokensPage<'a> {
    frame: Frame,
    title: &'static str,
    csrf: &'a str,
    rows: Vec<TokenRow>,
    scopes: Vec<(TokenScope, &'static str, bool)>,
    accounts: Vec<(String, String, String, bool)>,
    account_box_size: usize,
    name: &'a str,
    errs: &'a Errors,
    errors: Vec<(String, String)>,
}

/// The list and the form below it; 422 when the form comes back with errors.
async fn tokens_page(
    state: &AppState,
    session: &Session,
    sub: &Submitted,
    errs: &Errors,
) -> Result<Response, PageError> {
    let tokens = state.store.list_api_tokens().await?;
    let accounts = state.store.list_accounts().await?;
    let rows = tokens
        .into_iter()
        .map(|t| TokenRow {
            reach: reach(&accounts, &t, "all accounts"),
            token: t,
        })
        .collect();
    Ok(render(
        errs.status(),
        &TokensPage {
            frame: session.frame(Nav::ApiTokens),
            title: "API tokens",
            csrf: &session.csrf,
            rows,
            scopes: TokenScope::ALL
                .iter()
                .map(|s| {
                    (
                        *s,
                        scope_meaning(*s),
                        sub.scopes
                            .iter()
                            .any(|v| TokenScope::parse(v).ok() == Some(*s)),
                    )
                })
                .collect(),
            account_box_size: accounts.len().clamp(2, 8),
            accounts: accounts
                .iter()
                .map(|a| {
                    let id = a.id.to_string();
                    let selected = sub
                        .accounts
                        .iter()
                        .any(|v| v.trim() == id || v.trim() == a.spec.name.as_str());
                    (
                        id,
                        a.spec.name.to_string(),
                        a.spec.mailbox.to_string(),
                        selected,
                    )
                })
                .collect(),
            name: sub.name.trim(),
            errs,
            errors: errs.all(),
        },
    ))
}

pub async fn list(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
) -> Result<Response, PageError> {
    tokens_page(&state, &session, &Submitted::default(), &Errors::default()).await
}

pub async fn create(
    State(state): State<AppState>,
    AdminForm(session, sub): AdminForm<Submitted>,
) -> Result<Response, PageError> {
    let mut errs = Errors::default();
    let issued = issue_api_token(
        &state.store,
        &sub.name,
        &sub.scopes,
        &sub.accounts,
        state.clock.now(),
    )
    .await;
    match issued {
        Ok((token, created)) => {
            tracing::info!(token = %created.name, id = created.id, user = %session.user.username, "API token created");
            return Ok(shown_once(&state, &session, &created, token.expose()).await);
        }
        Err(IssueTokenError::Invalid(errors)) => {
            for e in errors {
                errs.add(e.field, e.message);
            }
        }
        Err(IssueTokenError::Store(e @ StoreError::NotFound { .. })) => {
            errs.add("account", e.to_string())
        }
        Err(IssueTokenError::Store(e @ StoreError::Duplicate { .. })) => {
            errs.add("name", e.to_string())
        }
        Err(IssueTokenError::Store(e)) => return Err(e.into()),
    }
    tokens_page(&state, &session, &sub, &errs).await
}

#[derive(Template)]
#[template(path = "api_token_created.html")]
struct CreatedPage<'a> {
    frame: Frame,
    title: &'static str,
    created: &'a ApiToken,
    reach: String,
    token: &'a str,
}

/// The one page that ever shows the token.
async fn shown_once(
    state: &AppState,
    session: &Session,
    created: &ApiToken,
    token: &str,
) -> Response {
    // The token exists now and this is the only chance to show it: a failed lookup only
    // costs the account names.
    let accounts = state.store.list_accounts().await.unwrap_or_default();
    render(
        StatusCode::OK,
        &CreatedPage {
            frame: session.frame(Nav::ApiTokens),
            title: "API token created",
            created,
            reach: reach(&accounts, created, "every account"),
            token,
        },
    )
}

pub async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    AdminForm(session, NoFields {}): AdminForm<NoFields>,
) -> Result<Response, PageError> {
    if state
        .store
        .revoke_api_token(&id.to_string(), state.clock.now())
        .await?
    {
        tracing::info!(id, user = %session.user.username, "API token revoked");
        Ok(Redirect::to("/admin/api-tokens").into_response())
    } else {
        Err(PageError::NotFound("API token"))
    }
}
