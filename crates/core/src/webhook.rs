//! Webhook subscriptions: where mailgate POSTs what happened, signed with a per-subscription
//! secret.

use crate::app::keyword_enum;
use crate::{AccountId, HttpUrl, Invalid, Timestamp};
use serde::Serialize;
use std::net::IpAddr;

keyword_enum!(
    /// What a subscription can ask for.
    WebhookEvent, "webhook event" {
        MessageReceived = "message.received",
        MessageSent = "message.sent",
        MessageFailed = "message.failed",
        AccountReauthRequired = "account.reauth_required",
        AppSecretExpiring = "app.secret_expiring",
    }
);

impl WebhookEvent {
    /// The webhook that an event of the log triggers, if any.
    pub fn for_event(kind: crate::event::EventKind) -> Option<WebhookEvent> {
        use crate::event::EventKind as K;
        match kind {
            K::MessageSent => Some(WebhookEvent::MessageSent),
            K::MessageFailed => Some(WebhookEvent::MessageFailed),
            K::AccountReauthRequired => Some(WebhookEvent::AccountReauthRequired),
            K::SecretExpiring => Some(WebhookEvent::AppSecretExpiring),
            _ => None,
        }
    }

    /// A comma-separated list, e.g. `message.received,message.failed`; at least one.
    pub fn parse_list(input: &str) -> Result<Vec<WebhookEvent>, Invalid> {
        let mut out = Vec::new();
        for part in input.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let e = WebhookEvent::parse(part)?;
            if !out.contains(&e) {
                out.push(e);
            }
        }
        if out.is_empty() {
            return Err(Invalid::new(
                "webhook events",
                input,
                "name at least one event, e.g. message.received",
            ));
        }
        Ok(out)
    }
}

/// A stored subscription. The signing secret is not here: it is shown once, at creation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Webhook {
    pub id: i64,
    /// `None`: every account.
    pub account_id: Option<AccountId>,
    pub url: HttpUrl,
    pub events: Vec<WebhookEvent>,
    pub description: String,
    pub enabled: bool,
    pub created_at: Timestamp,
}

/// Loopback, private (RFC 1918, unique-local), link-local, CGNAT, unspecified, multicast
/// and documentation addresses: targets a webhook may reach only when the operator allows
/// it (`MAILGATE_WEBHOOK_ALLOW_PRIVATE`), so that an API token cannot probe the internal
/// network through mailgate.
pub fn is_private_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            v4.is_loopback()
                || v4.is_private()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_multicast()
                || v4.is_documentation()
                || o[0] == 0
                || (o[0] == 100 && (64..128).contains(&o[1]))
                || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
                || o[0] >= 240
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_address(IpAddr::V4(v4));
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
                || (seg[0] == 0x64 && seg[1] == 0xff9b)
        }
    }
}

/// The host of `url` when it is written as an IP address or is `localhost`, and private:
/// what can be refused without a DNS lookup, at creation.
pub fn literal_private_host(url: &HttpUrl) -> Option<String> {
    let u = url.url();
    match u.host()? {
        url::Host::Ipv4(a) => is_private_address(IpAddr::V4(a)).then(|| a.to_string()),
        url::Host::Ipv6(a) => is_private_address(IpAddr::V6(a)).then(|| a.to_string()),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            (d == "localhost" || d.ends_with(".localhost")).then_some(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(is_private_address(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
        ] {
            assert!(!is_private_address(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn literal_hosts_are_checked_without_dns() {
        let check = |u: &str| literal_private_host(&HttpUrl::parse(u).unwrap());
        assert_eq!(check("http://127.0.0.1:9/x").as_deref(), Some("127.0.0.1"));
        assert_eq!(check("http://[::1]/x").as_deref(), Some("::1"));
        assert_eq!(check("http://LOCALHOST./x").as_deref(), Some("localhost"));
        assert_eq!(check("https://hooks.example.com/x"), None);
        assert_eq!(check("https://8.8.8.8/x"), None);
    }

    #[test]
    fn event_lists() {
        assert_eq!(
            WebhookEvent::parse_list(" message.received, message.sent,message.received").unwrap(),
            vec![WebhookEvent::MessageReceived, WebhookEvent::MessageSent]
        );
        assert!(WebhookEvent::parse_list(" , ").is_err());
        let e = WebhookEvent::parse_list("message.bounced").unwrap_err();
        assert!(e.to_string().contains("message.received"), "{e}");
    }
}
