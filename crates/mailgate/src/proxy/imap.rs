//! One IMAP proxy session: the pre-login dialogue mailgate answers itself, then the relay.

use super::{
    Phase, Protocol, ProxyContext, RefusalWords, SaslNext, SaslRefusals, UPSTREAM_TIMEOUT,
    answer_login, answer_sasl, greet, next_command, sasl_plain, send,
};
use mailgate_mail::inbox::open_imap;
use mailgate_proto::proxy::{ImapCommand, ImapInput, parse_imap_command};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncWrite};

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
    let capabilities = if phase == Phase::BeforeStartTls {
        BEFORE_STARTTLS_CAPABILITIES
    } else {
        PRE_LOGIN_CAPABILITIES
    };
    let greeting = format!("* OK [CAPABILITY {capabilities}] mailgate IMAP proxy ready");
    let (mut lines, deadline) = greet(ctx, &mut client, phase, &greeting).await?;
    let mut failures = 0;
    loop {
        let Some(line) = next_command(&mut client, &mut lines, deadline, "* BYE").await? else {
            return Ok(None);
        };
        let (tag, command) = match parse_imap_command(&line) {
            ImapInput::Command { tag, command } => (tag, command),
            ImapInput::Bad { tag, reason } => {
                let tag = tag.unwrap_or_else(|| "*".into());
                send(&mut client, &format!("{tag} BAD {reason}")).await?;
                continue;
            }
        };
        let (login, password) = match command {
            ImapCommand::Capability => {
                send(&mut client, &format!("* CAPABILITY {capabilities}")).await?;
                send(&mut client, &format!("{tag} OK CAPABILITY completed")).await?;
                continue;
            }
            ImapCommand::Noop => {
                send(&mut client, &format!("{tag} OK NOOP completed")).await?;
                continue;
            }
            ImapCommand::Logout => {
                send(&mut client, "* BYE mailgate IMAP proxy signing off").await?;
                send(&mut client, &format!("{tag} OK LOGOUT completed")).await?;
                return Ok(None);
            }
            ImapCommand::StartTls if phase == Phase::BeforeStartTls => {
                send(&mut client, &format!("{tag} OK begin TLS negotiation now")).await?;
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
                .await?;
                continue;
            }
            ImapCommand::StartTls => {
                send(
                    &mut client,
                    &format!("{tag} BAD STARTTLS is not offered on this listener"),
                )
                .await?;
                continue;
            }
            ImapCommand::Other(name) => {
                send(
                    &mut client,
                    &format!("{tag} BAD {name} needs a login first (LOGIN or AUTHENTICATE PLAIN)"),
                )
                .await?;
                continue;
            }
            ImapCommand::Login { user, password } => (user, password),
            ImapCommand::Authenticate { mechanism, .. } if mechanism != "PLAIN" => {
                send(
                    &mut client,
                    &format!("{tag} NO [CANNOT] only AUTHENTICATE PLAIN is offered"),
                )
                .await?;
                continue;
            }
            ImapCommand::Authenticate {
                initial_response, ..
            } => {
                let plain =
                    sasl_plain(&mut client, &mut lines, deadline, initial_response, "+ ").await?;
                let refusals = SaslRefusals {
                    cancelled: &format!("{tag} BAD authentication cancelled"),
                    malformed: &format!(
                        "{tag} BAD the PLAIN response is not base64 of NUL login NUL password"
                    ),
                };
                match answer_sasl(&mut client, plain, &refusals).await? {
                    SaslNext::LogIn { login, password } => (login, password),
                    SaslNext::NextCommand => continue,
                    SaslNext::Closed => return Ok(None),
                }
            }
        };
        let attempt = ctx.log_in(Protocol::Imap, peer, &login, &password, async |account| {
            let (upstream, _expires_at) =
                open_imap(&ctx.engine, &ctx.tls, account, UPSTREAM_TIMEOUT).await?;
            let capabilities = relayed_capabilities(&upstream.capabilities);
            let reply = format!("{tag} OK [CAPABILITY {capabilities}] logged in through mailgate");
            Ok((upstream.into_stream()?, reply))
        });
        let words = RefusalWords {
            refused: &format!("{tag} NO [AUTHENTICATIONFAILED]"),
            temporary: &format!("{tag} NO [UNAVAILABLE]"),
            too_many: Some("* BYE too many failed logins"),
        };
        if answer_login(&mut client, &mut lines, attempt, &words, &mut failures).await? {
            return Ok(None);
        }
    }
}

/// The upstream's capabilities after authentication, passed on in the reply to the login,
/// less what only matters before login.
fn relayed_capabilities(upstream: &[String]) -> String {
    upstream
        .iter()
        .filter(|c| {
            let c = c.to_ascii_uppercase();
            !(c.starts_with("AUTH=") || c == "LOGINDISABLED" || c == "STARTTLS")
        })
        .cloned()
        .collect::<Vec<_>>()
        .join(" ")
}
