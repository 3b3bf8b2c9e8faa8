//! Compact JWS: decoding, RS256 verification against a JWKS, RS256 signing (for the Google
//! service-account assertion). Only RS256 is accepted: `none` and HMAC algorithms are the
//! classic JWT forgery vectors.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum JwtError {
    #[error("not a JWT (expected three base64url parts)")]
    Malformed,
    #[error("unsupported signing algorithm {0:?} (only RS256 is accepted)")]
    Algorithm(String),
    #[error("no key {0:?} in the provider's JWKS")]
    UnknownKey(String),
    #[error("the signature does not verify")]
    BadSignature,
    #[error("cannot use the signing key: {0}")]
    Key(String),
}

#[derive(Debug, Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

/// A decoded but not yet verified token.
pub struct Decoded<'a> {
    pub signing_input: &'a str,
    pub signature: Vec<u8>,
    pub alg: String,
    pub kid: Option<String>,
    pub claims: serde_json::Value,
}

fn b64(part: &str) -> Result<Vec<u8>, JwtError> {
    URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| JwtError::Malformed)
}

pub fn decode(token: &str) -> Result<Decoded<'_>, JwtError> {
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header: Header = serde_json::from_slice(&b64(h)?).map_err(|_| JwtError::Malformed)?;
    let claims: serde_json::Value =
        serde_json::from_slice(&b64(c)?).map_err(|_| JwtError::Malformed)?;
    if !claims.is_object() {
        return Err(JwtError::Malformed);
    }
    let signing_input = &token[..h.len() + 1 + c.len()];
    Ok(Decoded {
        signing_input,
        signature: b64(s)?,
        alg: header.alg,
        kid: header.kid,
        claims,
    })
}

/// Claims of a JWT without checking the signature. Only for tokens mailgate received
/// directly from the token endpoint over TLS (access tokens it inspects for audience and
/// scopes), never for proving identity.
pub fn unverified_claims(token: &str) -> Option<serde_json::Value> {
    decode(token).ok().map(|d| d.claims)
}

/// One RSA key of a JWKS.
#[derive(Debug, Clone, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub kid: Option<String>,
    pub n: Option<String>,
    pub e: Option<String>,
    #[serde(default)]
    pub alg: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwks {
    pub fn find(&self, kid: Option<&str>) -> Option<&Jwk> {
        let rsa = self.keys.iter().filter(|k| k.kty == "RSA");
        match kid {
            Some(kid) => rsa.clone().find(|k| k.kid.as_deref() == Some(kid)),
            // No kid: only unambiguous when there is exactly one key.
            None => {
                let all: Vec<&Jwk> = rsa.collect();
                (all.len() == 1).then(|| all[0])
            }
        }
    }
}

pub fn verify_rs256(d: &Decoded<'_>, jwks: &Jwks) -> Result<(), JwtError> {
    if d.alg != "RS256" {
        return Err(JwtError::Algorithm(d.alg.clone()));
    }
    let key = jwks
        .find(d.kid.as_deref())
        .ok_or_else(|| JwtError::UnknownKey(d.kid.clone().unwrap_or_default()))?;
    let n = b64(key.n.as_deref().ok_or(JwtError::Malformed)?)?;
    let e = b64(key.e.as_deref().ok_or(JwtError::Malformed)?)?;
    let public = ring::signature::RsaPublicKeyComponents { n: &n, e: &e };
    public
        .verify(
            &ring::signature::RSA_PKCS1_2048_8192_SHA256,
            d.signing_input.as_bytes(),
            &d.signature,
        )
        .map_err(|_| JwtError::BadSignature)
}

/// Signs `claims` with an RSA private key (PKCS#8 DER) as an RS256 JWT.
pub fn sign_rs256(
    pkcs8_der: &[u8],
    kid: Option<&str>,
    claims: &serde_json::Value,
) -> Result<String, JwtError> {
    let key = ring::signature::RsaKeyPair::from_pkcs8(pkcs8_der)
        .map_err(|e| JwtError::Key(e.to_string()))?;
    let mut header = serde_json::json!({"alg": "RS256", "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = kid.into();
    }
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let mut sig = vec![0u8; key.public().modulus_len()];
    key.sign(
        &ring::signature::RSA_PKCS1_SHA256,
        &mailgate_core::random::for_signing(),
        input.as_bytes(),
        &mut sig,
    )
    .map_err(|e| JwtError::Key(e.to_string()))?;
    Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig)))
}

/// The DER inside a PEM block (`-----BEGIN PRIVATE KEY-----`).
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>, JwtError> {
    let body: String = pem
        .lines()
        .filter(|l| !l.starts_with("-----"))
        .map(str::trim)
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(body)
        .map_err(|_| JwtError::Key("the private key is not valid PEM".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_none_and_malformed() {
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(r#"{"sub":"x"}"#)
        );
        let d = decode(&none).unwrap();
        assert_eq!(
            verify_rs256(&d, &Jwks { keys: vec![] }),
            Err(JwtError::Algorithm("none".into()))
        );
        for bad in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.!!.!!",
            &format!(
                "{}.bm90anNvbg.x",
                URL_SAFE_NO_PAD.encode(r#"{"alg":"RS256"}"#)
            ),
        ] {
            assert!(decode(bad).is_err(), "{bad}");
        }
    }
}
