//! One SMTP (submission) proxy session: greeting, EHLO and AUTH PLAIN/LOGIN answered by
//! mailgate, then the account's submission server, already authenticated with XOAUTH2,
//! takes over the conversation (MAIL FROM onwards) through the relay.

use super::{
    LiveGuard, MAX_FAILED_LOGINS, Phase, ProxyContext, Refusal, UPSTREAM_TIMEOUT, next_line, relay,
    send,
};
use mailgate_proto::proxy::{
    ClientLines, DEFAULT_MAX_COMMAND_LINE, SmtpCommand, decode_sasl_line, decode_sasl_plain,
    parse_smtp_command,
};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// base64 of "Username:" and "Password:", the prompts of AUTH LOGIN.
const USERNAME_PROMPT: &str = "334 VXNlcm5hbWU6";
const PASSWORD_PROMPT: &str = "334 UGFzc3dvcmQ6";

/// Reads a SASL continuation line; `Err` ends the session, `Ok(None)` means the client
/// cancelled with `*` (RFC 4954 §4).
async fn sasl_line<S: AsyncRead + Unpin>(
    client: &mut S,
    lines: &mut ClientLines,
    deadline: Instant,
) -> Result<Option<String>, String> {
    match next_line(client, lines, deadline).await? {
        Some(line) => {
            let line = String::from_utf8_lossy(&line).into_owned();
            Ok((line.trim() != "*").then_some(line))
        }
        None => Err("the client closed the connection".into()),
    }
}

/// Runs a session to its end; `Ok(Some(client))` after an accepted STARTTLS.
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
    // After STARTTLS the client starts over with EHLO, without a new greeting (RFC 3207).
    if phase != Phase::AfterStartTls {
        send(&mut client, "220 mailgate SMTP proxy ready")
            .await
            .map_err(io)?;
    }
    let mut lines = ClientLines::new(DEFAULT_MAX_COMMAND_LINE);
    let deadline = Instant::now() + ctx.login_timeout;
    let mut greeted = false;
    let mut failures = 0;
    loop {
        let line = match next_line(&mut client, &mut lines, deadline).await {
            Ok(Some(line)) => line,
            Ok(None) => return Ok(None),
            Err(e) => {
                let _ = send(&mut client, &format!("421 4.7.0 {e}")).await;
                return Err(e);
            }
        };
        let (login, password) = match parse_smtp_command(&line) {
            SmtpCommand::Bad(reason) => {
                send(&mut client, &format!("501 5.5.2 {reason}"))
                    .await
                    .map_err(io)?;
                continue;
            }
            SmtpCommand::Hello { extended, name } => {
                greeted = true;
                let hello = if extended && phase == Phase::BeforeStartTls {
                    // No AUTH until TLS is up (RFC 3207 §4.2), as a real server does.
                    format!("250-mailgate greets {name}\r\n250 STARTTLS")
                } else if extended {
                    // Only what the proxy itself offers; the upstream's extensions apply
                    // from MAIL FROM on, through the relay.
                    format!("250-mailgate greets {name}\r\n250 AUTH PLAIN LOGIN")
                } else {
                    format!("250 mailgate greets {name}")
                };
                send(&mut client, &hello).await.map_err(io)?;
                continue;
            }
            SmtpCommand::Noop | SmtpCommand::Rset => {
                send(&mut client, "250 2.0.0 OK").await.map_err(io)?;
                continue;
            }
            SmtpCommand::Quit => {
                send(&mut client, "221 2.0.0 bye").await.map_err(io)?;
                return Ok(None);
            }
            SmtpCommand::StartTls if phase == Phase::BeforeStartTls => {
                send(&mut client, "220 2.0.0 ready to start TLS")
                    .await
                    .map_err(io)?;
                // Bytes pipelined after STARTTLS came in plain text: dropped, never read as
                // if they had come over TLS (CVE-2011-0411).
                drop(lines);
                return Ok(Some(client));
            }
            SmtpCommand::Auth { .. } if phase == Phase::BeforeStartTls => {
                send(
                    &mut client,
                    "530 5.7.0 must issue a STARTTLS command first: logins need TLS on this listener",
                )
                .await
                .map_err(io)?;
                continue;
            }
            SmtpCommand::StartTls => {
                send(
                    &mut client,
                    "502 5.5.1 STARTTLS is not offered on this listener",
                )
                .await
                .map_err(io)?;
                continue;
            }
            SmtpCommand::Other(verb) => {
                send(
                    &mut client,
                    &format!("530 5.7.0 {verb} needs a login first (AUTH PLAIN or AUTH LOGIN)"),
                )
                .await
                .map_err(io)?;
                continue;
            }
            SmtpCommand::Auth { .. } if !greeted => {
                send(&mut client, "503 5.5.1 EHLO first")
                    .await
                    .map_err(io)?;
                continue;
            }
            SmtpCommand::Auth {
                mechanism,
                initial_response,
            } => {
                let decoded = match mechanism.as_str() {
                    "PLAIN" => {
                        let response = match initial_response {
                            Some(r) => Some(r),
                            None => {
                                send(&mut client, "334 ").await.map_err(io)?;
                                sasl_line(&mut client, &mut lines, deadline).await?
                            }
                        };
                        response.map(|r| decode_sasl_plain(&r))
                    }
                    "LOGIN" => {
                        let user = match initial_response {
                            Some(r) => Some(r),
                            None => {
                                send(&mut client, USERNAME_PROMPT).await.map_err(io)?;
                                sasl_line(&mut client, &mut lines, deadline).await?
                            }
                        };
                        match user {
                            None => None,
                            Some(user) => {
                                send(&mut client, PASSWORD_PROMPT).await.map_err(io)?;
                                sasl_line(&mut client, &mut lines, deadline)
                                    .await?
                                    .map(|pw| decode_sasl_line(&user).zip(decode_sasl_line(&pw)))
                            }
                        }
                    }
                    _ => {
                        send(
                            &mut client,
                            "504 5.5.4 only AUTH PLAIN and AUTH LOGIN are offered",
                        )
                        .await
                        .map_err(io)?;
                        continue;
                    }
                };
                match decoded {
                    None => {
                        send(&mut client, "501 5.0.0 authentication cancelled")
                            .await
                            .map_err(io)?;
                        continue;
                    }
                    Some(None) => {
                        send(&mut client, "501 5.5.2 the response is not valid base64")
                            .await
                            .map_err(io)?;
                        continue;
                    }
                    Some(Some(pair)) => pair,
                }
            }
        };
        // Boxed: the login (upstream connect, TLS, XOAUTH2) is large and short-lived, and
        // inline it would size the whole session task, idle relay included.
        let refusal = match Box::pin(log_in(ctx, peer, &login, &password)).await {
            Ok((live, upstream)) => {
                send(&mut client, "235 2.7.0 logged in through mailgate")
                    .await
                    .map_err(io)?;
                return relay(client, lines, upstream, live).await.map(|()| None);
            }
            Err(refusal) => refusal,
        };
        let text = refusal.reply("535 5.7.8", "454 4.7.0");
        send(&mut client, &text).await.map_err(io)?;
        if matches!(refusal, Refusal::BadCredentials) {
            failures += 1;
            if failures >= MAX_FAILED_LOGINS {
                let _ = send(&mut client, "421 4.7.0 too many failed logins").await;
                return Ok(None);
            }
        }
    }
}

/// A good login: the account's submission server opened and authenticated with a token.
async fn log_in<'a>(
    ctx: &'a ProxyContext,
    peer: SocketAddr,
    login: &str,
    password: &str,
) -> Result<(LiveGuard<'a>, Box<dyn mailgate_mail::net::Io>), Refusal> {
    let (account, live) = ctx.check_login("SMTP", peer, login, password).await?;
    if account.spec.outbound.is_none() {
        return Err(ctx
            .no_server(
                "SMTP",
                &account,
                peer,
                "the account has no SMTP server",
                "no_smtp_server",
            )
            .await);
    }
    let opened =
        mailgate_mail::send::open_submission(&ctx.engine, &ctx.tls, &account, UPSTREAM_TIMEOUT)
            .await;
    let stream = opened.and_then(|upstream| upstream.into_stream());
    match stream {
        Ok(stream) => {
            tracing::info!(account = %account.spec.name.as_str(), %peer, "SMTP proxy session relaying");
            Ok((live, stream))
        }
        Err(e) => Err(ctx.upstream_failed("SMTP", peer, &account, &e).await),
    }
}
