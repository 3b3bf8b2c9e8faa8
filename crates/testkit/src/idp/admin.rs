//! The admin API (`/admin/...`): how tests set the emulator up and break it on purpose.
//! Plain JSON, no authentication, refused unless the caller is on a loopback address.

use std::net::SocketAddr;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, FromRequest, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::json;

use super::crypto::{KeyPair, random_digits};
use super::spec::{
    ClientSpec, ClockAdvance, DateSkew, FaultSpec, LifetimeSpec, ServiceAccountSpec, UserSpec,
};
use super::state::{AppState, ServiceAccount};

/// Rejects admin calls from anywhere but loopback (the emulator may be bound more widely).
pub(crate) async fn loopback_only(
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if peer.ip().is_loopback() {
        next.run(request).await
    } else {
        admin_error(
            StatusCode::FORBIDDEN,
            "the admin API only answers loopback clients",
        )
    }
}

/// A JSON body, whatever its `Content-Type` (so `curl -d '{...}'` works), with errors that
/// name the problem.
pub(crate) struct AdminJson<T>(T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for AdminJson<T> {
    type Rejection = Response;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let body = Bytes::from_request(request, state)
            .await
            .map_err(IntoResponse::into_response)?;
        serde_json::from_slice(&body)
            .map(AdminJson)
            .map_err(|e| admin_error(StatusCode::BAD_REQUEST, &format!("invalid JSON body: {e}")))
    }
}

fn admin_error(status: StatusCode, message: &str) -> Response {
    (status, Json(json!({ "error": message }))).into_response()
}

fn ok() -> Response {
    Json(json!({ "ok": true })).into_response()
}

pub(crate) async fn add_client(
    State(app): State<AppState>,
    AdminJson(spec): AdminJson<ClientSpec>,
) -> Response {
    if spec.client_id.is_empty() {
        return admin_error(StatusCode::BAD_REQUEST, "client_id must not be empty");
    }
    tracing::info!(
        client_id = spec.client_id,
        public = spec.client_secret.is_none(),
        "client registered"
    );
    app.lock().add_client(spec);
    ok()
}

pub(crate) async fn add_user(
    State(app): State<AppState>,
    AdminJson(spec): AdminJson<UserSpec>,
) -> Response {
    if !spec.email.contains('@') {
        return admin_error(
            StatusCode::BAD_REQUEST,
            "email must be an address (name@domain)",
        );
    }
    let user = app.lock().add_user(spec, &app.default_tenant);
    tracing::info!(email = user.email, "user registered");
    Json(user).into_response()
}

pub(crate) async fn revoke_user(
    State(app): State<AppState>,
    Path(email): Path<String>,
) -> Response {
    if app.lock().revoke_user(&email) {
        tracing::info!(email, "user's grants revoked");
        ok()
    } else {
        admin_error(StatusCode::NOT_FOUND, &format!("no user {email}"))
    }
}

pub(crate) async fn expire_tokens(
    State(app): State<AppState>,
    Path(email): Path<String>,
) -> Response {
    if app.lock().expire_tokens(&email) {
        tracing::info!(email, "user's access tokens expired");
        ok()
    } else {
        admin_error(StatusCode::NOT_FOUND, &format!("no user {email}"))
    }
}

pub(crate) async fn add_fault(
    State(app): State<AppState>,
    AdminJson(spec): AdminJson<FaultSpec>,
) -> Response {
    tracing::info!(?spec, "fault armed");
    app.lock().add_fault(spec);
    ok()
}

pub(crate) async fn set_lifetimes(
    State(app): State<AppState>,
    AdminJson(spec): AdminJson<LifetimeSpec>,
) -> Response {
    tracing::info!(?spec, "lifetimes set");
    app.lock().set_lifetimes(&spec);
    ok()
}

#[derive(Deserialize)]
pub(crate) struct CountersQuery {
    client_id: Option<String>,
}

pub(crate) async fn counters(
    State(app): State<AppState>,
    Query(query): Query<CountersQuery>,
) -> Response {
    Json(app.lock().counters(query.client_id.as_deref())).into_response()
}

pub(crate) async fn advance_clock(
    State(app): State<AppState>,
    AdminJson(advance): AdminJson<ClockAdvance>,
) -> Response {
    app.lock().advance_clock(advance.seconds);
    ok()
}

pub(crate) async fn set_date_skew(
    State(app): State<AppState>,
    AdminJson(skew): AdminJson<DateSkew>,
) -> Response {
    app.lock().date_skew_secs = skew.seconds;
    ok()
}

pub(crate) async fn reset(State(app): State<AppState>) -> Response {
    tracing::info!("state reset");
    app.lock().reset();
    ok()
}

/// Creates a Google service account and answers its JSON key file, private key included.
pub(crate) async fn add_service_account(
    State(app): State<AppState>,
    AdminJson(spec): AdminJson<ServiceAccountSpec>,
) -> Response {
    // RSA key generation is CPU-bound: keep it off the async workers.
    let key = match tokio::task::spawn_blocking(KeyPair::generate).await {
        Ok(Ok(key)) => key,
        Ok(Err(e)) => return admin_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
        Err(e) => return admin_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    };
    let private_key = match key.private_key_pem() {
        Ok(pem) => pem,
        Err(e) => return admin_error(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:#}")),
    };
    let key_id = hex::encode(super::crypto::random_bytes::<20>());
    let client_id = random_digits(21);
    let client_email = {
        let mut inner = app.lock();
        inner.service_account_seq += 1;
        let client_email = spec.client_email.unwrap_or_else(|| {
            format!(
                "sa-{}@mailgate-test.iam.gserviceaccount.com",
                inner.service_account_seq
            )
        });
        inner.service_accounts.insert(
            client_email.clone(),
            ServiceAccount {
                client_id: client_id.clone(),
                client_email: client_email.clone(),
                key_id: key_id.clone(),
                public_key: key.public(),
            },
        );
        client_email
    };
    tracing::info!(client_email, "service account created");
    let base = &app.base_url;
    Json(json!({
        "type": "service_account",
        "project_id": "mailgate-test",
        "private_key_id": key_id,
        "private_key": private_key,
        "client_email": client_email,
        "client_id": client_id,
        "auth_uri": format!("{base}/o/oauth2/v2/auth"),
        "token_uri": format!("{base}/token"),
        "auth_provider_x509_cert_url": format!("{base}/oauth2/v3/certs"),
        "universe_domain": "googleapis.com",
    }))
    .into_response()
}
