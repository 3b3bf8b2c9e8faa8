//! One IMAP proxy session: the pre-login dialogue mailgate answers itself, then the relay.

use super::{
    LiveGuard, MAX_FAILED_LOGINS, Phase, ProxyContext, Refusal, UPSTREAM_TIMEOUT, next_line, relay,
    send,
};
use mailgate_core::account::InboundProtocol;
use mailgate_proto::proxy::{
    ClientLines, DEFAULT_MAX_COMMAND_LINE, ImapCommand, ImapInput, decode_sasl_plain,
    parse_imap_command,
};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// What the proxy offers before login: its own mechanisms, never the upstream's XOAUTH2.
const PRE_LOGIN_CAPABILITIES: &str = "IMAP4rev1 SASL-IR AUTH=PLAIN";
/// Before STARTTLS on a listener that requires it: no mechanism, logins disabled
/// (RFC 3501 §6.2.1, RFC 2595), as a real server does.
const BEFORE_STARTTLS_CAPABILITIES: &str = "IMAP4rev1 SASL-IR STARTTLS LOGINDISABLED";

/// Runs a session to its end; `Ok(Some(client))` when the client asked for STARTTLS and
/// was told to begin the handshake (only in [`Phase::BeforeStartTls`]).
pub(super) async fn session<S>(
    ctx: &ProxyContext,
    mut client: S,
    peer: SocketAddr,
    phase: Phase,
) -> Result<Option<S>, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    let io = |e: std::io::Error| e.to_string();
    let capabilities = if phase == Phase::BeforeStartTls {
        BEFORE_STARTTLS_CAPABILITIES
    } else {
        PRE_LOGIN_CAPABILITIES
    };
    if phase != Phase::AfterStartTls {
        send(
            &mut client,
            &format!("* OK [CAPABILITY {capabilities}] mailgate IMAP proxy ready"),
        )
        .await
        .map_err(io)?;
    }
    let mut lines = ClientLines::new(DEFAULT_MAX_COMMAND_LINE);
    let deadline = Instant::now() + ctx.login_timeout;
    let mut failures = 0;
    loop {
        let line = match next_line(&mut client, &mut lines, deadline).await {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(None),
            Err(e) => {
                let _ = send(&mut client, &format!("* BYE {e}")).await;
                return Err(e);
            }
        };
        let (tag, command) = match parse_imap_command(&line) {
            ImapInput::Command { tag, command } => (tag, command),
            ImapInput::Bad { tag, reason } => {
                let tag = tag.unwrap_or_else(|| "*".into());
                send(&mut client, &format!("{tag} BAD {reason}"))
                    .await
                    .map_err(io)?;
                continue;
            }
        };
        let (login, password) = match command {
            ImapCommand::Capability => {
                send(&mut client, &format!("* CAPABILITY {capabilities}"))
                    .await
                    .map_err(io)?;
                send(&mut client, &format!("{tag} OK CAPABILITY completed"))
                    .await
                    .map_err(io)?;
                continue;
            }
            ImapCommand::Noop => {
                send(&mut client, &format!("{tag} OK NOOP completed"))
                    .await
                    .map_err(io)?;
                continue;
            }
            ImapCommand::Logout => {
                send(&mut client, "* BYE mailgate IMAP proxy signing off")
                    .await
                    .map_err(io)?;
                send(&mut client, &format!("{tag} OK LOGOUT completed"))
                    .await
                    .map_err(io)?;
                return Ok(None);
            }
            ImapCommand::StartTls if phase == Phase::BeforeStartTls => {
                send(&mut client, &format!("{tag} OK begin TLS negotiation now"))
                    .await
                    .map_err(io)?;
                // Whatever the client pipelined after STARTTLS arrived in plain text: it is
                // dropped here, never read as if it had come over TLS (command injection
                // across the upgrade, CVE-2011-0411).
                drop(lines);
                return Ok(Some(client));
            }
            ImapCommand::Login { .. } | ImapCommand::Authenticate { .. }
                if phase == Phase::BeforeStartTls =>
            {
                send(
                    &mut client,
                    &format!("{tag} NO [PRIVACYREQUIRED] run STARTTLS first: logins need TLS on this listener"),
                )
                .await
                .map_err(io)?;
                continue;
            }
            ImapCommand::StartTls => {
                send(
                    &mut client,
                    &format!("{tag} BAD STARTTLS is not offered on this listener"),
                )
                .await
                .map_err(io)?;
                continue;
            }
            ImapCommand::Other(name) => {
                send(
                    &mut client,
                    &format!("{tag} BAD {name} needs a login first (LOGIN or AUTHENTICATE PLAIN)"),
                )
                .await
                .map_err(io)?;
                continue;
            }
            ImapCommand::Login { user, password } => (user, password),
            ImapCommand::Authenticate { mechanism, .. } if mechanism != "PLAIN" => {
                send(
                    &mut client,
                    &format!("{tag} NO [CANNOT] only AUTHENTICATE PLAIN is offered"),
                )
                .await
                .map_err(io)?;
                continue;
            }
            ImapCommand::Authenticate {
                initial_response, ..
            } => {
                let response = match initial_response {
                    Some(r) => r,
                    None => {
                        // RFC 3501 §6.2.2: an empty challenge, then the client's response line.
                        send(&mut client, "+ ").await.map_err(io)?;
                        match next_line(&mut client, &mut lines, deadline).await? {
                            Some(line) => String::from_utf8_lossy(&line).into_owned(),
                            None => return Ok(None),
                        }
                    }
                };
                if response.trim() == "*" {
                    send(&mut client, &format!("{tag} BAD authentication cancelled"))
                        .await
                        .map_err(io)?;
                    continue;
                }
                match decode_sasl_plain(&response) {
                    Some(pair) => pair,
                    None => {
                        send(
                            &mut client,
                            &format!("{tag} BAD the PLAIN response is not base64 of NUL login NUL password"),
                        )
                        .await
                        .map_err(io)?;
                        continue;
                    }
                }
            }
        };
        // Boxed: the login (upstream connect, TLS, XOAUTH2) is large and short-lived, and
        // inline it would size the whole session task, idle relay included.
        let refusal = match Box::pin(log_in(ctx, peer, &login, &password)).await {
            Ok((live, upstream, capabilities)) => {
                send(
                    &mut client,
                    &format!("{tag} OK [CAPABILITY {capabilities}] logged in through mailgate"),
                )
                .await
                .map_err(io)?;
                return relay(client, lines, upstream, live).await.map(|()| None);
            }
            Err(refusal) => refusal,
        };
        let reply = refusal.reply(
            &format!("{tag} NO [AUTHENTICATIONFAILED]"),
            &format!("{tag} NO [UNAVAILABLE]"),
        );
        send(&mut client, &reply).await.map_err(io)?;
        if matches!(refusal, Refusal::BadCredentials) {
            failures += 1;
            if failures >= MAX_FAILED_LOGINS {
                let _ = send(&mut client, "* BYE too many failed logins").await;
                return Ok(None);
            }
        }
    }
}

/// A good login: the account's IMAP server opened with a token, and the capabilities to
/// pass on (the upstream's own after authentication, less what only matters before login).
async fn log_in<'a>(
    ctx: &'a ProxyContext,
    peer: SocketAddr,
    login: &str,
    password: &str,
) -> Result<(LiveGuard<'a>, Box<dyn mailgate_mail::net::Io>, String), Refusal> {
    let (account, live) = ctx.check_login("IMAP", peer, login, password).await?;
    let is_imap = account
        .spec
        .inbound
        .as_ref()
        .is_some_and(|inbound| inbound.protocol == InboundProtocol::Imap);
    if !is_imap {
        return Err(ctx
            .no_server(
                "IMAP",
                &account,
                peer,
                "the account has no IMAP server",
                "no_imap_server",
            )
            .await);
    }
    let opened =
        mailgate_mail::inbox::open_imap(&ctx.engine, &ctx.tls, &account, UPSTREAM_TIMEOUT).await;
    let upstream = match opened {
        Ok((upstream, _expires_at)) => upstream,
        Err(e) => return Err(ctx.upstream_failed("IMAP", peer, &account, &e).await),
    };
    let capabilities = upstream
        .capabilities
        .iter()
        .filter(|c| {
            let c = c.to_ascii_uppercase();
            !(c.starts_with("AUTH=") || c == "LOGINDISABLED" || c == "STARTTLS")
        })
        .cloned()
        .collect::<Vec<_>>()
        .join(" ");
    let stream = match upstream.into_stream() {
        Ok(stream) => stream,
        Err(e) => return Err(ctx.upstream_failed("IMAP", peer, &account, &e).await),
    };
    tracing::info!(account = %account.spec.name.as_str(), %peer, "IMAP proxy session relaying");
    Ok((live, stream, capabilities))
}
