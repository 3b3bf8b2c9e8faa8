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
use mailgate_core::account::InboundProtocol;
use mailgate_core::event::EventKind;
use mailgate_core::{AccountState, Clock, MailAccount, SystemClock};
use mailgate_grants::Engine;
use mailgate_mail::TlsSettings;
use mailgate_proto::proxy::{ClientLines, DEFAULT_MAX_COMMAND_LINE, decode_sasl_plain};
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
    /// the account can be used now, over `protocol`. A refused login is recorded as an event.
    pub(crate) async fn check_login(
        &self,
        protocol: Protocol,
        peer: SocketAddr,
        login: &str,
        password: &str,
    ) -> Result<(MailAccount, LiveGuard<'_>), Refusal> {
        let protocol_name = protocol.name();
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
                        "{protocol_name} proxy login as {:?} from {} refused: unknown login or wrong proxy password",
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
                    "{protocol_name} proxy login from {} refused: the account is {} ({code})",
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
                    "{protocol_name} proxy login from {} refused: the account already has {} proxy sessions (proxy_max_sessions_per_account)",
                    peer.ip(),
                    self.max_sessions_per_account
                ),
            )
            .await;
            return Err(Refusal::Unavailable {
                code: "too_many_proxy_sessions".into(),
            });
        };
        if let Some((lacks, code)) = protocol.lacks_server(&account) {
            self.refused(
                Some(&account),
                &format!(
                    "{protocol_name} proxy login from {} refused: {lacks}",
                    peer.ip()
                ),
            )
            .await;
            return Err(Refusal::NeedsAdmin { code: code.into() });
        }
        Ok((account, live))
    }

    /// Words an upstream failure for the client, re-reading the account: a refresh that the
    /// provider refused has moved it to `reauth_required` meanwhile.
    async fn upstream_failed(
        &self,
        protocol: Protocol,
        peer: SocketAddr,
        account: &MailAccount,
        e: &mailgate_mail::MailError,
    ) -> Refusal {
        let protocol = protocol.name();
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

    /// A login over `protocol`: the proxy password checked, then the account's server
    /// opened by `open`, which gives the authenticated stream and the reply that tells the
    /// client so. A failure to open it is worded for the client.
    pub(crate) async fn log_in(
        &self,
        protocol: Protocol,
        peer: SocketAddr,
        login: &str,
        password: &str,
        open: impl AsyncFnOnce(&MailAccount) -> Result<(Upstream, String), mailgate_mail::MailError>,
    ) -> Result<LoggedIn<'_>, Refusal> {
        let (account, live) = self.check_login(protocol, peer, login, password).await?;
        match open(&account).await {
            Ok((upstream, reply)) => {
                tracing::info!(account = %account.spec.name.as_str(), %peer, "{} proxy session relaying", protocol.name());
                Ok(LoggedIn {
                    live,
                    upstream,
                    reply,
                })
            }
            Err(e) => Err(self.upstream_failed(protocol, peer, &account, &e).await),
        }
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

    /// Why `account` cannot be reached over this protocol, and the refusal's code for an
    /// administrator to act on; `None` when it has a server of this kind.
    fn lacks_server(self, account: &MailAccount) -> Option<(&'static str, &'static str)> {
        let inbound = account
            .spec
            .inbound
            .as_ref()
            .map(|inbound| &inbound.protocol);
        match self {
            Protocol::Imap if inbound != Some(&InboundProtocol::Imap) => {
                Some(("the account has no IMAP server", "no_imap_server"))
            }
            Protocol::Pop3 if inbound != Some(&InboundProtocol::Pop3) => {
                Some(("the account's inbound server is not POP3", "no_pop3_server"))
            }
            Protocol::Smtp if account.spec.outbound.is_none() => {
                Some(("the account has no SMTP server", "no_smtp_server"))
            }
            _ => None,
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
            accepted = crate::serve::accept_or_pause(&listener, "a proxy connection") => match accepted {
                Some(accepted) => accepted,
                None => continue,
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
/// A failure ends the session, so it comes as the session's error text.
pub(crate) async fn send<S: AsyncWrite + Unpin>(client: &mut S, line: &str) -> Result<(), String> {
    // One write: a line and its CRLF in two small segments would wait for the client's
    // delayed ACK (Nagle), some 40 ms per reply.
    let mut bytes = Vec::with_capacity(line.len() + 2);
    bytes.extend_from_slice(line.as_bytes());
    bytes.extend_from_slice(b"\r\n");
    client.write_all(&bytes).await.map_err(|e| e.to_string())?;
    client.flush().await.map_err(|e| e.to_string())
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

/// The start every front end shares: its greeting, except right after STARTTLS (the client
/// goes on without a second one), then the reader of the client's lines and the login
/// deadline.
pub(crate) async fn greet<S: AsyncWrite + Unpin>(
    ctx: &ProxyContext,
    client: &mut S,
    phase: Phase,
    greeting: &str,
) -> Result<(ClientLines, Instant), String> {
    if phase != Phase::AfterStartTls {
        send(client, greeting).await?;
    }
    let lines = ClientLines::new(DEFAULT_MAX_COMMAND_LINE);
    Ok((lines, Instant::now() + ctx.login_timeout))
}

/// The next command line before the login deadline; `Ok(None)` when the client closed. A
/// read error or the deadline ends the session, told to the client first as `{last_words}
/// {error}` (IMAP `* BYE`, POP3 `-ERR`, SMTP `421 4.7.0`).
pub(crate) async fn next_command<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    lines: &mut ClientLines,
    deadline: Instant,
    last_words: &str,
) -> Result<Option<Vec<u8>>, String> {
    let line = next_line(client, lines, deadline).await;
    if let Err(e) = &line {
        let _ = send(client, &format!("{last_words} {e}")).await;
    }
    line
}

/// One response of a SASL exchange (RFC 4422 §3.1, §5).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SaslResponse {
    Given(String),
    /// The client answered `*`.
    Cancelled,
    /// The client closed the connection instead of answering.
    Closed,
}

/// A SASL response: the initial response the command carried, else the client's next line
/// after `challenge` (IMAP and POP3 `+ `, SMTP `334 `: RFC 3501 §6.2.2, RFC 5034 §4,
/// RFC 4954 §4).
pub(crate) async fn sasl_response<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    lines: &mut ClientLines,
    deadline: Instant,
    initial_response: Option<String>,
    challenge: &str,
) -> Result<SaslResponse, String> {
    let response = match initial_response {
        Some(response) => response,
        None => {
            send(client, challenge).await?;
            match next_line(client, lines, deadline).await? {
                Some(line) => String::from_utf8_lossy(&line).into_owned(),
                None => return Ok(SaslResponse::Closed),
            }
        }
    };
    Ok(if response.trim() == "*" {
        SaslResponse::Cancelled
    } else {
        SaslResponse::Given(response)
    })
}

/// How a password login over SASL (PLAIN in every protocol, SMTP's LOGIN) ended; each
/// protocol words the refusals its own way.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum SaslLogin {
    Credentials {
        login: String,
        password: String,
    },
    Cancelled,
    /// Not base64 of what the mechanism sends.
    Malformed,
    Closed,
}

/// The replies a protocol gives a SASL login that brought no credentials.
pub(crate) struct SaslRefusals<'w> {
    pub(crate) cancelled: &'w str,
    pub(crate) malformed: &'w str,
}

/// What a session does after a SASL login.
pub(crate) enum SaslNext {
    LogIn {
        login: String,
        password: String,
    },
    /// The refusal was answered: read the next command.
    NextCommand,
    /// The client closed the connection.
    Closed,
}

/// Answers a SASL login that brought no credentials with the protocol's `refusals`.
pub(crate) async fn answer_sasl<S: AsyncWrite + Unpin>(
    client: &mut S,
    outcome: SaslLogin,
    refusals: &SaslRefusals<'_>,
) -> Result<SaslNext, String> {
    let refusal = match outcome {
        SaslLogin::Credentials { login, password } => {
            return Ok(SaslNext::LogIn { login, password });
        }
        SaslLogin::Closed => return Ok(SaslNext::Closed),
        SaslLogin::Cancelled => refusals.cancelled,
        SaslLogin::Malformed => refusals.malformed,
    };
    send(client, refusal).await?;
    Ok(SaslNext::NextCommand)
}

/// `AUTHENTICATE PLAIN` / `AUTH PLAIN` (RFC 4616), with or without an initial response.
pub(crate) async fn sasl_plain<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    lines: &mut ClientLines,
    deadline: Instant,
    initial_response: Option<String>,
    challenge: &str,
) -> Result<SaslLogin, String> {
    Ok(
        match sasl_response(client, lines, deadline, initial_response, challenge).await? {
            SaslResponse::Given(response) => match decode_sasl_plain(&response) {
                Some((login, password)) => SaslLogin::Credentials { login, password },
                None => SaslLogin::Malformed,
            },
            SaslResponse::Cancelled => SaslLogin::Cancelled,
            SaslResponse::Closed => SaslLogin::Closed,
        },
    )
}

/// The account's server, authenticated with a token, as a byte stream for the relay.
pub(crate) type Upstream = Box<dyn mailgate_mail::net::Io>;

/// A good login: the account's server, and the reply that tells the client so.
pub(crate) struct LoggedIn<'a> {
    live: LiveGuard<'a>,
    upstream: Upstream,
    reply: String,
}

/// How each protocol begins its replies to a refused login.
pub(crate) struct RefusalWords<'w> {
    /// A login that will not succeed as it is (IMAP `NO [AUTHENTICATIONFAILED]`, POP3
    /// `-ERR [AUTH]`, SMTP `535 5.7.8`).
    pub(crate) refused: &'w str,
    /// Passing trouble (`NO [UNAVAILABLE]`, `-ERR [SYS/TEMP]`, `454 4.7.0`).
    pub(crate) temporary: &'w str,
    /// Said before closing after too many failed logins; POP3 has no such line and just
    /// closes.
    pub(crate) too_many: Option<&'w str>,
}

/// Answers a login attempt. A good one is told so and relayed until the session ends:
/// `Ok(true)`. A refused one gets its reply; after [`MAX_FAILED_LOGINS`] bad credentials on
/// this connection the session ends (`Ok(true)`), else the client may try again
/// (`Ok(false)`).
pub(crate) async fn answer_login<'a, S>(
    client: &mut S,
    lines: &mut ClientLines,
    attempt: impl Future<Output = Result<LoggedIn<'a>, Refusal>>,
    words: &RefusalWords<'_>,
    failures: &mut u32,
) -> Result<bool, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Boxed: the login (upstream connect, TLS, XOAUTH2) is large and short-lived, and inline
    // it would size the whole session task, idle relay included.
    let refusal = match Box::pin(attempt).await {
        Ok(LoggedIn {
            live,
            upstream,
            reply,
        }) => {
            send(client, &reply).await?;
            return relay(client, lines, upstream, live).await.map(|()| true);
        }
        Err(refusal) => refusal,
    };
    send(client, &refusal.reply(words.refused, words.temporary)).await?;
    if !matches!(refusal, Refusal::BadCredentials) {
        return Ok(false);
    }
    *failures += 1;
    if *failures < MAX_FAILED_LOGINS {
        return Ok(false);
    }
    if let Some(last_words) = words.too_many {
        let _ = send(client, last_words).await;
    }
    Ok(true)
}

/// Bytes both ways until either side closes. What the client pipelined after its login
/// goes first.
pub(crate) async fn relay<S>(
    client: &mut S,
    lines: &mut ClientLines,
    mut upstream: Upstream,
    live: LiveGuard<'_>,
) -> Result<(), String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    // Swapped for an empty reader (no allocation), so that the session gives the line
    // buffer back for the life of the relay.
    let pipelined =
        std::mem::replace(lines, ClientLines::new(DEFAULT_MAX_COMMAND_LINE)).take_rest();
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
pub(crate) mod tests {
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

    /// Runs `exchange` on the proxy's side of a connection whose client sent `client_sends`
    /// and closed; its outcome and what the proxy wrote.
    pub(crate) async fn with_client<T>(
        client_sends: &str,
        exchange: impl AsyncFnOnce(
            &mut tokio::io::DuplexStream,
            &mut ClientLines,
            Instant,
        ) -> Result<T, String>,
    ) -> (T, String) {
        let (mut proxy_side, mut client_side) = tokio::io::duplex(4096);
        client_side
            .write_all(client_sends.as_bytes())
            .await
            .unwrap();
        client_side.shutdown().await.unwrap();
        let mut lines = ClientLines::new(DEFAULT_MAX_COMMAND_LINE);
        let deadline = Instant::now() + Duration::from_secs(10);
        let outcome = exchange(&mut proxy_side, &mut lines, deadline)
            .await
            .unwrap();
        drop(proxy_side);
        let mut written = String::new();
        client_side.read_to_string(&mut written).await.unwrap();
        (outcome, written)
    }

    async fn plain_exchange(
        initial_response: Option<&str>,
        client_sends: &str,
        challenge: &str,
    ) -> (SaslLogin, String) {
        let initial_response = initial_response.map(str::to_owned);
        with_client(client_sends, async |client, lines, deadline| {
            sasl_plain(client, lines, deadline, initial_response, challenge).await
        })
        .await
    }

    #[tokio::test]
    async fn sasl_plain_reads_the_initial_response_or_the_line_after_the_challenge() {
        // base64 of "\0alice@example.test\0secret".
        const PLAIN: &str = "AGFsaWNlQGV4YW1wbGUudGVzdABzZWNyZXQ=";
        let alice = || SaslLogin::Credentials {
            login: "alice@example.test".into(),
            password: "secret".into(),
        };
        // IMAP and POP3 challenge with "+ ", SMTP with "334 ".
        for challenge in ["+ ", "334 "] {
            assert_eq!(
                plain_exchange(Some(PLAIN), "", challenge).await,
                (alice(), String::new()),
                "an initial response needs no challenge"
            );
            assert_eq!(
                plain_exchange(None, &format!("{PLAIN}\r\n"), challenge).await,
                (alice(), format!("{challenge}\r\n"))
            );
            for (initial, sends) in [(None, "*\r\n"), (Some("*"), "")] {
                assert_eq!(
                    plain_exchange(initial, sends, challenge).await.0,
                    SaslLogin::Cancelled,
                    "{initial:?} {sends:?}"
                );
            }
            for (initial, sends) in [(None, "bm90IHBsYWlu\r\n"), (Some("not base64!"), "")] {
                assert_eq!(
                    plain_exchange(initial, sends, challenge).await.0,
                    SaslLogin::Malformed,
                    "{initial:?} {sends:?}"
                );
            }
            assert_eq!(
                plain_exchange(None, "", challenge).await,
                (SaslLogin::Closed, format!("{challenge}\r\n"))
            );
        }
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
