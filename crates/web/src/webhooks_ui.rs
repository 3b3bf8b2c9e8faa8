//! `/admin/webhooks`: webhook subscriptions in the admin UI. Everyone signed in sees the
//! list, each subscription's delivery log and its attempts; only administrators create,
//! delete and redeliver (operators get 403, like the API-tokens page).
//!
//! The form is parsed by `NewWebhook::parse`, the rules of `POST /api/v1/webhooks`, under
//! the API's field names (`url`, `events`, `account_id`, `description`), so both say the
//! same thing; errors come back beside their field with the values kept and nothing is
//! stored unless the whole form is valid. The signing secret is shown once, in the page that
//! answers the form: never in a URL (no redirect after creating), a later page or the log.

use crate::AppState;
use crate::auth::Session;
use crate::forms::{Errors, form_page};
use crate::html::unavailable;
use crate::html::{escape, page};
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailgate_core::user::Role;
use mailgate_core::webhook::{NewWebhook, Webhook, WebhookEvent};
use mailgate_core::{AccountId, MailAccount, Timestamp};
use mailgate_store::webhooks::RETRY_WINDOW_SECS;
use mailgate_store::{Attempt, Delivery, DeliveryStatus, DeliverySummary, StoreError};
use std::collections::HashMap;

/// How many deliveries the subscription page shows, newest first.
const LOG_LIMIT: i64 = 50;

/// The submitted form. Events (checkboxes) repeat their key, which a struct cannot hold,
/// hence the list of pairs.
#[derive(Default)]
struct Submitted {
    csrf: Option<String>,
    url: String,
    events: Vec<String>,
    account_id: String,
    description: String,
}

impl Submitted {
    fn from_pairs(pairs: Vec<(String, String)>) -> Submitted {
        let mut s = Submitted::default();
        for (key, value) in pairs {
            match key.as_str() {
                "csrf" => s.csrf = Some(value),
                "url" => s.url = value,
                "events" => s.events.push(value),
                "account_id" => s.account_id = value,
                "description" => s.description = value,
                _ => {}
            }
        }
        s
    }
}

/// What each event means, for the checkboxes.
fn event_meaning(event: WebhookEvent) -> &'static str {
    match event {
        WebhookEvent::MessageReceived => {
            "a message arrived in an account's inbox (IMAP IDLE or POP3 polling)"
        }
        WebhookEvent::MessageSent => "the outbox handed a message to the SMTP server",
        WebhookEvent::MessageFailed => "the outbox gave up on a message",
        WebhookEvent::AccountReauthRequired => "an account must be authorized again",
        WebhookEvent::AppSecretExpiring => {
            "an OAuth app's client secret expires soon (only subscriptions for all accounts)"
        }
    }
}

fn not_found(what: &str) -> Response {
    page(
        StatusCode::NOT_FOUND,
        "Not found",
        &format!(
            "<h1>No such {}</h1><p>It does not exist or was deleted.</p><p><a href=\"/admin/webhooks\">Back to webhooks</a></p>",
            escape(what)
        ),
    )
}

fn account_label(accounts: &[MailAccount], id: Option<AccountId>) -> String {
    match id {
        None => "all accounts".to_owned(),
        Some(id) => accounts
            .iter()
            .find(|a| a.id == id)
            .map(|a| escape(a.spec.name.as_str()))
            .unwrap_or_else(|| format!("account {id} (removed)")),
    }
}

fn event_list(hook: &Webhook) -> String {
    hook.events
        .iter()
        .map(|e| format!("<code>{e}</code>"))
        .collect::<Vec<_>>()
        .join(" ")
}

fn status_badge(status: DeliveryStatus) -> String {
    let class = match status {
        DeliveryStatus::Delivered => "ok",
        DeliveryStatus::Pending | DeliveryStatus::Delivering => "warn",
        DeliveryStatus::Failed => "bad",
    };
    format!(
        "<span class=\"badge {class} delivery-status\">{}</span>",
        status.as_str()
    )
}

/// "HTTP 500", or the reason there was no answer.
fn answer(status: Option<i64>, error: Option<&str>) -> String {
    match (status, error) {
        (Some(code), _) => format!("<span class=\"status-code\">{code}</span>"),
        (None, Some(e)) => format!("no answer: {}", escape(e)),
        (None, None) => "—".to_owned(),
    }
}

fn summary_cell(summary: Option<&DeliverySummary>) -> String {
    let Some(s) = summary else {
        return "<td class=\"summary\">none yet</td><td class=\"last-status\">—</td>".to_owned();
    };
    format!(
        "<td class=\"summary\"><span class=\"ok\">{} delivered</span> · <span class=\"warn\">{} pending</span> · <span class=\"bad\">{} failed</span></td><td class=\"last-status\">{}</td>",
        s.delivered,
        s.pending,
        s.failed,
        answer(s.last_status, s.last_error.as_deref())
    )
}

fn hook_rows(
    hooks: &[Webhook],
    accounts: &[MailAccount],
    summaries: &HashMap<i64, DeliverySummary>,
) -> String {
    if hooks.is_empty() {
        return "<p id=\"no-webhooks\">No webhook subscriptions yet.</p>".to_owned();
    }
    let rows: String = hooks
        .iter()
        .map(|h| {
            format!(
                "<tr id=\"webhook-{id}\"><td><a href=\"/admin/webhooks/{id}\">{url}</a></td><td>{account}</td><td>{events}</td><td>{description}</td><td>{created}</td>{summary}</tr>",
                id = h.id,
                url = escape(h.url.as_str()),
                account = account_label(accounts, h.account_id),
                events = event_list(h),
                description = escape(&h.description),
                created = h.created_at,
                summary = summary_cell(summaries.get(&h.id)),
            )
        })
        .collect();
    format!(
        "<table><tr><th>URL</th><th>account</th><th>events</th><th>description</th><th>created (UTC)</th><th>deliveries (last 24 h and all pending)</th><th>last status code</th></tr>{rows}</table>"
    )
}

fn create_form(
    session: &Session,
    accounts: &[MailAccount],
    sub: &Submitted,
    errs: &Errors,
) -> String {
    let checkboxes: String = WebhookEvent::ALL
        .iter()
        .map(|e| {
            let checked = if sub.events.iter().any(|v| v == e.as_str()) {
                " checked"
            } else {
                ""
            };
            format!(
                "<label><input type=\"checkbox\" name=\"events\" value=\"{e}\"{checked}> <code>{e}</code> — {}</label><br>",
                event_meaning(*e)
            )
        })
        .collect();
    let chosen = sub.account_id.trim();
    let options: String = accounts
        .iter()
        .map(|a| {
            let id = a.id.to_string();
            format!(
                "<option value=\"{id}\"{selected}>{} ({})</option>",
                escape(a.spec.name.as_str()),
                escape(a.spec.mailbox.as_str()),
                selected = if chosen == id { " selected" } else { "" },
            )
        })
        .collect();
    format!(
        "<h2 id=\"new-webhook\">New subscription</h2>{summary}<form method=\"post\" action=\"/admin/webhooks\">{csrf}\
<p><label for=\"url\">URL</label><br><input id=\"url\" name=\"url\" value=\"{url}\" size=\"60\" placeholder=\"https://app.example.com/mailgate\"> {url_err}<br><small>mailgate POSTs each event here as JSON. Loopback and private addresses are refused unless the operator sets MAILGATE_WEBHOOK_ALLOW_PRIVATE=true.</small></p>\
<fieldset><legend>Events</legend>{checkboxes}{events_err}</fieldset>\
<p><label for=\"account_id\">Account</label><br><select id=\"account_id\" name=\"account_id\"><option value=\"\"{all}>all accounts, including ones added later</option>{options}</select> {account_err}</p>\
<p><label for=\"description\">Description</label><br><input id=\"description\" name=\"description\" value=\"{description}\" size=\"60\"> {description_err}<br><small>Optional: what receives it, for the list.</small></p>\
<p><button type=\"submit\" id=\"create-webhook\">Create subscription</button></p></form>",
        summary = errs.summary(),
        csrf = session.csrf_field(),
        url = escape(sub.url.trim()),
        url_err = errs.for_field("url"),
        events_err = errs.for_field("events"),
        all = if chosen.is_empty() { " selected" } else { "" },
        account_err = errs.for_field("account_id"),
        description = escape(&sub.description),
        description_err = errs.for_field("description"),
    )
}

/// The list and, for administrators, the form below it; 422 when the form comes back with
/// errors.
async fn list_page(
    state: &AppState,
    session: &Session,
    sub: &Submitted,
    errs: &Errors,
) -> Response {
    let since = Timestamp(state.clock.now().0 - RETRY_WINDOW_SECS);
    let (hooks, accounts, summaries) = match (
        state.store.webhooks().await,
        state.store.list_accounts().await,
        state.store.delivery_summaries(since).await,
    ) {
        (Ok(h), Ok(a), Ok(s)) => (h, a, s),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return unavailable(e),
    };
    let form = if session.user.role == Role::Admin {
        create_form(session, &accounts, sub, errs)
    } else {
        "<p>Only administrators can create and delete subscriptions.</p>".to_owned()
    };
    let body = format!(
        "<h1>Webhooks</h1><p>mailgate POSTs what happens (mail received, sent or failed, an account needing authorization, an expiring client secret) to these URLs, signed with each subscription's secret. See docs/webhooks.md for the bodies and how to verify them.</p>{list}{form}",
        list = hook_rows(&hooks, &accounts, &summaries),
    );
    form_page(session, "Webhooks", &body, errs)
}

pub async fn list(State(state): State<AppState>, session: Session) -> Response {
    list_page(&state, &session, &Submitted::default(), &Errors::default()).await
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
    let account = match sub.account_id.trim() {
        "" => Some(None),
        v => match v.parse::<i64>() {
            Ok(id) => Some(Some(AccountId(id))),
            Err(_) => {
                errs.add(
                    "account_id",
                    format!(
                        "{:?} is not an account; choose one from the list, or all accounts",
                        v.chars().take(40).collect::<String>()
                    ),
                );
                None
            }
        },
    };
    let parsed = NewWebhook::parse(
        &sub.url,
        &sub.events,
        account.flatten(),
        &sub.description,
        state.webhook_allow_private,
    );
    match (parsed, account) {
        (Err(errors), _) => {
            for e in errors {
                errs.add(e.field, e.message);
            }
        }
        (Ok(_), None) => {}
        (Ok(new), Some(_)) => match crate::api_inbound::create_subscription(&state, &new).await {
            Ok((hook, secret)) => {
                tracing::info!(webhook = hook.id, url = %hook.url, user = %session.user.username, "webhook subscription created");
                return shown_once(
                    &state,
                    &session,
                    &hook,
                    secret.expose(),
                    "Webhook subscription created",
                )
                .await;
            }
            Err(StoreError::NotFound { what, key }) => {
                errs.add("account_id", format!("no {what} {key}"));
            }
            Err(e) => return unavailable(e),
        },
    }
    list_page(&state, &session, &sub, &errs).await
}

/// The one page that ever shows the signing secret.
async fn shown_once(
    state: &AppState,
    session: &Session,
    hook: &Webhook,
    secret: &str,
    heading: &str,
) -> Response {
    // The subscription exists now and this is the only chance to show its secret: a failed
    // lookup only costs the account's name.
    let accounts = state.store.list_accounts().await.unwrap_or_default();
    let body = format!(
        "<h1>{heading}</h1><p>mailgate will POST {events} for {account} to <code id=\"created-url\">{url}</code>.</p>\
<p class=\"warn\" id=\"shown-once\"><strong>Copy the signing secret now: you will not see it again.</strong> mailgate keeps it encrypted and never shows it a second time. If it is lost, ask for a new signing secret on the subscription's page.</p>\
<p><input id=\"webhook-secret\" readonly size=\"60\" autocomplete=\"off\" spellcheck=\"false\" value=\"{secret}\"> \
<button type=\"button\" id=\"copy-secret\" onclick=\"navigator.clipboard.writeText(document.getElementById('webhook-secret').value).then(()=>this.textContent='Copied')\">Copy</button></p>\
<p id=\"verify-how\">Each request carries <code>X-Mailgate-Signature: t=&lt;unix seconds&gt;,v1=&lt;hex&gt;</code>. The receiver computes HMAC-SHA256 with this secret over <code>&lt;t&gt;.&lt;body&gt;</code> (the timestamp, a dot and the raw request body), compares it with <code>v1</code> in constant time, and refuses timestamps older than a few minutes. <code>X-Mailgate-Delivery</code> is the same on every retry, so a receiver can ignore a delivery it has already processed.</p>\
<p><a href=\"/admin/webhooks/{id}\">View the subscription</a> · <a href=\"/admin/webhooks\">Back to webhooks</a></p>",
        events = event_list(hook),
        account = account_label(&accounts, hook.account_id),
        url = escape(hook.url.as_str()),
        secret = escape(secret),
        id = hook.id,
        heading = escape(heading),
    );
    crate::admin::layout(session, heading, &body)
}

fn attempt_list(attempts: &[Attempt]) -> String {
    if attempts.is_empty() {
        return "<span class=\"attempts\">no attempt yet</span>".to_owned();
    }
    let items: String = attempts
        .iter()
        .map(|a| {
            format!(
                "<li class=\"attempt\">{at} — {answer}{error} — {ms} ms</li>",
                at = a.at,
                answer = match a.status_code {
                    Some(code) => format!("HTTP <span class=\"status-code\">{code}</span>"),
                    None => "no answer".to_owned(),
                },
                error = a
                    .error
                    .as_deref()
                    .map(|e| format!(" ({})", escape(e)))
                    .unwrap_or_default(),
                ms = a.duration_ms,
            )
        })
        .collect();
    format!("<ol class=\"attempts\">{items}</ol>")
}

fn delivery_rows(
    session: &Session,
    hook: &Webhook,
    deliveries: &[(Delivery, Vec<Attempt>)],
) -> String {
    if deliveries.is_empty() {
        return "<p id=\"no-deliveries\">Nothing delivered yet: deliveries appear here when a subscribed event happens.</p>".to_owned();
    }
    let admin = session.user.role == Role::Admin;
    let rows: String = deliveries
        .iter()
        .map(|(d, attempts)| {
            let action = if admin {
                format!(
                    "<form method=\"post\" action=\"/admin/webhooks/{hook}/deliveries/{id}/redeliver\">{csrf}<button type=\"submit\">Redeliver</button></form>",
                    hook = hook.id,
                    id = d.id,
                    csrf = session.csrf_field()
                )
            } else {
                String::new()
            };
            format!(
                "<tr id=\"delivery-{id}\"><td><code class=\"delivery-id\">{delivery_id}</code></td><td><code>{event}</code></td><td>{status}</td><td class=\"attempt-count\">{count}</td><td class=\"last-status\">{last}</td><td>{created}</td><td>{delivered}</td><td>{attempts}</td><td>{action}</td></tr>",
                id = d.id,
                delivery_id = escape(&d.delivery_id),
                event = escape(&d.event),
                status = status_badge(d.status),
                count = d.attempts,
                last = answer(d.last_status, d.last_error.as_deref()),
                created = d.created_at,
                delivered = d
                    .delivered_at
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "—".into()),
                attempts = attempt_list(attempts),
            )
        })
        .collect();
    format!(
        "<table><tr><th>delivery id</th><th>event</th><th>status</th><th>attempts</th><th>last status code or error</th><th>created (UTC)</th><th>delivered (UTC)</th><th>attempt log (UTC)</th><th></th></tr>{rows}</table>"
    )
}

pub async fn subscription_page(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> Response {
    let hook = match state.store.webhook(id).await {
        Ok(h) => h,
        Err(StoreError::NotFound { .. }) => return not_found("webhook subscription"),
        Err(e) => return unavailable(e),
    };
    let (deliveries, accounts) = match (
        state.store.deliveries(id, LOG_LIMIT).await,
        state.store.list_accounts().await,
    ) {
        (Ok(d), Ok(a)) => (d, a),
        (Err(e), _) | (_, Err(e)) => return unavailable(e),
    };
    let delete = if session.user.role == Role::Admin {
        let (toggle, toggle_label) = if hook.enabled {
            ("false", "Pause")
        } else {
            ("true", "Resume")
        };
        format!(
            "<form method=\"post\" action=\"/admin/webhooks/{id}/enabled\">{csrf}<input type=\"hidden\" name=\"enabled\" value=\"{toggle}\"><button type=\"submit\" id=\"toggle-webhook\">{toggle_label}</button></form>\
<form method=\"post\" action=\"/admin/webhooks/{id}/rotate-secret\" onsubmit=\"return confirm('Replace the signing secret? The old one stops signing at once.')\">{csrf}<button type=\"submit\" id=\"rotate-secret\">New signing secret</button></form>\
<form method=\"post\" action=\"/admin/webhooks/{id}/delete\" onsubmit=\"return confirm('Delete this subscription and its delivery log?')\">{csrf}<button type=\"submit\" id=\"delete-webhook\">Delete subscription</button></form>",
            csrf = session.csrf_field()
        )
    } else {
        String::new()
    };
    let body = format!(
        "<p><a href=\"/admin/webhooks\">← Webhooks</a></p><h1>Webhook subscription {id}</h1>\
<table id=\"details\"><tr><th>URL</th><td><code>{url}</code></td></tr><tr><th>account</th><td>{account}</td></tr><tr><th>events</th><td>{events}</td></tr><tr><th>description</th><td>{description}</td></tr><tr><th>enabled</th><td>{enabled}</td></tr><tr><th>created (UTC)</th><td>{created}</td></tr><tr><th>signing secret</th><td>shown once, when the subscription was created</td></tr></table>{delete}\
<h2>Deliveries</h2><p>The newest {LOG_LIMIT}. A delivery that gets no 2xx answer is retried with growing delays for 24 hours; Redeliver sends it again (same delivery id and body) with a fresh 24 hours.</p>{log}",
        url = escape(hook.url.as_str()),
        account = account_label(&accounts, hook.account_id),
        events = event_list(&hook),
        description = escape(&hook.description),
        enabled = if hook.enabled { "yes" } else { "no" },
        created = hook.created_at,
        log = delivery_rows(&session, &hook, &deliveries),
    );
    crate::admin::layout(&session, &format!("Webhook subscription {id}"), &body)
}

#[derive(serde::Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

pub async fn delete(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(r) = session.admin_form(f.csrf.as_deref()) {
        return r;
    }
    match state.store.delete_webhook(id, state.clock.now()).await {
        Ok(()) => {
            // A watcher may exist only for this subscription's message.received.
            state.watchers.notify_one();
            tracing::info!(webhook = id, user = %session.user.username, "webhook subscription deleted");
            Redirect::to("/admin/webhooks").into_response()
        }
        Err(StoreError::NotFound { .. }) => not_found("webhook subscription"),
        Err(e) => unavailable(e),
    }
}

#[derive(serde::Deserialize)]
pub struct EnabledForm {
    csrf: Option<String>,
    enabled: Option<String>,
}

/// Pause (nothing new is queued, pending deliveries wait) or resume a subscription.
pub async fn set_enabled(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<EnabledForm>,
) -> Response {
    if let Err(r) = session.admin_form(f.csrf.as_deref()) {
        return r;
    }
    let enabled = match f.enabled.as_deref() {
        Some("true") => true,
        Some("false") => false,
        _ => {
            return page(
                StatusCode::UNPROCESSABLE_ENTITY,
                "Bad request",
                "<p>The form's <code>enabled</code> field must be true or false.</p>",
            );
        }
    };
    let hook = match state.store.webhook(id).await {
        Ok(h) => h,
        Err(StoreError::NotFound { .. }) => return not_found("webhook subscription"),
        Err(e) => return unavailable(e),
    };
    let unchanged = mailgate_core::webhook::NewWebhook {
        url: hook.url,
        events: hook.events,
        account_id: hook.account_id,
        description: hook.description,
    };
    match crate::api_inbound::save_subscription(&state, id, &unchanged, enabled).await {
        Ok(_) => {
            tracing::info!(webhook = id, enabled, user = %session.user.username, "webhook subscription paused or resumed");
            Redirect::to(&format!("/admin/webhooks/{id}")).into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// A new signing secret, shown once on the page that answers the button.
pub async fn rotate_secret(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(r) = session.admin_form(f.csrf.as_deref()) {
        return r;
    }
    let hook = match state.store.webhook(id).await {
        Ok(h) => h,
        Err(StoreError::NotFound { .. }) => return not_found("webhook subscription"),
        Err(e) => return unavailable(e),
    };
    match crate::api_inbound::rotate_subscription_secret(&state, id).await {
        Ok(secret) => {
            tracing::info!(webhook = id, user = %session.user.username, "webhook signing secret replaced");
            shown_once(
                &state,
                &session,
                &hook,
                secret.expose(),
                "New signing secret",
            )
            .await
        }
        Err(e) => unavailable(e),
    }
}

pub async fn redeliver(
    State(state): State<AppState>,
    session: Session,
    Path((id, delivery)): Path<(i64, i64)>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(r) = session.admin_form(f.csrf.as_deref()) {
        return r;
    }
    match state.store.delivery(delivery).await {
        Ok((d, _)) if d.webhook_id == id => {}
        Ok(_) | Err(StoreError::NotFound { .. }) => return not_found("delivery"),
        Err(e) => return unavailable(e),
    }
    match state.store.redeliver(delivery, state.clock.now()).await {
        Ok(d) => {
            state.deliveries.notify_one();
            tracing::info!(webhook = id, delivery = %d.delivery_id, user = %session.user.username, "webhook redelivery requested");
            Redirect::to(&format!("/admin/webhooks/{id}#delivery-{delivery}")).into_response()
        }
        Err(StoreError::InUse(msg)) => page(
            StatusCode::CONFLICT,
            "Being sent",
            &format!(
                "<h1 class=\"warn\">Not redelivered</h1><p>{}</p><p><a href=\"/admin/webhooks/{id}\">Back to the subscription</a></p>",
                escape(&msg)
            ),
        ),
        Err(e) => unavailable(e),
    }
}
