//! OAuth2 for mail, provider by provider.
//!
//! Everything here talks to the identity provider and nothing else: it builds authorize
//! URLs, makes token requests, validates id_tokens and turns every failure into a
//! [`Failure`] with a stable remediation code. It does not store anything and does not
//! decide account states; the `grants` layer does, from the `Severity` given here.

pub mod authorize;
pub mod client;
pub mod discovery;
pub mod egress;
pub mod failure;
pub mod idtoken;
pub mod jwt;
pub mod random;

pub use authorize::{AuthorizeParams, authorize_url};
pub use client::{DeviceAuthorization, DevicePoll, OAuthClient, ServiceAccountKey, TokenResponse};
pub use failure::{Failure, Remediation, Severity};
pub use idtoken::{IdTokenClaims, Jwks};
