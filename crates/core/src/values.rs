//! Newtypes that cannot hold invalid values ("parse, don't validate").

use crate::Invalid;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

/// Serde through `Display`/`FromStr`, so a newtype read from JSON or TOML is parsed exactly
/// like one typed on the command line.
macro_rules! serde_via_str {
    ($t:ty) => {
        impl Serialize for $t {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_str(self)
            }
        }
        impl<'de> Deserialize<'de> for $t {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

macro_rules! id_type {
    ($(#[$m:meta])* $name:ident) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub i64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}", self.0)
            }
        }
    };
}

id_type!(
    /// Database id of an OAuth app.
    AppId
);
id_type!(
    /// Database id of a mail account.
    AccountId
);

fn is_dns_label(label: &str) -> bool {
    !label.is_empty()
        && label.len() <= 63
        && label
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        && !label.starts_with('-')
        && !label.ends_with('-')
}

fn is_dns_name(name: &str) -> bool {
    name.len() <= 253 && name.split('.').all(is_dns_label)
}

/// A mailbox address: `local@domain.tld`. The domain is stored lower-case; the local part
/// keeps its case but [`EmailAddress::same_mailbox`] compares case-insensitively, as
/// Exchange, Gmail and Dovecot do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct EmailAddress(String);

impl EmailAddress {
    const EXPECTED: &'static str = "expected a mailbox address like name@example.com";

    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s = input.trim();
        let bad =
            |why: &str| Invalid::new("email address", s, format!("{why}; {}", Self::EXPECTED));
        let (local, domain) = s.rsplit_once('@').ok_or_else(|| bad("there is no @"))?;
        if local.is_empty() || local.len() > 64 {
            return Err(bad("the part before @ must be 1 to 64 characters"));
        }
        const SPECIALS: &str = "!#$%&'*+-/=?^_`{|}~.";
        if !local
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || SPECIALS.contains(c))
            || local.starts_with('.')
            || local.ends_with('.')
            || local.contains("..")
        {
            return Err(bad(
                "the part before @ contains characters a mailbox cannot have",
            ));
        }
        if !domain.contains('.') || !is_dns_name(domain) {
            return Err(bad("the part after @ is not a domain name"));
        }
        if s.len() > 254 {
            return Err(bad("it is longer than 254 characters"));
        }
        Ok(EmailAddress(format!(
            "{local}@{}",
            domain.to_ascii_lowercase()
        )))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
    }

    /// Case-insensitive comparison: the rule providers apply to sign-in names.
    pub fn same_mailbox(&self, other: &str) -> bool {
        self.0.eq_ignore_ascii_case(other.trim())
    }
}

impl fmt::Display for EmailAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for EmailAddress {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::parse(s)
    }
}
serde_via_str!(EmailAddress);

/// A TCP port, 1–65535.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port(u16);

impl Port {
    pub fn new(n: u16) -> Result<Self, Invalid> {
        if n == 0 {
            return Err(Invalid::new(
                "port",
                "0",
                "expected a number from 1 to 65535",
            ));
        }
        Ok(Port(n))
    }

    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s = input.trim();
        match s.parse::<u32>() {
            Ok(n @ 1..=65535) => Ok(Port(n as u16)),
            _ => Err(Invalid::new("port", s, "expected a number from 1 to 65535")),
        }
    }

    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Port {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for Port {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::parse(s)
    }
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u16(self.0)
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let n = i64::deserialize(d)?;
        Port::parse(&n.to_string()).map_err(serde::de::Error::custom)
    }
}

/// A server name: a DNS name (`outlook.office365.com`, `localhost`) or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Host(String);

impl Host {
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s = input.trim();
        let unbracketed = s
            .strip_prefix('[')
            .and_then(|x| x.strip_suffix(']'))
            .unwrap_or(s);
        if let Ok(ip) = unbracketed.parse::<IpAddr>() {
            return Ok(Host(ip.to_string()));
        }
        if s.is_empty() || !is_dns_name(s) {
            return Err(Invalid::new(
                "host name",
                s,
                "expected a DNS name like imap.example.com or an IP address, without scheme or port",
            ));
        }
        Ok(Host(s.to_ascii_lowercase()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Host {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::parse(s)
    }
}
serde_via_str!(Host);

/// How a mail connection is secured. There is no plaintext mode: a bearer token must never
/// cross the network in the clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsMode {
    /// TLS from the first byte (IMAP 993, POP3 995, SMTP 465).
    Implicit,
    /// Plain greeting, then STARTTLS/STLS before anything else (IMAP 143, POP3 110, SMTP 587).
    Starttls,
}

impl TlsMode {
    pub fn as_str(self) -> &'static str {
        match self {
            TlsMode::Implicit => "implicit",
            TlsMode::Starttls => "starttls",
        }
    }

    pub fn parse(input: &str) -> Result<Self, Invalid> {
        match input.trim().to_ascii_lowercase().as_str() {
            "implicit" | "tls" | "ssl" => Ok(TlsMode::Implicit),
            "starttls" => Ok(TlsMode::Starttls),
            other => Err(Invalid::new(
                "TLS mode",
                other,
                "expected implicit or starttls",
            )),
        }
    }
}

impl fmt::Display for TlsMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for TlsMode {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::parse(s)
    }
}
serde_via_str!(TlsMode);

/// An absolute http(s) URL without credentials or fragment. Used for OAuth endpoints and the
/// public URL. Credentials are refused because a URL ends up in logs and pages.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct HttpUrl(url::Url);

impl HttpUrl {
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s = input.trim();
        let expected =
            "expected an absolute http:// or https:// URL like https://login.example.com/path";
        let url =
            url::Url::parse(s).map_err(|e| Invalid::new("URL", s, format!("{e}; {expected}")))?;
        if url.scheme() != "http" && url.scheme() != "https" {
            return Err(Invalid::new(
                "URL",
                s,
                format!("the scheme must be http or https; {expected}"),
            ));
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(Invalid::new(
                "URL",
                s,
                format!("it has no host; {expected}"),
            ));
        }
        if !url.username().is_empty() || url.password().is_some() {
            // Do not echo the input: it holds a credential.
            return Err(Invalid::secret(
                "URL",
                "it must not contain a user name or password",
            ));
        }
        if url.fragment().is_some() {
            return Err(Invalid::new("URL", s, "it must not contain a #fragment"));
        }
        Ok(HttpUrl(url))
    }

    pub fn as_str(&self) -> &str {
        self.0.as_str()
    }

    pub fn url(&self) -> &url::Url {
        &self.0
    }

    pub fn is_https(&self) -> bool {
        self.0.scheme() == "https"
    }

    /// `self` with `path` appended to its path, avoiding a doubled or missing slash.
    pub fn join_path(&self, path: &str) -> HttpUrl {
        let mut url = self.0.clone();
        let joined = format!(
            "{}/{}",
            url.path().trim_end_matches('/'),
            path.trim_start_matches('/')
        );
        url.set_path(&joined);
        HttpUrl(url)
    }

    /// The same URL with a trailing slash removed, for display and joining.
    pub fn without_trailing_slash(&self) -> String {
        self.0.as_str().trim_end_matches('/').to_owned()
    }
}

impl fmt::Display for HttpUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0.as_str())
    }
}

impl FromStr for HttpUrl {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::parse(s)
    }
}
serde_via_str!(HttpUrl);

fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// A Microsoft Entra tenant: `common`, `organizations`, `consumers`, a tenant GUID, or a
/// verified domain such as `contoso.onmicrosoft.com`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TenantId(String);

impl TenantId {
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s = input.trim().to_ascii_lowercase();
        let ok = matches!(s.as_str(), "common" | "organizations" | "consumers")
            || is_guid(&s)
            || (s.contains('.') && is_dns_name(&s));
        if !ok {
            return Err(Invalid::new(
                "Microsoft tenant",
                input.trim(),
                "expected common, organizations, consumers, the Directory (tenant) ID GUID from the app's Overview page, or a verified domain like contoso.onmicrosoft.com",
            ));
        }
        Ok(TenantId(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for TenantId {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::parse(s)
    }
}
serde_via_str!(TenantId);

/// A human name for an app or account: 1–64 characters, no control characters, trimmed.
/// Names are unique per kind and are how the CLI refers to things.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Name(String);

impl Name {
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s = input.trim();
        let count = s.chars().count();
        if count == 0 || count > 64 {
            return Err(Invalid::new("name", s, "expected 1 to 64 characters"));
        }
        if s.chars().any(char::is_control) {
            return Err(Invalid::new(
                "name",
                s,
                "control characters are not allowed",
            ));
        }
        if s.parse::<i64>().is_ok() {
            // The CLI accepts a name or a numeric id wherever it needs an app or account.
            return Err(Invalid::new(
                "name",
                s,
                "a name cannot be only digits (that is how ids look)",
            ));
        }
        Ok(Name(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Name {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::parse(s)
    }
}
serde_via_str!(Name);

/// An OAuth client id as issued by the provider. Not a secret.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClientId(String);

impl ClientId {
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let s = input.trim();
        if s.is_empty() || s.len() > 255 || s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(Invalid::new(
                "client id",
                s,
                "expected the client id from the provider's app registration (1 to 255 characters, no spaces)",
            ));
        }
        Ok(ClientId(s.to_owned()))
    }

    /// Microsoft's "Application (client) ID" is always a GUID; anything else is a paste error.
    pub fn is_guid(&self) -> bool {
        is_guid(&self.0)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ClientId {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::parse(s)
    }
}
serde_via_str!(ClientId);

/// An ordered, duplicate-free set of OAuth scopes.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes(Vec<String>);

impl Scopes {
    /// Parses a space- or comma-separated list.
    pub fn parse(input: &str) -> Result<Self, Invalid> {
        let mut out = Scopes::default();
        for scope in input
            .split([' ', ',', '\n', '\t'])
            .filter(|s| !s.is_empty())
        {
            if scope
                .chars()
                .any(|c| c.is_control() || c == '"' || c == '\\')
            {
                return Err(Invalid::new(
                    "scope",
                    scope,
                    "scopes are words or URLs without quotes",
                ));
            }
            out.push(scope);
        }
        if out.0.is_empty() {
            return Err(Invalid::new("scopes", input, "expected at least one scope"));
        }
        Ok(out)
    }

    pub fn from_list<'a>(items: impl IntoIterator<Item = &'a str>) -> Self {
        let mut out = Scopes::default();
        for s in items {
            out.push(s);
        }
        out
    }

    fn push(&mut self, scope: &str) {
        if !self.0.iter().any(|s| s == scope) {
            self.0.push(scope.to_owned());
        }
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.0.iter().any(|s| s.eq_ignore_ascii_case(scope))
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Display for Scopes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.join(" "))
    }
}

impl FromStr for Scopes {
    type Err = Invalid;
    fn from_str(s: &str) -> Result<Self, Invalid> {
        Self::parse(s)
    }
}
serde_via_str!(Scopes);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_accepts_real_addresses_and_lowercases_the_domain() {
        let e = EmailAddress::parse(" Alice.Smith+ops@Contoso.OnMicrosoft.com ").unwrap();
        assert_eq!(e.as_str(), "Alice.Smith+ops@contoso.onmicrosoft.com");
        assert_eq!(e.domain(), "contoso.onmicrosoft.com");
        assert!(e.same_mailbox("alice.smith+ops@CONTOSO.onmicrosoft.com"));
        assert!(!e.same_mailbox("bob@contoso.onmicrosoft.com"));
    }

    #[test]
    fn email_refuses_malformed_input_with_a_reason() {
        for (bad, why) in [
            ("", "no @"),
            ("alice", "no @"),
            ("@example.com", "before @"),
            ("alice@", "after @"),
            ("alice@localhost", "after @"),
            ("al ice@example.com", "before @"),
            (".alice@example.com", "before @"),
            ("a..b@example.com", "before @"),
            ("alice@exa_mple.com", "after @"),
            ("alice@-example.com", "after @"),
            ("alice@example..com", "after @"),
        ] {
            let err = EmailAddress::parse(bad).unwrap_err();
            assert_eq!(err.what, "email address");
            assert!(err.to_string().contains(why), "{bad:?}: {err}");
        }
        let long = format!("{}@example.com", "a".repeat(65));
        assert!(EmailAddress::parse(&long).is_err());
    }

    #[test]
    fn port_range_is_enforced() {
        assert_eq!(Port::parse("993").unwrap().get(), 993);
        assert_eq!(Port::parse("65535").unwrap().get(), 65535);
        for bad in ["0", "70000", "-1", "", "99a", "65536"] {
            let err = Port::parse(bad).unwrap_err();
            assert!(err.to_string().contains("1 to 65535"), "{bad}");
        }
        assert!(Port::new(0).is_err());
        let p: Port = serde_json::from_str("587").unwrap();
        assert_eq!(p.get(), 587);
        assert!(serde_json::from_str::<Port>("0").is_err());
    }

    #[test]
    fn host_accepts_names_and_ips() {
        assert_eq!(
            Host::parse("Outlook.Office365.com").unwrap().as_str(),
            "outlook.office365.com"
        );
        assert_eq!(Host::parse("127.0.0.1").unwrap().as_str(), "127.0.0.1");
        assert_eq!(Host::parse("[::1]").unwrap().as_str(), "::1");
        assert_eq!(Host::parse("localhost").unwrap().as_str(), "localhost");
        for bad in ["", "imap://x.com", "x.com:993", "a b.com", "-x.com"] {
            assert!(Host::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tls_mode_parses_both_spellings() {
        assert_eq!(TlsMode::parse("SSL").unwrap(), TlsMode::Implicit);
        assert_eq!(TlsMode::parse("starttls").unwrap(), TlsMode::Starttls);
        assert!(
            TlsMode::parse("none")
                .unwrap_err()
                .to_string()
                .contains("implicit or starttls")
        );
    }

    #[test]
    fn url_refuses_credentials_without_echoing_them() {
        let u = HttpUrl::parse("https://login.microsoftonline.com/common").unwrap();
        assert_eq!(
            u.join_path("/oauth2/v2.0/token").as_str(),
            "https://login.microsoftonline.com/common/oauth2/v2.0/token"
        );
        assert_eq!(
            HttpUrl::parse("http://localhost:8080/")
                .unwrap()
                .join_path("oauth/callback")
                .as_str(),
            "http://localhost:8080/oauth/callback"
        );
        let err = HttpUrl::parse("https://user:hunter2@example.com/").unwrap_err();
        assert!(!err.to_string().contains("hunter2"));
        for bad in [
            "ftp://example.com",
            "example.com",
            "https://",
            "https://x.com/#frag",
            "not a url",
        ] {
            assert!(HttpUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tenant_forms() {
        for ok in [
            "common",
            "Organizations",
            "consumers",
            "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "contoso.onmicrosoft.com",
        ] {
            assert!(TenantId::parse(ok).is_ok(), "{ok}");
        }
        assert_eq!(TenantId::parse("COMMON").unwrap().as_str(), "common");
        for bad in [
            "",
            "contoso",
            "72f988bf-86f1-41af-91ab",
            "https://login.microsoftonline.com/common",
            "x y.com",
        ] {
            let err = TenantId::parse(bad).unwrap_err();
            assert!(err.to_string().contains("Directory (tenant) ID"), "{bad}");
        }
    }

    #[test]
    fn names_and_client_ids() {
        assert_eq!(
            Name::parse("  Support mailbox ").unwrap().as_str(),
            "Support mailbox"
        );
        assert!(Name::parse("").is_err());
        assert!(Name::parse(&"x".repeat(65)).is_err());
        assert!(Name::parse("a\tb").is_err());
        assert!(Name::parse("42").is_err());
        let id = ClientId::parse("00000000-0000-0000-0000-0000000000a1").unwrap();
        assert!(id.is_guid());
        assert!(
            !ClientId::parse("123.apps.googleusercontent.com")
                .unwrap()
                .is_guid()
        );
        assert!(ClientId::parse("has space").is_err());
        assert!(ClientId::parse("").is_err());
    }

    #[test]
    fn scopes_dedupe_and_keep_order() {
        let s = Scopes::parse("openid offline_access,openid https://mail.google.com/").unwrap();
        assert_eq!(
            s.to_string(),
            "openid offline_access https://mail.google.com/"
        );
        assert!(s.contains("OPENID"));
        assert!(Scopes::parse("  ").is_err());
        assert!(Scopes::parse("a \"b\"").is_err());
    }
}
