//! One POP3 proxy session: greeting, CAPA, USER/PASS and AUTH PLAIN answered by mailgate,
//! then the account's POP3 server, already authenticated with XOAUTH2, through the relay.

use super::{
    Phase, Protocol, ProxyContext, RefusalWords, SaslNext, SaslRefusals, UPSTREAM_TIMEOUT,
    answer_login, answer_sasl, greet, next_command, sasl_plain, send,
};
use mailgate_mail::inbox::open_pop3;
use mailgate_proto::proxy::{Pop3Command, parse_pop3_command};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};

/// What the proxy offers before login (RFC 2449): its own mechanisms, never XOAUTH2.
const CAPA: &str = "+OK capability list follows\r\nUSER\r\nSASL PLAIN\r\nUIDL\r\nTOP\r\n.";
/// Before STLS on a listener that requires it: no login mechanism at all (RFC 2595 §4).
const CAPA_BEFORE_STLS: &str = "+OK capability list follows\r\nSTLS\r\nUIDL\r\nTOP\r\n.";

const LOGGED_IN: &str = "+OK logged in through mailgate";
/// RFC 3206 response codes: [AUTH] for credentials, [SYS/TEMP] for passing trouble.
const REFUSALS: RefusalWords<'static> = RefusalWords {
    refused: "-ERR [AUTH]",
    temporary: "-ERR [SYS/TEMP]",
    too_many: None,
};
/// AUTH PLAIN cancelled, or not base64 of `NUL login NUL password`.
const SASL_REFUSALS: SaslRefusals<'static> = SaslRefusals {
    cancelled: "-ERR authentication cancelled",
    malformed: "-ERR the PLAIN response is not base64 of NUL login NUL password",
};

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
    let (mut lines, deadline) =
        greet(ctx, &mut client, phase, "+OK mailgate POP3 proxy ready").await?;
    let mut user: Option<String> = None;
    let mut failures = 0;
    loop {
        let Some(line) = next_command(&mut client, &mut lines, deadline, "-ERR").await? else {
            return Ok(None);
        };
        let (login, password) = match parse_pop3_command(&line) {
            Pop3Command::Bad(reason) => {
                send(&mut client, &format!("-ERR {reason}")).await?;
                continue;
            }
            Pop3Command::Capa => {
                let capa = if phase == Phase::BeforeStartTls {
                    CAPA_BEFORE_STLS
                } else {
                    CAPA
                };
                send(&mut client, capa).await?;
                continue;
            }
            Pop3Command::Stls if phase == Phase::BeforeStartTls => {
                send(&mut client, "+OK begin TLS negotiation").await?;
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
                .await?;
                continue;
            }
            Pop3Command::Quit => {
                send(&mut client, "+OK bye").await?;
                return Ok(None);
            }
            Pop3Command::Stls => {
                send(&mut client, "-ERR STLS is not offered on this listener").await?;
                continue;
            }
            Pop3Command::Other(verb) => {
                send(
                    &mut client,
                    &format!("-ERR {verb} needs a login first (USER/PASS or AUTH PLAIN)"),
                )
                .await?;
                continue;
            }
            Pop3Command::User(name) => {
                user = Some(name);
                send(&mut client, "+OK send PASS").await?;
                continue;
            }
            Pop3Command::Pass(password) => match user.take() {
                Some(login) => (login, password),
                None => {
                    send(&mut client, "-ERR USER first").await?;
                    continue;
                }
            },
            Pop3Command::Auth { mechanism, .. } if mechanism != "PLAIN" => {
                send(&mut client, "-ERR only AUTH PLAIN is offered").await?;
                continue;
            }
            Pop3Command::Auth {
                initial_response, ..
            } => {
                let plain =
                    sasl_plain(&mut client, &mut lines, deadline, initial_response, "+ ").await?;
                match answer_sasl(&mut client, plain, &SASL_REFUSALS).await? {
                    SaslNext::LogIn { login, password } => (login, password),
                    SaslNext::NextCommand => continue,
                    SaslNext::Closed => return Ok(None),
                }
            }
        };
        let attempt = ctx.log_in(Protocol::Pop3, peer, &login, &password, async |account| {
            let upstream = open_pop3(&ctx.engine, &ctx.tls, account, UPSTREAM_TIMEOUT).await?;
            Ok((upstream.into_stream()?, LOGGED_IN.to_owned()))
        });
        if answer_login(&mut client, &mut lines, attempt, &REFUSALS, &mut failures).await? {
            return Ok(None);
        }
    }
}
