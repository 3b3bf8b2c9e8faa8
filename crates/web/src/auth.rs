//! Sessions, CSRF, login, logout and first-run setup.
//!
//! * The session cookie `mg_session` is random (256 bits), HttpOnly, SameSite=Lax, Secure
//!   when the public URL is https; the database keeps only its SHA-256.
//! * Every form carries the session's CSRF token, compared in constant time.
//! * The login form has its own double-submit token (cookie `mg_login` + hidden field),
//!   since there is no session yet.
//! * Sign-in attempts are counted per (user name, client address) before the password is
//!   checked; the 5th failure in 15 minutes locks that pair for 15 minutes, each further
//!   lock twice as long (at most a day). Behind a reverse proxy the client address comes
//!   from `X-Forwarded-For`, only when the proxy is listed in `trusted_proxies`.
//! * argon2 runs on the blocking pool, never on the async workers.
//! * The first administrator is created through a one-time setup link printed by `serve`;
//!   it expires after `setup_link_secs` (24 h), and its token is checked before any hashing.

use crate::AppState;
use crate::html::{Frame, FrameUser, Nav, PageError, SetupProblem, render};
use askama::Template;
use axum::extract::{
    ConnectInfo, Form, FromRequest, FromRequestParts, OptionalFromRequestParts, Query, Request,
    State,
};
use axum::http::{HeaderMap, StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Redirect, Response};
use mailgate_core::Secret;
use mailgate_core::user::{Role, User, Username, parse_new_password};
use mailgate_oauth::random;
use mailgate_store::passwords;
use mailgate_store::{LoginAttempt, LoginThrottle, SetupLink};
use serde::Deserialize;
use std::net::{IpAddr, SocketAddr};

pub const SESSION_COOKIE: &str = "mg_session";
const LOGIN_COOKIE: &str = "mg_login";
/// Twelve hours: a working day, after which the administrator signs in again.
pub const SESSION_SECS: i64 = 12 * 3600;

fn cookie(state: &AppState, name: &str, value: &str, max_age: i64) -> String {
    let secure = if state.public_url.is_https() {
        "; Secure"
    } else {
        ""
    };
    format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={max_age}{secure}")
}

pub(crate) fn read_cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Constant-time comparison for tokens.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// A signed-in user, or a redirect to the login page. Handlers take one of the extractors
/// below rather than this, so the role and the CSRF token are checked before they run.
pub struct Session {
    pub user: User,
    pub csrf: String,
    id_hash: String,
}

impl Session {
    fn check_csrf(&self, form_token: Option<&str>) -> Result<(), PageError> {
        match form_token {
            Some(t) if same_token(t, &self.csrf) => Ok(()),
            _ => Err(PageError::FormExpired),
        }
    }

    fn require_admin(&self) -> Result<(), PageError> {
        if self.user.role == Role::Admin {
            Ok(())
        } else {
            Err(PageError::AdminsOnly)
        }
    }

    pub fn is_admin(&self) -> bool {
        self.user.role == Role::Admin
    }

    /// Binds an authorization to this browser session (the callback must come back to it).
    pub fn initiator(&self) -> String {
        format!("session:{}", self.id_hash)
    }

    /// The frame of a page this user sees, with `current` marked in the navigation.
    pub fn frame(&self, current: Nav) -> Frame {
        Frame {
            user: Some(FrameUser {
                username: self.user.username.to_string(),
                role: self.user.role,
                csrf: self.csrf.clone(),
            }),
            current,
        }
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let Some(value) = read_cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(PageError::SignIn);
        };
        let id_hash = random::sha256_hex(value);
        match state.store.session(&id_hash, state.clock.now()).await {
            Ok(Some(s)) => {
                // The audit trail: this request's changes are this user's.
                mailgate_store::audit::identify(s.user.username.to_string());
                Ok(Session {
                    user: s.user,
                    csrf: s.csrf,
                    id_hash,
                })
            }
            Ok(None) => Err(PageError::SignIn),
            Err(e) => {
                tracing::error!(error = %e, "session lookup failed");
                Err(PageError::Unavailable)
            }
        }
    }
}

/// A session if the browser has a valid one, none otherwise (the callback page, reached
/// with or without one).
impl OptionalFromRequestParts<AppState> for Session {
    type Rejection = PageError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Option<Self>, Self::Rejection> {
        match <Session as FromRequestParts<AppState>>::from_request_parts(parts, state).await {
            Ok(s) => Ok(Some(s)),
            Err(PageError::SignIn) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Any signed-in user (operator or administrator): the pages everyone may see.
pub struct OperatorSession(pub Session);

impl FromRequestParts<AppState> for OperatorSession {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        <Session as FromRequestParts<AppState>>::from_request_parts(parts, state)
            .await
            .map(OperatorSession)
    }
}

/// A signed-in administrator; an operator gets the "Administrators only" page.
pub struct AdminSession(pub Session);

impl FromRequestParts<AppState> for AdminSession {
    type Rejection = PageError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, PageError> {
        let session =
            <Session as FromRequestParts<AppState>>::from_request_parts(parts, state).await?;
        session.require_admin()?;
        Ok(AdminSession(session))
    }
}

/// The body of a form, read once: its CSRF token (field `csrf`) and the form itself,
/// parsed as `T` by axum's form reader.
async fn read_form<T: serde::de::DeserializeOwned>(
    req: Request,
    state: &AppState,
) -> Result<(Session, Option<String>, T), PageError> {
    let (mut parts, body) = req.into_parts();
    let session =
        <Session as FromRequestParts<AppState>>::from_request_parts(&mut parts, state).await?;
    let bytes = axum::body::to_bytes(body, FORM_BODY_LIMIT)
        .await
        .map_err(|_| bad_form("the form is too large or was cut off"))?;
    let csrf = url::form_urlencoded::parse(&bytes)
        .find(|(k, _)| k == "csrf")
        .map(|(_, v)| v.into_owned());
    let request = Request::from_parts(parts, axum::body::Body::from(bytes));
    let Form(form) = Form::<T>::from_request(request, state)
        .await
        .map_err(|e| bad_form(&e.body_text()))?;
    Ok((session, csrf, form))
}

/// Forms are small; a body past this is refused before it is parsed.
const FORM_BODY_LIMIT: usize = 256 * 1024;

fn bad_form(why: &str) -> PageError {
    PageError::Other {
        status: StatusCode::BAD_REQUEST,
        title: "The form could not be read".into(),
        message: format!("{why}. Nothing was saved."),
    }
}

/// An administrator's form: the session, then the CSRF token, then the role, then the
/// form parsed as `T`. A handler taking it cannot forget one of the checks.
pub struct AdminForm<T>(pub Session, pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for AdminForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        let (session, csrf, form) = read_form::<T>(req, state).await?;
        session.check_csrf(csrf.as_deref())?;
        session.require_admin()?;
        Ok(AdminForm(session, form))
    }
}

/// A form any signed-in user may send (authorize, test, sign out): the session and the
/// CSRF token checked, the form parsed as `T`.
pub struct OperatorForm<T>(pub Session, pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<AppState> for OperatorForm<T> {
    type Rejection = PageError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, PageError> {
        let (session, csrf, form) = read_form::<T>(req, state).await?;
        session.check_csrf(csrf.as_deref())?;
        Ok(OperatorForm(session, form))
    }
}

/// A form with nothing but its CSRF token.
#[derive(serde::Deserialize)]
pub struct NoFields {}

async fn start_session(state: &AppState, user: &User) -> Result<String, PageError> {
    let value = random::token(32)?;
    let csrf = random::token(32)?;
    let now = state.clock.now();
    state
        .store
        .create_session(
            &random::sha256_hex(&value),
            user.id,
            &csrf,
            now,
            now.plus_secs(SESSION_SECS),
        )
        .await?;
    Ok(cookie(state, SESSION_COOKIE, &value, SESSION_SECS))
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    frame: Frame,
    title: &'a str,
    token: &'a str,
    username: &'a str,
    error: Option<&'a str>,
}

fn login_page(status: StatusCode, token: &str, username: &str, error: Option<&str>) -> Response {
    render(
        status,
        &LoginPage {
            frame: Frame::public(),
            title: "Sign in",
            token,
            username,
            error,
        },
    )
}

pub async fn login_form(State(state): State<AppState>) -> Result<Response, PageError> {
    let token = random::token(24)?;
    let mut resp = login_page(StatusCode::OK, &token, "", None);
    if let Ok(v) = cookie(&state, LOGIN_COOKIE, &token, 3600).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    Ok(resp)
}

#[derive(Deserialize)]
pub struct LoginForm {
    username: String,
    password: String,
    login_token: Option<String>,
}

pub async fn login(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Result<Response, PageError> {
    let username = f.username.trim().to_owned();
    let cookie_token = read_cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let form_token = f.login_token.unwrap_or_default();
    let fresh = random::token(24)?;
    let retry = |status: StatusCode, msg: &str| {
        let mut r = login_page(status, &fresh, &username, Some(msg));
        if let Ok(v) = cookie(&state, LOGIN_COOKIE, &fresh, 3600).parse() {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        Ok(r)
    };
    if cookie_token.is_empty() || !same_token(cookie_token, &form_token) {
        return retry(
            StatusCode::FORBIDDEN,
            "The sign-in form expired or came from another site. Please try again.",
        );
    }
    let now = state.clock.now();
    let source = client_address(peer.ip(), &headers, &state.trusted_proxies);
    // One key per (user name, source): a flood from one address locks only that address
    // out of that name, so the real administrator elsewhere still signs in.
    let key = format!("user:{}|from:{source}", username.to_lowercase());
    // The attempt is counted before the password is checked, so parallel guesses cannot
    // all slip in before the first failure is recorded.
    let locks_if_wrong = match state
        .store
        .reserve_login_attempt(&key, LoginThrottle::default(), now)
        .await
    {
        Ok(LoginAttempt::Allowed { locks_if_wrong }) => locks_if_wrong,
        Ok(LoginAttempt::Locked { until }) => {
            return retry(
                StatusCode::TOO_MANY_REQUESTS,
                &format!("Too many failed sign-ins. Try again after {until} (UTC)."),
            );
        }
        Err(e) => {
            tracing::error!(error = %e, "login throttle failed");
            return retry(
                StatusCode::SERVICE_UNAVAILABLE,
                "The database is unavailable; try again shortly.",
            );
        }
    };
    let password = Secret::new(f.password);
    let found = state.store.user_for_login(&username).await.ok().flatten();
    // Same work for unknown names, so timing does not reveal which names exist.
    let stored = found
        .as_ref()
        .map(|(_, hash)| hash.clone())
        .unwrap_or_else(|| passwords::dummy_hash().to_owned());
    let ok = passwords::verify_off_thread(password, stored).await && found.is_some();
    match (ok, found) {
        (true, Some((user, _))) => {
            let _ = state.store.clear_login_failures(&key).await;
            tracing::info!(user = %user.username, "signed in");
            let c = start_session(&state, &user).await?;
            Ok(([(header::SET_COOKIE, c)], Redirect::to("/admin")).into_response())
        }
        _ => {
            tracing::warn!(%username, %source, "failed sign-in");
            match locks_if_wrong {
                Some(until) => retry(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!(
                        "Too many failed sign-ins: sign-in for this name from your address is locked until {until} (UTC)."
                    ),
                ),
                None => retry(StatusCode::UNAUTHORIZED, "Wrong user name or password."),
            }
        }
    }
}

/// The address a request came from, for the lock-out and the log. The connection's peer,
/// unless the peer is a trusted reverse proxy (`trusted_proxies`): then the right-most
/// `X-Forwarded-For` entry that is not itself a trusted proxy. Entries left of that one
/// were written by the client and prove nothing. Without trusted proxies the header is
/// ignored, so nobody picks their own address by sending it.
pub fn client_address(peer: IpAddr, headers: &HeaderMap, trusted: &[ipnet::IpNet]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let mut client = peer;
    for entry in forwarded.iter().rev() {
        match entry.parse::<IpAddr>() {
            Ok(ip) if is_trusted(&ip) => client = ip,
            Ok(ip) => return ip,
            // A malformed hop: stop at the last address vouched for.
            Err(_) => return client,
        }
    }
    client
}

pub async fn logout(
    State(state): State<AppState>,
    OperatorForm(session, NoFields {}): OperatorForm<NoFields>,
) -> Response {
    let _ = state.store.delete_session(&session.id_hash).await;
    (
        [(header::SET_COOKIE, cookie(&state, SESSION_COOKIE, "", 0))],
        Redirect::to("/login"),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct SetupQuery {
    token: Option<String>,
}

#[derive(Template)]
#[template(path = "setup.html")]
struct SetupPage<'a> {
    frame: Frame,
    title: &'a str,
    token: &'a str,
    username: &'a str,
    error: Option<&'a str>,
    min_chars: usize,
}

fn setup_page(status: StatusCode, token: &str, username: &str, error: Option<&str>) -> Response {
    render(
        status,
        &SetupPage {
            frame: Frame::public(),
            title: "Set up mailgate",
            token,
            username,
            error,
            min_chars: passwords::MIN_PASSWORD_CHARS,
        },
    )
}

/// Whether `token` opens the setup page: the current token, not expired. Checked before
/// anything else (and before any hashing), so a stale or guessed link costs almost nothing.
async fn check_setup_token(state: &AppState, token: &str) -> Result<(), PageError> {
    if token.is_empty() {
        return Err(PageError::SetupLink(SetupProblem::Used));
    }
    let issued_after = state.clock.now().plus_secs(-state.setup_link_secs);
    match state
        .store
        .setup_link(&random::sha256_hex(token), issued_after)
        .await
    {
        Ok(SetupLink::Valid) => Ok(()),
        Ok(SetupLink::Expired) => Err(PageError::SetupLink(SetupProblem::Expired)),
        Ok(SetupLink::Unknown) => Err(PageError::SetupLink(SetupProblem::Used)),
        Err(e) => {
            tracing::error!(error = %e, "setup token lookup failed");
            Err(PageError::Unavailable)
        }
    }
}

pub async fn setup_form(
    State(state): State<AppState>,
    Query(q): Query<SetupQuery>,
) -> Result<Response, PageError> {
    let token = q.token.unwrap_or_default();
    check_setup_token(&state, &token).await?;
    Ok(setup_page(StatusCode::OK, &token, "", None))
}

#[derive(Deserialize)]
pub struct SetupForm {
    token: String,
    username: String,
    password: String,
    confirm: String,
}

pub async fn setup(
    State(state): State<AppState>,
    Form(f): Form<SetupForm>,
) -> Result<Response, PageError> {
    check_setup_token(&state, &f.token).await?;
    let username = f.username.trim().to_owned();
    let bad = |msg: &str| {
        Ok(setup_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &f.token,
            &username,
            Some(msg),
        ))
    };
    // The rules of the users page and `mailgate user add`.
    if let Err(e) = Username::parse(&username) {
        return bad(&format!("User name: {}.", e.expected));
    }
    let password = match parse_new_password(&f.password, Some(&f.confirm)) {
        Ok(p) => p,
        Err(e) if e.field == "password" => return bad(&format!("Password: {}.", e.message)),
        Err(e) => return bad(&format!("Password again: {}.", e.message)),
    };
    let hash = match passwords::hash_off_thread(password).await {
        Ok(h) => h,
        Err(e) => {
            tracing::error!(error = %e, "password hashing failed");
            return bad("The password could not be stored; try again.");
        }
    };
    let now = state.clock.now();
    match state
        .store
        .create_first_admin(
            &random::sha256_hex(&f.token),
            now.plus_secs(-state.setup_link_secs),
            &username,
            &hash,
            now,
        )
        .await
    {
        Ok(Some(user)) => {
            tracing::info!(user = %user.username, "first administrator created");
            let c = start_session(&state, &user).await?;
            Ok(([(header::SET_COOKIE, c)], Redirect::to("/admin")).into_response())
        }
        Ok(None) => Err(PageError::SetupLink(SetupProblem::Used)),
        Err(e) => {
            tracing::error!(error = %e, "creating the first administrator failed");
            bad("The database is unavailable; try again.")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn forwarded(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", value.parse().unwrap());
        h
    }

    #[test]
    fn client_address_believes_only_trusted_proxies() {
        let proxy: IpAddr = "10.0.0.2".parse().unwrap();
        let trusted: Vec<ipnet::IpNet> = vec!["10.0.0.0/24".parse().unwrap()];
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        // No trusted proxies: the header is ignored.
        assert_eq!(client_address(proxy, &forwarded("203.0.113.9"), &[]), proxy);
        // Untrusted peer: ignored too.
        let stranger = ip("198.51.100.1");
        assert_eq!(
            client_address(stranger, &forwarded("203.0.113.9"), &trusted),
            stranger
        );
        // Trusted peer: the right-most entry that is not a trusted proxy.
        assert_eq!(
            client_address(
                proxy,
                &forwarded("1.2.3.4, 203.0.113.9, 10.0.0.7"),
                &trusted
            ),
            ip("203.0.113.9")
        );
        // Several headers are one list, in order.
        let mut two = forwarded("1.2.3.4");
        two.append("x-forwarded-for", "203.0.113.10".parse().unwrap());
        assert_eq!(client_address(proxy, &two, &trusted), ip("203.0.113.10"));
        // Only proxies (or no header): the last proxy vouched for; garbage stops the walk.
        assert_eq!(
            client_address(proxy, &forwarded("10.0.0.9"), &trusted),
            ip("10.0.0.9")
        );
        assert_eq!(client_address(proxy, &HeaderMap::new(), &trusted), proxy);
        assert_eq!(
            client_address(proxy, &forwarded("203.0.113.9, not-an-ip"), &trusted),
            proxy
        );
    }
}
