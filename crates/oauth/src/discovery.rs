//! OpenID Connect Discovery 1.0: a provider's endpoints read from
//! `<issuer>/.well-known/openid-configuration`, so that a generic app needs only its issuer.
//!
//! The document is fetched by [`OAuthClient::fetch_discovery`](crate::OAuthClient) with the
//! same bounds (timeout, size, no redirects) as every other provider request, and parsed
//! here strictly: its `issuer` must be exactly the one given (§4.3, which is what stops a
//! document from speaking for another provider), and every endpoint must be an http(s) URL.

use crate::failure::{Failure, Remediation};
use mailgate_core::app::{AppKind, Endpoints, FieldError, field_error};
use mailgate_core::input::EndpointInput;
use mailgate_core::{HttpUrl, Invalid};

/// Where the discovery document of `issuer` lives (§4: the path is appended to the issuer,
/// after any path it has).
pub fn document_url(issuer: &str) -> Result<HttpUrl, Invalid> {
    let issuer = HttpUrl::parse(issuer.trim())?;
    HttpUrl::parse(&format!(
        "{}/.well-known/openid-configuration",
        issuer.without_trailing_slash()
    ))
}

fn malformed(why: String) -> Failure {
    Failure::new(STEP, Remediation::MalformedResponse)
        .with_detail(format!("the discovery document {why}"))
}

pub(crate) const STEP: &str = "discovery";

/// Parses a discovery document for `issuer`, naming the field at fault.
pub fn parse(issuer: &str, body: &str) -> Result<Endpoints, Failure> {
    let doc: serde_json::Value =
        serde_json::from_str(body).map_err(|_| malformed("is not JSON".into()))?;
    let Some(doc) = doc.as_object() else {
        return Err(malformed("is not a JSON object".into()));
    };
    let text = |name: &str| -> Result<Option<&str>, Failure> {
        match doc.get(name) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) if !s.trim().is_empty() => Ok(Some(s.trim())),
            Some(_) => Err(malformed(format!("field {name} is not a non-empty string"))),
        }
    };
    let url = |name: &str| -> Result<Option<HttpUrl>, Failure> {
        text(name)?
            .map(|s| {
                HttpUrl::parse(s)
                    .map_err(|_| malformed(format!("field {name} is not an http(s) URL")))
            })
            .transpose()
    };
    let stated = text("issuer")?.ok_or_else(|| malformed("has no issuer".into()))?;
    if stated != issuer.trim() {
        // Shown so the administrator can copy it; cut short, as it comes from the network.
        let shown: String = stated.chars().take(200).collect();
        return Err(Failure::new(STEP, Remediation::Misconfigured).with_detail(format!(
            "the discovery document names the issuer {shown:?}, not {:?}; give exactly the issuer the provider states",
            issuer.trim()
        )));
    }
    Ok(Endpoints {
        issuer: Some(stated.to_owned()),
        authorize: url("authorization_endpoint")?,
        token: url("token_endpoint")?.ok_or_else(|| malformed("has no token_endpoint".into()))?,
        device: url("device_authorization_endpoint")?,
        jwks: url("jwks_uri")?,
        userinfo: url("userinfo_endpoint")?,
        revoke: url("revocation_endpoint")?,
    })
}

/// For a generic app given an issuer but not every endpoint, fetches the provider's
/// discovery document and fills in what was not given (what was given wins). Errors name
/// the field `issuer`. Other kinds have presets and are left alone.
pub async fn complete_endpoints(
    client: &crate::OAuthClient,
    kind: AppKind,
    input: &mut EndpointInput,
) -> Result<(), FieldError> {
    let Some(issuer) = input.issuer_to_discover(kind) else {
        return Ok(());
    };
    let found = client.fetch_discovery(&issuer).await.map_err(|f| {
        // An error answer is named by its status only: the URL is the administrator's, and
        // echoing its body would turn this check into a way to read internal pages.
        let said = match (f.status, f.provider_says.as_deref()) {
            (Some(status), _) => format!(": the server answered HTTP {status}"),
            (None, Some(detail)) => format!(": {detail}"),
            (None, None) => String::new(),
        };
        field_error(
            "issuer",
            format!(
                "reading the provider's discovery document ({}/.well-known/openid-configuration) failed [{}]{said}; check the issuer, or give the endpoints (token_url, authorize_url, jwks_url, userinfo_url) yourself",
                issuer.trim().trim_end_matches('/'),
                f.remediation.code()
            ),
        )
    })?;
    input.fill_from(&found);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ISSUER: &str = "https://op.example.test/realms/mail";

    fn doc(issuer: &str) -> String {
        serde_json::json!({
            "issuer": issuer,
            "authorization_endpoint": format!("{ISSUER}/auth"),
            "token_endpoint": format!("{ISSUER}/token"),
            "jwks_uri": format!("{ISSUER}/jwks"),
            "userinfo_endpoint": format!("{ISSUER}/me"),
            "device_authorization_endpoint": format!("{ISSUER}/device"),
            "revocation_endpoint": format!("{ISSUER}/revoke"),
            "response_types_supported": ["code"],
        })
        .to_string()
    }

    #[test]
    fn the_document_lives_under_the_issuer() {
        assert_eq!(
            document_url(ISSUER).unwrap().as_str(),
            "https://op.example.test/realms/mail/.well-known/openid-configuration"
        );
        assert_eq!(
            document_url("https://op.example.test/").unwrap().as_str(),
            "https://op.example.test/.well-known/openid-configuration"
        );
        assert!(document_url("op.example.test").is_err());
    }

    #[test]
    fn a_document_fills_the_endpoints_and_must_name_the_same_issuer() {
        let found = parse(ISSUER, &doc(ISSUER)).unwrap();
        assert_eq!(found.token.as_str(), format!("{ISSUER}/token"));
        assert_eq!(found.jwks.unwrap().as_str(), format!("{ISSUER}/jwks"));
        assert_eq!(found.userinfo.unwrap().as_str(), format!("{ISSUER}/me"));
        assert_eq!(found.device.unwrap().as_str(), format!("{ISSUER}/device"));

        let other = parse(ISSUER, &doc("https://evil.example.test")).unwrap_err();
        assert_eq!(other.remediation, Remediation::Misconfigured);
        assert!(other.to_string().contains("evil.example.test"), "{other}");
        for (body, field) in [
            ("<html>", "not JSON"),
            ("[]", "not a JSON object"),
            (r#"{"token_endpoint":"https://x.test/t"}"#, "no issuer"),
            (&format!(r#"{{"issuer":"{ISSUER}"}}"#), "no token_endpoint"),
            (
                &format!(r#"{{"issuer":"{ISSUER}","token_endpoint":"ftp://x/t"}}"#),
                "token_endpoint",
            ),
            (
                &format!(
                    r#"{{"issuer":"{ISSUER}","token_endpoint":"https://x.test/t","jwks_uri":7}}"#
                ),
                "jwks_uri",
            ),
        ] {
            let f = parse(ISSUER, body).unwrap_err();
            assert!(f.to_string().contains(field), "{body}: {f}");
        }
    }
}
