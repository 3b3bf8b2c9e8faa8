//! Password hashing for administrators (argon2id, the OWASP recommendation), as PHC strings.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use mailgate_core::Secret;
use ring::rand::{SecureRandom, SystemRandom};

pub use mailgate_core::user::MIN_PASSWORD_CHARS;

/// The rules of `core::user::parse_new_password`, for a password typed once.
pub fn check_strength(password: &Secret) -> Result<(), String> {
    mailgate_core::user::parse_new_password(password.expose(), None)
        .map(drop)
        .map_err(|e| e.message)
}

pub fn hash(password: &Secret) -> Result<String, String> {
    let mut salt = [0u8; 16];
    SystemRandom::new()
        .fill(&mut salt)
        .map_err(|_| "the system random number generator failed".to_owned())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Constant-time verification; a malformed stored hash verifies nothing.
pub fn verify(password: &Secret, stored: &str) -> bool {
    PasswordHash::new(stored)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.expose().as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// A hash to verify against when the user does not exist, so that the answer takes as
/// long as for a real user and does not reveal which names exist.
pub fn dummy_hash() -> &'static str {
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0Hp7nLbUg1pS5uFDIVGsKqo9fY2ME7zmyhYg2mbLLAI"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hash_and_verify() {
        let pw = Secret::new("correct horse battery staple");
        let h = hash(&pw).unwrap();
        assert!(h.starts_with("$argon2id$"));
        assert!(!h.contains("horse"));
        assert!(verify(&pw, &h));
        assert!(!verify(&Secret::new("wrong password here"), &h));
        assert!(!verify(&pw, "not a hash"));
        assert!(!verify(&pw, dummy_hash()));
        assert!(check_strength(&Secret::new("short")).is_err());
        assert!(check_strength(&pw).is_ok());
    }
}
