//! The legacy proxy: password-only mail clients (old ERPs, scanners, monitoring tools) log
//! in to mailgate with the account's proxy password, and mailgate opens the account's real
//! server with an OAuth token from the engine, then relays bytes both ways.
//!
//! A session has two phases:
//!
//! ```text
//!   accept ──▶ pre-login: mailgate answers itself ──LOGIN ok──▶ open upstream (XOAUTH2)
//!                 (greeting, CAPABILITY, NOOP,                         │
//!                  LOGIN, AUTHENTICATE PLAIN, LOGOUT)                  ▼
//!                 bounded line, login timeout               relay bytes both ways
//! ```
//!
//! Before login the client's lines are read by `mailgate_proto::proxy` (pure, bounded);
//! after it nothing is parsed: `copy::copy_both_ways` streams through an 8 KiB buffer per
//! direction, held only while bytes are in flight, so a large FETCH is never held whole and
//! an idle session holds no buffer. The client's password is only hashed and compared: it
//! never goes upstream or into a log or event.

mod copy;
mod imap;
mod pop3;
mod smtp;

use crate::Failure;
use crate::config::Config;
use mailgate_core::event::EventKind;
use mailgate_core::{AccountState, Clock, MailAccount, SystemClock};
use mailgate_grants::Engine;
use mailgate_mail::TlsSettings;
use mailgate_proto::proxy::ClientLines;
use mailgate_store::Store;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::Instant;

/// Open proxy connections at most (each holds two sockets once relaying).
const MAX_CONNECTIONS: usize = 1000;
/// Failed logins on one connection before it is closed.
const MAX_FAILED_LOGINS: u32 = 3;
/// How long opening the account's server (DNS, TCP, TLS, XOAUTH2) may take.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// How often relaying sessions are checked against the stored proxy passwords: the CLI
/// that revokes one runs in another process, so the server looks rather than being told.
const PASSWORD_CHECK_EVERY: Duration = Duration::from_secs(2);

/// What every proxy session needs.
pub struct ProxyContext {
    pub store: Arc<Store>,
    pub engine: Arc<Engine>,
    pub tls: TlsSettings,
    /// Sessions relaying now, by a number of their own.
    pub live: std::sync::Mutex<LiveSessions>,
    /// Recent failed logins per source address and per login name.
    pub failures: std::sync::Mutex<FailureThrottle>,
    /// From connecting to a successful login (`proxy_login_timeout_secs`).
    pub login_timeout: Duration,
    /// No byte either way for this long ends a relaying session (`proxy_idle_timeout_secs`).
    pub idle_timeout: Duration,
    /// Sessions one account may have at once (`proxy_max_sessions_per_account`).
    pub max_sessions_per_account: usize,
}

/// Failed logins a source address, or a login name, may have within
/// [`FAILURE_WINDOW`]; beyond, logins are refused without looking at the password until
/// the window has passed. Guessing a 192-bit password is hopeless anyway: this keeps a
/// misconfigured client from filling the events table and the log.
const MAX_FAILURES: u32 = 10;
const FAILURE_WINDOW: Duration = Duration::from_secs(15 * 60);
/// Keys remembered at most; beyond, the oldest windows are forgotten first.
const MAX_FAILURE_KEYS: usize = 10_000;

/// Counts failures per key in fixed windows. Time is a parameter, so it is tested without
/// sleeping.
#[derive(Default)]
pub struct FailureThrottle {
    entries: std::collections::HashMap<String, (u32, Instant)>,
}

impl FailureThrottle {
    fn blocked(&self, key: &str, now: Instant) -> bool {
        self.entries.get(key).is_some_and(|(count, since)| {
            *count >= MAX_FAILURES && now.duration_since(*since) < FAILURE_WINDOW
        })
    }

    fn record(&mut self, key: String, now: Instant) {
        if self.entries.len() >= MAX_FAILURE_KEYS && !self.entries.contains_key(&key) {
            self.entries
                .retain(|_, (_, since)| now.duration_since(*since) < FAILURE_WINDOW);
            if self.entries.len() >= MAX_FAILURE_KEYS {
                let oldest = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, since))| *since)
                    .map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        let entry = self.entries.entry(key).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_WINDOW {
            *entry = (0, now);
        }
        entry.0 += 1;
    }
}

fn source_key(peer: SocketAddr) -> String {
    format!("source {}", peer.ip())
}

fn login_key(login: &str) -> String {
    format!("login {}", shorten(&login.trim().to_lowercase()))
}

/// The relaying sessions and the password each logged in with.
#[derive(Default)]
pub struct LiveSessions {
    next_id: u64,
    sessions: std::collections::HashMap<u64, LiveSession>,
}

struct LiveSession {
    account: mailgate_core::AccountId,
    password_hash: String,
    end: Arc<tokio::sync::Notify>,
}

/// A relaying session's entry; removed when dropped.
pub(crate) struct LiveGuard<'a> {
    ctx: &'a ProxyContext,
    id: u64,
    pub(crate) end: Arc<tokio::sync::Notify>,
}

impl Drop for LiveGuard<'_> {
    fn drop(&mut self) {
        if let Ok(mut live) = self.ctx.live.lock() {
            live.sessions.remove(&self.id);
        }
    }
}

/// Why a login is refused; each protocol words it its own way.
#[derive(Debug)]
pub(crate) enum Refusal {
    /// Unknown login, or not that account's current proxy password.
    BadCredentials,
    /// The account cannot be used until an administrator acts (`code` says what to do):
    /// re-authorization, enabling it, an inbound server of the right protocol.
    NeedsAdmin { code: String },
    /// The account's server refused mailgate's fresh token.
    UpstreamRefused { code: String },
    /// Transient trouble (network, the provider's token endpoint): try again later.
    Unavailable { code: String },
}

impl Refusal {
    /// The refusal's words after the protocol's own prefix: `refused` for a login that will
    /// not succeed as it is (IMAP `NO [AUTHENTICATIONFAILED]`, POP3 `-ERR [AUTH]`, SMTP
    /// `535 5.7.8`), `temporary` for passing trouble (`NO [UNAVAILABLE]`, `-ERR [SYS/TEMP]`,
    /// `454 4.7.0`). The sentence and its code are the same in every protocol.
    pub(crate) fn reply(&self, refused: &str, temporary: &str) -> String {
        match self {
            Refusal::BadCredentials => {
                format!("{refused} wrong login or proxy password (code: wrong_proxy_password)")
            }
            Refusal::NeedsAdmin { code } => {
                format!("{refused} the account needs an administrator in mailgate (code: {code})")
            }
            Refusal::UpstreamRefused { code } => {
                format!("{refused} the mail server refused mailgate's token (code: {code})")
            }
            Refusal::Unavailable { code } => format!(
                "{temporary} the mail server cannot be reached now; try again later (code: {code})"
            ),
        }
    }
}

impl ProxyContext {
    /// Checks a login (mailbox address or account name, and the proxy password) and whether
    /// the account can be used now. A refused login is recorded as an event.
    pub(crate) async fn check_login(
        &self,
        protocol: &str,
        peer: SocketAddr,
        login: &str,
        password: &str,
    ) -> Result<(MailAccount, LiveGuard<'_>), Refusal> {
        let throttled = self.failures.lock().is_ok_and(|f| {
            let now = Instant::now();
            f.blocked(&source_key(peer), now) || f.blocked(&login_key(login), now)
        });
        if throttled {
            tracing::info!(%peer, "proxy login refused: too many failed logins");
            return Err(Refusal::Unavailable {
                code: "proxy_login_throttled".into(),
            });
        }
        let hash = mailgate_oauth::random::sha256_hex(password);
        let account = match self.store.account_by_proxy_login(login, &hash).await {
            Ok(Some(account)) => account,
            Ok(None) => {
                if let Ok(mut failures) = self.failures.lock() {
                    let now = Instant::now();
                    failures.record(source_key(peer), now);
                    failures.record(login_key(login), now);
                }
                self.refused(
                    None,
                    &format!(
                        "{protocol} proxy login as {:?} from {} refused: unknown login or wrong proxy password",
                        shorten(login),
                        peer.ip()
                    ),
                )
                .await;
                return Err(Refusal::BadCredentials);
            }
            Err(e) => {
                tracing::warn!(error = %e, "proxy login lookup failed");
                return Err(Refusal::Unavailable {
                    code: "database_unavailable".into(),
                });
            }
        };
        // Refused at once, without a call to the provider: only an administrator helps.
        let unusable = match account.state {
            AccountState::ReauthRequired => Some(
                account
                    .last_problem
                    .as_ref()
                    .map(|p| p.code.clone())
                    .unwrap_or_else(|| "reauth_required".into()),
            ),
            AccountState::Disabled => Some("account_disabled".into()),
            AccountState::Unauthorized => Some("not_authorized".into()),
            AccountState::Active | AccountState::Refreshing => None,
        };
        if let Some(code) = unusable {
            self.refused(
                Some(&account),
                &format!(
                    "{protocol} proxy login from {} refused: the account is {} ({code})",
                    peer.ip(),
                    account.state
                ),
            )
            .await;
            return Err(Refusal::NeedsAdmin { code });
        }
        // Counted from here, before the server is opened, so a burst of logins cannot
        // overshoot the limit; the guard gives the place back on any failure.
        let Some(live) = self.register(&account, password) else {
            self.refused(
                Some(&account),
                &format!(
                    "{protocol} proxy login from {} refused: the account already has {} proxy sessions (proxy_max_sessions_per_account)",
                    peer.ip(),
                    self.max_sessions_per_account
                ),
            )
            .await;
            return Err(Refusal::Unavailable {
                code: "too_many_proxy_sessions".into(),
            });
        };
        Ok((account, live))
    }

    /// Words an upstream failure for the client, re-reading the account: a refresh that the
    /// provider refused has moved it to `reauth_required` meanwhile.
    pub(crate) async fn upstream_failed(
        &self,
        protocol: &str,
        peer: SocketAddr,
        account: &MailAccount,
        e: &mailgate_mail::MailError,
    ) -> Refusal {
        let code = e
            .oauth
            .map(|(code, _)| code.to_owned())
            .unwrap_or_else(|| e.remedy.code().to_owned());
        self.refused(
            Some(account),
            &format!(
                "{protocol} proxy login from {}: opening the account's server failed ({code}): {}",
                peer.ip(),
                e.detail
            ),
        )
        .await;
        let now = self.store.account(account.id).await.ok();
        match now.map(|a| a.state) {
            Some(AccountState::ReauthRequired) => Refusal::NeedsAdmin { code },
            _ if e.remedy == mailgate_mail::remedy::MailRemedy::AuthFailed => {
                Refusal::UpstreamRefused { code }
            }
            _ => Refusal::Unavailable { code },
        }
    }

    /// Registers a session that is about to relay for `account`, logged in with `password`.
    /// `None` when the account has its maximum of sessions already.
    pub(crate) fn register(&self, account: &MailAccount, password: &str) -> Option<LiveGuard<'_>> {
        let end = Arc::new(tokio::sync::Notify::new());
        let id = match self.live.lock() {
            Ok(mut live) => {
                let open = live
                    .sessions
                    .values()
                    .filter(|s| s.account == account.id)
                    .count();
                if open >= self.max_sessions_per_account {
                    return None;
                }
                live.next_id += 1;
                let id = live.next_id;
                live.sessions.insert(
                    id,
                    LiveSession {
                        account: account.id,
                        password_hash: mailgate_oauth::random::sha256_hex(password),
                        end: end.clone(),
                    },
                );
                id
            }
            // A poisoned lock means a panic elsewhere; the session still runs, unwatched.
            Err(_) => 0,
        };
        Some(LiveGuard { ctx: self, id, end })
    }

    /// Ends, every [`PASSWORD_CHECK_EVERY`], the sessions whose proxy password has been
    /// revoked or replaced (or whose account was removed) since they logged in.
    pub async fn end_revoked_sessions(
        self: Arc<Self>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        loop {
            tokio::select! {
                () = tokio::time::sleep(PASSWORD_CHECK_EVERY) => {}
                _ = stop.changed() => return,
            }
            let watched = self
                .live
                .lock()
                .map(|l| !l.sessions.is_empty())
                .unwrap_or(false);
            if !watched {
                continue;
            }
            let current = match self.store.proxy_password_hashes().await {
                Ok(current) => current,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot read the proxy passwords");
                    continue;
                }
            };
            let Ok(live) = self.live.lock() else { return };
            for session in live.sessions.values() {
                let still_valid = current
                    .iter()
                    .any(|(id, hash)| *id == session.account && *hash == session.password_hash);
                if !still_valid {
                    tracing::info!(account = %session.account, "proxy password revoked or replaced: ending its session");
                    session.end.notify_one();
                }
            }
        }
    }

    /// A login for an account that has no server of this proxy's protocol: recorded, and
    /// refused with `code` (e.g. `no_imap_server`) for an administrator to act on.
    pub(crate) async fn no_server(
        &self,
        protocol: &str,
        account: &MailAccount,
        peer: SocketAddr,
        lacks: &str,
        code: &str,
    ) -> Refusal {
        self.refused(
            Some(account),
            &format!("{protocol} proxy login from {} refused: {lacks}", peer.ip()),
        )
        .await;
        Refusal::NeedsAdmin { code: code.into() }
    }

    async fn refused(&self, account: Option<&MailAccount>, message: &str) {
        tracing::info!(message, "proxy login refused");
        if let Err(e) = self
            .store
            .record_event(
                SystemClock.now(),
                EventKind::ProxyLoginFailed,
                account.map(|a| a.spec.app_id),
                account.map(|a| a.id),
                message,
            )
            .await
        {
            tracing::warn!(error = %e, "cannot record a refused proxy login");
        }
    }
}

/// A client-chosen login in an event: bounded, so a client cannot fill the events table.
fn shorten(login: &str) -> String {
    login.chars().take(80).collect()
}

/// The protocols the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Imap,
    Pop3,
    Smtp,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Imap => "IMAP",
            Protocol::Pop3 => "POP3",
            Protocol::Smtp => "SMTP",
        }
    }

    fn setting(self) -> &'static str {
        match self {
            Protocol::Imap => "proxy_imap_listen / MAILGATE_PROXY_IMAP_LISTEN",
            Protocol::Pop3 => "proxy_pop3_listen / MAILGATE_PROXY_POP3_LISTEN",
            Protocol::Smtp => "proxy_smtp_listen / MAILGATE_PROXY_SMTP_LISTEN",
        }
    }

    /// What a client over the connection limit reads before the close.
    fn busy_line(self) -> &'static [u8] {
        match self {
            Protocol::Imap => {
                b"* BYE [UNAVAILABLE] mailgate proxy: too many connections, try again later\r\n"
            }
            Protocol::Pop3 => {
                b"-ERR [SYS/TEMP] mailgate proxy: too many connections, try again later\r\n"
            }
            Protocol::Smtp => {
                b"421 4.7.0 mailgate proxy: too many connections, try again later\r\n"
            }
        }
    }
}

/// The listeners' TLS (implicit, as on ports 993/995/465) from the configured certificate
/// chain and key; `None` when not configured.
fn tls_acceptor(config: &Config) -> Result<Option<tokio_rustls::TlsAcceptor>, Failure> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let (Some(cert_file), Some(key_file)) =
        (&config.proxy_tls_cert_file, &config.proxy_tls_key_file)
    else {
        return Ok(None);
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(cert_file)
        .and_then(|certs| certs.collect::<Result<_, _>>())
        .map_err(|e| {
            Failure::BadInput(format!(
                "proxy_tls_cert_file: cannot read certificates from {}: {e}",
                cert_file.display()
            ))
        })?;
    if certs.is_empty() {
        return Err(Failure::BadInput(format!(
            "proxy_tls_cert_file: {} holds no PEM certificate",
            cert_file.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| {
        Failure::BadInput(format!(
            "proxy_tls_key_file: cannot read a private key from {}: {e}",
            key_file.display()
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
        .map_err(|e| {
            Failure::BadInput(format!(
                "proxy_tls_key_file: the key does not fit the certificate or is unusable: {e}"
            ))
        })?;
    Ok(Some(tokio_rustls::TlsAcceptor::from(Arc::new(server))))
}

/// A bound listener and its TLS, if any.
pub struct ProxyListener {
    pub protocol: Protocol,
    pub listener: TcpListener,
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// With `tls`: the client starts in plain text and upgrades with STARTTLS
    /// (`proxy_*_starttls`); without, the handshake comes first (implicit TLS).
    pub starttls: bool,
}

impl ProxyListener {
    /// "IMAP on 127.0.0.1:1143 (TLS)", for the dashboard.
    pub fn describe(&self) -> String {
        let addr = self
            .listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".into());
        let security = match (&self.tls, self.starttls) {
            (Some(_), true) => "STARTTLS",
            (Some(_), false) => "TLS",
            (None, _) => "plain",
        };
        format!("{} on {addr} ({security})", self.protocol.name())
    }
}

/// Binds the configured listeners. Without TLS, plain text is refused off loopback unless
/// `proxy_allow_plain` says the network in between is trusted.
pub async fn bind(config: &Config) -> Result<Vec<ProxyListener>, Failure> {
    let tls = tls_acceptor(config)?;
    let mut bound = Vec::new();
    for (protocol, addr) in [
        (Protocol::Imap, config.proxy_imap_listen),
        (Protocol::Smtp, config.proxy_smtp_listen),
        (Protocol::Pop3, config.proxy_pop3_listen),
    ] {
        let Some(addr) = addr else { continue };
        let setting = protocol.setting();
        if tls.is_none() && !addr.ip().is_loopback() && !config.proxy_allow_plain {
            return Err(Failure::BadInput(format!(
                "{setting}: {addr} is not a loopback address, and the proxy would take passwords in plain text there; \
                 listen on 127.0.0.1, configure proxy_tls_cert_file and proxy_tls_key_file, or set proxy_allow_plain = true (MAILGATE_PROXY_ALLOW_PLAIN) if the network in between is trusted"
            )));
        }
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| Failure::Runtime(format!("cannot listen on {addr} ({setting}): {e}")))?;
        bound.push(ProxyListener {
            protocol,
            listener,
            tls: tls.clone(),
            starttls: match protocol {
                Protocol::Imap => config.proxy_imap_starttls,
                Protocol::Pop3 => config.proxy_pop3_starttls,
                Protocol::Smtp => config.proxy_smtp_starttls,
            },
        });
    }
    Ok(bound)
}

/// Accepts proxy clients until `stop`; open sessions end with the task.
pub async fn run(
    bound: ProxyListener,
    ctx: Arc<ProxyContext>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let ProxyListener {
        protocol,
        listener,
        tls,
        starttls,
    } = bound;
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let mut sessions = tokio::task::JoinSet::new();
    loop {
        while sessions.try_join_next().is_some() {}
        let (mut stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // EMFILE and friends: never spin.
                    tracing::warn!(error = %e, "accepting a proxy connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            // A change is the stop signal (or the sender is gone): either way, stop.
            _ = stop.changed() => break,
        };
        // Commands and replies are small and interactive: send each at once.
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "cannot set TCP_NODELAY on a proxy connection");
        }
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Full: say so and close, rather than keep the client waiting unanswered.
            if tls.is_none() || starttls {
                tokio::spawn(async move {
                    let _ = stream.write_all(protocol.busy_line()).await;
                });
            }
            continue;
        };
        let ctx = ctx.clone();
        let tls = tls.clone();
        sessions.spawn(async move {
            let _slot = slot;
            let ended = match tls {
                None => session(protocol, &ctx, stream, peer, Phase::Plain).await.map(|_| ()),
                Some(tls) if starttls => with_starttls(protocol, &ctx, &tls, stream, peer).await,
                // The handshake counts against the login timeout.
                Some(tls) => match tokio::time::timeout(ctx.login_timeout, tls.accept(stream)).await {
                    Ok(Ok(stream)) => session(protocol, &ctx, stream, peer, Phase::Plain).await.map(|_| ()),
                    Ok(Err(e)) => Err(format!("TLS handshake failed: {e}")),
                    Err(_) => Err("no TLS handshake within the login timeout".into()),
                },
            };
            if let Err(e) = ended {
                tracing::debug!(error = %e, %peer, protocol = protocol.name(), "proxy session ended");
            }
        });
    }
    // Dropping the set aborts the open sessions: their clients see the connection close and
    // reconnect to the next serve.
    sessions.shutdown().await;
}

/// Where in the connection's life a session starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Implicit TLS, or plain text where that is allowed: logins at once.
    Plain,
    /// Plain text on a STARTTLS listener: logins refused until the upgrade.
    BeforeStartTls,
    /// Just upgraded: no second greeting; logins allowed.
    AfterStartTls,
}

/// A session that starts in plain text, offers STARTTLS (POP3: STLS) and takes logins only
/// after it; the upgraded session continues without a new greeting (RFC 3501 §6.2.1,
/// RFC 2595 §4, RFC 3207 §4.2: the SMTP client says EHLO again).
async fn with_starttls(
    protocol: Protocol,
    ctx: &ProxyContext,
    tls: &tokio_rustls::TlsAcceptor,
    stream: tokio::net::TcpStream,
    peer: SocketAddr,
) -> Result<(), String> {
    let deadline = Instant::now() + ctx.login_timeout;
    let Some(stream) = session(protocol, ctx, stream, peer, Phase::BeforeStartTls).await? else {
        return Ok(());
    };
    // The handshake counts against the login timeout.
    let stream = match tokio::time::timeout_at(deadline, tls.accept(stream)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(format!("TLS handshake after STARTTLS failed: {e}")),
        Err(_) => return Err("no TLS handshake after STARTTLS within the login timeout".into()),
    };
    session(protocol, ctx, stream, peer, Phase::AfterStartTls)
        .await
        .map(|_| ())
}

/// Runs one protocol's session; `Ok(Some(stream))` when the client asked for STARTTLS and
/// was told to begin the handshake.
async fn session<S>(
    protocol: Protocol,
    ctx: &ProxyContext,
    stream: S,
    peer: SocketAddr,
    phase: Phase,
) -> Result<Option<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    match protocol {
        Protocol::Imap => imap::session(ctx, stream, peer, phase).await,
        Protocol::Pop3 => pop3::session(ctx, stream, peer, phase).await,
        Protocol::Smtp => smtp::session(ctx, stream, peer, phase).await,
    }
}

/// Writes one line and CRLF.
pub(crate) async fn send<S: AsyncWrite + Unpin>(client: &mut S, line: &str) -> std::io::Result<()> {
    // One write: a line and its CRLF in two small segments would wait for the client's
    // delayed ACK (Nagle), some 40 ms per reply.
    let mut bytes = Vec::with_capacity(line.len() + 2);
    bytes.extend_from_slice(line.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    client.write_all(&bytes).await?;
    client.flush().await
}

/// The next client line before the login deadline; `Ok(None)` when the client closed.
pub(crate) async fn next_line<S: AsyncRead + Unpin>(
    client: &mut S,
    lines: &mut ClientLines,
    deadline: Instant,
) -> Result<Option<Vec<u8>>, String> {
    // On the heap, not in the future: an array here would size every session task for
    // its whole life, idle relay included.
    let mut buf = vec![0u8; 4096];
    loop {
        match lines.next_line() {
            Ok(Some(line)) => return Ok(Some(line)),
            Ok(None) => {}
            Err(e) => return Err(e.to_string()),
        }
        let n = tokio::time::timeout_at(deadline, client.read(&mut buf))
            .await
            .map_err(|_| "login timeout".to_owned())?
            .map_err(|e| e.to_string())?;
        if n == 0 {
            return Ok(None);
        }
        lines.feed(buf.get(..n).unwrap_or_default());
    }
}

/// Bytes both ways until either side closes. What the client pipelined after its login
/// goes first.
pub(crate) async fn relay<S>(
    client: S,
    mut lines: ClientLines,
    mut upstream: Box<dyn mailgate_mail::net::Io>,
    live: LiveGuard<'_>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let pipelined = lines.take_rest();
    drop(lines);
    if !pipelined.is_empty() {
        upstream
            .write_all(&pipelined)
            .await
            .map_err(|e| e.to_string())?;
    }
    // Every byte either way passes the client's stream, so watching it sees all activity.
    let started = Instant::now();
    let last_activity = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut client = Watched {
        inner: client,
        started,
        last_activity: last_activity.clone(),
    };
    let idle = live.ctx.idle_timeout;
    let check_every = (idle / 4).clamp(Duration::from_millis(100), Duration::from_secs(30));
    let idle_watchdog = async {
        loop {
            tokio::time::sleep(check_every).await;
            let last =
                Duration::from_millis(last_activity.load(std::sync::atomic::Ordering::Relaxed));
            if started.elapsed().saturating_sub(last) >= idle {
                return;
            }
        }
    };
    tokio::select! {
        () = idle_watchdog => Err(format!("no byte moved for {idle:?}: idle timeout")),
        copied = copy::copy_both_ways(&mut client, &mut upstream) => {
            copied.map(|_| ()).map_err(|e| e.to_string())
        }
        // Dropping both streams closes them: the client sees the connection end.
        () = live.end.notified() => Err("the proxy password was revoked or replaced".into()),
    }
}

/// A stream that notes when a byte last moved through it.
struct Watched<S> {
    inner: S,
    started: Instant,
    /// Milliseconds after `started`.
    last_activity: Arc<std::sync::atomic::AtomicU64>,
}

impl<S> Watched<S> {
    fn moved(&self) {
        let at = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last_activity
            .store(at, std::sync::atomic::Ordering::Relaxed);
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Watched<S> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let polled = std::pin::Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(polled, std::task::Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.moved();
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Watched<S> {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(polled, std::task::Poll::Ready(Ok(n)) if n > 0) {
            self.moved();
        }
        polled
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_block_a_key_for_the_rest_of_the_window_only() {
        let mut throttle = FailureThrottle::default();
        let start = Instant::now();
        for _ in 0..MAX_FAILURES - 1 {
            throttle.record("source 192.0.2.1".into(), start);
        }
        assert!(!throttle.blocked("source 192.0.2.1", start));
        throttle.record("source 192.0.2.1".into(), start);
        assert!(throttle.blocked("source 192.0.2.1", start));
        assert!(
            !throttle.blocked("source 192.0.2.2", start),
            "other sources are not blocked"
        );
        let later = start + FAILURE_WINDOW;
        assert!(!throttle.blocked("source 192.0.2.1", later));
        throttle.record("source 192.0.2.1".into(), later);
        assert!(
            !throttle.blocked("source 192.0.2.1", later),
            "a new window starts at zero"
        );
    }

    #[test]
    fn the_throttle_remembers_a_bounded_number_of_keys() {
        let mut throttle = FailureThrottle::default();
        let now = Instant::now();
        for i in 0..MAX_FAILURE_KEYS + 5 {
            throttle.record(format!("login {i}"), now);
        }
        assert!(throttle.entries.len() <= MAX_FAILURE_KEYS);
    }
}
