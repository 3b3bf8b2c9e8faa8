//! What the domain's types look like in the OpenAPI document of `/api/v1` (derived in `web`
//! with utoipa). The newtypes serialise as a plain string or integer (`values.rs`,
//! `clock.rs`), so their schemas say exactly that; keyword enums list the words they are
//! written as.

use crate::{
    AccountId, AppId, ClientId, EmailAddress, Host, HttpUrl, Name, Port, Scopes, TenantId,
    Timestamp, TlsMode,
};
use utoipa::openapi::schema::{ObjectBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};

/// A string that is one of what serde writes for `variants` (a keyword enum's `ALL`). Not
/// `as_str`: serde writes `accounts_read` where the CLI says `accounts:read`.
pub fn serde_words<T: serde::Serialize>(variants: &[T]) -> RefOr<Schema> {
    let words: Vec<String> = variants
        .iter()
        .filter_map(|v| match serde_json::to_value(v) {
            Ok(serde_json::Value::String(word)) => Some(word),
            _ => None,
        })
        .collect();
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(words))
        .into()
}

/// The names subscribers give webhook events (`message.received`), as `Webhook::events`
/// writes them.
pub fn webhook_event_names() -> utoipa::openapi::Array {
    utoipa::openapi::Array::new(keywords(
        &crate::webhook::WebhookEvent::ALL
            .iter()
            .map(|e| e.as_str())
            .collect::<Vec<_>>(),
    ))
}

/// A string that is one of `words`.
pub fn keywords(words: &[&str]) -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .enum_values(Some(words.iter().copied()))
        .into()
}

macro_rules! newtype_schema {
    ($($t:ty => $kind:ident $(, format $format:literal)? : $description:literal;)+) => {$(
        impl utoipa::PartialSchema for $t {
            fn schema() -> RefOr<Schema> {
                ObjectBuilder::new()
                    .schema_type(Type::$kind)
                    $(.format(Some(SchemaFormat::Custom($format.to_owned()))))?
                    .description(Some($description))
                    .into()
            }
        }
        impl utoipa::ToSchema for $t {}
    )+};
}

newtype_schema! {
    AppId => Integer: "Id of an OAuth app";
    AccountId => Integer: "Id of a mail account";
    Timestamp => Integer: "Unix seconds, UTC";
    EmailAddress => String, format "email": "An email address (domain in lower case)";
    Host => String: "A DNS name or IP address";
    Port => Integer: "A TCP port, 1 to 65535";
    HttpUrl => String, format "uri": "An absolute http(s) URL";
    TenantId => String: "Microsoft: Directory (tenant) ID, a verified domain, or common / organizations / consumers";
    Name => String: "1 to 64 printable characters, not only digits";
    ClientId => String: "The app's client (application) ID at the provider";
    Scopes => String: "OAuth scopes, space-separated";
}

impl utoipa::PartialSchema for TlsMode {
    fn schema() -> RefOr<Schema> {
        keywords(&[TlsMode::Implicit.as_str(), TlsMode::Starttls.as_str()])
    }
}
impl utoipa::ToSchema for TlsMode {}
