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

// The session checks refuse with the page or redirect to send (`Result<_, Response>`), used by
// every admin page; they keep that shape until the pages get an error type of their own.
#![allow(clippy::result_large_err)]

use crate::AppState;
use crate::html::{escape, page};
use axum::extract::{ConnectInfo, Form, FromRequestParts, Query, State};
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

/// A signed-in user, or a redirect to the login page.
pub struct Session {
    pub user: User,
    pub csrf: String,
    id_hash: String,
}

impl Session {
    /// Refuses a form whose CSRF token is missing or wrong.
    pub fn check_csrf(&self, form_token: Option<&str>) -> Result<(), Response> {
        match form_token {
            Some(t) if same_token(t, &self.csrf) => Ok(()),
            _ => Err(page(
                StatusCode::FORBIDDEN,
                "Form expired",
                "<h1 class=\"bad\">This form cannot be accepted</h1><p>It expired or came from another site (the CSRF check failed). Go back, reload the page and try again.</p>",
            )),
        }
    }

    pub fn require_admin(&self) -> Result<(), Response> {
        if self.user.role == Role::Admin {
            Ok(())
        } else {
            Err(page(
                StatusCode::FORBIDDEN,
                "Administrators only",
                "<h1 class=\"bad\">Administrators only</h1><p>Operators may authorize and test accounts, but only an administrator can change OAuth apps, mail accounts, users and API tokens.</p>",
            ))
        }
    }

    /// An administrator's form: the CSRF token checked first, then the role.
    pub fn admin_form(&self, form_token: Option<&str>) -> Result<(), Response> {
        self.check_csrf(form_token)
            .and_then(|()| self.require_admin())
    }

    /// Binds an authorization to this browser session (the callback must come back to it).
    pub fn initiator(&self) -> String {
        format!("session:{}", self.id_hash)
    }

    /// A hidden CSRF input for forms.
    pub fn csrf_field(&self) -> String {
        format!(
            "<input type=\"hidden\" name=\"csrf\" value=\"{}\">",
            escape(&self.csrf)
        )
    }
}

impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let to_login = || Redirect::to("/login").into_response();
        let Some(value) = read_cookie(&parts.headers, SESSION_COOKIE) else {
            return Err(to_login());
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
            Ok(None) => Err(to_login()),
            Err(e) => {
                tracing::error!(error = %e, "session lookup failed");
                Err((
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is unavailable",
                )
                    .into_response())
            }
        }
    }
}

async fn start_session(state: &AppState, user: &User) -> Result<String, Response> {
    let value = random::token(32).map_err(crate::html::random_failed)?;
    let csrf = random::token(32).map_err(crate::html::random_failed)?;
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
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "cannot create a session");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "the database is unavailable",
            )
                .into_response()
        })?;
    Ok(cookie(state, SESSION_COOKIE, &value, SESSION_SECS))
}

fn login_page(status: StatusCode, token: &str, username: &str, error: Option<&str>) -> Response {
    let err = error
        .map(|e| format!("<p class=\"bad\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    page(
        status,
        "Sign in",
        &format!(
            "<h1>Sign in to mailgate</h1>{err}<form method=\"post\" action=\"/login\">\
<input type=\"hidden\" name=\"login_token\" value=\"{t}\">\
<p><label>User name<br><input name=\"username\" value=\"{u}\" autocomplete=\"username\" required autofocus></label></p>\
<p><label>Password<br><input name=\"password\" type=\"password\" autocomplete=\"current-password\" required></label></p>\
<p><button type=\"submit\">Sign in</button></p></form>",
            t = escape(token),
            u = escape(username)
        ),
    )
}

pub async fn login_form(State(state): State<AppState>) -> Response {
    let token = match random::token(24) {
        Ok(t) => t,
        Err(e) => return crate::html::random_failed(e),
    };
    let mut resp = login_page(StatusCode::OK, &token, "", None);
    if let Ok(v) = cookie(&state, LOGIN_COOKIE, &token, 3600).parse() {
        resp.headers_mut().append(header::SET_COOKIE, v);
    }
    resp
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
) -> Response {
    let username = f.username.trim().to_owned();
    let cookie_token = read_cookie(&headers, LOGIN_COOKIE).unwrap_or_default();
    let form_token = f.login_token.unwrap_or_default();
    let fresh = match random::token(24) {
        Ok(t) => t,
        Err(e) => return crate::html::random_failed(e),
    };
    let retry = |status: StatusCode, msg: &str| {
        let mut r = login_page(status, &fresh, &username, Some(msg));
        if let Ok(v) = cookie(&state, LOGIN_COOKIE, &fresh, 3600).parse() {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
        r
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
            match start_session(&state, &user).await {
                Ok(c) => ([(header::SET_COOKIE, c)], Redirect::to("/admin")).into_response(),
                Err(r) => r,
            }
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

#[derive(Deserialize)]
pub struct CsrfForm {
    csrf: Option<String>,
}

pub async fn logout(
    State(state): State<AppState>,
    session: Session,
    Form(f): Form<CsrfForm>,
) -> Response {
    if let Err(r) = session.check_csrf(f.csrf.as_deref()) {
        return r;
    }
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

fn setup_page(status: StatusCode, token: &str, username: &str, error: Option<&str>) -> Response {
    let err = error
        .map(|e| format!("<p class=\"bad\" role=\"alert\">{}</p>", escape(e)))
        .unwrap_or_default();
    page(
        status,
        "Set up mailgate",
        &format!(
            "<h1>Create the first administrator</h1>{err}<form method=\"post\" action=\"/setup\">\
<input type=\"hidden\" name=\"token\" value=\"{t}\">\
<p><label>User name<br><input name=\"username\" value=\"{u}\" autocomplete=\"username\" required autofocus></label></p>\
<p><label>Password (at least {min} characters)<br><input name=\"password\" type=\"password\" autocomplete=\"new-password\" required></label></p>\
<p><label>Password again<br><input name=\"confirm\" type=\"password\" autocomplete=\"new-password\" required></label></p>\
<p><button type=\"submit\">Create administrator</button></p></form>",
            t = escape(token),
            u = escape(username),
            min = passwords::MIN_PASSWORD_CHARS
        ),
    )
}

const SETUP_USED: &str = "<h1 class=\"bad\">This setup link is not valid</h1><p>It was already used, or mailgate was restarted and printed a new one. If no administrator exists yet, use the link printed by <code>mailgate serve</code>; otherwise sign in at <a href=\"/login\">/login</a>.</p>";

const SETUP_EXPIRED: &str = "<h1 class=\"bad\">This setup link has expired</h1><p>A setup link is valid for a limited time (<code>setup_link_secs</code>, 24 hours by default). Restart <code>mailgate serve</code>: while no administrator exists it prints a new link. Or create the administrator on the server with <code>mailgate user add NAME --role admin --password-stdin</code>.</p>";

/// Whether `token` opens the setup page: the current token, not expired. Checked before
/// anything else (and before any hashing), so a stale or guessed link costs almost nothing.
async fn check_setup_token(state: &AppState, token: &str) -> Result<(), Response> {
    if token.is_empty() {
        return Err(page(StatusCode::NOT_FOUND, "Setup", SETUP_USED));
    }
    let issued_after = state.clock.now().plus_secs(-state.setup_link_secs);
    match state
        .store
        .setup_link(&random::sha256_hex(token), issued_after)
        .await
    {
        Ok(SetupLink::Valid) => Ok(()),
        Ok(SetupLink::Expired) => Err(page(StatusCode::GONE, "Setup", SETUP_EXPIRED)),
        Ok(SetupLink::Unknown) => Err(page(StatusCode::NOT_FOUND, "Setup", SETUP_USED)),
        Err(e) => {
            tracing::error!(error = %e, "setup token lookup failed");
            Err(page(
                StatusCode::SERVICE_UNAVAILABLE,
                "Setup",
                "<h1 class=\"bad\">The database is unavailable</h1><p>Try again shortly.</p>",
            ))
        }
    }
}

pub async fn setup_form(State(state): State<AppState>, Query(q): Query<SetupQuery>) -> Response {
    let token = q.token.unwrap_or_default();
    match check_setup_token(&state, &token).await {
        Ok(()) => setup_page(StatusCode::OK, &token, "", None),
        Err(r) => r,
    }
}

#[derive(Deserialize)]
pub struct SetupForm {
    token: String,
    username: String,
    password: String,
    confirm: String,
}

pub async fn setup(State(state): State<AppState>, Form(f): Form<SetupForm>) -> Response {
    if let Err(r) = check_setup_token(&state, &f.token).await {
        return r;
    }
    let username = f.username.trim().to_owned();
    let bad = |msg: &str| {
        setup_page(
            StatusCode::UNPROCESSABLE_ENTITY,
            &f.token,
            &username,
            Some(msg),
        )
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
            match start_session(&state, &user).await {
                Ok(c) => ([(header::SET_COOKIE, c)], Redirect::to("/admin")).into_response(),
                Err(r) => r,
            }
        }
        Ok(None) => page(StatusCode::NOT_FOUND, "Setup", SETUP_USED),
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
