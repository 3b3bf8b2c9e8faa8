//! One SMTP (submission) proxy session: greeting, EHLO and AUTH PLAIN/LOGIN answered by
//! mailgate, then the account's submission server, already authenticated with XOAUTH2,
//! takes over the conversation (MAIL FROM onwards) through the relay.

use super::{
    Phase, Protocol, ProxyContext, RefusalWords, SaslLogin, SaslNext, SaslRefusals, SaslResponse,
    UPSTREAM_TIMEOUT, answer_login, answer_sasl, greet, next_command, sasl_plain, sasl_response,
    send,
};
use mailgate_mail::send::open_submission;
use mailgate_proto::proxy::{ClientLines, SmtpCommand, decode_sasl_line, parse_smtp_command};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;

/// base64 of "Username:" and "Password:", the prompts of AUTH LOGIN.
const USERNAME_PROMPT: &str = "334 VXNlcm5hbWU6";
const PASSWORD_PROMPT: &str = "334 UGFzc3dvcmQ6";

/// `AUTH LOGIN` (draft-murchison-sasl-login): the user name (its initial response, or after
/// the prompt), then the password after its prompt, each base64 on its own line.
async fn sasl_login<S: AsyncRead + AsyncWrite + Unpin>(
    client: &mut S,
    lines: &mut ClientLines,
    deadline: Instant,
    initial_response: Option<String>,
) -> Result<SaslLogin, String> {
    let user =
        match sasl_response(client, lines, deadline, initial_response, USERNAME_PROMPT).await? {
            SaslResponse::Given(user) => user,
            SaslResponse::Cancelled => return Ok(SaslLogin::Cancelled),
            SaslResponse::Closed => return Ok(SaslLogin::Closed),
        };
    Ok(
        match sasl_response(client, lines, deadline, None, PASSWORD_PROMPT).await? {
            SaslResponse::Given(password) => {
                match decode_sasl_line(&user).zip(decode_sasl_line(&password)) {
                    Some((login, password)) => SaslLogin::Credentials { login, password },
                    None => SaslLogin::Malformed,
                }
            }
            SaslResponse::Cancelled => SaslLogin::Cancelled,
            SaslResponse::Closed => SaslLogin::Closed,
        },
    )
}

const LOGGED_IN: &str = "235 2.7.0 logged in through mailgate";
/// RFC 4954 §6: 535 for credentials, 454 for passing trouble.
const REFUSALS: RefusalWords<'static> = RefusalWords {
    refused: "535 5.7.8",
    temporary: "454 4.7.0",
    too_many: Some("421 4.7.0 too many failed logins"),
};
/// AUTH PLAIN or LOGIN cancelled, or not base64 of what the mechanism sends.
const SASL_REFUSALS: SaslRefusals<'static> = SaslRefusals {
    cancelled: "501 5.0.0 authentication cancelled",
    malformed: "501 5.5.2 the response is not valid base64",
};

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
    // After STARTTLS the client starts over with EHLO, without a new greeting (RFC 3207).
    let (mut lines, deadline) =
        greet(ctx, &mut client, phase, "220 mailgate SMTP proxy ready").await?;
    let mut greeted = false;
    let mut failures = 0;
    loop {
        let Some(line) = next_command(&mut client, &mut lines, deadline, "421 4.7.0").await? else {
            return Ok(None);
        };
        let (login, password) = match parse_smtp_command(&line) {
            SmtpCommand::Bad(reason) => {
                send(&mut client, &format!("501 5.5.2 {reason}")).await?;
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
                send(&mut client, &hello).await?;
                continue;
            }
            SmtpCommand::Noop | SmtpCommand::Rset => {
                send(&mut client, "250 2.0.0 OK").await?;
                continue;
            }
            SmtpCommand::Quit => {
                send(&mut client, "221 2.0.0 bye").await?;
                return Ok(None);
            }
            SmtpCommand::StartTls if phase == Phase::BeforeStartTls => {
                send(&mut client, "220 2.0.0 ready to start TLS").await?;
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
                .await?;
                continue;
            }
            SmtpCommand::StartTls => {
                send(
                    &mut client,
                    "502 5.5.1 STARTTLS is not offered on this listener",
                )
                .await?;
                continue;
            }
            SmtpCommand::Other(verb) => {
                send(
                    &mut client,
                    &format!("530 5.7.0 {verb} needs a login first (AUTH PLAIN or AUTH LOGIN)"),
                )
                .await?;
                continue;
            }
            SmtpCommand::Auth { .. } if !greeted => {
                send(&mut client, "503 5.5.1 EHLO first").await?;
                continue;
            }
            SmtpCommand::Auth {
                mechanism,
                initial_response,
            } => {
                let outcome = match mechanism.as_str() {
                    "PLAIN" => {
                        sasl_plain(&mut client, &mut lines, deadline, initial_response, "334 ")
                            .await?
                    }
                    "LOGIN" => {
                        sasl_login(&mut client, &mut lines, deadline, initial_response).await?
                    }
                    _ => {
                        send(
                            &mut client,
                            "504 5.5.4 only AUTH PLAIN and AUTH LOGIN are offered",
                        )
                        .await?;
                        continue;
                    }
                };
                match answer_sasl(&mut client, outcome, &SASL_REFUSALS).await? {
                    SaslNext::LogIn { login, password } => (login, password),
                    SaslNext::NextCommand => continue,
                    SaslNext::Closed => return Err("the client closed the connection".into()),
                }
            }
        };
        let attempt = ctx.log_in(Protocol::Smtp, peer, &login, &password, async |account| {
            let upstream =
                open_submission(&ctx.engine, &ctx.tls, account, UPSTREAM_TIMEOUT).await?;
            Ok((upstream.into_stream()?, LOGGED_IN.to_owned()))
        });
        if answer_login(&mut client, &mut lines, attempt, &REFUSALS, &mut failures).await? {
            return Ok(None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tests::with_client;

    async fn login_exchange(
        initial_response: Option<&str>,
        client_sends: &str,
    ) -> (SaslLogin, String) {
        let initial_response = initial_response.map(str::to_owned);
        with_client(client_sends, async |client, lines, deadline| {
            sasl_login(client, lines, deadline, initial_response).await
        })
        .await
    }

    #[tokio::test]
    async fn auth_login_asks_for_what_the_client_has_not_sent_yet() {
        // base64 of "alice@example.test" and "secret".
        const USER: &str = "YWxpY2VAZXhhbXBsZS50ZXN0";
        const PASSWORD: &str = "c2VjcmV0";
        let alice = || SaslLogin::Credentials {
            login: "alice@example.test".into(),
            password: "secret".into(),
        };
        let both_prompts = format!("{USERNAME_PROMPT}\r\n{PASSWORD_PROMPT}\r\n");
        assert_eq!(
            login_exchange(None, &format!("{USER}\r\n{PASSWORD}\r\n")).await,
            (alice(), both_prompts.clone())
        );
        assert_eq!(
            login_exchange(Some(USER), &format!("{PASSWORD}\r\n")).await,
            (alice(), format!("{PASSWORD_PROMPT}\r\n")),
            "the initial response is the user name"
        );
        assert_eq!(
            login_exchange(None, &format!("{USER}\r\n*\r\n")).await,
            (SaslLogin::Cancelled, both_prompts.clone())
        );
        assert_eq!(
            login_exchange(None, "*\r\n").await,
            (SaslLogin::Cancelled, format!("{USERNAME_PROMPT}\r\n"))
        );
        assert_eq!(
            login_exchange(None, &format!("{USER}\r\n!!\r\n")).await,
            (SaslLogin::Malformed, both_prompts.clone())
        );
        assert_eq!(
            login_exchange(None, &format!("{USER}\r\n")).await,
            (SaslLogin::Closed, both_prompts)
        );
    }
}
