//! OAuth apps: what the administrator registered at the provider.

use crate::{AppId, ClientId, HttpUrl, Invalid, Name, Scopes, Secret, TenantId, Timestamp};
use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! keyword_enum {
    ($(#[$m:meta])* $name:ident, $what:literal { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, ::serde::Serialize, ::serde::Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];

            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $s),+ }
            }

            pub fn parse(input: &str) -> Result<Self, $crate::Invalid> {
                let s = input.trim().to_ascii_lowercase().replace('-', "_");
                $(if s == $s { return Ok($name::$variant); })+
                let expected: Vec<&str> = vec![$($s),+];
                Err($crate::Invalid::new($what, input.trim(), format!("expected one of: {}", expected.join(", "))))
            }
        }

        impl ::utoipa::PartialSchema for $name {
            fn schema() -> ::utoipa::openapi::RefOr<::utoipa::openapi::Schema> {
                $crate::openapi::serde_words($name::ALL)
            }
        }
        impl ::utoipa::ToSchema for $name {}

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::Invalid;
            fn from_str(s: &str) -> Result<Self, $crate::Invalid> {
                Self::parse(s)
            }
        }
    };
}
pub(crate) use keyword_enum;

keyword_enum!(
    /// Which provider an app talks to; decides the presets.
    AppKind, "app kind" { Microsoft = "microsoft", Google = "google", Generic = "generic" }
);

keyword_enum!(
    /// How mailgate obtains tokens for the app's accounts.
    OAuthFlow, "OAuth flow" {
        /// Browser sign-in with PKCE (the default).
        AuthorizationCode = "authorization_code",
        /// RFC 8628, for servers without a browser.
        DeviceCode = "device_code",
        /// Microsoft app-only access; no user signs in.
        ClientCredentials = "client_credentials",
        /// Google service account with domain-wide delegation (JWT bearer).
        ServiceAccount = "service_account",
    }
);

/// The provider's endpoints. Presets fill them; each can be overridden.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Endpoints {
    pub authorize: Option<HttpUrl>,
    pub token: HttpUrl,
    pub device: Option<HttpUrl>,
    pub jwks: Option<HttpUrl>,
    pub userinfo: Option<HttpUrl>,
    pub revoke: Option<HttpUrl>,
    /// Expected `iss` of id_tokens; `{tenantid}` stands for the token's `tid` (Microsoft
    /// multi-tenant apps).
    pub issuer: Option<String>,
}

impl Endpoints {
    /// The fields (in the words of the forms) that differ between `self` and `other`. Each
    /// decides where the client secret, a code or a token is sent (authorize, token, device,
    /// userinfo, revoke) or whose keys and issuer vouch for the signed-in user (JWKS,
    /// issuer); a tenant or authority change shows up here through the endpoints it derives.
    pub fn changed_destinations(&self, other: &Endpoints) -> Vec<&'static str> {
        let mut changed = Vec::new();
        let mut compare = |field, differs: bool| {
            if differs {
                changed.push(field);
            }
        };
        compare("authorize_url", self.authorize != other.authorize);
        compare("token_url", self.token != other.token);
        compare("device_url", self.device != other.device);
        compare("jwks_url", self.jwks != other.jwks);
        compare("userinfo_url", self.userinfo != other.userinfo);
        compare("revoke_url", self.revoke != other.revoke);
        compare("issuer", self.issuer != other.issuer);
        changed
    }
}

/// A cross-field rule that failed, naming the field at fault in the words of the forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: &'static str,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

impl std::error::Error for FieldError {}

pub fn field_error(field: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field,
        message: message.into(),
    }
}

/// Everything about an app that the administrator chooses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppSpec {
    pub name: Name,
    pub kind: AppKind,
    pub tenant: Option<TenantId>,
    pub client_id: ClientId,
    /// Optional: public clients (device code on Microsoft) have none.
    #[serde(skip)]
    pub client_secret: Option<Secret>,
    pub secret_expires: Option<time::Date>,
    /// Google service-account JSON key file (flow `service_account`); a secret.
    #[serde(skip)]
    pub service_account_key: Option<Secret>,
    pub endpoints: Endpoints,
    pub scopes: Scopes,
    /// Extra authorize parameters (e.g. `domain_hint`), name → value.
    pub extra_params: Vec<(String, String)>,
    pub flow: OAuthFlow,
}

impl AppSpec {
    /// The rules that span fields. Single fields are already valid by their types.
    pub fn check(&self) -> Result<(), FieldError> {
        match self.kind {
            AppKind::Microsoft => {
                if self.tenant.is_none() {
                    return Err(field_error(
                        "tenant",
                        "a Microsoft app needs a tenant: the Directory (tenant) ID from the app registration's Overview page, or common / organizations / consumers",
                    ));
                }
                if !self.client_id.is_guid() {
                    return Err(field_error(
                        "client_id",
                        "a Microsoft client id is a GUID: copy \"Application (client) ID\" from the app registration's Overview page",
                    ));
                }
            }
            AppKind::Google | AppKind::Generic => {
                if self.tenant.is_some() {
                    return Err(field_error("tenant", "only Microsoft apps have a tenant"));
                }
            }
        }
        match self.flow {
            OAuthFlow::AuthorizationCode if self.endpoints.authorize.is_none() => {
                return Err(field_error(
                    "authorize_url",
                    "the authorization-code flow needs an authorize endpoint",
                ));
            }
            OAuthFlow::DeviceCode if self.endpoints.device.is_none() => {
                return Err(field_error(
                    "device_url",
                    "the device-code flow needs a device authorization endpoint",
                ));
            }
            OAuthFlow::ClientCredentials => {
                if self.kind == AppKind::Google {
                    return Err(field_error(
                        "flow",
                        "Google has no client-credentials mail access; use service_account",
                    ));
                }
                if self.client_secret.is_none() {
                    return Err(field_error(
                        "client_secret",
                        "the client-credentials flow needs a client secret",
                    ));
                }
            }
            OAuthFlow::ServiceAccount if self.kind != AppKind::Google => {
                return Err(field_error(
                    "flow",
                    "service_account is Google's flow; Microsoft app-only access is client_credentials",
                ));
            }
            _ => {}
        }
        // Presets carry a JWKS URL; a generic app without one (or a userinfo URL) would
        // be refused only at the callback, after the user signed in.
        if self.kind == AppKind::Generic
            && matches!(
                self.flow,
                OAuthFlow::AuthorizationCode | OAuthFlow::DeviceCode
            )
            && self.endpoints.jwks.is_none()
            && self.endpoints.userinfo.is_none()
        {
            return Err(field_error(
                "jwks_url",
                "mailgate checks who signed in with the provider's signing keys (JWKS URL) or its userinfo URL; give one of them, or the issuer, to read both from the provider's discovery document",
            ));
        }
        if self.kind == AppKind::Google
            && self.flow == OAuthFlow::AuthorizationCode
            && self.client_secret.is_none()
        {
            return Err(field_error(
                "client_secret",
                "Google web clients need their client secret (from the Credentials page)",
            ));
        }
        for (k, _) in &self.extra_params {
            if RESERVED_AUTHORIZE_PARAMS.contains(&k.as_str()) {
                return Err(field_error(
                    "extra_params",
                    format!("{k} is set by mailgate itself and cannot be overridden"),
                ));
            }
        }
        Ok(())
    }
}

/// Authorize parameters mailgate sets itself; overriding them would break PKCE, state or
/// the redirect URI check.
pub const RESERVED_AUTHORIZE_PARAMS: &[&str] = &[
    "client_id",
    "redirect_uri",
    "response_type",
    "state",
    "nonce",
    "code_challenge",
    "code_challenge_method",
    "scope",
];

/// A stored app.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OAuthApp {
    pub id: AppId,
    #[serde(flatten)]
    pub spec: AppSpec,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Parses an extra authorize parameter written `name=value`.
pub fn parse_extra_param(input: &str) -> Result<(String, String), Invalid> {
    let (k, v) = input
        .split_once('=')
        .ok_or_else(|| Invalid::new("extra parameter", input, "expected name=value"))?;
    let k = k.trim();
    if k.is_empty()
        || !k
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return Err(Invalid::new(
            "extra parameter",
            input,
            "the name must be letters, digits, _ or -",
        ));
    }
    Ok((k.to_owned(), v.trim().to_owned()))
}
