//! Mail accounts: one mailbox that mailgate reaches with one app's tokens.

use crate::app::{FieldError, field_error, keyword_enum};
use crate::{
    AccountId, AccountState, AppId, EmailAddress, Host, Invalid, Name, Port, Timestamp, TlsMode,
};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// Where a mail server listens and how the connection is secured.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ServerEndpoint {
    pub host: Host,
    pub port: Port,
    pub tls: TlsMode,
}

impl fmt::Display for ServerEndpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{} ({})", self.host, self.port, self.tls)
    }
}

keyword_enum!(
    /// The protocol mailgate reads mail with.
    InboundProtocol, "inbound protocol" { Imap = "imap", Pop3 = "pop3" }
);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inbound {
    pub protocol: InboundProtocol,
    #[serde(flatten)]
    pub server: ServerEndpoint,
}

/// Outbound mail always goes over SMTP submission.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbound {
    #[serde(flatten)]
    pub server: ServerEndpoint,
}

/// What happens to a message when it arrives (PhixFlow's "On Email Received").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "action", content = "folder", rename_all = "snake_case")]
pub enum OnReceived {
    None,
    Webhook,
    MarkSeen,
    MoveTo(String),
    Delete,
}

impl OnReceived {
    /// `none`, `webhook`, `mark_seen`, `delete` or `move:FOLDER`.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s = input.trim();
        let expected = "expected none, webhook, mark_seen, delete or move:FOLDER";
        if let Some(folder) = s.strip_prefix("move:") {
            let folder = folder.trim();
            if folder.is_empty() || folder.chars().any(char::is_control) || folder.len() > 200 {
                return Err(Invalid::new(
                    "on-received action",
                    s,
                    "the folder name is empty or not printable",
                ));
            }
            return Ok(OnReceived::MoveTo(folder.to_owned()));
        }
        match s.to_ascii_lowercase().replace('-', "_").as_str() {
            "none" => Ok(OnReceived::None),
            "webhook" => Ok(OnReceived::Webhook),
            "mark_seen" => Ok(OnReceived::MarkSeen),
            "delete" => Ok(OnReceived::Delete),
            _ => Err(Invalid::new("on-received action", s, expected)),
        }
    }
}

impl fmt::Display for OnReceived {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OnReceived::None => f.write_str("none"),
            OnReceived::Webhook => f.write_str("webhook"),
            OnReceived::MarkSeen => f.write_str("mark_seen"),
            OnReceived::Delete => f.write_str("delete"),
            OnReceived::MoveTo(folder) => write!(f, "move:{folder}"),
        }
    }
}

impl FromStr for OnReceived {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::parse(s)
    }
}

/// Everything about an account that the administrator chooses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSpec {
    pub name: Name,
    pub description: String,
    pub enabled: bool,
    /// The sign-in name, and the identity the consenting user must have.
    pub mailbox: EmailAddress,
    /// A shared or delegated mailbox opened with `mailbox`'s token (Exchange FullAccess).
    pub shared_mailbox: Option<EmailAddress>,
    /// Other sign-in names accepted at consent (e.g. a UPN that differs from the address).
    pub aliases: Vec<EmailAddress>,
    /// The person who signs in when that is not the mailbox: for a shared mailbox such as
    /// `support@`, a user with FullAccess (and SendAs) on it. Exchange takes the delegate's
    /// token with the mailbox as the IMAP/POP3 `user`, and SMTP AUTH as the delegate.
    #[serde(default)]
    pub delegate: Option<EmailAddress>,
    /// With a delegate: send with `Sender:` the delegate and `From:` the mailbox (Exchange's
    /// SendOnBehalf) instead of `From:` the mailbox alone (SendAs).
    #[serde(default)]
    pub send_on_behalf: bool,
    pub app_id: AppId,
    pub inbound: Option<Inbound>,
    pub outbound: Option<Outbound>,
    pub from_name: Option<String>,
    pub reply_to: Option<EmailAddress>,
    pub signature: Option<String>,
    pub on_received: OnReceived,
}

impl AccountSpec {
    pub fn check(&self) -> Result<(), FieldError> {
        if self.description.chars().count() > 500 {
            return Err(field_error("description", "at most 500 characters"));
        }
        if let Some(n) = &self.from_name
            && (n.chars().count() > 100 || n.chars().any(char::is_control))
        {
            return Err(field_error(
                "from_name",
                "at most 100 printable characters, no line breaks",
            ));
        }
        if self.signature.as_ref().is_some_and(|s| s.len() > 10_000) {
            return Err(field_error("signature", "at most 10000 bytes"));
        }
        if let Some(d) = &self.delegate {
            if d.same_mailbox(self.mailbox.as_str()) {
                return Err(field_error(
                    "delegate",
                    "the delegate is the person who signs in for another mailbox; leave it empty when the mailbox signs in itself",
                ));
            }
            if self.shared_mailbox.is_some() {
                return Err(field_error(
                    "delegate",
                    "an account has either a delegate (the mailbox is the shared one) or a shared mailbox (the mailbox is the user's own), not both",
                ));
            }
        }
        if self.send_on_behalf && self.delegate.is_none() {
            return Err(field_error(
                "send_on_behalf",
                "sending on behalf needs a delegate: the person named in Sender:",
            ));
        }
        if self.inbound.is_none() && self.outbound.is_none() {
            return Err(field_error(
                "inbound",
                "an account needs inbound (imap or pop3), outbound (smtp), or both",
            ));
        }
        if self.inbound.is_none() && self.on_received != OnReceived::None {
            return Err(field_error(
                "on_received",
                "an account without inbound mail cannot act on received mail",
            ));
        }
        if let (Some(inb), OnReceived::MoveTo(_)) = (&self.inbound, &self.on_received)
            && inb.protocol == InboundProtocol::Pop3
        {
            return Err(field_error(
                "on_received",
                "POP3 has no folders: use delete, webhook or none",
            ));
        }
        if let (Some(inb), OnReceived::MarkSeen) = (&self.inbound, &self.on_received)
            && inb.protocol == InboundProtocol::Pop3
        {
            return Err(field_error(
                "on_received",
                "POP3 has no seen flag: use delete, webhook or none",
            ));
        }
        Ok(())
    }

    /// The fields (in the words of the forms) whose change sends the account's tokens
    /// somewhere else: its app (whose token endpoint gets the refresh token) and the mail
    /// hosts and ports (which get the access token). Changing these is for administrators.
    pub fn changed_destinations(&self, other: &AccountSpec) -> Vec<&'static str> {
        let server = |s: Option<&ServerEndpoint>| s.map(|s| (s.host.clone(), s.port));
        let inbound = |a: &AccountSpec| server(a.inbound.as_ref().map(|i| &i.server));
        let outbound = |a: &AccountSpec| server(a.outbound.as_ref().map(|o| &o.server));
        let mut changed = Vec::new();
        if self.app_id != other.app_id {
            changed.push("app");
        }
        if inbound(self) != inbound(other) && inbound(other).is_some() {
            changed.push("inbound_host");
        }
        if outbound(self) != outbound(other) && outbound(other).is_some() {
            changed.push("smtp_host");
        }
        changed
    }

    /// The address the mail servers see as the IMAP/POP3 XOAUTH2 `user`, and the envelope
    /// sender and `From:` of sent mail: the shared mailbox if any, else the mailbox.
    pub fn sasl_user(&self) -> &EmailAddress {
        self.shared_mailbox.as_ref().unwrap_or(&self.mailbox)
    }

    /// The mailbox and who opens it, as the account page, `account show` and the API say it:
    /// "support@… accessed as alice@…" for a delegated account, else the mailbox alone.
    pub fn access_summary(&self) -> String {
        match &self.delegate {
            Some(d) => format!("{} accessed as {d}", self.mailbox),
            None => self.mailbox.to_string(),
        }
    }

    /// Who must sign in at the provider: the delegate if any, else the mailbox.
    pub fn sign_in_user(&self) -> &EmailAddress {
        self.delegate.as_ref().unwrap_or(&self.mailbox)
    }

    /// The SMTP AUTH `user`: a delegate authenticates as itself and sends as the mailbox
    /// (Exchange: "an unlicensed shared mailbox cannot use SMTP AUTH for itself").
    pub fn smtp_auth_user(&self) -> &EmailAddress {
        self.delegate.as_ref().unwrap_or_else(|| self.sasl_user())
    }

    /// Whether `signed_in_as` may authorize this account: the delegate when there is one,
    /// else the mailbox or one of its aliases.
    pub fn accepts_sign_in(&self, signed_in_as: &str) -> bool {
        match &self.delegate {
            Some(d) => d.same_mailbox(signed_in_as),
            None => {
                self.mailbox.same_mailbox(signed_in_as)
                    || self.aliases.iter().any(|a| a.same_mailbox(signed_in_as))
            }
        }
    }
}

/// The last thing that went wrong, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Problem {
    /// Stable remediation code, e.g. `secret_expired`.
    pub code: String,
    /// A sentence the administrator can act on.
    pub remediation: String,
    /// The provider's or server's own words, verbatim (never containing a secret).
    pub detail: Option<String>,
    pub at: Timestamp,
}

/// A stored account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MailAccount {
    pub id: AccountId,
    #[serde(flatten)]
    pub spec: AccountSpec,
    pub state: AccountState,
    pub last_problem: Option<Problem>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_received_round_trips() {
        for s in [
            "none",
            "webhook",
            "mark_seen",
            "delete",
            "move:Archive/2026",
        ] {
            assert_eq!(OnReceived::parse(s).unwrap().to_string(), s);
        }
        assert_eq!(
            OnReceived::parse("Mark-Seen").unwrap(),
            OnReceived::MarkSeen
        );
        assert!(OnReceived::parse("move:").is_err());
        assert!(
            OnReceived::parse("forward")
                .unwrap_err()
                .to_string()
                .contains("move:FOLDER")
        );
    }

    fn shared_support() -> AccountSpec {
        serde_json::from_value(serde_json::json!({
            "name": "support", "description": "", "enabled": true,
            "mailbox": "support@example.test", "shared_mailbox": null,
            "aliases": ["help@example.test"], "app_id": 1, "inbound": null,
            "outbound": {"host": "smtp.example.test", "port": 587, "tls": "starttls"},
            "from_name": null, "reply_to": null, "signature": null,
            "on_received": {"action": "none"}, "delegate": "Alice@example.test"
        }))
        .unwrap()
    }

    #[test]
    fn a_delegate_signs_in_and_authenticates_smtp_the_mailbox_is_opened() {
        let spec = shared_support();
        spec.check().unwrap();
        assert!(spec.accepts_sign_in("alice@example.test"));
        assert!(!spec.accepts_sign_in("support@example.test"));
        assert!(!spec.accepts_sign_in("help@example.test"));
        assert_eq!(spec.sasl_user().as_str(), "support@example.test");
        assert_eq!(spec.smtp_auth_user().as_str(), "Alice@example.test");
        assert_eq!(
            spec.access_summary(),
            "support@example.test accessed as Alice@example.test"
        );
        let own = AccountSpec {
            delegate: None,
            ..spec.clone()
        };
        assert!(own.accepts_sign_in("help@example.test"));
        assert_eq!(own.smtp_auth_user().as_str(), "support@example.test");
    }

    #[test]
    fn delegate_rules_name_their_field() {
        let mut spec = shared_support();
        spec.delegate = Some(spec.mailbox.clone());
        assert_eq!(spec.check().unwrap_err().field, "delegate");
        let mut spec = shared_support();
        spec.shared_mailbox = Some(EmailAddress::parse("x@example.test").unwrap());
        assert_eq!(spec.check().unwrap_err().field, "delegate");
        let mut spec = shared_support();
        spec.delegate = None;
        spec.send_on_behalf = true;
        assert_eq!(spec.check().unwrap_err().field, "send_on_behalf");
    }

    #[test]
    fn protocol_keywords() {
        assert_eq!(
            InboundProtocol::parse("IMAP").unwrap(),
            InboundProtocol::Imap
        );
        assert!(
            InboundProtocol::parse("exchange")
                .unwrap_err()
                .to_string()
                .contains("imap, pop3")
        );
    }
}
