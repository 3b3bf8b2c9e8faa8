//! State, nonce and PKCE values.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

// The random values themselves come from the one seam in core, with its one failure policy.
pub use mailgate_core::random::{RandomFailed, token};

/// RFC 7636 S256: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, verifier.as_bytes());
    URL_SAFE_NO_PAD.encode(digest.as_ref())
}

/// A one-time value stored server-side is looked up by its SHA-256, so a database leak
/// does not reveal live `state` values.
pub fn sha256_hex(value: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, value.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn s256_is_base64url_of_sha256() {
        // SHA-256("abc") = ba7816bf…15ad (FIPS 180-2), base64url without padding.
        assert_eq!(
            pkce_challenge("abc"),
            "ungWv48Bz-pBQUDeXa4iI7ADYaOWF3qctBD_YfIAFa0"
        );
        let t = token(32).unwrap();
        assert_eq!(t.len(), 43);
        assert_ne!(t, token(32).unwrap());
    }
}
