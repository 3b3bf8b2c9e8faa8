//! SASL mechanisms for OAuth 2.0 bearer tokens: XOAUTH2 (Google, Microsoft) and
//! OAUTHBEARER (RFC 7628).
//!
//! Both send everything in one client message, the *initial response* (base64 of):
//! - XOAUTH2: `user={user}\x01auth=Bearer {token}\x01\x01`
//! - OAUTHBEARER: `n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01`
//!
//! A server that accepts the token answers with success. A server that refuses it first
//! sends an *error challenge* — IMAP/POP3 `+ <base64>`, SMTP `334 <base64>` — whose payload
//! is a JSON object such as `{"status":"401","schemes":"bearer","scope":"mail"}`
//! (OAUTHBEARER: `{"status":"invalid_token",…}`). The client must answer it before the
//! server sends its final refusal (IMAP `NO`, POP3 `-ERR`, SMTP `535`): XOAUTH2 with an empty
//! line, OAUTHBEARER with `\x01` (base64 `AQ==`, RFC 7628 §3.2.3). A POP3 client must not
//! mistake the challenge's `+` for `+OK`.
//!
//! The functions here build and read those strings; sending them is the caller's business.
//! Callers pass a mailbox address and a token that hold no control characters (an
//! `EmailAddress` cannot, and RFC 6750 tokens are printable ASCII): a `\x01` inside either
//! would end the field early.

use base64::Engine as _;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};

/// Servers differ on padding the challenge; both forms decode.
const LENIENT_BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// The client's answer to an XOAUTH2 error challenge: an empty line.
pub const XOAUTH2_ERROR_ANSWER: &str = "";
/// The client's answer to an OAUTHBEARER error challenge: `\x01`, base64-encoded.
pub const OAUTHBEARER_ERROR_ANSWER: &str = "AQ==";

/// An OAuth 2.0 SASL mechanism.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// Google's and Microsoft's `XOAUTH2`; the only one Exchange Online offers.
    XOAuth2,
    /// RFC 7628 `OAUTHBEARER`.
    OAuthBearer,
}

impl Mechanism {
    /// The name as it appears in `AUTHENTICATE`, `AUTH` and capability lists.
    pub const fn name(self) -> &'static str {
        match self {
            Self::XOAuth2 => "XOAUTH2",
            Self::OAuthBearer => "OAUTHBEARER",
        }
    }

    /// Reads a mechanism name from a capability list (`AUTH=XOAUTH2`'s value); SASL names
    /// are case-insensitive.
    pub fn from_name(name: &str) -> Option<Self> {
        if name.eq_ignore_ascii_case("XOAUTH2") {
            Some(Self::XOAuth2)
        } else if name.eq_ignore_ascii_case("OAUTHBEARER") {
            Some(Self::OAuthBearer)
        } else {
            None
        }
    }

    /// The mechanism to use among those a server offers (`offered` answers for a name):
    /// XOAUTH2 first, as Exchange offers only it, then OAUTHBEARER.
    pub fn preferred(offered: impl Fn(&str) -> bool) -> Option<Self> {
        [Self::XOAuth2, Self::OAuthBearer]
            .into_iter()
            .find(|mech| offered(mech.name()))
    }

    /// What the client sends after an error challenge, as one line (without CRLF).
    pub const fn error_challenge_answer(self) -> &'static str {
        match self {
            Self::XOAuth2 => XOAUTH2_ERROR_ANSWER,
            Self::OAuthBearer => OAUTHBEARER_ERROR_ANSWER,
        }
    }
}

/// The initial response for `mech`: what the client sends with `AUTHENTICATE`/`AUTH`
/// (IMAP, POP3 and SMTP alike). `host` and `port` are the server's, which only OAUTHBEARER
/// names.
pub fn initial_response(mech: Mechanism, user: &str, host: &str, port: u16, token: &str) -> String {
    match mech {
        Mechanism::XOAuth2 => xoauth2_initial_response(user, token),
        Mechanism::OAuthBearer => oauthbearer_initial_response(user, host, port, token),
    }
}

/// The XOAUTH2 initial response: base64 of `user={user}\x01auth=Bearer {token}\x01\x01`.
pub fn xoauth2_initial_response(user: &str, token: &str) -> String {
    STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

/// The OAUTHBEARER initial response (RFC 7628 §3.1): base64 of
/// `n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01`.
///
/// `user` is the GS2 authorization identity, so `,` and `=` in it are escaped as `=2C` and
/// `=3D` (RFC 5801 §4); an ordinary mailbox address is sent unchanged.
pub fn oauthbearer_initial_response(user: &str, host: &str, port: u16, token: &str) -> String {
    let authzid = user.replace('=', "=3D").replace(',', "=2C");
    STANDARD.encode(format!(
        "n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01"
    ))
}

/// A server's refusal of a token, read from its SASL error challenge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaslErrorChallenge {
    /// `"401"` / `"400"` for XOAUTH2 (an HTTP status), `"invalid_token"` /
    /// `"insufficient_scope"` for OAUTHBEARER (RFC 6750 error codes).
    pub status: String,
    /// The authentication schemes the server accepts (`"bearer"`), if it said.
    pub schemes: Option<String>,
    /// The scope the server wants a token to carry (`"https://mail.google.com/"`), if it said.
    pub scope: Option<String>,
    /// The decoded JSON exactly as the server sent it, for error messages.
    pub raw: String,
}

/// Why a challenge could not be read as an OAuth error challenge.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChallengeError {
    #[error("the server's SASL challenge is not base64 ({0})")]
    Base64(String),
    #[error("the server's SASL challenge is not UTF-8 text")]
    NotUtf8,
    #[error("the server's SASL challenge is not JSON ({reason}): {raw:?}")]
    NotJson { reason: String, raw: String },
    #[error("the server's SASL challenge is not a JSON object with a \"status\": {raw}")]
    NoStatus { raw: String },
}

/// Decodes the payload of an error challenge: the base64 text after IMAP/POP3 `+ ` or SMTP
/// `334 `. Surrounding whitespace (a line's CRLF) is ignored; padding may be missing.
///
/// `status` may be a JSON string or number; `schemes` and `scope` are kept only when they
/// are strings. Anything else the server sends stays in `raw`.
pub fn decode_error_challenge(base64_payload: &str) -> Result<SaslErrorChallenge, ChallengeError> {
    let bytes = LENIENT_BASE64
        .decode(base64_payload.trim())
        .map_err(|e| ChallengeError::Base64(e.to_string()))?;
    let raw = String::from_utf8(bytes).map_err(|_| ChallengeError::NotUtf8)?;
    let json: serde_json::Value =
        serde_json::from_str(&raw).map_err(|e| ChallengeError::NotJson {
            reason: e.to_string(),
            raw: raw.clone(),
        })?;
    let text = |key: &str| json.get(key).and_then(|v| v.as_str()).map(str::to_owned);
    let status = match json.get("status") {
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(serde_json::Value::Number(n)) => n.to_string(),
        _ => return Err(ChallengeError::NoStatus { raw }),
    };
    Ok(SaslErrorChallenge {
        status,
        schemes: text("schemes"),
        scope: text("scope"),
        raw,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_is_preferred_then_oauthbearer_whatever_the_order_offered() {
        // The three ways the clients ask: IMAP `AUTH=` capabilities, POP3's CAPA SASL line,
        // SMTP's EHLO AUTH keyword.
        let imap = ["IMAP4rev1", "AUTH=OAUTHBEARER", "AUTH=XOAUTH2"];
        let imap_offers =
            |caps: &[&str], name: &str| caps.contains(&format!("AUTH={name}").as_str());
        assert_eq!(
            Mechanism::preferred(|name| imap_offers(&imap, name)),
            Some(Mechanism::XOAuth2)
        );
        assert_eq!(
            Mechanism::preferred(|name| imap_offers(&imap[..2], name)),
            Some(Mechanism::OAuthBearer)
        );
        for words in [&["PLAIN", "LOGIN"][..], &[]] {
            assert_eq!(Mechanism::preferred(|name| words.contains(&name)), None);
        }
        let pop3_or_smtp = ["PLAIN", "XOAUTH2"];
        assert_eq!(
            Mechanism::preferred(|name| pop3_or_smtp.contains(&name)),
            Some(Mechanism::XOAuth2)
        );
    }

    fn decoded(b64: &str) -> Vec<u8> {
        STANDARD.decode(b64).unwrap()
    }

    #[test]
    fn xoauth2_matches_googles_documented_example() {
        // developers.google.com/gmail/imap/xoauth2-protocol, "The SASL XOAUTH2 Mechanism".
        let response = xoauth2_initial_response(
            "someuser@example.com",
            "ya29.vF9dft4qmTc2Nvb3RlckBhdHRhdmlzdGEuY29tCg",
        );
        assert_eq!(
            response,
            "dXNlcj1zb21ldXNlckBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciB5YTI5LnZGOWRmdDRxbVRjMk52\
             YjNSbGNrQmhkSFJoZG1semRHRXVZMjl0Q2cBAQ=="
        );
    }

    #[test]
    fn initial_response_picks_the_mechanisms_layout() {
        assert_eq!(
            initial_response(Mechanism::XOAuth2, "alice@example.test", "mx", 993, "t"),
            xoauth2_initial_response("alice@example.test", "t")
        );
        assert_eq!(
            initial_response(Mechanism::OAuthBearer, "alice@example.test", "mx", 993, "t"),
            oauthbearer_initial_response("alice@example.test", "mx", 993, "t")
        );
    }

    #[test]
    fn xoauth2_layout_is_the_one_in_providers_md() {
        let response = xoauth2_initial_response("alice@example.test", "tok.en-1");
        assert_eq!(
            decoded(&response),
            b"user=alice@example.test\x01auth=Bearer tok.en-1\x01\x01"
        );
    }

    #[test]
    fn oauthbearer_matches_rfc_7628_example() {
        // RFC 7628 §4.1, with the port and host of the example.
        let response = oauthbearer_initial_response(
            "user@example.com",
            "server.example.com",
            143,
            "vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==",
        );
        assert_eq!(
            response,
            "bixhPXVzZXJAZXhhbXBsZS5jb20sAWhvc3Q9c2VydmVyLmV4YW1wbGUuY29tAXBvcnQ9MTQzAWF1\
             dGg9QmVhcmVyIHZGOWRmdDRxbVRjMk52YjNSbGNrQmhiSFJoZG1semRHRXVZMjl0Q2c9PQEB"
        );
    }

    #[test]
    fn oauthbearer_layout_is_the_one_in_providers_md() {
        let response = oauthbearer_initial_response("alice@example.test", "127.0.0.1", 993, "t");
        assert_eq!(
            decoded(&response),
            b"n,a=alice@example.test,\x01host=127.0.0.1\x01port=993\x01auth=Bearer t\x01\x01"
        );
    }

    #[test]
    fn oauthbearer_escapes_comma_and_equals_in_the_authzid() {
        let response = oauthbearer_initial_response("a=b,c@example.test", "h", 1, "t");
        assert!(decoded(&response).starts_with(b"n,a=a=3Db=2Cc@example.test,\x01"));
    }

    #[test]
    fn error_answers_are_empty_line_and_ctrl_a() {
        assert_eq!(Mechanism::XOAuth2.error_challenge_answer(), "");
        assert_eq!(Mechanism::OAuthBearer.error_challenge_answer(), "AQ==");
        assert_eq!(decoded(OAUTHBEARER_ERROR_ANSWER), b"\x01");
    }

    #[test]
    fn mechanism_names_round_trip_case_insensitively() {
        for m in [Mechanism::XOAuth2, Mechanism::OAuthBearer] {
            assert_eq!(Mechanism::from_name(m.name()), Some(m));
            assert_eq!(Mechanism::from_name(&m.name().to_lowercase()), Some(m));
        }
        assert_eq!(Mechanism::from_name("PLAIN"), None);
    }

    #[test]
    fn decodes_dovecots_xoauth2_challenge() {
        // Seen from Dovecot 2.3.19 on a refused XOAUTH2 token.
        let c = decode_error_challenge(
            "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=\r\n",
        )
        .unwrap();
        assert_eq!(c.status, "401");
        assert_eq!(c.schemes.as_deref(), Some("bearer"));
        assert_eq!(c.scope.as_deref(), Some("mail"));
        assert_eq!(
            c.raw,
            r#"{"status":"401","schemes":"bearer","scope":"mail"}"#
        );
    }

    #[test]
    fn decodes_googles_challenge() {
        // Google's documented XOAUTH2 failure challenge.
        let c = decode_error_challenge(
            "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==",
        )
        .unwrap();
        assert_eq!(c.status, "401");
        assert_eq!(c.scope.as_deref(), Some("https://mail.google.com/"));
    }

    #[test]
    fn decodes_oauthbearer_status_and_unpadded_base64() {
        let b64 = STANDARD.encode(r#"{"status":"invalid_token"}"#);
        let unpadded = b64.trim_end_matches('=');
        assert_ne!(b64, unpadded, "the example must exercise missing padding");
        let c = decode_error_challenge(unpadded).unwrap();
        assert_eq!(c.status, "invalid_token");
        assert_eq!(c.schemes, None);
        assert_eq!(c.scope, None);
    }

    #[test]
    fn numeric_status_is_read_as_text() {
        let c = decode_error_challenge(&STANDARD.encode(r#"{"status":400,"scope":7}"#)).unwrap();
        assert_eq!(c.status, "400");
        assert_eq!(c.scope, None, "a non-string scope is left in raw");
    }

    #[test]
    fn malformed_challenges_are_errors_not_panics() {
        fn kind(e: &ChallengeError) -> &'static str {
            match e {
                ChallengeError::Base64(_) => "base64",
                ChallengeError::NotUtf8 => "utf8",
                ChallengeError::NotJson { .. } => "json",
                ChallengeError::NoStatus { .. } => "status",
            }
        }
        let cases = [
            ("not base64!", "base64"),
            ("QQ=QQ", "base64"),
            ("/w==", "utf8"),
            ("", "json"),
            ("bm90IGpzb24=", "json"),           // not json
            ("eyJzdGF0dXMiOg==", "json"),       // {"status":
            ("e30=", "status"),                 // {}
            ("WzFd", "status"),                 // [1]
            ("eyJzdGF0dXMiOm51bGx9", "status"), // {"status":null}
        ];
        for (input, expected) in cases {
            let err = decode_error_challenge(input).unwrap_err();
            assert_eq!(kind(&err), expected, "{input:?} gave {err:?}");
            assert!(!err.to_string().is_empty());
        }
    }

    #[test]
    fn every_split_of_a_challenge_is_an_error_or_the_whole_challenge() {
        let whole = "eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0=";
        let expected = decode_error_challenge(whole).unwrap();
        for cut in 0..=whole.len() {
            let (head, tail) = whole.split_at(cut);
            // Only the whole payload (padding optional) reads as the challenge; a truncated
            // one or a lone tail is an error, and nothing panics.
            for part in [head, tail] {
                let is_whole = part == whole || part == whole.trim_end_matches('=');
                match decode_error_challenge(part) {
                    Ok(c) => assert!(is_whole && c == expected, "split at {cut}: {c:?}"),
                    Err(_) => assert!(!is_whole, "split at {cut}"),
                }
            }
        }
    }
}
