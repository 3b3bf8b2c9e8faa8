//! Where mailgate's outgoing HTTP may connect: identity-provider requests here and webhook
//! deliveries (`mailgate serve`'s deliverer) resolve the host, check every address against
//! [`mailgate_core::address::is_private_address`], and connect only to the addresses
//! checked, so a DNS answer cannot change between the check and the connection. Loopback
//! and private targets are reached only when the operator allows them with the setting
//! named in the refusal (`MAILGATE_IDP_ALLOW_PRIVATE`, `MAILGATE_WEBHOOK_ALLOW_PRIVATE`).

use mailgate_core::HttpUrl;
use mailgate_core::address::is_private_address;
use std::net::{IpAddr, SocketAddr};

/// The operator setting that allows identity providers on loopback or private addresses.
pub const IDP_ALLOW_PRIVATE: &str = "MAILGATE_IDP_ALLOW_PRIVATE";

/// A connection refused because the target is loopback or private. The message names the
/// host, the address and the setting that would allow it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefusedAddress(pub String);

impl std::fmt::Display for RefusedAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for RefusedAddress {}

fn refusal(host: &str, ip: IpAddr, setting: &str) -> RefusedAddress {
    if host == ip.to_string() {
        return RefusedAddress(format!(
            "refused: {ip} is a loopback or private address (allow with {setting}=true)"
        ));
    }
    RefusedAddress(format!(
        "refused: {host} is the loopback or private address {ip} (allow with {setting}=true)"
    ))
}

/// The addresses of `host`, each checked unless `allow_private`; connect only to these.
pub async fn resolve_checked(
    host: &str,
    port: u16,
    allow_private: bool,
    setting: &str,
) -> Result<Vec<SocketAddr>, String> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((bare, port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    if addrs.is_empty() {
        return Err(format!("{host} has no address"));
    }
    if !allow_private && let Some(a) = addrs.iter().find(|a| is_private_address(a.ip())) {
        return Err(refusal(host, a.ip(), setting).0);
    }
    Ok(addrs)
}

/// [`resolve_checked`] for a URL's host and port.
pub async fn url_addresses(
    url: &HttpUrl,
    allow_private: bool,
    setting: &str,
) -> Result<Vec<SocketAddr>, String> {
    let u = url.url();
    let host = u.host_str().ok_or("the URL has no host")?;
    let port = u.port_or_known_default().ok_or("the URL has no port")?;
    resolve_checked(host, port, allow_private, setting).await
}

/// A URL whose host is a private IP literal: such URLs are connected to without any DNS
/// lookup, so [`CheckingResolver`] never sees them and they are refused here.
pub fn refuse_private_literal(url: &url::Url, setting: &str) -> Result<(), RefusedAddress> {
    let ip = match url.host() {
        Some(url::Host::Ipv4(a)) => IpAddr::V4(a),
        Some(url::Host::Ipv6(a)) => IpAddr::V6(a),
        _ => return Ok(()),
    };
    if is_private_address(ip) {
        return Err(refusal(&ip.to_string(), ip, setting));
    }
    Ok(())
}

/// reqwest's DNS resolver for identity-provider requests: the connection goes only to the
/// addresses it returns, and it returns none when any of them is private.
#[derive(Debug)]
pub struct CheckingResolver {
    pub setting: &'static str,
}

impl reqwest::dns::Resolve for CheckingResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        let setting = self.setting;
        Box::pin(async move {
            // Port 0: the connector puts the URL's port on each address.
            match resolve_checked(&host, 0, false, setting).await {
                Ok(addrs) => Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs),
                Err(message) => {
                    Err(Box::new(RefusedAddress(message))
                        as Box<dyn std::error::Error + Send + Sync>)
                }
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn names_that_resolve_to_private_addresses_are_refused() {
        // `localhost` resolves through /etc/hosts, so this needs no network.
        let url = HttpUrl::parse("http://localhost:9/token").unwrap();
        let err = url_addresses(&url, false, IDP_ALLOW_PRIVATE)
            .await
            .unwrap_err();
        assert!(err.contains("MAILGATE_IDP_ALLOW_PRIVATE=true"), "{err}");
        let allowed = url_addresses(&url, true, IDP_ALLOW_PRIVATE).await.unwrap();
        assert!(!allowed.is_empty() && allowed.iter().all(|a| a.port() == 9));
    }

    #[test]
    fn private_ip_literals_are_refused_without_dns() {
        let check = |u: &str| refuse_private_literal(&url::Url::parse(u).unwrap(), "X");
        assert!(
            check("http://127.0.0.1:9/token")
                .unwrap_err()
                .0
                .contains("X=true")
        );
        assert!(check("http://[2002:a00:1::1]/token").is_err());
        assert!(check("https://8.8.8.8/token").is_ok());
        assert!(check("https://login.example.com/token").is_ok());
    }
}
