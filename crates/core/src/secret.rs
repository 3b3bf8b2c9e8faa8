//! A string that must never be printed.

use std::fmt;

/// A client secret, token or password in memory. `Debug` and `Display` print a redaction,
/// so a secret that ends up in a log line or an error message by accident shows nothing.
/// The only way to the bytes is [`Secret::expose`], which is easy to grep for.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// Parses user input: surrounding whitespace (a pasted newline) is dropped; empty is refused.
    pub fn parse(what: &'static str, input: &str) -> Result<Self, crate::Invalid> {
        let trimmed = input.trim();
        if trimmed.is_empty() {
            return Err(crate::Invalid::secret(what, "it is empty"));
        }
        if trimmed.chars().any(char::is_control) {
            return Err(crate::Invalid::secret(
                what,
                "it contains control characters",
            ));
        }
        Ok(Secret(trimmed.to_owned()))
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// "set (…4f2a)": enough for an administrator to tell two secrets apart, useless to an
    /// attacker. Secrets shorter than 12 characters show no characters at all.
    pub fn hint(&self) -> String {
        let chars: Vec<char> = self.0.chars().collect();
        if chars.len() < 12 {
            "set".to_owned()
        } else {
            let tail: String = chars[chars.len() - 4..].iter().collect();
            format!("set (…{tail})")
        }
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_formats_its_value() {
        let s = Secret::new("canary-0123456789-secret");
        assert!(!format!("{s:?} {s}").contains("canary"));
        assert_eq!(s.hint(), "set (…cret)");
        assert_eq!(Secret::new("short").hint(), "set");
    }

    #[test]
    fn parse_trims_and_refuses_empty_without_echo() {
        assert_eq!(
            Secret::parse("client secret", " abc \n").unwrap().expose(),
            "abc"
        );
        let err = Secret::parse("client secret", " \n").unwrap_err();
        assert!(err.to_string().contains("empty"));
        let err = Secret::parse("client secret", "ab\u{7}cd").unwrap_err();
        assert!(!err.to_string().contains("ab"));
    }
}
