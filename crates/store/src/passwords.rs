//! Password hashing for administrators (argon2id, the OWASP recommendation), as PHC strings.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use mailgate_core::Secret;
use std::sync::atomic::{AtomicU64, Ordering};

/// How many argon2 computations (hashes and verifications) this process has run. `/metrics`
/// shows it: it is how an operator (and a test) sees that a refused sign-in or a bad setup
/// token cost no hashing.
static ARGON2_RUNS: AtomicU64 = AtomicU64::new(0);

pub fn argon2_runs() -> u64 {
    ARGON2_RUNS.load(Ordering::Relaxed)
}

pub use mailgate_core::user::MIN_PASSWORD_CHARS;

/// The rules of `core::user::parse_new_password`, for a password typed once.
pub fn check_strength(password: &Secret) -> Result<(), String> {
    mailgate_core::user::parse_new_password(password.expose(), None)
        .map(drop)
        .map_err(|e| e.message)
}

pub fn hash(password: &Secret) -> Result<String, String> {
    ARGON2_RUNS.fetch_add(1, Ordering::Relaxed);
    let salt = mailgate_core::random::bytes::<16>().map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    argon2::Argon2::default()
        .hash_password(password.expose().as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Constant-time verification; a malformed stored hash verifies nothing.
pub fn verify(password: &Secret, stored: &str) -> bool {
    ARGON2_RUNS.fetch_add(1, Ordering::Relaxed);
    PasswordHash::new(stored)
        .map(|h| {
            argon2::Argon2::default()
                .verify_password(password.expose().as_bytes(), &h)
                .is_ok()
        })
        .unwrap_or(false)
}

/// [`hash`] on tokio's blocking pool: argon2 takes tens of milliseconds of CPU on purpose,
/// which on an async worker thread would stall every other request sharing it.
pub async fn hash_off_thread(password: Secret) -> Result<String, String> {
    tokio::task::spawn_blocking(move || hash(&password))
        .await
        .map_err(|e| format!("the hashing task failed: {e}"))?
}

/// [`verify`] on tokio's blocking pool (see [`hash_off_thread`]); a failed task verifies
/// nothing.
pub async fn verify_off_thread(password: Secret, stored: String) -> bool {
    tokio::task::spawn_blocking(move || verify(&password, &stored))
        .await
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
