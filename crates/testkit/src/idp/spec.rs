//! The JSON shapes of the admin API, shared by the server (`admin.rs`) and the client
//! (`client.rs`) so the two cannot drift apart.

use serde::{Deserialize, Serialize};

/// An OAuth client registration (`POST /admin/clients`). Registering an existing `client_id`
/// again replaces it, which is how a test "rotates the secret at the provider".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientSpec {
    pub client_id: String,
    /// `None` makes a public client (device code, PKCE-only); `Some` a confidential one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// Compared byte for byte with the `redirect_uri` of authorize and token requests.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Mailboxes this app may open with app-only (client credentials) tokens. Introspection of
    /// an app-only token reports the first one as `email`/`username`, because Dovecot compares
    /// that attribute with the login name and real Exchange has no per-token mailbox.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub app_only_mailboxes: Vec<String>,
}

impl ClientSpec {
    /// A confidential client with one redirect URI.
    pub fn confidential(client_id: &str, client_secret: &str, redirect_uri: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            client_secret: Some(client_secret.to_owned()),
            redirect_uris: vec![redirect_uri.to_owned()],
            app_only_mailboxes: Vec::new(),
        }
    }

    /// A public client (no secret) with one redirect URI.
    pub fn public(client_id: &str, redirect_uri: &str) -> Self {
        Self {
            client_id: client_id.to_owned(),
            client_secret: None,
            redirect_uris: vec![redirect_uri.to_owned()],
            app_only_mailboxes: Vec::new(),
        }
    }
}

/// A user account (`POST /admin/users`). Registering an existing email again updates its
/// password and name and keeps its `oid`/`sub`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserSpec {
    pub email: String,
    pub password: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Defaults to the emulator's tenant (`IdpConfig::tenant_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Shared mailboxes this user may open (Exchange's FullAccess, `Add-MailboxPermission`):
    /// introspection reports the first as `full_access_mailbox`, which the rig's second
    /// passdb compares with the login name. Registering the user again replaces the list.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub full_access: Vec<String>,
    /// Addresses this user may send as (Exchange's SendAs, `Add-RecipientPermission`), for
    /// the rig's submission check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub send_as: Vec<String>,
}

impl UserSpec {
    pub fn new(email: &str, password: &str) -> Self {
        Self {
            email: email.to_owned(),
            password: password.to_owned(),
            name: None,
            tenant_id: None,
            full_access: Vec::new(),
            send_as: Vec::new(),
        }
    }
}

/// A registered user as the providers identify it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub email: String,
    /// Microsoft object id (GUID).
    pub oid: String,
    /// Microsoft tenant id (GUID).
    pub tid: String,
    /// Subject: Google's numeric account id; also used as the Microsoft `sub`.
    pub sub: String,
}

/// Which endpoint a fault applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Endpoint {
    Token,
    Devicecode,
    Userinfo,
    Introspect,
    Authorize,
    Revoke,
}

/// What an injected fault does to a matching request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// A Microsoft error body for `AADSTS{code}` with the OAuth `error` that code carries.
    Aadsts { code: u32 },
    /// A Google-shaped error body `{"error", "error_description"?}`.
    OauthError {
        error: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        description: Option<String>,
    },
    /// This HTTP status with a short JSON body (`temporarily_unavailable` for 429/502/503/504,
    /// `server_error` otherwise); 429 and 503 carry `Retry-After: 1`.
    HttpStatus { status: u16 },
    /// Wait this long, then answer normally.
    Delay { seconds: f64 },
    /// A hung provider: accept the request, hold it this long, then process it for real
    /// (a refresh rotates the token) and write the answer, even if the client has given up
    /// and closed the connection meanwhile. Unlike `delay`, the processing does not stop
    /// when the client goes away. Token endpoint only; elsewhere it acts like `delay`.
    Hang { seconds: f64 },
    /// `200 OK`, `Content-Type: application/json`, and a truncated JSON body.
    MalformedJson,
}

/// `POST /admin/faults`: the next `count` requests that match get `fault`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FaultSpec {
    /// Only requests of this client match (isolation between tests sharing one emulator).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    pub endpoint: Endpoint,
    /// Only token requests with this `grant_type` match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grant_type: Option<String>,
    #[serde(default = "one")]
    pub count: u32,
    pub fault: Fault,
}

fn one() -> u32 {
    1
}

impl FaultSpec {
    /// One fault on the token endpoint for one client.
    pub fn token(client_id: &str, fault: Fault) -> Self {
        Self {
            client_id: Some(client_id.to_owned()),
            endpoint: Endpoint::Token,
            grant_type: None,
            count: 1,
            fault,
        }
    }
}

/// `POST /admin/lifetimes`: every field left out keeps its current value. Without `client_id`
/// the values become the defaults for all clients; with it they override for that client only.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LifetimeSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_id: Option<String>,
    /// Default 3600.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token_secs: Option<u64>,
    /// Default 90 days (Microsoft's sliding refresh token lifetime).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token_secs: Option<u64>,
    /// How long a rotated (replaced) refresh token is still accepted. Default 0: refused at
    /// once, so a client that forgets to persist the new token fails its next refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_reuse_grace_secs: Option<u64>,
    /// Presenting an already rotated refresh token (after the grace) revokes the whole grant,
    /// as npm `oidc-provider` does. Default false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoke_grant_on_refresh_reuse: Option<bool>,
    /// Default true: each refresh returns a new refresh token. False behaves like Google:
    /// no `refresh_token` in the refresh response and the old one stays valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rotate_refresh_tokens: Option<bool>,
    /// Device code `interval` (default 5, Microsoft's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_code_interval_secs: Option<u64>,
    /// Device code lifetime (default 900).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_code_lifetime_secs: Option<u64>,
}

/// `POST /admin/service-accounts`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceAccountSpec {
    /// Default `sa-N@mailgate-test.iam.gserviceaccount.com`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_email: Option<String>,
}

/// `POST /admin/clock/date-skew`: every response's `Date` header is this many seconds off
/// the wall clock (negative: behind); 0 restores it. For `mailgate doctor`'s clock check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DateSkew {
    pub seconds: i64,
}

/// `POST /admin/clock/advance`: moves the emulator's clock forward (never back).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockAdvance {
    pub seconds: u64,
}
