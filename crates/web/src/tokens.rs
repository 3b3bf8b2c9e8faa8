//! `/admin/api-tokens`: administrators list, create and revoke the API tokens applications
//! use for `/api/v1`. Operators are refused (403) on every route here.
//!
//! A new token is shown once, in the page that answers the form: it is never put in a URL
//! (no redirect after creating), never on a later page and never in a log, and the store
//! keeps only its SHA-256. The form is parsed by `NewApiToken::parse` and
//! `Store::issue_api_token`, the rules `mailgate api-token create` uses, so both say the
//! same thing; errors come back beside their field with the values kept, and nothing is
//! stored unless the whole form is valid.

use crate::AppState;
use crate::auth::Session;
use crate::forms::{Errors, form_page};
use crate::html::unavailable;
use crate::html::{escape, page};
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailgate_core::MailAccount;
use mailgate_core::user::{ApiToken, NewApiToken, TokenScope};
use mailgate_store::StoreError;

/// The submitted form. Scopes (checkboxes) and accounts (a multi-select) repeat their key,
/// which a struct cannot hold, hence the list of pairs.
#[derive(Default)]
struct Submitted {
    csrf: Option<String>,
    name: String,
    scopes: Vec<String>,
    accounts: Vec<String>,
}

impl Submitted {
    fn from_pairs(pairs: Vec<(String, String)>) -> Submitted {
        let mut s = Submitted::default();
        for (key, value) in pairs {
            match key.as_str() {
                "csrf" => s.csrf = Some(value),
                "name" => s.name = value,
                "scope" => s.scopes.push(value),
                "account" => s.accounts.push(value),
                _ => {}
            }
        }
        s
    }
}

/// What each scope opens, for the checkboxes.
fn scope_meaning(scope: TokenScope) -> &'static str {
    match scope {
        TokenScope::AccountsRead => "list apps and accounts, read an account and its events",
        TokenScope::AccountsWrite => "start an account's authorization",
        TokenScope::MessagesSend => "send mail through the outbox and see its status",
        TokenScope::MessagesRead => "see the status of sent messages",
        TokenScope::TokensRead => "fetch an account's OAuth access token (for IMAP/SMTP clients)",
        TokenScope::WebhooksWrite => "manage webhooks",
    }
}

fn account_label(accounts: &[MailAccount], id: mailgate_core::AccountId) -> String {
    accounts
        .iter()
        .find(|a| a.id == id)
        .map(|a| escape(a.spec.name.as_str()))
        .unwrap_or_else(|| format!("account {id} (removed)"))
}

fn token_rows(session: &Session, tokens: &[ApiToken], accounts: &[MailAccount]) -> String {
    if tokens.is_empty() {
        return "<p id=\"no-tokens\">No API tokens yet.</p>".to_owned();
    }
    let rows: String = tokens
        .iter()
        .map(|t| {
            let scopes: Vec<String> = t
                .scopes
                .iter()
                .map(|s| format!("<code>{s}</code>"))
                .collect();
            let reach = if t.account_ids.is_empty() {
                "all accounts".to_owned()
            } else {
                t.account_ids
                    .iter()
                    .map(|id| account_label(accounts, *id))
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let (status, action) = match t.revoked_at {
                Some(at) => (
                    format!("<span class=\"badge bad\">revoked</span> {at}"),
                    String::new(),
                ),
                None => (
                    "<span class=\"badge ok\">active</span>".to_owned(),
                    format!(
                        "<form method=\"post\" action=\"/admin/api-tokens/{}/revoke\">{}<button type=\"submit\">Revoke</button></form>",
                        t.id,
                        session.csrf_field()
                    ),
                ),
            };
            format!(
                "<tr id=\"token-{id}\"><td>{name}</td><td>{scopes}</td><td>{reach}</td><td>{created}</td><td>{used}</td><td>{status}</td><td>{action}</td></tr>",
                id = t.id,
                name = escape(&t.name),
                scopes = scopes.join(" "),
                created = t.created_at,
                used = t
                    .last_used_at
                    .map(|at| at.to_string())
                    .unwrap_or_else(|| "never".into()),
            )
        })
        .collect();
    format!(
        "<table><tr><th>name</th><th>scopes</th><th>accounts</th><th>created (UTC)</th><th>last used (UTC)</th><th>status</th><th></th></tr>{rows}</table>"
    )
}

fn create_form(
    session: &Session,
    accounts: &[MailAccount],
    sub: &Submitted,
    errs: &Errors,
) -> String {
    let checkboxes: String = TokenScope::ALL
        .iter()
        .map(|s| {
            let checked = if sub
                .scopes
                .iter()
                .any(|v| TokenScope::parse(v).ok() == Some(*s))
            {
                " checked"
            } else {
                ""
            };
            format!(
                "<label><input type=\"checkbox\" name=\"scope\" value=\"{s}\"{checked}> <code>{s}</code> — {}</label><br>",
                scope_meaning(*s)
            )
        })
        .collect();
    let options: String = accounts
        .iter()
        .map(|a| {
            let id = a.id.to_string();
            let selected = if sub
                .accounts
                .iter()
                .any(|v| v.trim() == id || v.trim() == a.spec.name.as_str())
            {
                " selected"
            } else {
                ""
            };
            format!(
                "<option value=\"{id}\"{selected}>{} ({})</option>",
                escape(a.spec.name.as_str()),
                escape(a.spec.mailbox.as_str())
            )
        })
        .collect();
    let account_field = if accounts.is_empty() {
        "<p>No mail accounts yet: the token will reach every account added later.</p>".to_owned()
    } else {
        format!(
            "<p><label for=\"account\">Limit to accounts</label><br><select id=\"account\" name=\"account\" multiple size=\"{size}\">{options}</select> {err}<br><small>None selected: every account, including ones added later. Ctrl- or Cmd-click to choose several.</small></p>",
            size = accounts.len().clamp(2, 8),
            err = errs.for_field("account")
        )
    };
    format!(
        "<h2 id=\"new-token\">New API token</h2>{summary}<form method=\"post\" action=\"/admin/api-tokens\">{csrf}\
<p><label for=\"name\">Name</label><br><input id=\"name\" name=\"name\" value=\"{name}\" size=\"40\"> {name_err}<br><small>How you will recognise it, e.g. the application that uses it.</small></p>\
<fieldset><legend>Scopes</legend>{checkboxes}{scope_err}</fieldset>{account_field}\
<p><button type=\"submit\" id=\"create-token\">Create token</button></p></form>",
        summary = errs.summary(),
        csrf = session.csrf_field(),
        name = escape(sub.name.trim()),
        name_err = errs.for_field("name"),
        scope_err = errs.for_field("scope"),
    )
}

/// The list and the form below it; 422 when the form comes back with errors.
async fn tokens_page(
    state: &AppState,
    session: &Session,
    sub: &Submitted,
    errs: &Errors,
) -> Response {
    let (tokens, accounts) = match (
        state.store.list_api_tokens().await,
        state.store.list_accounts().await,
    ) {
        (Ok(t), Ok(a)) => (t, a),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let body = format!(
        "<h1>API tokens</h1><p>Applications call <code>/api/v1</code> with <code>Authorization: Bearer &lt;token&gt;</code>. A token is shown once, when it is created; mailgate keeps only its hash. Revoking one stops it at once.</p>{list}{form}",
        list = token_rows(session, &tokens, &accounts),
        form = create_form(session, &accounts, sub, errs),
    );
    form_page(session, "API tokens", &body, errs)
}

pub async fn list(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = session.require_admin_page() {
        return r;
    }
    tokens_page(&state, &session, &Submitted::default(), &Errors::default()).await
}

pub async fn create(
    State(state): State<AppState>,
    session: Session,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let sub = Submitted::from_pairs(pairs);
    if let Err(r) = session.admin_form(sub.csrf.as_deref()) {
        return r;
    }
    let mut errs = Errors::default();
    match NewApiToken::parse(&sub.name, &sub.scopes, &sub.accounts) {
        Err(errors) => {
            for e in errors {
                errs.add(e.field, e.message);
            }
        }
        Ok(new) => match state.store.issue_api_token(&new, state.clock.now()).await {
            Ok((token, created)) => {
                tracing::info!(token = %created.name, id = created.id, user = %session.user.username, "API token created");
                return shown_once(&state, &session, &created, token.expose()).await;
            }
            Err(e @ StoreError::NotFound { .. }) => errs.add("account", e.to_string()),
            Err(e @ StoreError::Duplicate { .. }) => errs.add("name", e.to_string()),
            Err(e) => return unavailable(e),
        },
    }
    tokens_page(&state, &session, &sub, &errs).await
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
    let reach = if created.account_ids.is_empty() {
        "every account".to_owned()
    } else {
        created
            .account_ids
            .iter()
            .map(|id| account_label(&accounts, *id))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let scopes: Vec<String> = created
        .scopes
        .iter()
        .map(|s| format!("<code>{s}</code>"))
        .collect();
    let body = format!(
        "<h1>API token created</h1><p>The token <strong id=\"created-name\">{name}</strong> may use {scopes} on {reach}.</p>\
<p class=\"warn\" id=\"shown-once\"><strong>Copy it now: you will not see it again.</strong> mailgate keeps only a hash of it, so nobody can show it to you later. If it is lost, revoke it and create another.</p>\
<p><input id=\"api-token\" readonly size=\"60\" autocomplete=\"off\" spellcheck=\"false\" value=\"{token}\"> \
<button type=\"button\" id=\"copy-token\" onclick=\"navigator.clipboard.writeText(document.getElementById('api-token').value).then(()=>this.textContent='Copied')\">Copy</button></p>\
<p>Applications send it as <code>Authorization: Bearer &lt;token&gt;</code>.</p>\
<p><a href=\"/admin/api-tokens\">Back to API tokens</a></p>",
        name = escape(&created.name),
        scopes = scopes.join(" "),
        token = escape(token),
    );
    crate::admin::layout(session, "API token created", &body)
}

#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

pub async fn revoke(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(r) = session.admin_form(f.csrf.as_deref()) {
        return r;
    }
    match state
        .store
        .revoke_api_token(&id.to_string(), state.clock.now())
        .await
    {
        Ok(true) => {
            tracing::info!(id, user = %session.user.username, "API token revoked");
            Redirect::to("/admin/api-tokens").into_response()
        }
        Ok(false) => page(
            StatusCode::NOT_FOUND,
            "Not found",
            "<h1>No such API token</h1><p>It does not exist or was revoked already.</p><p><a href=\"/admin/api-tokens\">Back to API tokens</a></p>",
        ),
        Err(e) => unavailable(e),
    }
}
