//! Identity-provider emulator: a real HTTP server on loopback that answers like the Microsoft
//! identity platform (v2.0) and like Google's OAuth endpoints, so mailgate's production code
//! talks to it with only the base URL changed. Real Dovecot introspects tokens at it.
//!
//! ```no_run
//! # async fn demo() -> anyhow::Result<()> {
//! use mailgate_testkit::idp::{ClientSpec, Idp, IdpConfig, UserSpec};
//! let idp = Idp::start(IdpConfig::default())?;
//! let admin = idp.admin();
//! admin.add_client(ClientSpec::confidential("app", "s3cret", "http://127.0.0.1:9/cb")).await?;
//! admin.add_user(UserSpec::new("alice@example.test", "pw")).await?;
//! # Ok(()) }
//! ```
//!
//! Map of the module: `spec` (admin API shapes), `state` (what is remembered, the clock),
//! `pages` (authorize + HTML sign-in/consent/device pages), `token` (token and device
//! endpoints), `issue` (minting tokens), `resources` (discovery, JWKS, userinfo, revoke,
//! introspection), `errors` (provider-shaped error bodies and faults), `admin` (admin API
//! server side), `client` (admin API client and page-driving helpers), `crypto` (randomness,
//! RS256), `scopes` (audiences and mail scopes). `docs/idp-emulator.md` is the user guide.

mod admin;
mod client;
mod crypto;
mod errors;
mod issue;
mod pages;
mod resources;
mod scopes;
mod sender_login;
mod spec;
mod state;
mod token;

use std::future::IntoFuture;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::sync::oneshot;

pub use client::{DeviceConsent, IdpAdmin, answer_device_code, sign_in};
pub use crypto::pkce_s256;
pub use errors::MALFORMED_JSON_BODY;
pub use spec::{
    ClientSpec, ClockAdvance, DateSkew, Endpoint, Fault, FaultSpec, LifetimeSpec,
    ServiceAccountSpec, User, UserSpec,
};

use state::{AppState, Shared};

/// The tenant users belong to unless they name another: fixed, so configuration files can
/// name it before the emulator runs.
pub const DEFAULT_TENANT_ID: &str = "5f2c7a9e-3b1d-4c8e-9a6f-0d4e1b2c3a7f";

/// How to start an emulator. The JSON config file of `mailgate-idp` has this shape
/// (`{"clients": [...], "users": [...]}`; every field optional).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct IdpConfig {
    /// Default `127.0.0.1:0` (an ephemeral loopback port).
    pub listen: SocketAddr,
    /// Default [`DEFAULT_TENANT_ID`].
    pub tenant_id: String,
    pub clients: Vec<ClientSpec>,
    pub users: Vec<UserSpec>,
}

impl Default for IdpConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            tenant_id: DEFAULT_TENANT_ID.to_owned(),
            clients: Vec::new(),
            users: Vec::new(),
        }
    }
}

/// A running emulator. Dropping it stops the server.
#[derive(Debug)]
pub struct Idp {
    base_url: String,
    sender_login_map: String,
    tenant_id: String,
    shutdown: Option<oneshot::Sender<()>>,
    /// Signalled by the server thread once it has stopped. (In a `Mutex` only to keep `Idp`
    /// `Sync`; it is used once, from `drop`.)
    stopped: Mutex<mpsc::Receiver<()>>,
}

/// How long dropping an `Idp` waits for its server to finish open requests (a pending `delay`
/// fault, say) before it lets the thread finish on its own.
const STOP_WAIT: Duration = Duration::from_secs(5);

impl Idp {
    /// Binds `config.listen` and serves on a runtime of its own, on a thread of its own: a
    /// test that blocks its runtime (say, waiting for a `mailgate` child process that calls
    /// the emulator) cannot starve it, and `start` works in sync code too. The first call in
    /// a process generates the RSA signing key (a fraction of a second); later emulators
    /// reuse it.
    pub fn start(config: IdpConfig) -> anyhow::Result<Idp> {
        let signing_key = crypto::signing_key()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building the emulator's runtime")?;
        let listener = std::net::TcpListener::bind(config.listen)
            .with_context(|| format!("binding the emulator to {}", config.listen))?;
        listener.set_nonblocking(true)?;
        let listener = {
            let _entered = runtime.enter();
            tokio::net::TcpListener::from_std(listener)?
        };
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let shared = Arc::new(Shared::new(
            base_url.clone(),
            config.tenant_id.clone(),
            signing_key,
        ));
        {
            let mut inner = shared.lock();
            for client in config.clients {
                inner.add_client(client);
            }
            for user in config.users {
                inner.add_user(user, &config.tenant_id);
            }
        }
        // Postfix's `smtpd_sender_login_maps` for the rig (see `sender_login.rs`).
        let sender_listener = std::net::TcpListener::bind((config.listen.ip(), 0))
            .context("binding the emulator's sender-login table")?;
        sender_listener.set_nonblocking(true)?;
        let sender_login_map = format!("tcp:{}", sender_listener.local_addr()?);
        {
            let _entered = runtime.enter();
            let sender_listener = tokio::net::TcpListener::from_std(sender_listener)?;
            runtime.spawn(sender_login::serve(sender_listener, shared.clone()));
        }
        let app = router(shared);
        let (shutdown, stop) = oneshot::channel::<()>();
        let (stopped_tx, stopped) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name(format!("mailgate-idp-{}", addr.port()))
            .spawn(move || {
                let served = runtime.block_on(
                    axum::serve(
                        listener,
                        app.into_make_service_with_connect_info::<SocketAddr>(),
                    )
                    .with_graceful_shutdown(async {
                        // A dropped sender also means stop.
                        let _ = stop.await;
                    })
                    .into_future(),
                );
                if let Err(e) = served {
                    tracing::error!(error = %e, "identity-provider emulator stopped with an error");
                }
                let _ = stopped_tx.send(());
            })
            .context("starting the emulator's thread")?;
        tracing::info!(%base_url, "identity-provider emulator listening");
        Ok(Idp {
            base_url,
            sender_login_map,
            tenant_id: config.tenant_id,
            shutdown: Some(shutdown),
            stopped: Mutex::new(stopped),
        })
    }

    /// `http://127.0.0.1:PORT`, without a trailing slash.
    pub fn base_url(&self) -> String {
        self.base_url.clone()
    }

    /// `tcp:127.0.0.1:PORT`: the Postfix lookup table of who may send as whom (SendAs), for
    /// `scripts/mail-rig start --sender-login-map`.
    pub fn sender_login_map(&self) -> &str {
        &self.sender_login_map
    }

    /// The default tenant GUID (Microsoft `tid` of users registered without one).
    pub fn tenant_id(&self) -> &str {
        &self.tenant_id
    }

    /// An admin API client for this emulator.
    pub fn admin(&self) -> IdpAdmin {
        IdpAdmin::new(self.base_url.clone())
    }

    /// Like dropping it (stops the server, waits until open requests are answered), without
    /// blocking the caller's async runtime while it waits.
    pub async fn stop(self) {
        let _ = tokio::task::spawn_blocking(move || drop(self)).await;
    }
}

impl Drop for Idp {
    /// Stops the server and waits (at most [`STOP_WAIT`]) until it has, so the port is closed
    /// when `drop` returns.
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
            let stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
            let _ = stopped.recv_timeout(STOP_WAIT);
        }
    }
}

fn router(shared: AppState) -> Router {
    let admin = Router::new()
        .route("/clients", post(admin::add_client))
        .route("/users", post(admin::add_user))
        .route("/users/{email}/revoke", post(admin::revoke_user))
        .route("/users/{email}/expire-tokens", post(admin::expire_tokens))
        .route("/faults", post(admin::add_fault))
        .route("/lifetimes", post(admin::set_lifetimes))
        .route("/counters", get(admin::counters))
        .route("/service-accounts", post(admin::add_service_account))
        .route("/clock/advance", post(admin::advance_clock))
        .route("/clock/date-skew", post(admin::set_date_skew))
        .route("/reset", post(admin::reset))
        .layer(axum::middleware::from_fn(admin::loopback_only));
    Router::new()
        // Microsoft identity platform v2.0.
        .route("/{tenant}/oauth2/v2.0/authorize", get(pages::ms_authorize))
        .route("/{tenant}/oauth2/v2.0/token", post(token::ms_token))
        .route(
            "/{tenant}/oauth2/v2.0/devicecode",
            post(token::ms_devicecode),
        )
        .route("/{tenant}/discovery/v2.0/keys", get(resources::ms_keys))
        .route(
            "/{tenant}/v2.0/.well-known/openid-configuration",
            get(resources::ms_openid_configuration),
        )
        // Google.
        .route("/o/oauth2/v2/auth", get(pages::google_authorize))
        .route("/token", post(token::google_token))
        .route("/device/code", post(token::google_devicecode))
        .route("/revoke", post(resources::revoke))
        .route("/v1/userinfo", get(resources::userinfo))
        .route("/oauth2/v3/certs", get(resources::google_certs))
        .route(
            "/.well-known/openid-configuration",
            get(resources::google_openid_configuration),
        )
        // Shared: pages, introspection for the mail servers, error explanations.
        .route(
            pages::SIGNIN_PATH,
            get(pages::sign_in_get).post(pages::sign_in_post),
        )
        .route(pages::CONSENT_PATH, post(pages::consent_post))
        .route(
            pages::DEVICE_LOGIN_PATH,
            get(pages::device_login_get).post(pages::device_login_post),
        )
        .route("/introspect", post(resources::introspect))
        .route("/error", get(resources::error_info))
        .nest("/admin", admin)
        .layer(axum::middleware::from_fn(log_request))
        .layer(axum::middleware::map_response_with_state(
            shared.clone(),
            skew_date_header,
        ))
        .with_state(shared)
}

/// Writes the `Date` header itself when a skew is set (hyper writes the true one only when
/// the response has none).
async fn skew_date_header(
    axum::extract::State(shared): axum::extract::State<AppState>,
    mut response: axum::response::Response,
) -> axum::response::Response {
    let skew = shared.lock().date_skew_secs;
    if skew != 0 {
        let at = std::time::UNIX_EPOCH
            .elapsed()
            .unwrap_or_default()
            .as_secs() as i64
            + skew;
        let format = time::macros::format_description!(
            "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
        );
        if let Some(value) = time::OffsetDateTime::from_unix_timestamp(at)
            .ok()
            .and_then(|t| t.format(&format).ok())
            .and_then(|v| axum::http::HeaderValue::from_str(&v).ok())
        {
            response
                .headers_mut()
                .insert(axum::http::header::DATE, value);
        }
    }
    response
}

/// One debug line per request: method, path (never the query, which may carry codes) and status.
async fn log_request(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    let response = next.run(request).await;
    tracing::debug!(%method, path, status = response.status().as_u16(), "request");
    response
}
