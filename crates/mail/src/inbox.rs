//! Reading an account's inbox with a fresh token: the sessions the watchers keep open and
//! the list/fetch behind `GET /api/v1/accounts/{id}/messages`.

use crate::imap::ImapClient;
use crate::net::{self, MailError, TlsSettings};
use crate::parse::{self, Envelope};
use crate::pop3::Pop3Client;
use crate::remedy::MailRemedy;
use mailgate_core::account::{InboundProtocol, MailAccount, ServerEndpoint};
use mailgate_core::token_source::{TokenSource, TokenUnavailable};
use mailgate_core::{Timestamp, TlsMode};
use serde::Serialize;
use std::time::Duration;

/// A token problem as a mail error, keeping the provider's words and the remediation.
pub(crate) fn token_error(e: &TokenUnavailable, detail: String) -> MailError {
    match e {
        TokenUnavailable::Provider {
            code,
            sentence,
            provider_says,
            ..
        } => MailError {
            remedy: MailRemedy::TokenUnavailable,
            detail,
            server_says: provider_says.clone(),
            oauth: Some((code, sentence)),
        },
        other => MailError::new(MailRemedy::TokenUnavailable, other.to_string()),
    }
}

/// A mail server refused `refused`, a token mailgate handed out as valid: the provider may
/// have revoked the grant while the cached token still looks unexpired, or the token was
/// replaced meanwhile. Forces one refresh (single-flight, and at most once a minute per
/// account, by the engine). `Ok(Some(token))`: try once more with it. `Ok(None)`: no new
/// token (the limit was reached); report the refusal itself. `Err`: the refresh failed — a
/// permanent refusal has already moved the account to `reauth_required`, and the error
/// carries that remediation.
pub(crate) async fn refresh_refused(
    tokens: &dyn TokenSource,
    account: &MailAccount,
    refused: &str,
) -> Result<Option<(String, Option<Timestamp>)>, MailError> {
    match tokens.force_refresh(account.id, Some(refused)).await {
        Ok(t) if t.token.expose() != refused => {
            Ok(Some((t.token.expose().to_owned(), t.expires_at)))
        }
        Ok(_) => Ok(None),
        Err(TokenUnavailable::ForcedRefreshLimited(_)) => Ok(None),
        Err(e) => Err(token_error(
            &e,
            format!("the server refused the token, and refreshing it failed: {e}"),
        )),
    }
}

/// Runs `login` with a fresh token (and its expiry); if the server refuses that token,
/// once more with a token refreshed by [`refresh_refused`].
pub(crate) async fn with_refused_token_retry<T, F, Fut>(
    tokens: &dyn TokenSource,
    account: &MailAccount,
    mut login: F,
) -> Result<T, MailError>
where
    F: FnMut(String, Option<Timestamp>) -> Fut,
    Fut: std::future::Future<Output = Result<T, MailError>>,
{
    let (token, expires_at) = token(tokens, account).await?;
    match login(token.clone(), expires_at).await {
        Err(e) if e.remedy == MailRemedy::AuthFailed => {
            match refresh_refused(tokens, account, &token).await? {
                Some((new, expires_at)) => login(new, expires_at).await,
                None => Err(e),
            }
        }
        other => other,
    }
}

/// A refused IMAP/POP3 login, named by who the token belongs to: a delegate's token refused
/// for the shared mailbox (Exchange: "User is authenticated but not connected"; the rig: the
/// login refused) means the delegate lacks FullAccess; an app-only token refused means the
/// app was not granted the mailbox. Each says so, with the PowerShell line that grants it.
pub(crate) async fn login_refusal(
    tokens: &dyn TokenSource,
    account: &MailAccount,
    e: MailError,
) -> MailError {
    let refused = matches!(e.remedy, MailRemedy::AuthFailed | MailRemedy::NotConnected);
    if refused
        && account.spec.delegate.is_none()
        && tokens.app_flow(account.spec.app_id).await
            == Some(mailgate_core::app::OAuthFlow::ClientCredentials)
    {
        return MailError {
            remedy: MailRemedy::AppMailboxNotGranted,
            detail: format!(
                "the app's own token was refused for {} ({})",
                account.spec.sasl_user(),
                e.detail
            ),
            ..e
        };
    }
    shared_mailbox_refusal(account, e)
}

/// A delegate's login refused, or Exchange's "User is authenticated but not connected" at
/// SELECT/STAT after it: the delegate lacks FullAccess on the shared mailbox. Other errors,
/// and accounts without a delegate, keep their cause.
pub fn shared_mailbox_refusal(account: &MailAccount, e: MailError) -> MailError {
    let refused = matches!(e.remedy, MailRemedy::AuthFailed | MailRemedy::NotConnected);
    match &account.spec.delegate {
        Some(delegate) if refused => MailError {
            remedy: MailRemedy::SharedMailboxNoAccess,
            detail: format!(
                "{delegate}'s token was refused for the shared mailbox {} ({})",
                account.spec.sasl_user(),
                e.detail
            ),
            ..e
        },
        _ => e,
    }
}

fn inbound(account: &MailAccount) -> Result<(InboundProtocol, &ServerEndpoint), MailError> {
    let inb = account.spec.inbound.as_ref().ok_or_else(|| {
        MailError::new(
            MailRemedy::MailboxUnavailable,
            "the account has no inbound server",
        )
    })?;
    Ok((inb.protocol, &inb.server))
}

async fn token(
    tokens: &dyn TokenSource,
    account: &MailAccount,
) -> Result<(String, Option<Timestamp>), MailError> {
    let t = tokens
        .access_token(account.id)
        .await
        .map_err(|e| token_error(&e, format!("no fresh token: {e}")))?;
    Ok((t.token.expose().to_owned(), t.expires_at))
}

/// An authenticated IMAP session and when its token expires (the session must be
/// re-opened before then: Exchange ends it at that moment).
pub async fn open_imap(
    tokens: &dyn TokenSource,
    tls: &TlsSettings,
    account: &MailAccount,
    timeout: Duration,
) -> Result<(ImapClient, Option<Timestamp>), MailError> {
    let (_, server) = inbound(account)?;
    let user = account.spec.sasl_user().to_string();
    let opened = with_refused_token_retry(tokens, account, |token, expires_at| {
        let user = &user;
        async move {
            let c = imap_login(server, tls, user, &token, timeout).await?;
            Ok((c, expires_at))
        }
    })
    .await;
    match opened {
        Ok(opened) => Ok(opened),
        Err(e) => Err(login_refusal(tokens, account, e).await),
    }
}

async fn imap_login(
    server: &ServerEndpoint,
    tls: &TlsSettings,
    user: &str,
    token: &str,
    timeout: Duration,
) -> Result<ImapClient, MailError> {
    let conn = net::open(server, timeout, tls).await?;
    let mut c = ImapClient::greet(conn).await?;
    if server.tls == TlsMode::Starttls {
        c.starttls(tls).await?;
    }
    c.capability().await?;
    let mech = c.oauth_mechanism().ok_or_else(|| {
        MailError::new(
            MailRemedy::OAuthNotOffered,
            "the IMAP server offers no OAuth mechanism",
        )
    })?;
    c.authenticate(mech, user, token, server.port.get()).await?;
    // Capabilities may change after authentication (IDLE, MOVE, UIDPLUS).
    c.capability().await?;
    Ok(c)
}

/// An authenticated POP3 session.
pub async fn open_pop3(
    tokens: &dyn TokenSource,
    tls: &TlsSettings,
    account: &MailAccount,
    timeout: Duration,
) -> Result<Pop3Client, MailError> {
    let (_, server) = inbound(account)?;
    let user = account.spec.sasl_user().to_string();
    let opened = with_refused_token_retry(tokens, account, |token, _| {
        let user = &user;
        async move { pop3_login(server, tls, user, &token, timeout).await }
    })
    .await;
    match opened {
        Ok(c) => Ok(c),
        Err(e) => Err(login_refusal(tokens, account, e).await),
    }
}

/// Connect, STLS when asked, and authenticate `user` with `token` over the first OAuth
/// mechanism the server offers.
pub(crate) async fn pop3_login(
    server: &ServerEndpoint,
    tls: &TlsSettings,
    user: &str,
    token: &str,
    timeout: Duration,
) -> Result<Pop3Client, MailError> {
    let conn = net::open(server, timeout, tls).await?;
    let mut c = Pop3Client::greet(conn).await?;
    if server.tls == TlsMode::Starttls {
        c.capa().await?;
        c.stls(tls).await?;
    }
    c.capa().await?;
    let mech = c.oauth_mechanism().ok_or_else(|| {
        MailError::new(
            MailRemedy::OAuthNotOffered,
            "the POP3 server offers no OAuth mechanism",
        )
    })?;
    c.authenticate(mech, user, token, server.port.get()).await?;
    Ok(c)
}

/// One line of a message list.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// IMAP UID (decimal) or POP3 UIDL: the id for `…/messages/{uid}`.
    pub uid: String,
    pub size: Option<u64>,
    /// IMAP flags (`\Seen`, …); POP3 has none.
    pub flags: Vec<String>,
    #[serde(flatten)]
    pub envelope: Envelope,
}

/// The newest `limit` messages of the inbox, newest first; with `before`, only those older
/// than that uid (IMAP: numerically smaller; POP3: listed before it).
pub async fn list(
    tokens: &dyn TokenSource,
    tls: &TlsSettings,
    account: &MailAccount,
    limit: usize,
    before: Option<&str>,
    timeout: Duration,
) -> Result<Vec<Summary>, MailError> {
    match inbound(account)?.0 {
        InboundProtocol::Imap => {
            let (mut c, _) = open_imap(tokens, tls, account, timeout).await?;
            c.select_info("INBOX", true)
                .await
                .map_err(|e| shared_mailbox_refusal(account, e))?;
            let mut uids = c.uid_search("ALL").await?;
            if let Some(b) = before {
                // Not a number: no IMAP UID is "before" it.
                let b: u32 = b.parse().unwrap_or(0);
                uids.retain(|&u| u < b);
            }
            let newest: Vec<u32> = uids.iter().rev().take(limit).copied().collect();
            let mut rows = c.fetch_headers(&newest).await?;
            c.logout().await;
            rows.sort_by_key(|(a, _)| std::cmp::Reverse(a.uid));
            Ok(rows
                .into_iter()
                .map(|(attrs, header)| Summary {
                    uid: attrs.uid.unwrap_or_default().to_string(),
                    size: attrs.size,
                    flags: attrs.flags,
                    envelope: parse::envelope(&header),
                })
                .collect())
        }
        InboundProtocol::Pop3 => {
            let mut c = open_pop3(tokens, tls, account, timeout).await?;
            let uidls = c.uidl().await?;
            let sizes = c.list().await?;
            let mut numbers: Vec<(u32, String)> = uidls;
            numbers.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
            if let Some(b) = before {
                // An unknown uidl (deleted meanwhile) ends the list.
                let pos = numbers.iter().position(|(_, u)| u == b);
                numbers.drain(..pos.map_or(numbers.len(), |p| p + 1));
            }
            numbers.truncate(limit);
            let mut out = Vec::with_capacity(numbers.len());
            for (n, uidl) in numbers {
                let header = c.headers(n).await?.join(&b"\r\n"[..]);
                out.push(Summary {
                    uid: uidl,
                    size: sizes.iter().find(|(m, _)| *m == n).map(|(_, s)| *s),
                    flags: vec![],
                    envelope: parse::envelope(&header),
                });
            }
            c.quit().await;
            Ok(out)
        }
    }
}

/// The raw bytes of the message `uid` (IMAP UID or POP3 UIDL), read without marking it
/// seen; `None` if the inbox has no such message.
pub async fn fetch(
    tokens: &dyn TokenSource,
    tls: &TlsSettings,
    account: &MailAccount,
    uid: &str,
    timeout: Duration,
) -> Result<Option<Vec<u8>>, MailError> {
    match inbound(account)?.0 {
        InboundProtocol::Imap => {
            let Ok(n) = uid.parse::<u32>() else {
                return Ok(None);
            };
            let (mut c, _) = open_imap(tokens, tls, account, timeout).await?;
            c.select_info("INBOX", true)
                .await
                .map_err(|e| shared_mailbox_refusal(account, e))?;
            let raw = c.fetch(n).await?;
            c.logout().await;
            Ok(raw)
        }
        InboundProtocol::Pop3 => {
            let mut c = open_pop3(tokens, tls, account, timeout).await?;
            let found = c.uidl().await?.into_iter().find(|(_, u)| u == uid);
            let raw = match found {
                Some((n, _)) => Some(join_lines(c.retr(n).await?)),
                None => None,
            };
            c.quit().await;
            Ok(raw)
        }
    }
}

/// POP3's dot-unstuffed lines back into one CRLF message.
pub fn join_lines(lines: Vec<Vec<u8>>) -> Vec<u8> {
    let mut out = Vec::with_capacity(lines.iter().map(|l| l.len() + 2).sum());
    for l in lines {
        out.extend_from_slice(&l);
        out.extend_from_slice(b"\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::shared_mailbox_refusal;
    use crate::net::MailError;
    use crate::remedy::MailRemedy;
    use mailgate_core::account::MailAccount;

    fn account(delegate: Option<&str>) -> MailAccount {
        let spec = serde_json::from_value(serde_json::json!({
            "name": "support", "description": "", "enabled": true,
            "mailbox": "support@example.test", "shared_mailbox": null, "aliases": [],
            "app_id": 1, "inbound": null,
            "outbound": {"host": "smtp.example.test", "port": 587, "tls": "starttls"},
            "from_name": null, "reply_to": null, "signature": null,
            "on_received": {"action": "none"}, "delegate": delegate
        }))
        .unwrap();
        MailAccount {
            id: mailgate_core::AccountId(1),
            spec,
            state: mailgate_core::AccountState::Active,
            last_problem: None,
            created_at: mailgate_core::Timestamp(0),
            updated_at: mailgate_core::Timestamp(0),
        }
    }

    /// Exchange's "User is authenticated but not connected" (at SELECT, after the login) and
    /// a refused login both mean the delegate lacks FullAccess.
    #[test]
    fn a_delegates_refusal_is_named_shared_mailbox_no_access() {
        for remedy in [MailRemedy::NotConnected, MailRemedy::AuthFailed] {
            let e = MailError::server(
                remedy,
                "SELECT INBOX",
                "BAD User is authenticated but not connected.",
            );
            let named = shared_mailbox_refusal(&account(Some("alice@example.test")), e);
            assert_eq!(named.remedy, MailRemedy::SharedMailboxNoAccess);
            assert!(
                named.detail.contains("alice@example.test"),
                "{}",
                named.detail
            );
            assert_eq!(
                named.server_says.as_deref(),
                Some("BAD User is authenticated but not connected.")
            );
        }
        let own = MailError::server(MailRemedy::NotConnected, "SELECT INBOX", "BAD");
        assert_eq!(
            shared_mailbox_refusal(&account(None), own).remedy,
            MailRemedy::NotConnected
        );
        let other = MailError::server(MailRemedy::Deadline, "SELECT INBOX", "");
        assert_eq!(
            shared_mailbox_refusal(&account(Some("alice@example.test")), other).remedy,
            MailRemedy::Deadline
        );
    }
}
