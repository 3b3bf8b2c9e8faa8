//! One POP3 proxy session: greeting, CAPA, USER/PASS and AUTH PLAIN answered by mailgate,
//! then the account's POP3 server, already authenticated with XOAUTH2, through the relay.

use super::{
    LiveGuard, MAX_FAILED_LOGINS, Phase, ProxyContext, Refusal, UPSTREAM_TIMEOUT, next_line, relay,
    send,
};
use mailgate_core::account::InboundProtocol;
use mailgate_proto::proxy::{
    ClientLines, DEFAULT_MAX_COMMAND_LINE, Pop3Command, decode_sasl_plain, parse_pop3_command,
};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// What the proxy offers before login (RFC 2449): its own mechanisms, never XOAUTH2.
const CAPA: &str = "+OK capability list follows\r\nUSER\r\nSASL PLAIN\r\nUIDL\r\nTOP\r\n.";
/// Before STLS on a listener that requires it: no login mechanism at all (RFC 2595 §4).
const CAPA_BEFORE_STLS: &str = "+OK capability list follows\r\nSTLS\r\nUIDL\r\nTOP\r\n.";

/// Runs a session to its end; `Ok(Some(client))` after an accepted STLS.
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
    if phase != Phase::AfterStartTls {
        send(&mut client, "+OK mailgate POP3 proxy ready")
            .await
            .map_err(io)?;
    }
    let mut lines = ClientLines::new(DEFAULT_MAX_COMMAND_LINE);
    let deadline = Instant::now() + ctx.login_timeout;
    let mut user: Option<String> = None;
    let mut failures = 0;
    loop {
        let line = match next_line(&mut client, &mut lines, deadline).await {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(None),
            Err(e) => {
                let _ = send(&mut client, &format!("-ERR {e}")).await;
                return Err(e);
            }
        };
        let (login, password) = match parse_pop3_command(&line) {
            Pop3Command::Bad(reason) => {
                send(&mut client, &format!("-ERR {reason}"))
                    .await
                    .map_err(io)?;
                continue;
            }
            Pop3Command::Capa => {
                let capa = if phase == Phase::BeforeStartTls {
                    CAPA_BEFORE_STLS
                } else {
                    CAPA
                };
                send(&mut client, capa).await.map_err(io)?;
                continue;
            }
            Pop3Command::Stls if phase == Phase::BeforeStartTls => {
                send(&mut client, "+OK begin TLS negotiation")
                    .await
                    .map_err(io)?;
                // Bytes pipelined after STLS came in plain text: dropped, never read as if
                // they had come over TLS (CVE-2011-0411).
                drop(lines);
                return Ok(Some(client));
            }
            Pop3Command::User(_) | Pop3Command::Pass(_) | Pop3Command::Auth { .. }
                if phase == Phase::BeforeStartTls =>
            {
                send(
                    &mut client,
                    "-ERR [AUTH] run STLS first: logins need TLS on this listener",
                )
                .await
                .map_err(io)?;
                continue;
            }
            Pop3Command::Quit => {
                send(&mut client, "+OK bye").await.map_err(io)?;
                return Ok(None);
            }
            Pop3Command::Stls => {
                send(&mut client, "-ERR STLS is not offered on this listener")
                    .await
                    .map_err(io)?;
                continue;
            }
            Pop3Command::Other(verb) => {
                send(
                    &mut client,
                    &format!("-ERR {verb} needs a login first (USER/PASS or AUTH PLAIN)"),
                )
                .await
                .map_err(io)?;
                continue;
            }
            Pop3Command::User(name) => {
                user = Some(name);
                send(&mut client, "+OK send PASS").await.map_err(io)?;
                continue;
            }
            Pop3Command::Pass(password) => match user.take() {
                Some(login) => (login, password),
                None => {
                    send(&mut client, "-ERR USER first").await.map_err(io)?;
                    continue;
                }
            },
            Pop3Command::Auth { mechanism, .. } if mechanism != "PLAIN" => {
                send(&mut client, "-ERR only AUTH PLAIN is offered")
                    .await
                    .map_err(io)?;
                continue;
            }
            Pop3Command::Auth {
                initial_response, ..
            } => {
                let response = match initial_response {
                    Some(r) => r,
                    None => {
                        send(&mut client, "+ ").await.map_err(io)?;
                        match next_line(&mut client, &mut lines, deadline).await? {
                            Some(line) => String::from_utf8_lossy(&line).into_owned(),
                            None => return Ok(None),
                        }
                    }
                };
                if response.trim() == "*" {
                    send(&mut client, "-ERR authentication cancelled")
                        .await
                        .map_err(io)?;
                    continue;
                }
                match decode_sasl_plain(&response) {
                    Some(pair) => pair,
                    None => {
                        send(
                            &mut client,
                            "-ERR the PLAIN response is not base64 of NUL login NUL password",
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
            Ok((live, upstream)) => {
                send(&mut client, "+OK logged in through mailgate")
                    .await
                    .map_err(io)?;
                return relay(client, lines, upstream, live).await.map(|()| None);
            }
            Err(refusal) => refusal,
        };
        // RFC 3206 response codes: [AUTH] for credentials, [SYS/TEMP] for passing trouble.
        let text = refusal.reply("-ERR [AUTH]", "-ERR [SYS/TEMP]");
        send(&mut client, &text).await.map_err(io)?;
        if matches!(refusal, Refusal::BadCredentials) {
            failures += 1;
            if failures >= MAX_FAILED_LOGINS {
                return Ok(None);
            }
        }
    }
}

/// A good login: the account's POP3 server opened and authenticated with a token.
async fn log_in<'a>(
    ctx: &'a ProxyContext,
    peer: SocketAddr,
    login: &str,
    password: &str,
) -> Result<(LiveGuard<'a>, Box<dyn mailgate_mail::net::Io>), Refusal> {
    let (account, live) = ctx.check_login("POP3", peer, login, password).await?;
    let is_pop3 = account
        .spec
        .inbound
        .as_ref()
        .is_some_and(|inbound| inbound.protocol == InboundProtocol::Pop3);
    if !is_pop3 {
        return Err(ctx
            .no_server(
                "POP3",
                &account,
                peer,
                "the account's inbound server is not POP3",
                "no_pop3_server",
            )
            .await);
    }
    let opened =
        mailgate_mail::inbox::open_pop3(&ctx.engine, &ctx.tls, &account, UPSTREAM_TIMEOUT).await;
    match opened.and_then(|upstream| upstream.into_stream()) {
        Ok(stream) => {
            tracing::info!(account = %account.spec.name.as_str(), %peer, "POP3 proxy session relaying");
            Ok((live, stream))
        }
        Err(e) => Err(ctx.upstream_failed("POP3", peer, &account, &e).await),
    }
}
