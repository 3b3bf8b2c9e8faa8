//! Sending one message over the account's SMTP with a fresh token: what the outbox worker
//! does for each message.

use crate::net::{self, MailError, TlsSettings};
use crate::remedy::MailRemedy;
pub use crate::smtp::AfterReset;
use crate::smtp::SmtpClient;
use mailgate_core::account::MailAccount;
use mailgate_core::token_source::TokenSource;
use mailgate_core::{Timestamp, TlsMode};
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
    tokens: &dyn TokenSource,
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
    let mut c = crate::inbox::with_refused_token_retry(tokens, account, |token, _| {
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
    tokens: &dyn TokenSource,
    tls: &TlsSettings,
    account: &MailAccount,
    timeout: Duration,
) -> Result<SmtpClient, MailError> {
    let out = account.spec.outbound.as_ref().ok_or_else(|| {
        MailError::new(MailRemedy::SendRejected, "the account has no outbound SMTP")
    })?;
    let server = &out.server;
    crate::inbox::with_refused_token_retry(tokens, account, |token, _| {
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
    // A delegate authenticates as itself; the envelope sender stays the mailbox.
    let user = account.spec.smtp_auth_user().to_string();
    c.authenticate(mech, &user, &token, server.port.get())
        .await?;
    Ok(c)
}

/// Re-authenticate (a new session) when the session's token expires within this: a
/// provider may end an authenticated session when its token expires, mid-message.
const SESSION_TOKEN_MARGIN_SECS: i64 = 120;
/// Messages one session carries at most before a new one: some providers limit messages
/// per connection, and it bounds how long one session (and its token) lives.
const SESSION_MAX_MESSAGES: u32 = 100;

/// An authenticated SMTP session kept for one account's consecutive messages: the outbox
/// pays for the connection, TLS and AUTH once per batch instead of once per message.
pub struct Session {
    client: SmtpClient,
    server: mailgate_core::account::ServerEndpoint,
    /// The envelope sender (the mailbox).
    user: String,
    /// Who authenticated (the delegate of a shared mailbox, else the mailbox).
    auth_user: String,
    token_expires_at: Option<Timestamp>,
    /// Messages sent on it; every one after the first starts with RSET.
    messages: u32,
}

impl Session {
    /// Connects and authenticates with a fresh token (once more with a refreshed token if
    /// the server refuses it, as [`send`] does).
    pub async fn open(
        tokens: &dyn TokenSource,
        tls: &TlsSettings,
        account: &MailAccount,
        timeout: Duration,
    ) -> Result<Session, MailError> {
        let out = account.spec.outbound.as_ref().ok_or_else(|| {
            MailError::new(MailRemedy::SendRejected, "the account has no outbound SMTP")
        })?;
        let server = &out.server;
        crate::inbox::with_refused_token_retry(
            tokens,
            account,
            |token, token_expires_at| async move {
                let client = smtp_login(server, tls, account, token, timeout).await?;
                Ok(Session {
                    client,
                    server: server.clone(),
                    user: account.spec.sasl_user().to_string(),
                    auth_user: account.spec.smtp_auth_user().to_string(),
                    token_expires_at,
                    messages: 0,
                })
            },
        )
        .await
    }

    /// Whether the next message of `account` may use this session at `now`: the account
    /// still sends through the same server as the same user, the token is not about to
    /// expire, and the session has not carried its share of messages.
    pub fn reusable_for(&self, account: &MailAccount, now: Timestamp) -> bool {
        let same_route = account
            .spec
            .outbound
            .as_ref()
            .is_some_and(|o| o.server == self.server)
            && account.spec.sasl_user().to_string() == self.user
            && account.spec.smtp_auth_user().to_string() == self.auth_user;
        let token_fresh = self
            .token_expires_at
            .is_none_or(|t| now.secs_until(t) > SESSION_TOKEN_MARGIN_SECS);
        same_route && token_fresh && self.messages < SESSION_MAX_MESSAGES
    }

    /// Sends `message` to `recipients`; returns DATA's 250 reply, the session still open.
    /// Every message after the first starts with RSET (in the envelope's write where the
    /// server pipelines): [`AfterReset::Reset`] when that failed, which means the session
    /// is gone and nothing of this message was taken.
    pub async fn send(
        &mut self,
        recipients: &[String],
        message: &[u8],
    ) -> Result<String, AfterReset> {
        let rcpts: Vec<&str> = recipients.iter().map(String::as_str).collect();
        self.messages += 1;
        if self.messages == 1 {
            self.client
                .send(&self.user, &rcpts, message)
                .await
                .map_err(AfterReset::Message)
        } else {
            self.client
                .reset_and_send(&self.user, &rcpts, message)
                .await
        }
    }

    /// Ends the session politely; its outcome changes nothing.
    pub async fn quit(self) {
        self.client.quit().await;
    }
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
        | MailRemedy::SendAsDenied
        | MailRemedy::SharedMailboxNoAccess
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
