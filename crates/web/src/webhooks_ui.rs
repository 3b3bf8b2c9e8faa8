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
use crate::auth::{AdminForm, NoFields, OperatorSession, Session};
use crate::forms::Errors;
use crate::html::{Frame, Nav, PageError, render};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailgate_core::webhook::{NewWebhook, Webhook, WebhookEvent};
use mailgate_core::{AccountId, MailAccount, Timestamp};
use mailgate_store::webhooks::RETRY_WINDOW_SECS;
use mailgate_store::{Attempt, Delivery, DeliveryStatus, DeliverySummary, StoreError};
use std::collections::HashMap;

/// How many deliveries the subscription page shows, newest first.
const LOG_LIMIT: i64 = 50;

/// The submitted form. Events (checkboxes) repeat their key, which a struct's fields cannot
/// take, so it is read from the list of pairs.
#[derive(Default, serde::Deserialize)]
#[serde(from = "Vec<(String, String)>")]
pub struct Submitted {
    url: String,
    events: Vec<String>,
    account_id: String,
    description: String,
}

impl From<Vec<(String, String)>> for Submitted {
    fn from(pairs: Vec<(String, String)>) -> Submitted {
        let mut s = Submitted::default();
        for (key, value) in pairs {
            match key.as_str() {
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

fn account_label(accounts: &[MailAccount], id: Option<AccountId>) -> String {
    match id {
        None => "all accounts".to_owned(),
        Some(id) => accounts
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.spec.name.to_string())
            .unwrap_or_else(|| format!("account {id} (removed)")),
    }
}

fn status_class(status: DeliveryStatus) -> &'static str {
    match status {
        DeliveryStatus::Delivered => "ok",
        DeliveryStatus::Pending | DeliveryStatus::Delivering => "warn",
        DeliveryStatus::Failed => "bad",
    }
}

/// A status code, or the reason there was no answer.
pub(crate) enum Answer {
    Code(i64),
    Unanswered(String),
    Nothing,
}

fn answer(status: Option<i64>, error: Option<&str>) -> Answer {
    match (status, error) {
        (Some(code), _) => Answer::Code(code),
        (None, Some(e)) => Answer::Unanswered(e.to_owned()),
        (None, None) => Answer::Nothing,
    }
}

/// One row of the subscriptions list.
struct HookRow {
    hook: Webhook,
    account: String,
    summary: Option<DeliverySummary>,
    last: Answer,
}

#[derive(Template)]
#[template(path = "webhooks.html")]
struct WebhooksPage<'a> {
    frame: Frame,
    title: &'static str,
    csrf: &'a str,
    is_admin: bool,
    rows: Vec<HookRow>,
    events: Vec<(WebhookEvent, &'static str, bool)>,
    accounts: Vec<(String, String, String, bool)>,
    all_accounts: bool,
    url: &'a str,
    description: &'a str,
    errs: &'a Errors,
    errors: Vec<(String, String)>,
}

/// The list and, for administrators, the form below it; 422 when the form comes back with
/// errors.
async fn list_page(
    state: &AppState,
    session: &Session,
    sub: &Submitted,
    errs: &Errors,
) -> Result<Response, PageError> {
    let since = Timestamp(state.clock.now().0 - RETRY_WINDOW_SECS);
    let hooks = state.store.webhooks().await?;
    let accounts = state.store.list_accounts().await?;
    let summaries: HashMap<i64, DeliverySummary> = state.store.delivery_summaries(since).await?;
    let rows = hooks
        .into_iter()
        .map(|h| {
            let summary = summaries.get(&h.id).cloned();
            HookRow {
                account: account_label(&accounts, h.account_id),
                last: summary
                    .as_ref()
                    .map(|s| answer(s.last_status, s.last_error.as_deref()))
                    .unwrap_or(Answer::Nothing),
                summary,
                hook: h,
            }
        })
        .collect();
    let chosen = sub.account_id.trim();
    Ok(render(
        errs.status(),
        &WebhooksPage {
            frame: session.frame(Nav::Webhooks),
            title: "Webhooks",
            csrf: &session.csrf,
            is_admin: session.is_admin(),
            rows,
            events: WebhookEvent::ALL
                .iter()
                .map(|e| {
                    (
                        *e,
                        event_meaning(*e),
                        sub.events.iter().any(|v| v == e.as_str()),
                    )
                })
                .collect(),
            accounts: accounts
                .iter()
                .map(|a| {
                    let id = a.id.to_string();
                    let selected = chosen == id;
                    (
                        id,
                        a.spec.name.to_string(),
                        a.spec.mailbox.to_string(),
                        selected,
                    )
                })
                .collect(),
            all_accounts: chosen.is_empty(),
            url: sub.url.trim(),
            description: &sub.description,
            errs,
            errors: errs.all(),
        },
    ))
}

pub async fn list(
    State(state): State<AppState>,
    OperatorSession(session): OperatorSession,
) -> Result<Response, PageError> {
    list_page(&state, &session, &Submitted::default(), &Errors::default()).await
}

pub async fn create(
    State(state): State<AppState>,
    AdminForm(session, sub): AdminForm<Submitted>,
) -> Result<Response, PageError> {
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
                // An empty URL is simply missing: say so, as the other forms do.
                if e.field == "url" && sub.url.trim().is_empty() {
                    errs.add("url", "required: the address mailgate POSTs the events to");
                } else {
                    errs.add(e.field, e.message);
                }
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
            Err(e) => return Err(e.into()),
        },
    }
    list_page(&state, &session, &sub, &errs).await
}

#[derive(Template)]
#[template(path = "webhook_secret.html")]
struct SecretPage<'a> {
    frame: Frame,
    title: &'a str,
    hook: &'a Webhook,
    account: String,
    secret: &'a str,
}

/// The one page that ever shows the signing secret.
async fn shown_once(
    state: &AppState,
    session: &Session,
    hook: &Webhook,
    secret: &str,
    heading: &str,
) -> Result<Response, PageError> {
    // The subscription exists now and this is the only chance to show its secret: a failed
    // lookup only costs the account's name.
    let accounts = state.store.list_accounts().await.unwrap_or_default();
    Ok(render(
        StatusCode::OK,
        &SecretPage {
            frame: session.frame(Nav::Webhooks),
            title: heading,
            hook,
            account: account_label(&accounts, hook.account_id),
            secret,
        },
    ))
}

/// One row of a subscription's delivery log.
struct DeliveryRow {
    delivery: Delivery,
    class: &'static str,
    last: Answer,
    attempts: Vec<Attempt>,
}

#[derive(Template)]
#[template(path = "webhook.html")]
struct WebhookPage<'a> {
    frame: Frame,
    title: String,
    csrf: &'a str,
    is_admin: bool,
    hook: Webhook,
    account: String,
    deliveries: Vec<DeliveryRow>,
    log_limit: i64,
}

pub async fn subscription_page(
    State(state): State<AppState>,
    OperatorSession(session): OperatorSession,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    let hook = state.store.webhook(id).await?;
    let deliveries = state.store.deliveries(id, LOG_LIMIT).await?;
    let accounts = state.store.list_accounts().await?;
    Ok(render(
        StatusCode::OK,
        &WebhookPage {
            frame: session.frame(Nav::Webhooks),
            title: format!("Webhook subscription {id}"),
            csrf: &session.csrf,
            is_admin: session.is_admin(),
            account: account_label(&accounts, hook.account_id),
            hook,
            deliveries: deliveries
                .into_iter()
                .map(|(d, attempts)| DeliveryRow {
                    class: status_class(d.status),
                    last: answer(d.last_status, d.last_error.as_deref()),
                    delivery: d,
                    attempts,
                })
                .collect(),
            log_limit: LOG_LIMIT,
        },
    ))
}

pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    AdminForm(session, NoFields {}): AdminForm<NoFields>,
) -> Result<Response, PageError> {
    state.store.delete_webhook(id, state.clock.now()).await?;
    // A watcher may exist only for this subscription's message.received.
    state.watchers.notify_one();
    tracing::info!(webhook = id, user = %session.user.username, "webhook subscription deleted");
    Ok(Redirect::to("/admin/webhooks").into_response())
}

#[derive(serde::Deserialize)]
pub struct EnabledForm {
    enabled: Option<String>,
}

/// Pause (nothing new is queued, pending deliveries wait) or resume a subscription.
pub async fn set_enabled(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    AdminForm(session, f): AdminForm<EnabledForm>,
) -> Result<Response, PageError> {
    let enabled = match f.enabled.as_deref() {
        Some("true") => true,
        Some("false") => false,
        _ => {
            return Err(PageError::Other {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                title: "Bad request".into(),
                message: "The form's enabled field must be true or false.".into(),
            });
        }
    };
    let hook = state.store.webhook(id).await?;
    let unchanged = mailgate_core::webhook::NewWebhook {
        url: hook.url,
        events: hook.events,
        account_id: hook.account_id,
        description: hook.description,
    };
    crate::api_inbound::save_subscription(&state, id, &unchanged, enabled).await?;
    tracing::info!(webhook = id, enabled, user = %session.user.username, "webhook subscription paused or resumed");
    Ok(Redirect::to(&format!("/admin/webhooks/{id}")).into_response())
}

/// A new signing secret, shown once on the page that answers the button.
pub async fn rotate_secret(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    AdminForm(session, NoFields {}): AdminForm<NoFields>,
) -> Result<Response, PageError> {
    let hook = state.store.webhook(id).await?;
    let secret = crate::api_inbound::rotate_subscription_secret(&state, id).await?;
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

pub async fn redeliver(
    State(state): State<AppState>,
    Path((id, delivery)): Path<(i64, i64)>,
    AdminForm(session, NoFields {}): AdminForm<NoFields>,
) -> Result<Response, PageError> {
    match state.store.delivery(delivery).await {
        Ok((d, _)) if d.webhook_id == id => {}
        Ok(_) | Err(StoreError::NotFound { .. }) => return Err(PageError::NotFound("delivery")),
        Err(e) => return Err(e.into()),
    }
    match state.store.redeliver(delivery, state.clock.now()).await {
        Ok(d) => {
            state.deliveries.notify_one();
            tracing::info!(webhook = id, delivery = %d.delivery_id, user = %session.user.username, "webhook redelivery requested");
            Ok(Redirect::to(&format!("/admin/webhooks/{id}#delivery-{delivery}")).into_response())
        }
        Err(StoreError::InUse(msg)) => Err(PageError::Conflict {
            title: "Not redelivered".into(),
            message: msg,
        }),
        Err(e) => Err(e.into()),
    }
}
