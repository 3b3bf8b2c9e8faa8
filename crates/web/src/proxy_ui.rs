//! The account page's "Generate proxy password" (administrators only): the password that
//! password-only IMAP/POP3/SMTP clients use at the legacy proxy (docs/proxy.md). Shown
//! once, in the page that answers the form, never in a URL or log; only its SHA-256 is kept.

use crate::AppState;
use crate::auth::Session;
use crate::html::unavailable;
use crate::html::{escape, page};
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use mailgate_core::AccountId;

pub async fn generate(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(pairs): Form<Vec<(String, String)>>,
) -> Response {
    let csrf = pairs
        .iter()
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.as_str());
    if let Err(r) = session.admin_form(csrf) {
        return r;
    }
    let account = match state.store.account(AccountId(id)).await {
        Ok(a) => a,
        Err(mailgate_store::StoreError::NotFound { .. }) => {
            return page(
                StatusCode::NOT_FOUND,
                "Not found",
                "<h1>No such account</h1>",
            );
        }
        Err(e) => return unavailable(e),
    };
    // 24 random bytes: 192 bits, as `mailgate account proxy-password` makes.
    let password = match mailgate_oauth::random::token(24) {
        Ok(p) => p,
        Err(e) => return crate::html::random_failed(e),
    };
    if let Err(e) = state
        .store
        .set_proxy_password(
            account.id,
            &mailgate_oauth::random::sha256_hex(&password),
            state.clock.now(),
        )
        .await
    {
        return unavailable(e);
    }
    tracing::info!(account = %account.spec.name.as_str(), user = %session.user.username, "proxy password generated");
    let body = format!(
        "<h1>Proxy password for {name}</h1>\
<p class=\"warn\" id=\"shown-once\"><strong>Copy it now: you will not see it again.</strong> mailgate keeps only a hash of it. Any earlier proxy password of this account stopped working, and its sessions are being closed.</p>\
<p><input id=\"proxy-password-value\" readonly size=\"40\" autocomplete=\"off\" spellcheck=\"false\" value=\"{password}\"> \
<button type=\"button\" id=\"copy-proxy-password\" onclick=\"navigator.clipboard.writeText(document.getElementById('proxy-password-value').value).then(()=>this.textContent='Copied')\">Copy</button></p>\
<p>Password-only clients log in to mailgate's IMAP, POP3 or SMTP listener as <code>{mailbox}</code> (or <code>{name}</code>) with this password.</p>\
<p><a href=\"/admin/accounts/{id}\">Back to the account</a></p>",
        name = escape(account.spec.name.as_str()),
        mailbox = escape(account.spec.mailbox.as_str()),
        password = escape(&password),
    );
    crate::admin::layout(&session, "Proxy password", &body)
}
