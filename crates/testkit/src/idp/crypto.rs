//! Randomness, RS256 JWTs and the published signing key.
//!
//! `ring` provides randomness and SHA-256; the RustCrypto `rsa` crate generates keys (ring
//! cannot) and signs/verifies PKCS#1 v1.5 with SHA-256 (JWS `RS256`).

use std::sync::OnceLock;

use anyhow::{Context, bail};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};
use rsa::pkcs1v15::{Signature, SigningKey, VerifyingKey};
use rsa::pkcs8::{EncodePrivateKey, LineEnding};
use rsa::sha2::Sha256;
use rsa::signature::{SignatureEncoding, Signer, Verifier};
use rsa::traits::PublicKeyParts;
use rsa::{RsaPrivateKey, RsaPublicKey};
use serde_json::{Value, json};

/// Real providers use 2048-bit RS256 keys; so do we, so clients' key handling is exercised.
const RSA_BITS: usize = 2048;

pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    // The OS random source failing is unrecoverable and does not happen on Linux in practice.
    // The emulator stands in for a provider and keeps its own generator (it is no part of
    // mailgate, so `mailgate_core::random`'s policy does not apply).
    #[allow(clippy::expect_used, clippy::disallowed_methods)]
    SystemRandom::new()
        .fill(&mut buf)
        .expect("the operating system's random source failed");
    buf
}

/// An unguessable URL-safe token with `bytes` bytes of entropy.
pub(crate) fn random_token(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    for chunk in buf.chunks_mut(32) {
        let random: [u8; 32] = random_bytes();
        chunk.copy_from_slice(&random[..chunk.len()]);
    }
    URL_SAFE_NO_PAD.encode(buf)
}

/// A random version-4 GUID, the format of Microsoft's `oid`, `tid` and trace ids.
pub(crate) fn random_guid() -> String {
    let mut b: [u8; 16] = random_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

/// A string of `len` random decimal digits not starting with 0 (Google's `sub`, client ids).
pub(crate) fn random_digits(len: usize) -> String {
    let bytes: [u8; 64] = random_bytes();
    bytes
        .iter()
        .take(len)
        .enumerate()
        .map(|(i, b)| {
            let digit = if i == 0 { 1 + b % 9 } else { b % 10 };
            char::from(b'0' + digit)
        })
        .collect()
}

/// Microsoft's device-flow user codes are 9 upper-case letters and digits.
pub(crate) fn random_user_code() -> String {
    // No 0/O/1/I: the code is typed by a person.
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    let bytes: [u8; 9] = random_bytes();
    bytes
        .iter()
        .map(|b| char::from(ALPHABET[usize::from(*b) % ALPHABET.len()]))
        .collect()
}

/// RFC 7636 `S256`: BASE64URL(SHA256(ASCII(code_verifier))).
pub fn pkce_s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ))
}

/// An RSA key pair with the `kid` under which it is published.
pub(crate) struct KeyPair {
    pub(crate) kid: String,
    pub(crate) private: RsaPrivateKey,
}

impl KeyPair {
    pub(crate) fn generate() -> anyhow::Result<Self> {
        let private = RsaPrivateKey::new(&mut rsa::rand_core::OsRng, RSA_BITS)
            .context("generating an RSA key")?;
        let kid = kid_for(&private.to_public_key());
        Ok(Self { kid, private })
    }

    pub(crate) fn public(&self) -> RsaPublicKey {
        self.private.to_public_key()
    }

    /// The JWK of the public key as `/discovery/v2.0/keys` and `/oauth2/v3/certs` publish it.
    pub(crate) fn jwk(&self) -> Value {
        let public = self.public();
        json!({
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": URL_SAFE_NO_PAD.encode(public.n().to_bytes_be()),
            "e": URL_SAFE_NO_PAD.encode(public.e().to_bytes_be()),
        })
    }

    pub(crate) fn private_key_pem(&self) -> anyhow::Result<String> {
        Ok(self
            .private
            .to_pkcs8_pem(LineEnding::LF)
            .context("encoding the private key as PKCS#8 PEM")?
            .to_string())
    }

    /// A compact JWS (`header.payload.signature`) over `claims`, signed RS256 with this key.
    pub(crate) fn sign_jwt(&self, claims: &Value) -> String {
        let header = json!({"typ": "JWT", "alg": "RS256", "kid": self.kid});
        let signing_input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature =
            SigningKey::<Sha256>::new(self.private.clone()).sign(signing_input.as_bytes());
        format!(
            "{signing_input}.{}",
            URL_SAFE_NO_PAD.encode(signature.to_bytes())
        )
    }
}

/// The `kid` is derived from the key itself so it is stable for the key's life.
fn kid_for(public: &RsaPublicKey) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, &public.n().to_bytes_be());
    URL_SAFE_NO_PAD.encode(&digest.as_ref()[..16])
}

/// The emulator's id_token/access-token signing key. Generating a 2048-bit key takes a
/// noticeable moment, and tests start many emulators per process, so one key serves them all.
pub(crate) fn signing_key() -> anyhow::Result<&'static KeyPair> {
    static KEY: OnceLock<KeyPair> = OnceLock::new();
    if let Some(key) = KEY.get() {
        return Ok(key);
    }
    let generated = KeyPair::generate()?;
    Ok(KEY.get_or_init(|| generated))
}

/// A JWT split into its parts, signature not yet checked.
pub(crate) struct UnverifiedJwt {
    pub(crate) header: Value,
    pub(crate) claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

impl UnverifiedJwt {
    pub(crate) fn parse(token: &str) -> anyhow::Result<Self> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            bail!("not a compact JWS: expected three dot-separated parts");
        };
        let header: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(h)
                .context("header is not base64url")?,
        )
        .context("header is not JSON")?;
        let claims: Value = serde_json::from_slice(
            &URL_SAFE_NO_PAD
                .decode(p)
                .context("payload is not base64url")?,
        )
        .context("payload is not JSON")?;
        let signature = URL_SAFE_NO_PAD
            .decode(s)
            .context("signature is not base64url")?;
        Ok(Self {
            header,
            claims,
            signing_input: format!("{h}.{p}"),
            signature,
        })
    }

    /// Checks `alg` is RS256 and the signature verifies under `key`.
    pub(crate) fn verify_rs256(&self, key: &RsaPublicKey) -> anyhow::Result<()> {
        if self.header.get("alg").and_then(Value::as_str) != Some("RS256") {
            bail!("alg must be RS256");
        }
        let signature =
            Signature::try_from(self.signature.as_slice()).context("malformed signature")?;
        VerifyingKey::<Sha256>::new(key.clone())
            .verify(self.signing_input.as_bytes(), &signature)
            .context("signature does not verify")
    }
}
