//! id_token validation (OpenID Connect Core §3.1.3.7) and who consented.

pub use crate::jwt::Jwks;
use crate::jwt::{self, JwtError};
use mailgate_core::{Identity, Timestamp};
use serde::Deserialize;

/// Clock skew tolerated on `exp`/`iat`: five minutes, the usual allowance.
pub const SKEW_SECS: i64 = 300;

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Clone, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    aud: Audience,
    pub sub: String,
    pub exp: i64,
    pub nonce: Option<String>,
    pub email: Option<String>,
    pub preferred_username: Option<String>,
    pub upn: Option<String>,
    pub oid: Option<String>,
    pub tid: Option<String>,
    pub name: Option<String>,
}

impl IdTokenClaims {
    /// The sign-in names the token vouches for, most specific first.
    pub fn usernames(&self) -> Vec<&str> {
        [&self.email, &self.preferred_username, &self.upn]
            .into_iter()
            .flatten()
            .map(String::as_str)
            .collect()
    }

    pub fn identity(&self) -> Identity {
        Identity {
            username: self.usernames().first().map(|s| s.to_string()),
            subject: Some(self.sub.clone()),
            oid: self.oid.clone(),
            tid: self.tid.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IdTokenError {
    #[error("{0}")]
    Jwt(#[from] JwtError),
    #[error("issuer {got:?} is not the expected {expected:?}")]
    Issuer { got: String, expected: String },
    #[error("audience does not include this app's client id")]
    Audience,
    #[error("nonce does not match the one sent (replayed or foreign response)")]
    Nonce,
    #[error("the id_token expired at {0}")]
    Expired(Timestamp),
    #[error("claims are missing or malformed: {0}")]
    Claims(String),
}

pub struct Expected<'a> {
    /// `{tenantid}` is replaced by the token's `tid` (Microsoft multi-tenant issuer).
    pub issuer: Option<&'a str>,
    pub client_id: &'a str,
    /// The nonce sent with the authorize request; `None` for flows without one (device code).
    pub nonce: Option<&'a str>,
    pub now: Timestamp,
}

pub fn validate(
    token: &str,
    jwks: &Jwks,
    expected: &Expected<'_>,
) -> Result<IdTokenClaims, IdTokenError> {
    let decoded = jwt::decode(token)?;
    jwt::verify_rs256(&decoded, jwks)?;
    let claims: IdTokenClaims =
        serde_json::from_value(decoded.claims).map_err(|e| IdTokenError::Claims(e.to_string()))?;
    if let Some(iss) = expected.issuer {
        let iss = iss.replace("{tenantid}", claims.tid.as_deref().unwrap_or("{tenantid}"));
        if claims.iss != iss {
            return Err(IdTokenError::Issuer {
                got: claims.iss,
                expected: iss,
            });
        }
    }
    let aud_ok = match &claims.aud {
        Audience::One(a) => a == expected.client_id,
        Audience::Many(v) => v.iter().any(|a| a == expected.client_id),
    };
    if !aud_ok {
        return Err(IdTokenError::Audience);
    }
    if let Some(nonce) = expected.nonce
        && claims.nonce.as_deref() != Some(nonce)
    {
        return Err(IdTokenError::Nonce);
    }
    if claims.exp + SKEW_SECS < expected.now.0 {
        return Err(IdTokenError::Expired(Timestamp(claims.exp)));
    }
    Ok(claims)
}
