//! "Test configuration": every step from DNS to finding the test message in the inbox, each
//! with status, duration, detail, the server's own words and a remediation.

use crate::imap::ImapClient;
use crate::message::{self, Outgoing};
use crate::net::{self, Conn, MailError, TlsSettings};
use crate::pop3::Pop3Client;
use crate::remedy::MailRemedy;
use crate::smtp::SmtpClient;
use mailgate_core::account::{InboundProtocol, MailAccount, ServerEndpoint};
use mailgate_core::token_source::{TokenSource, TokenUnavailable};
use mailgate_core::{Clock, TlsMode};
use mailgate_proto::sasl::Mechanism;
use serde::{Deserialize, Serialize};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepStatus {
    Ok,
    Failed,
    Skipped,
    Warning,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Remediation {
    pub code: String,
    pub text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub status: StepStatus,
    pub duration_ms: u64,
    pub detail: String,
    /// The server's or provider's own words, verbatim.
    pub server_says: Option<String>,
    pub remediation: Option<Remediation>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub account: String,
    pub ok: bool,
    pub started_at: String,
    pub duration_ms: u64,
    /// The test message's Message-ID, when one was sent.
    pub message_id: Option<String>,
    pub steps: Vec<Step>,
}

impl Report {
    pub fn first_failure(&self) -> Option<&Step> {
        self.steps.iter().find(|s| s.status == StepStatus::Failed)
    }
}

#[derive(Debug, Clone)]
pub struct CheckOptions {
    /// Where the test message goes; default the mailbox itself.
    pub to: Option<String>,
    /// Every network operation's limit: a silent server fails its step after this.
    pub step_timeout: Duration,
    /// How long to look for the test message in the inbox.
    pub find_within: Duration,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions {
            to: None,
            step_timeout: Duration::from_secs(15),
            find_within: Duration::from_secs(30),
        }
    }
}

/// Told about each step as soon as it is finished, so a page can show progress.
pub type Progress<'a> = &'a (dyn Fn(&Step) + Send + Sync);

struct Recorder<'a> {
    steps: Vec<Step>,
    /// When the run started (Unix seconds), for certificate expiry.
    now: i64,
    progress: Progress<'a>,
}

impl Recorder<'_> {
    fn ok(&mut self, name: &str, started: Instant, detail: impl Into<String>) {
        self.push(name, StepStatus::Ok, started, detail.into(), None, None);
    }

    fn warn(&mut self, name: &str, started: Instant, detail: impl Into<String>) {
        self.push(
            name,
            StepStatus::Warning,
            started,
            detail.into(),
            None,
            None,
        );
    }

    fn fail(&mut self, name: &str, started: Instant, e: &MailError) {
        let rem = match e.oauth {
            Some((code, text)) => Remediation {
                code: code.into(),
                text: text.into(),
            },
            None => Remediation {
                code: e.remedy.code().into(),
                text: e.remedy.sentence().into(),
            },
        };
        self.push(
            name,
            StepStatus::Failed,
            started,
            e.detail.clone(),
            e.server_says.clone(),
            Some(rem),
        );
    }

    fn skip(&mut self, name: &str, why: &str) {
        self.push(
            name,
            StepStatus::Skipped,
            Instant::now(),
            why.into(),
            None,
            None,
        );
    }

    fn push(
        &mut self,
        name: &str,
        status: StepStatus,
        started: Instant,
        detail: String,
        server_says: Option<String>,
        remediation: Option<Remediation>,
    ) {
        let duration_ms = started.elapsed().as_millis() as u64;
        tracing::debug!(step = name, ?status, duration_ms, "test step");
        let step = Step {
            name: name.into(),
            status,
            duration_ms,
            detail,
            server_says,
            remediation,
        };
        (self.progress)(&step);
        self.steps.push(step);
    }

    /// Runs one step: records ok with `detail(&value)` or the failure, and returns the value.
    async fn step<T>(
        &mut self,
        name: &str,
        f: impl Future<Output = Result<T, MailError>>,
        detail: impl FnOnce(&T) -> String,
    ) -> Option<T> {
        let started = Instant::now();
        match f.await {
            Ok(v) => {
                let d = detail(&v);
                self.ok(name, started, d);
                Some(v)
            }
            Err(e) => {
                self.fail(name, started, &e);
                None
            }
        }
    }
}

/// A fresh token for this account, fetched once per run.
struct RunToken<'a> {
    tokens: &'a dyn TokenSource,
    account: &'a MailAccount,
    cached: Option<Result<String, MailError>>,
}

impl RunToken<'_> {
    /// A refused IMAP/POP3 login of a delegated or app-only account names the missing
    /// permission; an SMTP login is the delegate's own and keeps its cause.
    async fn login_refusal(&self, protocol: &str, e: MailError) -> MailError {
        if protocol == "smtp" {
            e
        } else {
            crate::inbox::login_refusal(self.tokens, self.account, e).await
        }
    }

    async fn get(&mut self) -> Result<String, MailError> {
        if self.cached.is_none() {
            let r = match self.tokens.access_token(self.account.id).await {
                Ok(t) => Ok(t.token.expose().to_owned()),
                Err(e) => Err(token_error(&e)),
            };
            self.cached = Some(r);
        }
        self.cached
            .clone()
            .unwrap_or_else(|| Err(MailError::new(MailRemedy::TokenUnavailable, "no token")))
    }
}

impl RunToken<'_> {
    /// The server refused `refused`: one forced refresh (see `inbox::refresh_refused`).
    /// `Ok(Some(token))`: the new token, now also the cached one. `Ok(None)`: no new token
    /// (rate-limited). `Err`: the refresh failed; later steps get that error too.
    async fn after_refusal(&mut self, refused: &str) -> Result<Option<String>, MailError> {
        match crate::inbox::refresh_refused(self.tokens, self.account, refused).await {
            Ok(Some((token, _))) => {
                self.cached = Some(Ok(token.clone()));
                Ok(Some(token))
            }
            Ok(None) => Ok(None),
            Err(e) => {
                self.cached = Some(Err(e.clone()));
                Err(e)
            }
        }
    }
}

/// A client of whichever protocol.
enum Client<'c> {
    Imap(&'c mut ImapClient),
    Pop3(&'c mut Pop3Client),
    Smtp(&'c mut SmtpClient),
}

/// A sign-in: the client, the user it signs in as, and the server's port (which OAUTHBEARER
/// names).
struct SigningIn<'c> {
    client: Client<'c>,
    user: &'c str,
    port: u16,
}

impl SigningIn<'_> {
    fn oauth_mechanism(&self) -> Option<Mechanism> {
        match &self.client {
            Client::Imap(c) => c.oauth_mechanism(),
            Client::Pop3(c) => c.oauth_mechanism(),
            Client::Smtp(c) => c.oauth_mechanism(),
        }
    }

    async fn authenticate(&mut self, mech: Mechanism, token: &str) -> Result<(), MailError> {
        let (user, port) = (self.user, self.port);
        match &mut self.client {
            Client::Imap(c) => c.authenticate(mech, user, token, port).await,
            Client::Pop3(c) => c.authenticate(mech, user, token, port).await,
            Client::Smtp(c) => c.authenticate(mech, user, token, port).await,
        }
    }
}

/// The steps that sign in on an open connection: an OAuth mechanism among the server's
/// capabilities (`caps`), the token, then the login.
///
/// When the server refuses a token mailgate believed valid, the provider may have revoked the
/// grant: one forced refresh decides. A new token is tried once on the same connection (the
/// refusal stays as a warning); a refresh the provider refuses is the failure, with its
/// remediation (the account is `reauth_required` now).
async fn sign_in_steps(
    r: &mut Recorder<'_>,
    p: &str,
    tokens: &mut RunToken<'_>,
    clock: &dyn Clock,
    caps: Result<Vec<String>, MailError>,
    mut sign_in: SigningIn<'_>,
) -> Option<()> {
    let mech = capabilities_step(r, p, caps, sign_in.oauth_mechanism())?;
    let token = token_step(r, p, tokens, clock).await?;
    let what = format!("{} as {}", mech.name(), sign_in.user);
    let name = format!("{p}: authenticate");
    let started = Instant::now();
    let e = match sign_in.authenticate(mech, &token).await {
        Ok(()) => {
            r.ok(&name, started, what);
            return Some(());
        }
        Err(e) => e,
    };
    if e.remedy != MailRemedy::AuthFailed {
        r.fail(&name, started, &tokens.login_refusal(p, e).await);
        return None;
    }
    let refused = e.server_says.as_deref().unwrap_or("no reason given");
    match tokens.after_refusal(&token).await {
        Ok(Some(new)) => {
            r.warn(
                &format!("{p}: authenticate with the stored token"),
                started,
                format!(
                    "the server refused the stored token ({refused}); mailgate refreshed it and tries once more"
                ),
            );
            let started = Instant::now();
            match sign_in.authenticate(mech, &new).await {
                Ok(()) => {
                    r.ok(&name, started, what);
                    Some(())
                }
                Err(e) => {
                    r.fail(&name, started, &tokens.login_refusal(p, e).await);
                    None
                }
            }
        }
        Ok(None) => {
            r.fail(&name, started, &tokens.login_refusal(p, e).await);
            None
        }
        Err(refresh) => {
            r.warn(
                &format!("{p}: authenticate with the stored token"),
                started,
                format!(
                    "the server refused the token ({refused}); mailgate refreshed it to see whether the grant is still valid"
                ),
            );
            r.fail(
                &format!("{p}: refresh the refused token"),
                started,
                &refresh,
            );
            None
        }
    }
}

fn token_error(e: &TokenUnavailable) -> MailError {
    let detail = match e {
        TokenUnavailable::Provider { step, .. } => {
            format!("getting a fresh token failed at the {step}")
        }
        other => other.to_string(),
    };
    crate::inbox::token_error(e, detail)
}

/// What a JWT access token says about whether it fits `protocol`. Opaque tokens (Google)
/// cannot be checked before the server sees them.
pub fn check_token_for(protocol: &str, token: &str, now: i64) -> Result<String, MailError> {
    let Some(claims) = mailgate_oauth::jwt::unverified_claims(token) else {
        return Ok("opaque token (audience and scopes are known only to the provider)".into());
    };
    let aud = claims
        .get("aud")
        .and_then(|a| a.as_str())
        .unwrap_or_default()
        .to_owned();
    let scp = claims
        .get("scp")
        .and_then(|s| s.as_str())
        .unwrap_or_default()
        .to_owned();
    let roles: Vec<String> = claims
        .get("roles")
        .and_then(|r| r.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    let aud_l = aud.to_ascii_lowercase();
    if aud_l.contains("graph.microsoft.com") || aud_l == "00000003-0000-0000-c000-000000000000" {
        return Err(MailError::new(
            MailRemedy::TokenWrongAudience,
            format!(
                "the token's audience is {aud} (Microsoft Graph); IMAP, POP3 and SMTP need an Outlook token"
            ),
        ));
    }
    let outlook = aud_l.contains("outlook.office.com")
        || aud_l.contains("outlook.office365.com")
        || aud_l == "00000002-0000-0ff1-ce00-000000000000";
    if outlook && !scp.is_empty() {
        let needed = match protocol {
            "imap" => "IMAP.AccessAsUser.All",
            "pop3" => "POP.AccessAsUser.All",
            _ => "SMTP.Send",
        };
        if !scp.split(' ').any(|s| s.eq_ignore_ascii_case(needed)) {
            return Err(MailError::new(
                MailRemedy::TokenMissingScope,
                format!("the token's scopes ({scp}) do not include {needed}"),
            ));
        }
    }
    let exp = claims.get("exp").and_then(|e| e.as_i64());
    let left = exp
        .map(|e| format!(", valid for {} more minute(s)", (e - now).max(0) / 60))
        .unwrap_or_default();
    let what = if !scp.is_empty() {
        format!("scopes {scp}")
    } else if !roles.is_empty() {
        format!("app roles {}", roles.join(" "))
    } else {
        "no scopes listed".into()
    };
    Ok(format!("JWT for {aud}, {what}{left}"))
}

/// Runs the whole test for one account.
pub async fn run(
    tokens: &dyn TokenSource,
    clock: &dyn Clock,
    tls: &TlsSettings,
    account: &MailAccount,
    opts: &CheckOptions,
) -> Report {
    run_with_progress(tokens, clock, tls, account, opts, &|_| {}).await
}

/// [`run`], reporting each step to `progress` as it finishes.
pub async fn run_with_progress(
    tokens: &dyn TokenSource,
    clock: &dyn Clock,
    tls: &TlsSettings,
    account: &MailAccount,
    opts: &CheckOptions,
    progress: Progress<'_>,
) -> Report {
    let started = Instant::now();
    let started_at = clock.now().rfc3339();
    let mut r = Recorder {
        steps: Vec::new(),
        now: clock.now().0,
        progress,
    };
    let mut message_id = None;
    if !account.spec.enabled {
        let e = MailError::new(MailRemedy::Disabled, "the account is disabled");
        r.fail("account", Instant::now(), &e);
    } else {
        let mut tokens = RunToken {
            tokens,
            account,
            cached: None,
        };
        let user = account.spec.sasl_user().to_string();
        let mut inbound = None;
        if let Some(inb) = &account.spec.inbound {
            inbound = open_inbound(
                &mut r,
                &mut tokens,
                tls,
                inb.protocol,
                &inb.server,
                &user,
                opts.step_timeout,
                clock,
            )
            .await;
        }
        if let Some(out) = &account.spec.outbound {
            let to = opts
                .to
                .clone()
                .unwrap_or_else(|| account.spec.mailbox.to_string());
            message_id = send_test(
                &mut r,
                &mut tokens,
                tls,
                account,
                &out.server,
                &user,
                &to,
                opts.step_timeout,
                clock,
            )
            .await;
            let to_self = account.spec.mailbox.same_mailbox(&to)
                || account
                    .spec
                    .shared_mailbox
                    .as_ref()
                    .is_some_and(|m| m.same_mailbox(&to));
            match (&message_id, &account.spec.inbound, inbound.take()) {
                (Some(id), Some(inb), Some(session)) if to_self => {
                    find_message(
                        &mut r,
                        &mut tokens,
                        tls,
                        inb.protocol,
                        &inb.server,
                        &user,
                        session,
                        id,
                        opts,
                    )
                    .await;
                }
                (Some(_), Some(_), _) if !to_self => r.skip(
                    "find the test message",
                    "the test message went to another address",
                ),
                (Some(_), None, _) => r.skip(
                    "find the test message",
                    "the account has no inbound protocol",
                ),
                _ => r.skip("find the test message", "no test message was sent"),
            }
        } else {
            r.skip("smtp", "the account has no outbound SMTP");
        }
        if let Some(session) = inbound {
            session.close().await;
        }
    }
    let ok = !r.steps.iter().any(|s| s.status == StepStatus::Failed);
    let report = Report {
        account: account.spec.name.to_string(),
        ok,
        started_at,
        duration_ms: started.elapsed().as_millis() as u64,
        message_id,
        steps: r.steps,
    };
    record_outcome(tokens, clock, account, &report).await;
    report
}

/// Every run is an event, so the dashboard can show accounts whose last test failed.
async fn record_outcome(
    tokens: &dyn TokenSource,
    clock: &dyn Clock,
    account: &MailAccount,
    report: &Report,
) {
    use mailgate_core::event::EventKind;
    let (kind, message) = match report.first_failure() {
        None => (
            EventKind::TestPassed,
            format!("test of account {} passed", account.spec.name),
        ),
        Some(step) => (
            EventKind::TestFailed,
            format!(
                "test of account {} failed at \"{}\" [{}]",
                account.spec.name,
                step.name,
                step.remediation
                    .as_ref()
                    .map(|r| r.code.as_str())
                    .unwrap_or("")
            ),
        ),
    };
    tokens
        .record_event(
            clock.now(),
            kind,
            Some(account.spec.app_id),
            Some(account.id),
            &message,
        )
        .await;
}

enum Inbound {
    Imap(ImapClient),
    Pop3(Pop3Client),
}

impl Inbound {
    async fn close(self) {
        match self {
            Inbound::Imap(c) => c.logout().await,
            Inbound::Pop3(c) => c.quit().await,
        }
    }
}

/// A certificate this close to expiry passes with a warning.
const CERT_WARN_SECS: i64 = 14 * 86_400;

/// A TLS handshake step: ok with the version and expiry, a warning when the certificate
/// expires within two weeks.
async fn tls_step(
    r: &mut Recorder<'_>,
    name: &str,
    handshake: impl Future<Output = Result<crate::TlsInfo, MailError>>,
    host: &str,
) -> Option<()> {
    let started = Instant::now();
    match handshake.await {
        Ok(info) => {
            let detail = format!("{info}, certificate valid for {host}");
            match info.not_after {
                Some(t) if t - r.now < CERT_WARN_SECS => r.warn(
                    name,
                    started,
                    format!("{detail} — it expires in less than 14 days"),
                ),
                _ => r.ok(name, started, detail),
            }
            Some(())
        }
        Err(e) => {
            r.fail(name, started, &e);
            None
        }
    }
}

/// DNS, TCP and (implicit) TLS; returns the connection.
async fn connect(
    r: &mut Recorder<'_>,
    p: &str,
    server: &ServerEndpoint,
    timeout: Duration,
    tls: &TlsSettings,
) -> Option<Conn> {
    let host = server.host.as_str();
    let port = server.port.get();
    let addrs = r
        .step(
            &format!("{p}: resolve {host}"),
            net::resolve(host, port, timeout),
            |a| {
                a.iter()
                    .map(|x| x.ip().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            },
        )
        .await?;
    let (mut conn, _) = r
        .step(
            &format!("{p}: connect to port {port}"),
            Conn::connect(host, &addrs, timeout),
            |(_, a)| format!("connected to {a}"),
        )
        .await?;
    if server.tls == TlsMode::Implicit {
        tls_step(r, &format!("{p}: TLS"), conn.start_tls(tls), host).await?;
    }
    Some(conn)
}

#[allow(clippy::too_many_arguments)]
async fn open_inbound(
    r: &mut Recorder<'_>,
    tokens: &mut RunToken<'_>,
    tls: &TlsSettings,
    protocol: InboundProtocol,
    server: &ServerEndpoint,
    user: &str,
    timeout: Duration,
    clock: &dyn Clock,
) -> Option<Inbound> {
    let p = protocol.as_str();
    let conn = connect(r, p, server, timeout, tls).await?;
    let port = server.port.get();
    match protocol {
        InboundProtocol::Imap => {
            let mut c = r
                .step(&format!("{p}: greeting"), ImapClient::greet(conn), |_| {
                    "IMAP server ready".into()
                })
                .await?;
            if server.tls == TlsMode::Starttls {
                r.step(&format!("{p}: capabilities"), c.capability(), |caps| {
                    caps.join(" ")
                })
                .await?;
                tls_step(
                    r,
                    &format!("{p}: STARTTLS"),
                    c.starttls(tls),
                    &server.host.to_string(),
                )
                .await?;
            }
            let caps = c.capability().await;
            let client = Client::Imap(&mut c);
            let sign_in = SigningIn { client, user, port };
            sign_in_steps(r, p, tokens, clock, caps, sign_in).await?;
            // Exchange refuses a delegate without FullAccess here, after a successful login:
            // "User is authenticated but not connected".
            let account = tokens.account;
            let select = async {
                c.select("INBOX")
                    .await
                    .map_err(|e| crate::inbox::shared_mailbox_refusal(account, e))
            };
            r.step(&format!("{p}: select INBOX"), select, |n| {
                format!("{n} message(s)")
            })
            .await?;
            Some(Inbound::Imap(c))
        }
        InboundProtocol::Pop3 => {
            let mut c = r
                .step(&format!("{p}: greeting"), Pop3Client::greet(conn), |_| {
                    "POP3 server ready".into()
                })
                .await?;
            if server.tls == TlsMode::Starttls {
                r.step(&format!("{p}: capabilities"), c.capa(), |caps| {
                    caps.iter()
                        .map(|l| l.join(" "))
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .await?;
                tls_step(
                    r,
                    &format!("{p}: STLS"),
                    c.stls(tls),
                    &server.host.to_string(),
                )
                .await?;
            }
            let capa = c
                .capa()
                .await
                .map(|caps| caps.iter().map(|l| l.join(" ")).collect::<Vec<_>>());
            let client = Client::Pop3(&mut c);
            let sign_in = SigningIn { client, user, port };
            sign_in_steps(r, p, tokens, clock, capa, sign_in).await?;
            let account = tokens.account;
            let stat = async {
                c.stat()
                    .await
                    .map_err(|e| crate::inbox::shared_mailbox_refusal(account, e))
            };
            r.step(&format!("{p}: STAT"), stat, |(n, size)| {
                format!("{n} message(s), {size} bytes")
            })
            .await?;
            Some(Inbound::Pop3(c))
        }
    }
}

/// Records the capability list and whether an OAuth mechanism is among them.
fn capabilities_step(
    r: &mut Recorder<'_>,
    p: &str,
    caps: Result<Vec<String>, MailError>,
    offered: Option<Mechanism>,
) -> Option<Mechanism> {
    let started = Instant::now();
    let name = format!("{p}: OAuth offered");
    match caps {
        Err(e) => {
            r.fail(&name, started, &e);
            None
        }
        Ok(caps) => match offered {
            Some(m) => {
                r.ok(
                    &name,
                    started,
                    format!("{} offered ({})", m.name(), caps.join(" ")),
                );
                Some(m)
            }
            None => {
                let e = MailError::server(
                    MailRemedy::OAuthNotOffered,
                    "neither XOAUTH2 nor OAUTHBEARER is offered",
                    caps.join(" "),
                );
                r.fail(&name, started, &e);
                None
            }
        },
    }
}

async fn token_step(
    r: &mut Recorder<'_>,
    p: &str,
    tokens: &mut RunToken<'_>,
    clock: &dyn Clock,
) -> Option<String> {
    let started = Instant::now();
    let name = format!("{p}: token");
    let token = match tokens.get().await {
        Ok(t) => t,
        Err(e) => {
            r.fail(&name, started, &e);
            return None;
        }
    };
    match check_token_for(p, &token, clock.now().0) {
        Ok(detail) => {
            r.ok(&name, started, detail);
            Some(token)
        }
        Err(e) => {
            r.fail(&name, started, &e);
            None
        }
    }
}

#[allow(clippy::too_many_arguments)]
async fn send_test(
    r: &mut Recorder<'_>,
    tokens: &mut RunToken<'_>,
    tls: &TlsSettings,
    account: &MailAccount,
    server: &ServerEndpoint,
    user: &str,
    to: &str,
    timeout: Duration,
    clock: &dyn Clock,
) -> Option<String> {
    let p = "smtp";
    let conn = connect(r, p, server, timeout, tls).await?;
    let ehlo_name = "mailgate.localhost";
    let mut c = r
        .step(&format!("{p}: greeting"), SmtpClient::greet(conn), |_| {
            "SMTP server ready".into()
        })
        .await?;
    r.step(&format!("{p}: EHLO"), c.ehlo(ehlo_name), |_| String::new())
        .await?;
    if server.tls == TlsMode::Starttls {
        tls_step(
            r,
            &format!("{p}: STARTTLS"),
            c.starttls(tls, ehlo_name),
            &server.host.to_string(),
        )
        .await?;
    }
    let exts: Vec<String> = c
        .extensions
        .iter()
        .map(|(k, v)| {
            if v.is_empty() {
                k.clone()
            } else {
                format!("{k} {}", v.join(" "))
            }
        })
        .collect();
    // A delegate authenticates as itself and sends as the mailbox (`user`, the envelope).
    let auth_user = account.spec.smtp_auth_user().as_str();
    let sign_in = SigningIn {
        client: Client::Smtp(&mut c),
        user: auth_user,
        port: server.port.get(),
    };
    sign_in_steps(r, p, tokens, clock, Ok(exts), sign_in).await?;
    let started = Instant::now();
    let name = format!("{p}: send test message to {to}");
    let id = match message::new_message_id(account.spec.mailbox.domain()) {
        Ok(id) => id,
        Err(e) => {
            r.fail(
                &name,
                started,
                &MailError::new(
                    MailRemedy::SendRejected,
                    format!("building the message failed: {e}"),
                ),
            );
            return None;
        }
    };
    let subject = format!("mailgate test message for {}", account.spec.name);
    let text = "This message was sent by mailgate's \"Test configuration\" to check that sending and receiving work. It can be deleted.";
    let recipients = [to.to_owned()];
    let bytes = match message::build(
        &account.spec,
        &Outgoing {
            to: &recipients,
            cc: &[],
            reply_to: None,
            subject: &subject,
            text: Some(text),
            html: None,
            attachments: &[],
            message_id: &id,
            date: clock.now(),
        },
    ) {
        Ok(b) => b,
        Err(e) => {
            r.fail(
                &name,
                started,
                &MailError::new(
                    MailRemedy::SendRejected,
                    format!("building the message failed: {e}"),
                ),
            );
            return None;
        }
    };
    match c.send(user, &[to], &bytes).await {
        Ok(reply) => r.ok(
            &name,
            started,
            format!("Message-ID <{id}> accepted: {reply}"),
        ),
        Err(e) => {
            r.fail(&name, started, &e);
            return None;
        }
    }
    c.quit().await;
    Some(id)
}

#[allow(clippy::too_many_arguments)]
async fn find_message(
    r: &mut Recorder<'_>,
    tokens: &mut RunToken<'_>,
    tls: &TlsSettings,
    protocol: InboundProtocol,
    server: &ServerEndpoint,
    user: &str,
    session: Inbound,
    message_id: &str,
    opts: &CheckOptions,
) {
    let started = Instant::now();
    let name = format!("{}: find the test message", protocol.as_str());
    let deadline = started + opts.find_within;
    let mut session = Some(session);
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let found = match session.take() {
            Some(Inbound::Imap(mut c)) => {
                let found = match c.noop().await {
                    Ok(()) => c
                        .search_message_id(message_id)
                        .await
                        .map(|uids| !uids.is_empty()),
                    Err(e) => Err(e),
                };
                session = Some(Inbound::Imap(c));
                found
            }
            // POP3 shows the maildrop as it was at login: log in again for each look.
            Some(Inbound::Pop3(c)) => {
                c.quit().await;
                pop3_contains(tokens, tls, server, user, message_id, opts.step_timeout).await
            }
            None => pop3_contains(tokens, tls, server, user, message_id, opts.step_timeout).await,
        };
        match found {
            Ok(true) => {
                r.ok(
                    &name,
                    started,
                    format!("<{message_id}> is in the inbox (after {attempts} look(s))"),
                );
                break;
            }
            Ok(false) if Instant::now() < deadline => {
                // The message travels through the server's queue; look again shortly.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
            Ok(false) => {
                let e = MailError::new(
                    MailRemedy::MessageNotFound,
                    format!(
                        "<{message_id}> did not arrive within {:?}",
                        opts.find_within
                    ),
                );
                r.fail(&name, started, &e);
                break;
            }
            Err(e) => {
                r.fail(&name, started, &e);
                break;
            }
        }
    }
    if let Some(s) = session {
        s.close().await;
    }
}

async fn pop3_contains(
    tokens: &mut RunToken<'_>,
    tls: &TlsSettings,
    server: &ServerEndpoint,
    user: &str,
    message_id: &str,
    timeout: Duration,
) -> Result<bool, MailError> {
    let token = tokens.get().await?;
    let mut c = crate::inbox::pop3_login(server, tls, user, &token, timeout).await?;
    let (count, _) = c.stat().await?;
    let wanted = format!("<{}>", message_id.to_ascii_lowercase());
    let mut found = false;
    // Newest first: the test message is most likely the last one.
    for n in (1..=count).rev().take(50) {
        let headers = c.headers(n).await?;
        if headers.iter().any(|l| {
            let l = String::from_utf8_lossy(l).to_ascii_lowercase();
            l.starts_with("message-id:") && l.contains(&wanted)
        }) {
            found = true;
            break;
        }
    }
    c.quit().await;
    Ok(found)
}
