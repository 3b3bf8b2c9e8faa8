//! The legacy proxy: proxy passwords, and password-only clients (Python's imaplib) logging
//! in to mailgate's IMAP listener and reaching the rig's real Dovecot through it.

use crate::support::{TestEnv, db_contains, text};

/// `mailgate account proxy-password`: a long random value shown once, only its SHA-256
/// stored, an event each time; regenerating replaces it and `--revoke` removes it.
#[tokio::test]
async fn proxy_password_is_shown_once_and_stored_only_as_its_hash() {
    let env = TestEnv::new();
    env.add_microsoft_app("Contoso");
    env.ok(
        &[
            "account",
            "add",
            "--name",
            "desk",
            "--app",
            "Contoso",
            "--email",
            "desk@example.test",
        ],
        None,
    );
    let out = env.run(&["account", "proxy-password", "desk"], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let first = text(&out.stdout).trim().to_owned();
    // 24 random bytes as base64url: 32 characters, 192 bits.
    assert_eq!(first.len(), 32, "{first:?}");
    assert!(
        text(&out.stderr).contains("shown once"),
        "{}",
        text(&out.stderr)
    );
    assert!(
        !db_contains(&env.db_path(), &first),
        "the password itself is stored"
    );
    let hash = mailgate_oauth::random::sha256_hex(&first);
    assert!(db_contains(&env.db_path(), &hash), "its hash is not stored");

    let second = env
        .ok(&["account", "proxy-password", "desk"], None)
        .trim()
        .to_owned();
    assert_ne!(first, second);
    // (Deleted rows may linger in free pages of the file: ask the database itself.)
    let rows = env.dump_db().await;
    assert!(!rows.contains(&hash), "the replaced hash is still stored");
    assert!(rows.contains(&mailgate_oauth::random::sha256_hex(&second)));

    let events = env.ok(&["events", "--account", "desk"], None);
    assert!(events.contains("proxy.password_set"), "{events}");
    assert!(events.contains("replaced"), "{events}");
    assert!(
        !events.contains(&first) && !events.contains(&second),
        "{events}"
    );

    env.ok(&["account", "proxy-password", "desk", "--revoke"], None);
    assert!(
        !env.dump_db()
            .await
            .contains(&mailgate_oauth::random::sha256_hex(&second)),
        "a revoked password's hash is still stored"
    );
    let again = env.run(&["account", "proxy-password", "desk", "--revoke"], None);
    assert_eq!(again.status.code(), Some(2), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("no proxy password"),
        "{}",
        text(&again.stderr)
    );
    let events = env.ok(&["events", "--account", "desk"], None);
    assert!(events.contains("proxy.password_revoked"), "{events}");
}
