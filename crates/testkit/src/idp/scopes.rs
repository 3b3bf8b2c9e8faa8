//! Scope strings: which resource (audience) they are for and whether they open mail.
//!
//! Microsoft scopes name their resource (`https://outlook.office.com/IMAP.AccessAsUser.All`);
//! a bare name (`User.Read`) means Microsoft Graph. One access token serves one resource, and
//! only an Outlook-audience token opens IMAP/POP/SMTP — a Graph token is refused by Exchange.

use super::errors::Failure;

pub(crate) const OUTLOOK_AUDIENCE: &str = "https://outlook.office.com";
/// App-only tokens are requested for, and carry, the office365 host.
pub(crate) const OUTLOOK_APP_AUDIENCE: &str = "https://outlook.office365.com";
pub(crate) const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
pub(crate) const GOOGLE_MAIL_SCOPE: &str = "https://mail.google.com/";

const OUTLOOK_PREFIXES: [&str; 2] = [
    "https://outlook.office.com/",
    "https://outlook.office365.com/",
];
const GRAPH_PREFIX: &str = "https://graph.microsoft.com/";
const MS_MAIL_SCOPES: [&str; 3] = ["IMAP.AccessAsUser.All", "POP.AccessAsUser.All", "SMTP.Send"];
/// App-only roles an admin grants for mail (Exchange's `*.AccessAsApp` / `SMTP.SendAsApp`).
pub(crate) const MS_APP_MAIL_ROLES: [&str; 3] =
    ["IMAP.AccessAsApp", "POP.AccessAsApp", "SMTP.SendAsApp"];

/// Splits a space-separated scope parameter, dropping duplicates but keeping order.
pub(crate) fn split(scope: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for s in scope.split_whitespace() {
        if !out.iter().any(|o| o == s) {
            out.push(s.to_owned());
        }
    }
    out
}

/// OpenID Connect scopes, which name no resource.
pub(crate) fn is_oidc(scope: &str) -> bool {
    matches!(scope, "openid" | "profile" | "email" | "offline_access")
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Resource {
    Outlook,
    Graph,
    Other(String),
}

fn ms_resource(scope: &str) -> Option<(Resource, String)> {
    if is_oidc(scope) {
        return None;
    }
    for prefix in OUTLOOK_PREFIXES {
        if let Some(short) = strip_prefix_ci(scope, prefix) {
            return Some((Resource::Outlook, short.to_owned()));
        }
    }
    if let Some(short) = strip_prefix_ci(scope, GRAPH_PREFIX) {
        return Some((Resource::Graph, short.to_owned()));
    }
    match scope.rsplit_once('/') {
        Some((resource, short)) if scope.contains("://") => {
            Some((Resource::Other(resource.to_owned()), short.to_owned()))
        }
        _ => Some((Resource::Graph, scope.to_owned())),
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len()
        && s.is_char_boundary(prefix.len())
        && s[..prefix.len()].eq_ignore_ascii_case(prefix)
    {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// What a Microsoft delegated access token for `scopes` carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MsDelegated {
    pub(crate) audience: String,
    /// Short scope names for the `scp` claim.
    pub(crate) scp: Vec<String>,
    /// True when the token opens IMAP/POP/SMTP (Outlook audience with a mail scope).
    pub(crate) mail: bool,
}

/// The audience and `scp` of a Microsoft delegated token; more than one resource is refused
/// (AADSTS28000), as the real token endpoint does.
pub(crate) fn ms_delegated(scopes: &[String]) -> Result<MsDelegated, Failure> {
    let mut resource: Option<Resource> = None;
    let mut scp = Vec::new();
    for scope in scopes {
        let Some((r, short)) = ms_resource(scope) else {
            continue;
        };
        match &resource {
            Some(existing) if *existing != r => return Err(Failure::MultipleResources),
            _ => resource = Some(r),
        }
        scp.push(short);
    }
    match resource {
        Some(Resource::Outlook) => {
            let mail = scp
                .iter()
                .any(|s| MS_MAIL_SCOPES.iter().any(|m| m.eq_ignore_ascii_case(s)));
            Ok(MsDelegated {
                audience: OUTLOOK_AUDIENCE.to_owned(),
                scp,
                mail,
            })
        }
        Some(Resource::Other(audience)) => Ok(MsDelegated {
            audience,
            scp,
            mail: false,
        }),
        // Only OpenID scopes, or Graph ones: Microsoft issues a Graph token.
        Some(Resource::Graph) | None => {
            scp.extend(
                scopes
                    .iter()
                    .filter(|s| is_oidc(s) && *s != "offline_access")
                    .cloned(),
            );
            Ok(MsDelegated {
                audience: GRAPH_AUDIENCE.to_owned(),
                scp,
                mail: false,
            })
        }
    }
}

/// For `client_credentials`: the audience of `{resource}/.default`, or why it is refused.
pub(crate) fn ms_app_only_audience(scope: &str) -> Result<&'static str, Failure> {
    let trimmed = scope.trim();
    let Some(resource) = trimmed.strip_suffix("/.default") else {
        return Err(Failure::ClientCredentialsScope(trimmed.to_owned()));
    };
    if OUTLOOK_PREFIXES
        .iter()
        .any(|p| p.trim_end_matches('/').eq_ignore_ascii_case(resource))
    {
        Ok(OUTLOOK_APP_AUDIENCE)
    } else if GRAPH_PREFIX
        .trim_end_matches('/')
        .eq_ignore_ascii_case(resource)
    {
        Ok(GRAPH_AUDIENCE)
    } else {
        Err(Failure::ClientCredentialsScope(trimmed.to_owned()))
    }
}

/// True when `requested` (a later token request's scopes) was covered by the consent.
pub(crate) fn covered_by(requested: &str, granted: &[String]) -> bool {
    is_oidc(requested) || granted.iter().any(|g| g.eq_ignore_ascii_case(requested))
}

pub(crate) fn google_mail(scopes: &[String]) -> bool {
    scopes.iter().any(|s| s == GOOGLE_MAIL_SCOPE)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Vec<String> {
        split(s)
    }

    #[test]
    fn outlook_scopes_give_outlook_audience_and_short_scp() {
        let d = ms_delegated(&v(
            "https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access openid",
        ))
        .unwrap();
        assert_eq!(d.audience, OUTLOOK_AUDIENCE);
        assert_eq!(d.scp, vec!["IMAP.AccessAsUser.All", "SMTP.Send"]);
        assert!(d.mail);
    }

    #[test]
    fn bare_and_graph_scopes_give_graph_audience_without_mail() {
        let d = ms_delegated(&v("User.Read openid offline_access")).unwrap();
        assert_eq!(d.audience, GRAPH_AUDIENCE);
        assert_eq!(d.scp, vec!["User.Read", "openid"]);
        assert!(!d.mail);
        let d = ms_delegated(&v("https://graph.microsoft.com/IMAP.AccessAsUser.All")).unwrap();
        assert!(
            !d.mail,
            "IMAP scope on the Graph resource does not open Exchange IMAP"
        );
    }

    #[test]
    fn two_resources_are_refused() {
        let r = ms_delegated(&v("https://outlook.office.com/SMTP.Send User.Read"));
        assert!(matches!(r, Err(Failure::MultipleResources)));
    }

    #[test]
    fn app_only_needs_dot_default() {
        assert_eq!(
            ms_app_only_audience("https://outlook.office365.com/.default").unwrap(),
            OUTLOOK_APP_AUDIENCE
        );
        assert!(ms_app_only_audience("https://outlook.office365.com/IMAP.AccessAsApp").is_err());
    }
}
