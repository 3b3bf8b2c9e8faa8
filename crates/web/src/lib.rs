//! mailgate's HTTP surface. Handlers turn requests into calls on the store and the engines
//! and their results into responses; this crate never writes SQL and never holds a secret
//! longer than a request.

// API handlers refuse with `api::ApiError` (boxed, so their `Result`s stay small); the admin
// pages refuse with `html::PageError`, and take their session through the extractors of
// `auth.rs` (`OperatorSession`, `AdminSession`, `AdminForm<T>`, `OperatorForm<T>`).

mod admin;
pub mod api;
mod api_admin;
mod api_inbound;
pub mod auth;
mod callback;
mod chart;
pub mod forms;
mod help;
mod html;
pub mod openapi;
mod proxy_ui;
pub mod test_runs;
mod tokens;
mod users_ui;
mod webhooks_ui;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mailgate_core::{Clock, HttpUrl};
use mailgate_grants::Engine;
use mailgate_store::Store;
use serde_json::json;
use std::sync::Arc;

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub store: Arc<Store>,
    pub engine: Arc<Engine>,
    pub clock: Arc<dyn Clock>,
    /// The URL people and providers reach this instance at; the redirect URI hangs off it.
    pub public_url: HttpUrl,
    /// Certificates trusted for mail servers ("Test configuration").
    pub tls: mailgate_mail::TlsSettings,
    /// "Test configuration" runs in progress and recently finished, for the live page.
    pub tests: Arc<test_runs::TestRuns>,
    /// Wakes the outbox worker when a message is queued.
    pub outbox: Arc<tokio::sync::Notify>,
    /// Wakes the webhook deliverer (a redelivery was asked for).
    pub deliveries: Arc<tokio::sync::Notify>,
    /// Wakes the inbound watchers' supervisor (a subscription changed).
    pub watchers: Arc<tokio::sync::Notify>,
    /// Whether webhook targets may be loopback or private addresses.
    pub webhook_allow_private: bool,
    /// What one send may ask for: the outbox quotas and the recipients cap.
    pub send_limits: api::SendLimits,
    /// Reverse proxies whose `X-Forwarded-For` is believed (see `auth::client_address`).
    pub trusted_proxies: Arc<Vec<ipnet::IpNet>>,
    /// How long the setup link printed by `serve` stays valid.
    pub setup_link_secs: i64,
    /// Slots for sends in progress (`POST /api/v1/accounts/{id}/messages`); a send waits
    /// up to `send_slot_wait` for one, then is answered 503 with Retry-After.
    pub send_slots: Arc<tokio::sync::Semaphore>,
    pub send_slot_wait: std::time::Duration,
    /// The legacy proxy's listeners, as the dashboard shows them ("IMAP on 127.0.0.1:1143
    /// (TLS)"); empty when the proxy is off.
    pub proxy_listeners: Arc<Vec<String>>,
    /// When set, `/metrics` answers only `Authorization: Bearer <this>` (`metrics_token`).
    pub metrics_token: Option<mailgate_core::Secret>,
}

/// The one redirect URI: `<public_url>/oauth/callback`.
pub use mailgate_usecase::views::redirect_uri;

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/oauth/callback", get(callback::oauth_callback))
        .route(
            "/",
            get(|| async { axum::response::Redirect::to("/admin") }),
        )
        .route("/setup", get(auth::setup_form).post(auth::setup))
        .route("/login", get(auth::login_form).post(auth::login))
        .route("/logout", post(auth::logout))
        .route("/admin", get(admin::dashboard))
        .route("/admin/apps", get(admin::apps))
        .route("/admin/apps/{id}/remove", post(admin::remove_app))
        .route(
            "/admin/apps/new",
            get(forms::new_app_form).post(forms::create_app),
        )
        .route(
            "/admin/apps/{id}",
            get(forms::edit_app_form).post(forms::update_app),
        )
        .route("/admin/accounts", get(admin::accounts))
        .route(
            "/admin/accounts/new",
            get(forms::new_account_form).post(forms::create_account),
        )
        .route("/admin/accounts/{id}", get(forms::account_page))
        .route(
            "/admin/accounts/{id}/edit",
            get(forms::edit_account_form).post(forms::update_account),
        )
        .route("/admin/accounts/{id}/authorize", post(forms::authorize))
        .route("/admin/accounts/{id}/remove", post(admin::remove_account))
        .route("/admin/accounts/{id}/test", post(forms::test_account))
        .route(
            "/admin/accounts/{id}/proxy-password",
            post(proxy_ui::generate),
        )
        .route("/admin/accounts/{id}/tests/{run}", get(forms::test_page))
        .route("/admin/tests/{run}", get(forms::test_steps))
        .route(
            "/api/v1/apps",
            get(api_admin::list_apps).post(api_admin::create_app),
        )
        .route(
            "/api/v1/apps/{id}",
            get(api_admin::get_app)
                .patch(api_admin::update_app)
                .delete(api_admin::delete_app),
        )
        .route(
            "/api/v1/accounts",
            get(api::list_accounts).post(api_admin::create_account),
        )
        .route(
            "/api/v1/accounts/{id}",
            get(api::get_account)
                .patch(api_admin::update_account)
                .delete(api_admin::delete_account),
        )
        .route("/api/v1/accounts/{id}/tests", post(api_admin::start_test))
        .route("/api/v1/tests/{run}", get(api_admin::test_status))
        .route("/api/v1/accounts/{id}/events", get(api::account_events))
        .route("/api/v1/accounts/{id}/token", get(api::account_token))
        .route(
            "/api/v1/accounts/{id}/authorize",
            post(api::start_authorization),
        )
        .route(
            "/api/v1/accounts/{id}/messages",
            get(api_inbound::list_messages)
                .post(api::send_message)
                // Attachments travel as base64 in the JSON: more than axum's default 2 MB.
                .layer(axum::extract::DefaultBodyLimit::max(api::SEND_BODY_LIMIT))
                .route_layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    limit_sends,
                )),
        )
        .route("/api/v1/messages", get(api::list_outbox))
        .route("/api/v1/messages/{id}", get(api::message_status))
        .route("/api/v1/messages/{id}/retry", post(api::retry_message))
        .route(
            "/api/v1/accounts/{id}/messages/{uid}",
            get(api_inbound::get_message),
        )
        .route(
            "/api/v1/webhooks",
            get(api_inbound::list_webhooks).post(api_inbound::create_webhook),
        )
        .route(
            "/api/v1/webhooks/{id}",
            get(api_inbound::get_webhook)
                .patch(api_inbound::update_webhook)
                .delete(api_inbound::delete_webhook),
        )
        .route(
            "/api/v1/webhooks/{id}/rotate-secret",
            post(api_inbound::rotate_secret),
        )
        .route(
            "/api/v1/webhooks/{id}/deliveries",
            get(api_inbound::deliveries),
        )
        .route(
            "/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver",
            post(api_inbound::redeliver),
        )
        .route("/api/v1/events", get(api::list_events))
        .route("/api/v1/openapi.json", get(openapi::serve))
        .route("/admin/events", get(admin::events))
        .route("/admin/api-tokens", get(tokens::list).post(tokens::create))
        .route("/admin/api-tokens/{id}/revoke", post(tokens::revoke))
        .route("/admin/users", get(users_ui::list).post(users_ui::create))
        .route("/admin/users/{id}", get(users_ui::user_page))
        .route("/admin/users/{id}/role", post(users_ui::set_role))
        .route("/admin/users/{id}/password", post(users_ui::reset_password))
        .route("/admin/users/{id}/remove", post(users_ui::remove))
        .route(
            "/admin/webhooks",
            get(webhooks_ui::list).post(webhooks_ui::create),
        )
        .route("/admin/webhooks/{id}", get(webhooks_ui::subscription_page))
        .route("/admin/webhooks/{id}/delete", post(webhooks_ui::delete))
        .route(
            "/admin/webhooks/{id}/enabled",
            post(webhooks_ui::set_enabled),
        )
        .route(
            "/admin/webhooks/{id}/rotate-secret",
            post(webhooks_ui::rotate_secret),
        )
        .route(
            "/admin/webhooks/{id}/deliveries/{delivery}/redeliver",
            post(webhooks_ui::redeliver),
        )
        .route("/admin/help", get(help::help))
        .route("/admin/docs/webhooks.md", get(help::webhooks_doc))
        .route("/static/mailgate.css", get(html::stylesheet))
        .route("/static/mailgate.js", get(html::script))
        .route("/static/favicon.svg", get(html::favicon))
        .route("/favicon.ico", get(html::favicon))
        .route("/admin/{*rest}", axum::routing::any(html::admin_not_found))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            audit_scope,
        ))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(state)
}

/// Runs each request in an audit scope holding its client address, so every change it
/// makes is recorded with where it came from; the session and API-token extractors add
/// who (`mailgate_store::audit`).
async fn audit_scope(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let source = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|peer| {
            auth::client_address(peer.0.ip(), req.headers(), &state.trusted_proxies).to_string()
        });
    mailgate_store::audit::within(None, source, next.run(req)).await
}

/// Headers every response carries: no framing (clickjacking of the admin forms), no MIME
/// sniffing, and no Referer leaving a page whose URL may hold a token (setup link,
/// callback). A handler that set one of them keeps its own.
async fn security_headers(mut resp: Response) -> Response {
    use axum::http::{HeaderValue, header};
    let headers = resp.headers_mut();
    for (name, value) in [
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::REFERRER_POLICY, "no-referrer"),
    ] {
        if !headers.contains_key(&name) {
            headers.insert(name, HeaderValue::from_static(value));
        }
    }
    resp
}

/// Seconds a client is told to wait when every send slot is busy.
const SEND_RETRY_AFTER_SECS: u64 = 5;

/// Admits a send only with a slot, and holds the slot until the response is ready
/// (reading the body included, so a slow upload holds one too: bodies are what costs
/// memory). A send waits a little for a slot, before its body is read, so a burst of small
/// sends queues briefly; past that it gets a 503 to retry, rather than a queue that grows
/// without bound. Only a caller with a valid API token gets this far, so strangers cannot
/// take the slots.
async fn limit_sends(
    State(state): State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if req.method() != axum::http::Method::POST {
        return next.run(req).await;
    }
    let (parts, body) = req.into_parts();
    if let Err(refused) = api::ApiCaller::authenticate(&parts, &state).await {
        return refused.into_response();
    }
    let req = axum::extract::Request::from_parts(parts, body);
    let slot = tokio::time::timeout(
        state.send_slot_wait,
        state.send_slots.clone().acquire_owned(),
    )
    .await;
    let Ok(Ok(_slot)) = slot else {
        tracing::warn!("send refused: every send slot is busy (http_send_concurrency)");
        let mut busy = api::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "send_busy",
            format!(
                "every send slot is busy (http_send_concurrency); retry after {SEND_RETRY_AFTER_SECS} seconds"
            ),
            None,
        );
        busy.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(SEND_RETRY_AFTER_SECS),
        );
        return busy;
    };
    next.run(req).await
}

/// Prometheus text format (`mailgate_core::metrics`): accounts by state (alert on
/// `mailgate_accounts{state="reauth_required"} > 0`), outbox and webhook deliveries by
/// status, the outbox's oldest waiting message, seconds until each app's secret expires,
/// and this process's counters. Counts and ids only, no names or secrets. Open like
/// `/healthz` unless `metrics_token` is set; then it wants `Authorization: Bearer <token>`.
async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if let Some(expected) = &state.metrics_token {
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !constant_time_eq(given.trim().as_bytes(), expected.expose().as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(
                    axum::http::header::WWW_AUTHENTICATE,
                    "Bearer realm=\"metrics\"",
                )],
                "/metrics wants Authorization: Bearer <metrics_token>\n",
            )
                .into_response();
        }
    }
    let now = state.clock.now();
    let read = async {
        let counts = state.store.metric_counts().await?;
        let oldest = state.store.oldest_waiting_outbox().await?;
        let expiries = state.store.secret_expiry_dates().await?;
        Ok::<_, mailgate_store::StoreError>((counts, oldest, expiries))
    };
    let (counts, oldest, expiries) = match read.await {
        Ok(read) => read,
        Err(e) => {
            tracing::warn!(error = %e, "metrics: database unavailable");
            return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n").into_response();
        }
    };
    let snapshot = mailgate_core::metrics::Snapshot {
        counts,
        password_hashes: mailgate_store::passwords::argon2_runs(),
        oldest_queued_secs: oldest.map_or(0, |t| (now.0 - t.0).max(0)),
        // A secret is taken to expire at the start of its expiry date (UTC): the earlier
        // reading, so an alert fires in time.
        secret_expiry: expiries
            .iter()
            .map(|(app, date)| (app.0, date.midnight().assume_utc().unix_timestamp() - now.0))
            .collect(),
    };
    (
        [(
            axum::http::header::CONTENT_TYPE,
            mailgate_core::metrics::CONTENT_TYPE,
        )],
        mailgate_core::metrics::render(&snapshot),
    )
        .into_response()
}

/// Compares without stopping at the first difference, so the time taken tells nothing
/// about how much of a guessed token was right.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// 200 with the version and schema version, or 503 when the database does not answer or
/// cannot store writes (`"store": "degraded"`), so a load balancer takes the instance out of
/// rotation.
async fn healthz(State(state): State<AppState>) -> Response {
    let version = env!("CARGO_PKG_VERSION");
    // A full disk still answers reads: a small real write (at most every 10 s while
    // healthy, every time while writes fail) and the last 10 s of writes tell.
    if let Err(e) = state.store.check_writable(state.clock.now(), 10).await {
        tracing::debug!(error = %e, "health check: the database still cannot store writes");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(axum::http::header::RETRY_AFTER, "30")],
            Json(json!({
                "status": "degraded",
                "store": "degraded",
                "version": version,
                "database": { "status": "cannot_write", "error": e },
            })),
        )
            .into_response();
    }
    match state.store.schema_version().await {
        Ok(schema) => Json(json!({
            "status": "ok",
            "version": version,
            "database": { "status": "ok", "schema_version": schema },
        }))
        .into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "health check: database unavailable");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({
                    "status": "degraded",
                    "version": version,
                    "database": { "status": "unavailable", "error": e.to_string() },
                })),
            )
                .into_response()
        }
    }
}
