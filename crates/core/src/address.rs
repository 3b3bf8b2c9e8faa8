//! Which network addresses mailgate's outgoing HTTP may reach: the one set of rules for
//! webhooks (`MAILGATE_WEBHOOK_ALLOW_PRIVATE`) and identity-provider requests
//! (`MAILGATE_ALLOW_PRIVATE_IDP`), so that an API token or an app's endpoint URL cannot make
//! mailgate probe the internal network. The resolver that applies them and pins the
//! connection to the checked addresses is `mailgate_oauth::egress`.

use crate::HttpUrl;
use std::net::{IpAddr, Ipv4Addr};

/// Loopback, private (RFC 1918, unique-local, site-local), link-local, CGNAT, unspecified,
/// multicast, IETF protocol assignments (192.0.0.0/24), benchmarking and documentation
/// addresses, and the IPv6 forms that embed an IPv4 address (IPv4-mapped, IPv4-compatible,
/// 6to4, NAT64, Teredo): targets reached only when the operator allows private targets.
pub fn is_private_address(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_private_v4(v4);
            }
            let seg = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                // ::/96, IPv4-compatible (deprecated by RFC 4291): ::10.0.0.1 reaches 10.0.0.1
                // on some stacks, and nothing public lives there.
                || seg[..6].iter().all(|&s| s == 0)
                || (seg[0] & 0xfe00) == 0xfc00
                || (seg[0] & 0xffc0) == 0xfe80
                // fec0::/10, site-local (deprecated by RFC 3879, still routed internally).
                || (seg[0] & 0xffc0) == 0xfec0
                || (seg[0] == 0x2001 && seg[1] == 0x0db8)
                // 2002::/16, 6to4: the next 32 bits are an IPv4 address a relay may reach.
                || seg[0] == 0x2002
                // 2001::/32, Teredo: embeds the server's and the client's IPv4 addresses.
                || (seg[0] == 0x2001 && seg[1] == 0)
                // 64:ff9b::/96 and 64:ff9b:1::/48, NAT64: the gateway reaches any IPv4.
                || (seg[0] == 0x64 && seg[1] == 0xff9b)
        }
    }
}

fn is_private_v4(v4: Ipv4Addr) -> bool {
    let o = v4.octets();
    v4.is_loopback()
        || v4.is_private()
        || v4.is_link_local()
        || v4.is_unspecified()
        || v4.is_broadcast()
        || v4.is_multicast()
        || v4.is_documentation()
        || o[0] == 0
        || (o[0] == 100 && (64..128).contains(&o[1]))
        // 192.0.0.0/24, IETF protocol assignments (DS-Lite, NAT64 discovery…), not hosts.
        || (o[0] == 192 && o[1] == 0 && o[2] == 0)
        || (o[0] == 198 && (o[1] == 18 || o[1] == 19))
        || o[0] >= 240
}

/// The host of `url` when it is written as an IP address or is `localhost`, and private:
/// what can be refused without a DNS lookup, at creation.
pub fn literal_private_host(url: &HttpUrl) -> Option<String> {
    let u = url.url();
    match u.host()? {
        url::Host::Ipv4(a) => is_private_address(IpAddr::V4(a)).then(|| a.to_string()),
        url::Host::Ipv6(a) => is_private_address(IpAddr::V6(a)).then(|| a.to_string()),
        url::Host::Domain(d) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            (d == "localhost" || d.ends_with(".localhost")).then_some(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn private_addresses_are_recognised() {
        for private in [
            "127.0.0.1",
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "192.0.0.1",
            "192.0.0.170",
            "::1",
            "fd00::1",
            "fe80::1",
            "::ffff:10.0.0.1",
            "::ffff:127.0.0.1",
            "::",
            // IPv4-compatible ::/96, private and public alike.
            "::10.0.0.1",
            "::127.0.0.1",
            "::8.8.8.8",
            // Site-local fec0::/10.
            "fec0::1",
            "feff:ffff::1",
            // 6to4 2002::/16, embedding a private IPv4 (2002:0a00:0001:: = 10.0.0.1) or not.
            "2002:a00:1::1",
            "2002:7f00:1::1",
            "2002:808:808::1",
            // Teredo and NAT64.
            "2001:0:4136:e378:8000:63bf:3fff:fdd2",
            "64:ff9b::10.0.0.1",
        ] {
            assert!(is_private_address(private.parse().unwrap()), "{private}");
        }
        for public in [
            "93.184.216.34",
            "8.8.8.8",
            "192.0.1.1",
            "2606:4700::1111",
            "::ffff:8.8.8.8",
            "2001:4860:4860::8888",
            "fe00::1",
        ] {
            assert!(!is_private_address(public.parse().unwrap()), "{public}");
        }
    }

    #[test]
    fn literal_hosts_are_checked_without_dns() {
        let check = |u: &str| literal_private_host(&HttpUrl::parse(u).unwrap());
        assert_eq!(check("http://127.0.0.1:9/x").as_deref(), Some("127.0.0.1"));
        assert_eq!(check("http://[::1]/x").as_deref(), Some("::1"));
        assert_eq!(
            check("http://[2002:a00:1::1]/x").as_deref(),
            Some("2002:a00:1::1")
        );
        assert_eq!(check("http://LOCALHOST./x").as_deref(), Some("localhost"));
        assert_eq!(check("https://hooks.example.com/x"), None);
        assert_eq!(check("https://8.8.8.8/x"), None);
    }
}
