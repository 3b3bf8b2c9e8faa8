//! Sending one message over the account's SMTP with a fresh token: what the outbox worker
//! does for each message.

use crate::net::{self, MailError, TlsSettings};
use crate::remedy::MailRemedy;
use crate::smtp::SmtpClient;
use mailgate_core::TlsMode;
use mailgate_core::account::MailAccount;
use mailgate_grants::Engine;
use std::time::Duration;

/// A message the server accepted (DATA's 250), with the session still open. The caller
/// records the success first and then says QUIT: once the 250 has arrived the server owns
/// the message, so a failed QUIT (or a crash before it) must not make it look unsent.
pub struct Sent {
    /// The server's final reply (its queue id).
    pub reply: String,
    session: SmtpClient,
}

impl Sent {
    /// Ends the conversation politely; its outcome changes nothing.
    pub async fn quit(self) {
        self.session.quit().await;
    }
}

/// Sends `message` to `recipients`; returns once DATA's 250 has arrived, without QUIT.
pub async fn send(
    engine: &Engine,
    tls: &TlsSettings,
    account: &MailAccount,
    recipients: &[String],
    message: &[u8],
    timeout: Duration,
) -> Result<Sent, MailError> {
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
    Ok(Sent { reply, session: c })
}

/// An authenticated submission session on the account's SMTP server, for the proxy: a
/// fresh token, and once more with a refreshed one if the server refuses it.
pub async fn open_submission(
    engine: &Engine,
    tls: &TlsSettings,
    account: &MailAccount,
    timeout: Duration,
) -> Result<SmtpClient, MailError> {
    let out = account.spec.outbound.as_ref().ok_or_else(|| {
        MailError::new(MailRemedy::SendRejected, "the account has no outbound SMTP")
    })?;
    let server = &out.server;
    crate::inbox::with_refused_token_retry(engine, account, |token, _| {
        smtp_login(server, tls, account, token, timeout)
    })
    .await
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
/// or grant needs a person. Network trouble, timeouts and 4xx replies (`server_busy`,
/// `auth_temporary`, `send_deferred`) are worth retrying.
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

#[cfg(test)]
mod tests {
    use super::is_permanent;
    use crate::net::MailError;
    use crate::remedy::MailRemedy;

    fn failed(remedy: MailRemedy, says: &str) -> MailError {
        MailError::server(remedy, "step", says)
    }

    #[test]
    fn temporary_replies_are_retried_and_permanent_ones_are_not() {
        for (remedy, says, permanent) in [
            (
                MailRemedy::AuthTemporary,
                "454 4.7.0 Temporary authentication failure",
                false,
            ),
            (
                MailRemedy::SendDeferred,
                "421 4.4.0 Connection to relay failed",
                false,
            ),
            (MailRemedy::SendDeferred, "451 4.3.0 Try again later", false),
            (
                MailRemedy::ServerBusy,
                "421 4.3.2 Service not available",
                false,
            ),
            (MailRemedy::SendRejected, "550 5.7.60 SendAsDenied", true),
            (
                MailRemedy::AuthFailed,
                "535 5.7.8 Authentication failed",
                true,
            ),
        ] {
            assert_eq!(is_permanent(&failed(remedy, says)), permanent, "{says}");
        }
    }
}
