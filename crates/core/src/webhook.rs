//! Webhook subscriptions: where mailgate POSTs what happened, signed with a per-subscription
//! secret.

pub use crate::address::{is_private_address, literal_private_host};
use crate::app::keyword_enum;
use crate::{AccountId, HttpUrl, Invalid, Timestamp};
use serde::Serialize;

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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Webhook {
    pub id: i64,
    /// `None`: every account.
    pub account_id: Option<AccountId>,
    pub url: HttpUrl,
    /// Serialized by the names subscribers give (`message.received`), not serde's
    /// snake_case default for keyword enums (`message_received`).
    #[serde(serialize_with = "event_names")]
    #[schema(schema_with = crate::openapi::webhook_event_names)]
    pub events: Vec<WebhookEvent>,
    pub description: String,
    pub enabled: bool,
    pub created_at: Timestamp,
}

fn event_names<S: serde::Serializer>(events: &[WebhookEvent], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(events.iter().map(|e| e.as_str()))
}

/// A subscription as someone asks for it (the API's JSON body, the admin form), parsed by
/// one set of rules so both name the same fields with the same words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewWebhook {
    pub url: HttpUrl,
    /// At least one; each once, in the order given.
    pub events: Vec<WebhookEvent>,
    /// `None`: every account, including ones added later.
    pub account_id: Option<AccountId>,
    /// Trimmed; at most [`DESCRIPTION_MAX_CHARS`] characters on one line.
    pub description: String,
}

pub const DESCRIPTION_MAX_CHARS: usize = 500;

/// A field of a new subscription that does not parse. `index` points into a list
/// (`events[2]` in the API's words); forms show the message beside `field`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookFieldError {
    pub field: &'static str,
    pub index: Option<usize>,
    pub message: String,
}

impl WebhookFieldError {
    fn new(field: &'static str, index: Option<usize>, message: impl Into<String>) -> Self {
        WebhookFieldError {
            field,
            index,
            message: message.into(),
        }
    }

    /// The field as the API's problem document names it: `url`, `events[0]`.
    pub fn path(&self) -> String {
        match self.index {
            Some(i) => format!("{}[{i}]", self.field),
            None => self.field.to_owned(),
        }
    }
}

impl NewWebhook {
    /// Every problem, not just the first, in the order url, events, description, so a
    /// form can show each beside its field and the API can name the first. A target
    /// written as a loopback or private address (or `localhost`) is refused unless
    /// `allow_private` (the operator's `MAILGATE_WEBHOOK_ALLOW_PRIVATE`). Whether the
    /// account exists is the store's to say.
    pub fn parse<S: AsRef<str>>(
        url: &str,
        events: &[S],
        account_id: Option<AccountId>,
        description: &str,
        allow_private: bool,
    ) -> Result<NewWebhook, Vec<WebhookFieldError>> {
        let mut errors = Vec::new();
        let url = match HttpUrl::parse(url) {
            Ok(u) => match literal_private_host(&u) {
                Some(host) if !allow_private => {
                    errors.push(WebhookFieldError::new(
                        "url",
                        None,
                        format!(
                            "{host} is a loopback or private address; webhooks may reach such targets only when the operator sets MAILGATE_WEBHOOK_ALLOW_PRIVATE=true"
                        ),
                    ));
                    None
                }
                _ => Some(u),
            },
            Err(e) => {
                errors.push(WebhookFieldError::new("url", None, e.to_string()));
                None
            }
        };
        let mut parsed = Vec::new();
        let mut bad_event = false;
        for (i, e) in events.iter().map(AsRef::as_ref).enumerate() {
            match WebhookEvent::parse(e) {
                Ok(ev) if !parsed.contains(&ev) => parsed.push(ev),
                Ok(_) => {}
                Err(err) => {
                    bad_event = true;
                    errors.push(WebhookFieldError::new("events", Some(i), err.to_string()));
                }
            }
        }
        if parsed.is_empty() && !bad_event {
            let all: Vec<&str> = WebhookEvent::ALL.iter().map(|e| e.as_str()).collect();
            errors.push(WebhookFieldError::new(
                "events",
                None,
                format!("name at least one of: {}", all.join(", ")),
            ));
        }
        if description.chars().count() > DESCRIPTION_MAX_CHARS
            || description.chars().any(char::is_control)
        {
            errors.push(WebhookFieldError::new(
                "description",
                None,
                format!("at most {DESCRIPTION_MAX_CHARS} characters, no line breaks"),
            ));
        }
        match url {
            Some(url) if errors.is_empty() => Ok(NewWebhook {
                url,
                events: parsed,
                account_id,
                description: description.trim().to_owned(),
            }),
            _ => Err(errors),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_subscription_names_every_field_at_fault() {
        let errors =
            NewWebhook::parse("ftp://x", &["message.bounced"], None, "a\nb", false).unwrap_err();
        let paths: Vec<String> = errors.iter().map(WebhookFieldError::path).collect();
        assert_eq!(paths, ["url", "events[0]", "description"]);
        assert!(errors[1].message.contains("message.received"), "{errors:?}");

        let none: [&str; 0] = [];
        let errors = NewWebhook::parse("http://127.0.0.1:9/x", &none, None, "", false).unwrap_err();
        assert_eq!(errors[0].field, "url");
        assert!(errors[0].message.contains("MAILGATE_WEBHOOK_ALLOW_PRIVATE"));
        assert_eq!(errors[1].path(), "events");
        assert!(errors[1].message.contains("at least one"), "{errors:?}");

        let ok = NewWebhook::parse(
            "http://127.0.0.1:9/x",
            &["message.sent", "message.sent", "message.failed"],
            Some(AccountId(3)),
            "  erp  ",
            true,
        )
        .unwrap();
        assert_eq!(
            ok.events,
            [WebhookEvent::MessageSent, WebhookEvent::MessageFailed]
        );
        assert_eq!(ok.description, "erp");
        assert_eq!(ok.account_id, Some(AccountId(3)));
    }

    #[test]
    fn a_subscription_lists_its_events_by_the_names_subscribers_give() {
        let hook = Webhook {
            id: 1,
            account_id: None,
            url: HttpUrl::parse("https://hooks.example.com/x").unwrap(),
            events: vec![
                WebhookEvent::MessageReceived,
                WebhookEvent::AppSecretExpiring,
            ],
            description: String::new(),
            enabled: true,
            created_at: Timestamp(0),
        };
        let v = serde_json::to_value(&hook).unwrap();
        assert_eq!(
            v["events"],
            serde_json::json!(["message.received", "app.secret_expiring"])
        );
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
