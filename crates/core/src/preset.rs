//! Provider presets: the endpoints, scopes and mail hosts of `PROVIDERS.md`. Choosing a kind
//! fills these in; every value can be overridden afterwards.

use crate::account::{Inbound, InboundProtocol, Outbound, ServerEndpoint};
use crate::{AppKind, Endpoints, HttpUrl, Invalid, OAuthFlow, Scopes, TenantId, TlsMode};
use crate::{Host, Port};

pub const MICROSOFT_AUTHORITY: &str = "https://login.microsoftonline.com";

/// Delegated Outlook scopes. The audience must be Outlook, not Graph: a Graph token fails
/// on IMAP with "AUTHENTICATE failed".
pub const MS_IMAP: &str = "https://outlook.office.com/IMAP.AccessAsUser.All";
pub const MS_POP: &str = "https://outlook.office.com/POP.AccessAsUser.All";
pub const MS_SMTP: &str = "https://outlook.office.com/SMTP.Send";
/// App-only (client credentials) scope.
pub const MS_APP_ONLY: &str = "https://outlook.office365.com/.default";
pub const GOOGLE_MAIL: &str = "https://mail.google.com/";

fn url(s: String) -> Result<HttpUrl, Invalid> {
    HttpUrl::parse(&s)
}

/// The endpoints for a kind. `authority` replaces the provider's sign-in host: a sovereign
/// cloud (`https://login.microsoftonline.us`) or, in tests, the identity-provider emulator.
/// Generic apps have no preset: their endpoints must be given.
pub fn endpoints(
    kind: AppKind,
    tenant: Option<&TenantId>,
    authority: Option<&HttpUrl>,
) -> Result<Option<Endpoints>, Invalid> {
    let base = |default: &str| {
        authority
            .map(HttpUrl::without_trailing_slash)
            .unwrap_or_else(|| default.to_owned())
    };
    Ok(match kind {
        AppKind::Microsoft => {
            let b = base(MICROSOFT_AUTHORITY);
            let t = tenant.map(TenantId::as_str).unwrap_or("common");
            let issuer_tenant =
                if matches!(t, "common" | "organizations" | "consumers") || t.contains('.') {
                    // The issuer names the tenant GUID; checked against the token's `tid`.
                    "{tenantid}"
                } else {
                    t
                };
            Some(Endpoints {
                authorize: Some(url(format!("{b}/{t}/oauth2/v2.0/authorize"))?),
                token: url(format!("{b}/{t}/oauth2/v2.0/token"))?,
                device: Some(url(format!("{b}/{t}/oauth2/v2.0/devicecode"))?),
                jwks: Some(url(format!("{b}/{t}/discovery/v2.0/keys"))?),
                userinfo: None,
                revoke: None,
                issuer: Some(format!("{b}/{issuer_tenant}/v2.0")),
            })
        }
        AppKind::Google => match authority {
            None => Some(Endpoints {
                authorize: Some(url("https://accounts.google.com/o/oauth2/v2/auth".into())?),
                token: url("https://oauth2.googleapis.com/token".into())?,
                device: Some(url("https://oauth2.googleapis.com/device/code".into())?),
                jwks: Some(url("https://www.googleapis.com/oauth2/v3/certs".into())?),
                userinfo: Some(url(
                    "https://openidconnect.googleapis.com/v1/userinfo".into()
                )?),
                revoke: Some(url("https://oauth2.googleapis.com/revoke".into())?),
                issuer: Some("https://accounts.google.com".into()),
            }),
            Some(a) => {
                let b = a.without_trailing_slash();
                Some(Endpoints {
                    authorize: Some(url(format!("{b}/o/oauth2/v2/auth"))?),
                    token: url(format!("{b}/token"))?,
                    device: Some(url(format!("{b}/device/code"))?),
                    jwks: Some(url(format!("{b}/oauth2/v3/certs"))?),
                    userinfo: Some(url(format!("{b}/v1/userinfo"))?),
                    revoke: Some(url(format!("{b}/revoke"))?),
                    issuer: Some(b),
                })
            }
        },
        AppKind::Generic => None,
    })
}

/// Default scopes: identity (to check who consented), a refresh token, and every mail
/// protocol, so one consent serves IMAP, POP3 and SMTP.
pub fn scopes(kind: AppKind, flow: OAuthFlow) -> Option<Scopes> {
    Some(match (kind, flow) {
        (AppKind::Microsoft, OAuthFlow::ClientCredentials) => Scopes::from_list([MS_APP_ONLY]),
        (AppKind::Microsoft, _) => Scopes::from_list([
            "openid",
            "email",
            "profile",
            "offline_access",
            MS_IMAP,
            MS_POP,
            MS_SMTP,
        ]),
        (AppKind::Google, OAuthFlow::ServiceAccount) => Scopes::from_list([GOOGLE_MAIL]),
        (AppKind::Google, _) => Scopes::from_list(["openid", "email", GOOGLE_MAIL]),
        (AppKind::Generic, _) => return None,
    })
}

/// Authorize parameters each kind needs (Google returns a refresh token only with these).
/// A generic app sends none: `prompt=select_account` is not in OpenID Connect Core, and
/// standard providers (npm `oidc-provider`) refuse it with `invalid_request`. An
/// administrator who wants one adds it as an extra parameter.
pub fn authorize_params(kind: AppKind) -> &'static [(&'static str, &'static str)] {
    match kind {
        AppKind::Microsoft => &[("prompt", "select_account")],
        AppKind::Google => &[("access_type", "offline"), ("prompt", "consent")],
        AppKind::Generic => &[],
    }
}

fn endpoint(host: &str, port: u16, tls: TlsMode) -> Option<ServerEndpoint> {
    Some(ServerEndpoint {
        host: Host::parse(host).ok()?,
        port: Port::new(port).ok()?,
        tls,
    })
}

/// The provider's inbound server for a protocol.
pub fn inbound(kind: AppKind, protocol: InboundProtocol) -> Option<Inbound> {
    let server = match (kind, protocol) {
        (AppKind::Microsoft, InboundProtocol::Imap) => {
            endpoint("outlook.office365.com", 993, TlsMode::Implicit)
        }
        (AppKind::Microsoft, InboundProtocol::Pop3) => {
            endpoint("outlook.office365.com", 995, TlsMode::Implicit)
        }
        (AppKind::Google, InboundProtocol::Imap) => {
            endpoint("imap.gmail.com", 993, TlsMode::Implicit)
        }
        (AppKind::Google, InboundProtocol::Pop3) => {
            endpoint("pop.gmail.com", 995, TlsMode::Implicit)
        }
        (AppKind::Generic, _) => None,
    }?;
    Some(Inbound { protocol, server })
}

/// The provider's SMTP submission server. Outlook.com (tenant `consumers`) has its own host.
pub fn outbound(kind: AppKind, tenant: Option<&TenantId>) -> Option<Outbound> {
    let server = match kind {
        AppKind::Microsoft if tenant.is_some_and(|t| t.as_str() == "consumers") => {
            endpoint("smtp-mail.outlook.com", 587, TlsMode::Starttls)
        }
        AppKind::Microsoft => endpoint("smtp.office365.com", 587, TlsMode::Starttls),
        AppKind::Google => endpoint("smtp.gmail.com", 465, TlsMode::Implicit),
        AppKind::Generic => None,
    }?;
    Some(Outbound { server })
}

/// The port a protocol usually uses with a TLS mode, for when only the host is overridden.
pub fn default_port(protocol: &str, tls: TlsMode) -> u16 {
    match (protocol, tls) {
        ("imap", TlsMode::Implicit) => 993,
        ("imap", TlsMode::Starttls) => 143,
        ("pop3", TlsMode::Implicit) => 995,
        ("pop3", TlsMode::Starttls) => 110,
        (_, TlsMode::Implicit) => 465,
        (_, TlsMode::Starttls) => 587,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn microsoft_preset_follows_providers_md() {
        let t = TenantId::parse("contoso.onmicrosoft.com").unwrap();
        let e = endpoints(AppKind::Microsoft, Some(&t), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            e.token.as_str(),
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
        );
        assert_eq!(
            e.issuer.as_deref(),
            Some("https://login.microsoftonline.com/{tenantid}/v2.0")
        );
        let s = scopes(AppKind::Microsoft, OAuthFlow::AuthorizationCode).unwrap();
        for want in ["offline_access", MS_IMAP, MS_POP, MS_SMTP, "openid"] {
            assert!(s.contains(want), "{want}");
        }
        assert_eq!(
            scopes(AppKind::Microsoft, OAuthFlow::ClientCredentials)
                .unwrap()
                .to_string(),
            MS_APP_ONLY
        );
        let imap = inbound(AppKind::Microsoft, InboundProtocol::Imap).unwrap();
        assert_eq!(
            imap.server.to_string(),
            "outlook.office365.com:993 (implicit)"
        );
        assert_eq!(
            outbound(AppKind::Microsoft, None)
                .unwrap()
                .server
                .to_string(),
            "smtp.office365.com:587 (starttls)"
        );
        let consumers = TenantId::parse("consumers").unwrap();
        assert_eq!(
            outbound(AppKind::Microsoft, Some(&consumers))
                .unwrap()
                .server
                .host
                .as_str(),
            "smtp-mail.outlook.com"
        );
    }

    #[test]
    fn tenant_guid_is_the_issuer() {
        let t = TenantId::parse("72f988bf-86f1-41af-91ab-2d7cd011db47").unwrap();
        let e = endpoints(AppKind::Microsoft, Some(&t), None)
            .unwrap()
            .unwrap();
        assert_eq!(
            e.issuer.unwrap(),
            "https://login.microsoftonline.com/72f988bf-86f1-41af-91ab-2d7cd011db47/v2.0"
        );
    }

    #[test]
    fn google_preset_and_authority_override() {
        let e = endpoints(AppKind::Google, None, None).unwrap().unwrap();
        assert_eq!(e.token.as_str(), "https://oauth2.googleapis.com/token");
        assert_eq!(
            outbound(AppKind::Google, None).unwrap().server.to_string(),
            "smtp.gmail.com:465 (implicit)"
        );
        let emu = HttpUrl::parse("http://127.0.0.1:4000/").unwrap();
        let e = endpoints(AppKind::Google, None, Some(&emu))
            .unwrap()
            .unwrap();
        assert_eq!(
            e.authorize.unwrap().as_str(),
            "http://127.0.0.1:4000/o/oauth2/v2/auth"
        );
        assert_eq!(e.issuer.as_deref(), Some("http://127.0.0.1:4000"));
        let e = endpoints(AppKind::Microsoft, None, Some(&emu))
            .unwrap()
            .unwrap();
        assert_eq!(
            e.authorize.unwrap().as_str(),
            "http://127.0.0.1:4000/common/oauth2/v2.0/authorize"
        );
        assert!(authorize_params(AppKind::Google).contains(&("prompt", "consent")));
    }

    #[test]
    fn generic_has_no_presets() {
        assert!(endpoints(AppKind::Generic, None, None).unwrap().is_none());
        assert!(scopes(AppKind::Generic, OAuthFlow::AuthorizationCode).is_none());
        assert!(inbound(AppKind::Generic, InboundProtocol::Imap).is_none());
        assert!(outbound(AppKind::Generic, None).is_none());
        assert!(
            authorize_params(AppKind::Generic).is_empty(),
            "a generic app sends only standard parameters"
        );
    }
}
