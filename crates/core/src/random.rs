//! The one source of randomness: state, nonces, PKCE verifiers, session and API tokens,
//! ids, salts and AEAD nonces all come from here.
//!
//! It reads the operating system's generator through ring. That is the one kind of I/O
//! `core` does besides [`crate::clock::SystemClock`], and it lives here so that there is one
//! failure policy: when the OS generator fails, every function returns [`RandomFailed`] and
//! the caller stops what it was doing. Nothing ever falls back to zeros, a time-based value
//! or anything else an attacker could predict.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

/// The operating system's random number generator failed; nothing random was produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the operating system's random number generator failed")]
pub struct RandomFailed;

/// Fills `buf` with random bytes.
#[allow(clippy::disallowed_methods)] // the single sanctioned use of the OS generator
pub fn fill(buf: &mut [u8]) -> Result<(), RandomFailed> {
    SystemRandom::new().fill(buf).map_err(|_| RandomFailed)
}

/// `N` random bytes (keys, nonces, salts).
pub fn bytes<const N: usize>() -> Result<[u8; N], RandomFailed> {
    let mut buf = [0u8; N];
    fill(&mut buf)?;
    Ok(buf)
}

/// `bytes` random bytes as base64url without padding: 32 bytes give 43 characters, the
/// RFC 7636 minimum verifier length, with 256 bits of entropy.
pub fn token(bytes: usize) -> Result<String, RandomFailed> {
    let mut buf = vec![0u8; bytes];
    fill(&mut buf)?;
    Ok(URL_SAFE_NO_PAD.encode(buf))
}

/// An identifier `<prefix>_<hex of bytes random bytes>` (`evt_…`, `dlv_…`): unguessable and
/// unique without asking the database.
pub fn prefixed_id(prefix: &str, bytes: usize) -> Result<String, RandomFailed> {
    let mut buf = vec![0u8; bytes];
    fill(&mut buf)?;
    let hex: String = buf.iter().map(|b| format!("{b:02x}")).collect();
    Ok(format!("{prefix}_{hex}"))
}

/// The generator itself, for ring's signing functions, which take it as a parameter (an
/// RSA signature is blinded with random values). A failure there comes back as the signing
/// error, so the policy above still holds.
#[allow(clippy::disallowed_methods)] // ring's signing takes the generator itself
pub fn for_signing() -> impl SecureRandom {
    SystemRandom::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tokens_have_the_length_of_their_bytes_and_differ() {
        // base64url without padding: ceil(4n/3) characters.
        for (bytes, chars) in [(4, 6), (6, 8), (12, 16), (16, 22), (24, 32), (32, 43)] {
            let all: HashSet<String> = (0..64).map(|_| token(bytes).unwrap()).collect();
            assert_eq!(all.len(), 64, "{bytes}-byte tokens repeat");
            assert!(
                all.iter().all(|t| t.len() == chars),
                "{bytes} bytes: {all:?}"
            );
            assert!(all.iter().all(|t| {
                t.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            }));
        }
    }

    #[test]
    fn prefixed_ids_are_hex_of_the_right_length_and_distinct() {
        let all: HashSet<String> = (0..256).map(|_| prefixed_id("evt", 12).unwrap()).collect();
        assert_eq!(all.len(), 256);
        for id in &all {
            let hex = id.strip_prefix("evt_").unwrap();
            assert_eq!(hex.len(), 24, "{id}");
            assert!(hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
            // An all-zero id was the old fallback of the webhook store; never again.
            assert_ne!(hex, "0".repeat(24));
        }
    }

    #[test]
    fn byte_arrays_are_filled_and_distinct() {
        let a = bytes::<32>().unwrap();
        let b = bytes::<32>().unwrap();
        assert_ne!(a, b);
        assert_ne!(a, [0u8; 32]);
    }
}
