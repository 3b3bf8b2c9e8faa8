//! Sending one message over the account's SMTP with a fresh token: what the outbox worker
//! does for each message.

use crate::net::{self, MailError, TlsSettings};
use crate::remedy::MailRemedy;
use crate::smtp::SmtpClient;
use mailgate_core::TlsMode;
use mailgate_core::account::MailAccount;
use mailgate_grants::Engine;
use std::time::Duration;

/// Sends `message` to `recipients`; returns the server's final reply (its queue id).
pub async fn send(
    engine: &Engine,
    tls: &TlsSettings,
    account: &MailAccount,
    recipients: &[String],
    message: &[u8],
    timeout: Duration,
) -> Result<String, MailError> {
    let out = account.spec.outbound.as_ref().ok_or_else(|| {
        MailError::new(MailRemedy::SendRejected, "the account has no outbound SMTP")
    })?;
    let server = &out.server;
    let mut c = crate::inbox::with_refused_token_retry(engine, account, |token, _| {
        smtp_login(server, tls, account, token, timeout)
    })
    .await?;
    let user = account.spec.sasl_user().to_string();
    let rcpts: Vec<&str> = recipients.iter().map(String::as_str).collect();
    let reply = c.send(&user, &rcpts, message).await?;
    c.quit().await;
    Ok(reply)
}

/// Connect, EHLO, STARTTLS when asked, and authenticate with `token`.
async fn smtp_login(
    server: &mailgate_core::account::ServerEndpoint,
    tls: &TlsSettings,
    account: &MailAccount,
    token: String,
    timeout: Duration,
) -> Result<SmtpClient, MailError> {
    let conn = net::open(server, timeout, tls).await?;
    let mut c = SmtpClient::greet(conn).await?;
    let ehlo = "mailgate.localhost";
    c.ehlo(ehlo).await?;
    if server.tls == TlsMode::Starttls {
        c.starttls(tls, ehlo).await?;
    }
    let mech = c.oauth_mechanism().ok_or_else(|| {
        MailError::new(
            MailRemedy::OAuthNotOffered,
            "the SMTP server offers no OAuth mechanism",
        )
    })?;
    let user = account.spec.sasl_user().to_string();
    c.authenticate(mech, &user, &token, server.port.get())
        .await?;
    Ok(c)
}

/// Whether retrying cannot help: the server refused for good (5xx), or the configuration
/// or grant needs a person. Network trouble, timeouts and 4xx replies are worth retrying.
pub fn is_permanent(e: &MailError) -> bool {
    match e.remedy {
        MailRemedy::SendRejected => e.server_says.as_deref().is_some_and(|s| s.starts_with('5')),
        MailRemedy::TokenUnavailable => e.oauth.is_some_and(|(code, _)| {
            mailgate_oauth::Remediation::from_code(code)
                .is_some_and(|r| !matches!(r.severity(), mailgate_oauth::Severity::Transient))
        }),
        MailRemedy::AuthFailed
        | MailRemedy::SmtpAuthDisabled
        | MailRemedy::OAuthNotOffered
        | MailRemedy::TlsNameMismatch
        | MailRemedy::TlsUntrusted
        | MailRemedy::TlsExpired
        | MailRemedy::NotTls
        | MailRemedy::WrongProtocol
        | MailRemedy::NoStartTls
        | MailRemedy::Disabled => true,
        _ => false,
    }
}
