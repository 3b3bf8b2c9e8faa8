//! The one error every parser in this crate returns.

use std::fmt;

/// A value that does not parse. Names what it should have been and shows the form expected,
/// so the CLI, the forms and the config loader can all say "field: problem, expected form".
///
/// `input` is only kept for values that are never secret; parsers of secrets leave it empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid {
    /// What was being parsed, e.g. "email address".
    pub what: &'static str,
    /// The offending input, shortened; empty for secrets.
    pub input: String,
    /// What is wrong and the form expected.
    pub expected: String,
}

impl Invalid {
    pub fn new(what: &'static str, input: &str, expected: impl Into<String>) -> Self {
        let mut shown: String = input.chars().take(80).collect();
        if shown.len() < input.len() {
            shown.push('…');
        }
        Invalid {
            what,
            input: shown,
            expected: expected.into(),
        }
    }

    /// For secrets: never echo the input back.
    pub fn secret(what: &'static str, expected: impl Into<String>) -> Self {
        Invalid {
            what,
            input: String::new(),
            expected: expected.into(),
        }
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.input.is_empty() {
            write!(f, "invalid {}: {}", self.what, self.expected)
        } else {
            write!(
                f,
                "{:?} is not a valid {}: {}",
                self.input, self.what, self.expected
            )
        }
    }
}

impl std::error::Error for Invalid {}
