//! Every way an OAuth exchange fails, classified, with what to tell the administrator.
//!
//! The catalogue follows the table in PROVIDERS.md. Each entry has a stable code (used in
//! events, the API and tests), a sentence an administrator can act on, and a severity:
//! transient failures are retried and never cost the grant; permanent ones need a person.

use mailgate_core::app::AppKind;
use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Network, timeout, 5xx, 429, `temporarily_unavailable`: retry with backoff, keep the grant.
    Transient,
    /// The provider refused for good: the account needs re-authorization or a config fix.
    Permanent,
}

macro_rules! remediations {
    ($($variant:ident = $code:literal, $sev:ident, $text:literal;)+) => {
        /// The remediation catalogue.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Remediation { $($variant),+ }

        impl Remediation {
            pub const ALL: &'static [Remediation] = &[$(Remediation::$variant),+];

            /// Stable identifier, e.g. `secret_expired`.
            pub fn code(self) -> &'static str {
                match self { $(Remediation::$variant => $code),+ }
            }

            /// What the administrator should do.
            pub fn sentence(self) -> &'static str {
                match self { $(Remediation::$variant => $text),+ }
            }

            pub fn severity(self) -> Severity {
                match self { $(Remediation::$variant => Severity::$sev),+ }
            }

            pub fn from_code(code: &str) -> Option<Remediation> {
                match code { $($code => Some(Remediation::$variant),)+ _ => None }
            }
        }
    };
}

remediations! {
    RedirectUriMismatch = "redirect_uri_mismatch", Permanent,
        "The redirect URI registered at the provider does not match. Register exactly the redirect URI mailgate shows for this app, under platform \"Web\".";
    SecretIdInsteadOfValue = "secret_id_instead_of_value", Permanent,
        "The client secret is wrong. In Microsoft Entra → Certificates & secrets, paste the secret's Value, not its Secret ID (create a new secret if the Value is no longer shown).";
    SecretExpired = "secret_expired", Permanent,
        "The app's client secret has expired. Create a new secret in the app registration, paste its Value into mailgate, then authorize the accounts again.";
    AppNotFound = "app_not_found", Permanent,
        "The provider does not know this client id in this tenant. Check the Application (client) ID and the tenant.";
    TenantNotFound = "tenant_not_found", Permanent,
        "The tenant was not found. Check the Directory (tenant) ID or domain.";
    ConsentRequired = "consent_required", Permanent,
        "Consent was not granted. Authorize again and accept, or ask a tenant administrator to grant tenant-wide consent for the app.";
    UserFromOtherTenant = "user_from_other_tenant", Permanent,
        "The user belongs to another tenant. Use that tenant (or common) for the app, or invite the user.";
    MfaRequired = "mfa_required", Permanent,
        "Multi-factor authentication is required. Authorize again interactively.";
    GrantRevoked = "grant_revoked", Permanent,
        "The grant was revoked: the password changed or the sessions were revoked. Authorize the account again.";
    RefreshTokenExpired = "refresh_token_expired", Permanent,
        "The refresh token expired after a long time unused. Authorize the account again; mailgate refreshes proactively to avoid this.";
    InvalidGrant = "invalid_grant", Permanent,
        "The provider refused the grant. Authorize the account again.";
    ProviderInvalidGrant = "provider_invalid_grant", Permanent,
        "The identity provider refused the grant: it was revoked or expired, or the user's password or sessions changed. Authorize the account again; if it keeps happening soon after authorizing, check the refresh-token lifetime the provider allows this client.";
    GoogleInvalidGrant = "google_invalid_grant", Permanent,
        "Google refused the grant: it was revoked, the password changed, or the app is in \"Testing\" status (refresh tokens expire after 7 days). Authorize again; publish the app to Production to avoid the 7-day expiry.";
    InvalidClient = "invalid_client", Permanent,
        "The client id or secret is wrong. Copy both again from the provider's credentials page.";
    CodeAlreadyRedeemed = "code_already_redeemed", Permanent,
        "The authorization code was already used (a double submit). If the account is not active, authorize again.";
    ConditionalAccess = "conditional_access", Permanent,
        "Blocked by Conditional Access. Ask the tenant administrator to exempt the app or this server's location.";
    AccessDenied = "access_denied", Permanent,
        "Sign-in was cancelled or access was denied. Authorize again and accept the requested permissions.";
    UnauthorizedClient = "unauthorized_client", Permanent,
        "The app is not allowed to use this flow. Enable it in the app registration (e.g. \"Allow public client flows\" for device code) or choose another flow.";
    InvalidScope = "invalid_scope", Permanent,
        "The provider refused the requested scopes. Check the app's scopes and its API permissions at the provider.";
    WrongUser = "wrong_user", Permanent,
        "Someone other than the mailbox's owner signed in. Sign out of the provider (or use a private window) and authorize again as the mailbox.";
    NoRefreshToken = "no_refresh_token", Permanent,
        "The provider returned no refresh token. Microsoft: include offline_access in the scopes. Google: remove the app's access at myaccount.google.com/permissions and authorize again (mailgate asks for consent each time).";
    IdTokenInvalid = "id_token_invalid", Permanent,
        "The provider's id_token did not validate (issuer, audience, nonce, expiry or signature). Check the app's endpoints and issuer, and the server clock.";
    DeviceCodeExpired = "device_code_expired", Permanent,
        "The device code expired before anyone entered it. Start the device authorization again.";
    MalformedResponse = "malformed_response", Transient,
        "The provider sent a response mailgate cannot read. This is usually temporary; mailgate retries. If it persists, check the app's endpoints.";
    ProviderUnavailable = "transient", Transient,
        "The provider is temporarily unavailable or rate-limiting. mailgate retries with backoff and keeps the grant.";
    Timeout = "timeout", Transient,
        "The provider did not answer in time. mailgate retries with backoff and keeps the grant.";
    RefreshInDoubt = "refresh_in_doubt", Transient,
        "A refresh timed out and the provider may still have processed it (and rotated the refresh token). mailgate waits before sending the stored token again, so that a provider which treats reuse as a replay does not revoke the grant; it keeps the grant and tries again after the backoff.";
    RotationLostInOutage = "rotation_lost_in_outage", Permanent,
        "The provider rotated the refresh token during an outage: it processed a refresh whose answer never reached mailgate, and now refuses the token mailgate holds. Authorize the account again.";
    NetworkError = "network_error", Transient,
        "mailgate could not reach the provider (DNS, connection or TLS). Check this server's network and proxy settings; mailgate retries.";
    Misconfigured = "misconfigured", Permanent,
        "The app's configuration is incomplete for this flow. Check its endpoints, flow and credentials.";
    ProviderError = "provider_error", Permanent,
        "The provider refused the request. Its own words are below.";
    SharedMailboxSignInBlocked = "shared_mailbox_sign_in_blocked", Permanent,
        "The account that signed in is disabled for sign-in, as every shared mailbox is: a shared mailbox has no sign-in of its own. Grant a user FullAccess (and SendAs) on it, set that user as the account's delegate, and authorize as the delegate.";
}

impl fmt::Display for Remediation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// A failed OAuth step: which step, why (remediation), and the provider's own words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// "token exchange", "refresh", "device authorization", ...
    pub step: &'static str,
    pub remediation: Remediation,
    /// HTTP status, if there was a response.
    pub status: Option<u16>,
    /// The provider's `error`, `error_description` (or the start of a non-JSON body),
    /// verbatim. Never contains a token or secret: request values are not echoed here.
    pub provider_says: Option<String>,
}

impl Failure {
    pub fn severity(&self) -> Severity {
        self.remediation.severity()
    }

    pub fn is_transient(&self) -> bool {
        self.severity() == Severity::Transient
    }

    pub fn new(step: &'static str, remediation: Remediation) -> Self {
        Failure {
            step,
            remediation,
            status: None,
            provider_says: None,
        }
    }

    pub fn config(step: &'static str, detail: &str) -> Self {
        Failure {
            step,
            remediation: Remediation::Misconfigured,
            status: None,
            provider_says: Some(detail.to_owned()),
        }
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.provider_says = Some(detail.into());
        self
    }

    /// Words for the app's kind. [`classify`] sees only the response: an `invalid_grant`
    /// without Microsoft's `error_codes` could come from anyone, so it is
    /// `provider_invalid_grant` there, and only a Google app gets Google's advice (its
    /// "Testing" status) and a Microsoft app Microsoft's.
    pub fn for_app_kind(mut self, kind: AppKind) -> Self {
        if self.remediation == Remediation::ProviderInvalidGrant {
            self.remediation = match kind {
                AppKind::Google => Remediation::GoogleInvalidGrant,
                AppKind::Microsoft => Remediation::InvalidGrant,
                AppKind::Generic => Remediation::ProviderInvalidGrant,
            };
        }
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} failed [{}]: {}",
            self.step,
            self.remediation.code(),
            self.remediation.sentence()
        )?;
        if let Some(p) = &self.provider_says {
            write!(f, " (provider said: {p})")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// Microsoft AADSTS code → remediation.
fn aadsts(code: u64) -> Option<Remediation> {
    use Remediation as R;
    Some(match code {
        50011 => R::RedirectUriMismatch,
        7000215 => R::SecretIdInsteadOfValue,
        7000222 => R::SecretExpired,
        700016 => R::AppNotFound,
        90002 | 90023 => R::TenantNotFound,
        65001 => R::ConsentRequired,
        50020 => R::UserFromOtherTenant,
        50076 | 50079 => R::MfaRequired,
        50173 | 50133 | 50089 => R::GrantRevoked,
        700082 | 70008 => R::RefreshTokenExpired,
        70000 | 9002313 => R::InvalidGrant,
        54005 => R::CodeAlreadyRedeemed,
        53003 => R::ConditionalAccess,
        // "The user account is disabled": what a shared (unlicensed) mailbox gets when someone
        // signs in as the mailbox itself.
        50057 => R::SharedMailboxSignInBlocked,
        _ => return None,
    })
}

/// The first `AADSTSnnnn` in a description, or the first of `error_codes`.
fn aadsts_code(body: &serde_json::Value) -> Option<u64> {
    if let Some(c) = body
        .get("error_codes")
        .and_then(|c| c.as_array())
        .and_then(|a| a.first())
        .and_then(|c| c.as_u64())
    {
        return Some(c);
    }
    let desc = body.get("error_description")?.as_str()?;
    let start = desc.find("AADSTS")? + 6;
    let digits: String = desc[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

fn shorten(s: &str, max: usize) -> String {
    let mut out: String = s.chars().take(max).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// Classifies an error response from a token-type endpoint.
pub fn classify(step: &'static str, status: u16, body: &str) -> Failure {
    use Remediation as R;
    let json: Option<serde_json::Value> = serde_json::from_str(body)
        .ok()
        .filter(|v: &serde_json::Value| v.is_object());
    let error = json
        .as_ref()
        .and_then(|j| j.get("error"))
        .and_then(|e| e.as_str())
        .unwrap_or("");
    let description = json
        .as_ref()
        .and_then(|j| j.get("error_description"))
        .and_then(|e| e.as_str())
        .unwrap_or("");
    // Only an OAuth JSON error's own fields are shown: any other body (an HTML error page,
    // an internal service's reply reached through a misdirected endpoint) is not echoed.
    let provider_says = if error.is_empty() && description.is_empty() {
        (!body.trim().is_empty()).then(|| {
            format!("HTTP {status}, with a reply that is not an OAuth JSON error (not shown)")
        })
    } else {
        let mut said = match (error.is_empty(), description.is_empty()) {
            (false, false) => format!("{error}: {description}"),
            (false, true) => error.to_owned(),
            _ => description.to_owned(),
        };
        let codes: Vec<String> = json
            .as_ref()
            .and_then(|j| j.get("error_codes"))
            .and_then(|c| c.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|c| c.as_u64())
                    .map(|c| c.to_string())
                    .collect()
            })
            .unwrap_or_default();
        if !codes.is_empty() && !said.contains(&codes[0]) {
            said.push_str(&format!(" (error codes {})", codes.join(", ")));
        }
        Some(shorten(&said, 600))
    };

    let remediation = if status == 429
        || status >= 500
        || error == "temporarily_unavailable"
        || error == "server_error"
    {
        R::ProviderUnavailable
    } else if let Some(r) = json.as_ref().and_then(aadsts_code).and_then(aadsts) {
        r
    } else {
        match error {
            "invalid_grant" if description.contains("AADSTS") => R::InvalidGrant,
            "invalid_grant"
                if json
                    .as_ref()
                    .is_some_and(|j| j.get("error_codes").is_none()) =>
            {
                // Whose words fit depends on the app: `Failure::for_app_kind`.
                R::ProviderInvalidGrant
            }
            "invalid_grant" => R::InvalidGrant,
            "invalid_client" | "unauthorized_client" if description.contains("secret") => {
                R::InvalidClient
            }
            "invalid_client" => R::InvalidClient,
            "unauthorized_client" => R::UnauthorizedClient,
            "access_denied" | "authorization_declined" => R::AccessDenied,
            "expired_token" => R::DeviceCodeExpired,
            "invalid_scope" => R::InvalidScope,
            "consent_required" => R::ConsentRequired,
            "interaction_required" | "login_required" => R::MfaRequired,
            "redirect_uri_mismatch" => R::RedirectUriMismatch,
            "" if json.is_none() => R::MalformedResponse,
            _ => R::ProviderError,
        }
    };
    Failure {
        step,
        remediation,
        status: Some(status),
        provider_says,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(code: u64, error: &str) -> String {
        serde_json::json!({
            "error": error,
            "error_description": format!("AADSTS{code}: Something happened. Trace ID: 1 Correlation ID: 2 Timestamp: 2026-11-23 10:00:00Z"),
            "error_codes": [code],
            "timestamp": "2026-11-23 10:00:00Z",
            "trace_id": "1",
            "correlation_id": "2",
        })
        .to_string()
    }

    #[test]
    fn every_row_of_the_providers_table() {
        use Remediation as R;
        for (code, error, want) in [
            (50011, "invalid_request", R::RedirectUriMismatch),
            (7000215, "invalid_client", R::SecretIdInsteadOfValue),
            (7000222, "invalid_client", R::SecretExpired),
            (700016, "unauthorized_client", R::AppNotFound),
            (90002, "invalid_request", R::TenantNotFound),
            (90023, "invalid_request", R::TenantNotFound),
            (65001, "invalid_grant", R::ConsentRequired),
            (50020, "invalid_request", R::UserFromOtherTenant),
            (50076, "interaction_required", R::MfaRequired),
            (50079, "interaction_required", R::MfaRequired),
            (50173, "invalid_grant", R::GrantRevoked),
            (50133, "invalid_grant", R::GrantRevoked),
            (50089, "invalid_grant", R::GrantRevoked),
            (700082, "invalid_grant", R::RefreshTokenExpired),
            (70008, "invalid_grant", R::RefreshTokenExpired),
            (70000, "invalid_grant", R::InvalidGrant),
            (9002313, "invalid_request", R::InvalidGrant),
            (54005, "invalid_grant", R::CodeAlreadyRedeemed),
            (53003, "access_denied", R::ConditionalAccess),
            (50057, "invalid_grant", R::SharedMailboxSignInBlocked),
        ] {
            let f = classify("refresh", 400, &ms(code, error));
            assert_eq!(f.remediation, want, "AADSTS{code}");
            assert_eq!(f.severity(), Severity::Permanent);
            assert!(
                f.provider_says
                    .as_deref()
                    .unwrap()
                    .contains(&format!("AADSTS{code}")),
                "verbatim words kept"
            );
        }
    }

    #[test]
    fn google_and_transient_errors() {
        let g = classify(
            "refresh",
            400,
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#,
        );
        assert_eq!(g.remediation, Remediation::ProviderInvalidGrant);
        assert_eq!(
            g.provider_says.as_deref(),
            Some("invalid_grant: Token has been expired or revoked.")
        );
        assert_eq!(
            g.clone().for_app_kind(AppKind::Google).remediation,
            Remediation::GoogleInvalidGrant
        );
        assert_eq!(
            classify(
                "refresh",
                401,
                r#"{"error":"invalid_client","error_description":"Unauthorized"}"#
            )
            .remediation,
            Remediation::InvalidClient
        );
        for (status, body) in [
            (500, "Internal Server Error"),
            (503, ""),
            (429, r#"{"error":"rate_limited"}"#),
            (400, r#"{"error":"temporarily_unavailable"}"#),
        ] {
            let f = classify("refresh", status, body);
            assert!(f.is_transient(), "{status} {body}");
        }
        let f = classify("refresh", 400, "<html>proxy error</html>");
        assert_eq!(f.remediation, Remediation::MalformedResponse);
        assert!(f.is_transient());
        // A body that is not an OAuth JSON error is never echoed (it may be an internal
        // service's reply): its status is named, its words are not.
        let shown = f.to_string();
        assert!(!shown.contains("proxy error"), "{shown}");
        assert!(
            shown.contains("HTTP 400") && shown.contains("not shown"),
            "{shown}"
        );
        for body in [
            r#"{"internal":"db-password=hunter2"}"#,
            "root:x:0:0:root:/root:/bin/bash",
        ] {
            let shown = classify("token exchange", 200, body).to_string();
            assert!(
                !shown.contains("hunter2") && !shown.contains("root:x"),
                "{shown}"
            );
        }
        // The JSON error's own fields are shown, with Microsoft's error codes.
        let f = classify(
            "refresh",
            400,
            r#"{"error":"invalid_grant","error_description":"Bad grant","error_codes":[70000],"trace_id":"SECRETISH"}"#,
        );
        assert_eq!(
            f.provider_says.as_deref(),
            Some("invalid_grant: Bad grant (error codes 70000)")
        );
    }

    #[test]
    fn invalid_grant_without_error_codes_is_classified_by_the_app_kind() {
        // npm `oidc-provider`'s answer to a revoked or replayed refresh token.
        let body = r#"{"error":"invalid_grant","error_description":"grant request is invalid"}"#;
        let generic = classify("refresh", 400, body).for_app_kind(AppKind::Generic);
        assert_eq!(generic.remediation, Remediation::ProviderInvalidGrant);
        assert_eq!(generic.severity(), Severity::Permanent);
        let words = generic.to_string();
        assert!(
            !words.contains("Google") && !words.contains("Production"),
            "no Google advice for a generic app: {words}"
        );
        assert!(words.contains("grant request is invalid"), "{words}");
        assert_eq!(
            classify("refresh", 400, body)
                .for_app_kind(AppKind::Google)
                .remediation,
            Remediation::GoogleInvalidGrant
        );
        assert_eq!(
            classify("refresh", 400, body)
                .for_app_kind(AppKind::Microsoft)
                .remediation,
            Remediation::InvalidGrant
        );
        // An AADSTS code decides by itself, whatever the kind.
        let revoked = classify("refresh", 400, &ms(50173, "invalid_grant"));
        assert_eq!(
            revoked.for_app_kind(AppKind::Generic).remediation,
            Remediation::GrantRevoked
        );
    }

    #[test]
    fn catalogue_codes_are_unique_and_round_trip() {
        let mut seen = std::collections::HashSet::new();
        for r in Remediation::ALL {
            assert!(seen.insert(r.code()), "duplicate code {}", r.code());
            assert_eq!(Remediation::from_code(r.code()), Some(*r));
            assert!(r.sentence().ends_with('.'), "{}", r.code());
        }
    }
}
