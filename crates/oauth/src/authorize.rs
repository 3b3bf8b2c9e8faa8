//! The authorize URL (RFC 6749 §4.1.1 with PKCE and OIDC nonce).

use mailgate_core::app::{AppSpec, RESERVED_AUTHORIZE_PARAMS};
use mailgate_core::preset;

pub struct AuthorizeParams<'a> {
    pub redirect_uri: &'a str,
    pub state: &'a str,
    pub nonce: &'a str,
    pub code_challenge: &'a str,
    /// Prefills the sign-in name so the administrator signs in as the mailbox.
    pub login_hint: Option<&'a str>,
}

/// Builds the URL the administrator's browser opens. Preset parameters (`prompt`,
/// Google's `access_type=offline`) come first; the app's extra parameters may override
/// them but never the security-relevant ones.
pub fn authorize_url(app: &AppSpec, p: &AuthorizeParams<'_>) -> Result<url::Url, crate::Failure> {
    let Some(base) = &app.endpoints.authorize else {
        return Err(crate::Failure::config(
            "authorize",
            "the app has no authorize endpoint; set one or use the device-code flow",
        ));
    };
    let mut url = base.url().clone();
    {
        let mut q = url.query_pairs_mut();
        q.append_pair("client_id", app.client_id.as_str())
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", p.redirect_uri)
            .append_pair("scope", &app.scopes.to_string())
            .append_pair("state", p.state)
            .append_pair("nonce", p.nonce)
            .append_pair("code_challenge", p.code_challenge)
            .append_pair("code_challenge_method", "S256");
        if let Some(hint) = p.login_hint {
            q.append_pair("login_hint", hint);
        }
        for (k, v) in preset::authorize_params(app.kind) {
            if !app.extra_params.iter().any(|(ek, _)| ek == k) {
                q.append_pair(k, v);
            }
        }
        for (k, v) in &app.extra_params {
            if !RESERVED_AUTHORIZE_PARAMS.contains(&k.as_str()) {
                q.append_pair(k, v);
            }
        }
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mailgate_core::app::{AppKind, Endpoints, OAuthFlow};
    use mailgate_core::{ClientId, HttpUrl, Name, Scopes};

    fn generic(extra_params: Vec<(String, String)>) -> AppSpec {
        let url = |s: &str| HttpUrl::parse(s).unwrap();
        AppSpec {
            name: Name::parse("Standard OIDC").unwrap(),
            kind: AppKind::Generic,
            tenant: None,
            client_id: ClientId::parse("mailgate").unwrap(),
            client_secret: None,
            secret_expires: None,
            service_account_key: None,
            endpoints: Endpoints {
                authorize: Some(url("https://op.example.test/auth")),
                token: url("https://op.example.test/token"),
                device: None,
                jwks: Some(url("https://op.example.test/jwks")),
                userinfo: None,
                revoke: None,
                issuer: Some("https://op.example.test".into()),
            },
            scopes: Scopes::parse("openid email offline_access").unwrap(),
            extra_params,
            flow: OAuthFlow::AuthorizationCode,
        }
    }

    fn query(app: &AppSpec) -> Vec<(String, String)> {
        let p = AuthorizeParams {
            redirect_uri: "https://mailgate.example.test/oauth/callback",
            state: "state",
            nonce: "nonce",
            code_challenge: "challenge",
            login_hint: Some("alice@example.test"),
        };
        authorize_url(app, &p)
            .unwrap()
            .query_pairs()
            .into_owned()
            .collect()
    }

    #[test]
    fn a_generic_app_sends_only_standard_parameters_unless_configured() {
        let names: Vec<String> = query(&generic(Vec::new()))
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(!names.iter().any(|k| k == "prompt"), "{names:?}");
        for standard in [
            "client_id",
            "response_type",
            "redirect_uri",
            "scope",
            "state",
            "nonce",
            "code_challenge",
            "code_challenge_method",
            "login_hint",
        ] {
            assert!(names.iter().any(|k| k == standard), "{standard}: {names:?}");
        }
        assert_eq!(names.len(), 9, "nothing else: {names:?}");
        let configured = query(&generic(vec![("prompt".into(), "login".into())]));
        assert!(configured.contains(&("prompt".into(), "login".into())));
    }
}
