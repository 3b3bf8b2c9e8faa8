use crate::support::{CANARY_SECRET, MS_CLIENT_ID, TestEnv, db_contains, text};

#[test]
fn app_and_account_round_trip_through_show_json() {
    let env = TestEnv::new();
    let shown = env.add_microsoft_app("Contoso");
    assert!(
        shown.contains("redirect URI:    http://127.0.0.1:8080/oauth/callback"),
        "{shown}"
    );
    assert!(
        shown.contains("client secret:   set (…1d)") || shown.contains("set (…3e1d)"),
        "{shown}"
    );

    let app = env.json(&["app", "show", "Contoso", "--json"]);
    assert_eq!(app["kind"], "microsoft");
    assert_eq!(app["tenant"], "contoso.onmicrosoft.com");
    assert_eq!(app["client_id"], MS_CLIENT_ID);
    assert_eq!(app["client_secret"], "set (…3e1d)");
    assert_eq!(app["secret_expires"], "2027-06-30");
    assert_eq!(app["redirect_uri"], "http://127.0.0.1:8080/oauth/callback");
    assert_eq!(app["flow"], "authorization_code");
    assert_eq!(
        app["endpoints"]["token"],
        "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    );
    let scopes: Vec<&str> = app["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    assert!(scopes.contains(&"https://outlook.office.com/IMAP.AccessAsUser.All"));
    assert!(scopes.contains(&"offline_access"));

    env.ok(
        &[
            "account",
            "add",
            "--name",
            "support",
            "--app",
            "Contoso",
            "--email",
            "Support@Contoso.com",
            "--from-name",
            "Contoso Support",
            "--on-received",
            "move:Processed",
        ],
        None,
    );
    let acc = env.json(&["account", "show", "support", "--json"]);
    assert_eq!(acc["mailbox"], "Support@contoso.com");
    assert_eq!(acc["state"], "unauthorized");
    assert_eq!(acc["enabled"], true);
    assert_eq!(acc["app"]["name"], "Contoso");
    assert_eq!(
        acc["inbound"],
        serde_json::json!({"protocol": "imap", "host": "outlook.office365.com", "port": 993, "tls": "implicit"})
    );
    assert_eq!(
        acc["outbound"],
        serde_json::json!({"protocol": "smtp", "host": "smtp.office365.com", "port": 587, "tls": "starttls"})
    );
    assert_eq!(acc["from_name"], "Contoso Support");
    assert_eq!(acc["on_received"], "move:Processed");

    // Overrides: POP3 on a custom host, no outbound; then update a few fields.
    env.ok(
        &[
            "account",
            "add",
            "--name",
            "billing",
            "--app",
            "1",
            "--email",
            "billing@contoso.com",
            "--inbound",
            "pop3",
            "--inbound-host",
            "pop.contoso.test",
            "--outbound",
            "none",
        ],
        None,
    );
    let acc = env.json(&["account", "show", "billing", "--json"]);
    assert_eq!(acc["inbound"]["port"], 995);
    assert_eq!(acc["inbound"]["host"], "pop.contoso.test");
    assert!(acc["outbound"].is_null());
    env.ok(
        &[
            "account",
            "update",
            "billing",
            "--inbound-tls",
            "starttls",
            "--disable",
        ],
        None,
    );
    let acc = env.json(&["account", "show", "billing", "--json"]);
    assert_eq!(
        acc["inbound"]["port"], 110,
        "the usual port of the new TLS mode"
    );
    assert_eq!(acc["state"], "disabled");
    assert_eq!(
        env.json(&["account", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        2
    );

    // The app's secret can be replaced and the name changed; the secret stays write-only.
    env.ok(
        &[
            "app",
            "update",
            "Contoso",
            "--name",
            "Contoso EU",
            "--client-secret-stdin",
        ],
        Some("another-CANARY-secret-value-77aa"),
    );
    let app = env.json(&["app", "show", "Contoso EU", "--json"]);
    assert_eq!(app["client_secret"], "set (…77aa)");

    let events = env.ok(&["events"], None);
    assert!(
        events.contains("app.created")
            && events.contains("account.created")
            && events.contains("account.state_changed"),
        "{events}"
    );
}

#[test]
fn secrets_are_encrypted_at_rest_and_never_printed() {
    let env = TestEnv::new();
    env.add_microsoft_app("Contoso");
    assert!(
        !db_contains(&env.db_path(), CANARY_SECRET),
        "the client secret is in the database in plaintext"
    );
    assert!(
        !db_contains(&env.db_path(), "CANARY"),
        "part of the client secret is in the database in plaintext"
    );
    for args in [
        &["app", "list"][..],
        &["app", "list", "--json"],
        &["app", "show", "Contoso"],
        &["events"],
    ] {
        env.ok(args, None); // `ok` fails on any CANARY in stdout or stderr
    }
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(env.data_dir().join("master.key"))
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
}

#[tokio::test]
async fn keys_rotate_keeps_every_secret_readable() {
    let env = TestEnv::new();
    env.add_microsoft_app("Contoso");
    let before = env.json(&["keys", "status", "--json"]);
    let old_id = before["in_use"][0].as_str().unwrap().to_owned();

    let rotation = env.json(&["keys", "rotate", "--json"]);
    assert_eq!(rotation["reencrypted"], 1);
    let new_id = rotation["new_key_id"].as_str().unwrap().to_owned();
    assert_ne!(new_id, old_id);
    assert_eq!(
        env.json(&["keys", "status", "--json"])["in_use"],
        serde_json::json!([new_id])
    );
    assert_eq!(
        env.json(&["app", "show", "Contoso", "--json"])["client_secret"],
        "set (…3e1d)"
    );

    // After pruning, only the new key is left, and the secret still decrypts.
    let pruned = env.ok(&["keys", "prune"], None);
    assert!(pruned.contains(&old_id), "{pruned}");
    let key_file = std::fs::read_to_string(env.data_dir().join("master.key")).unwrap();
    assert_eq!(key_file.lines().filter(|l| !l.starts_with('#')).count(), 1);
    assert_eq!(
        env.json(&["app", "show", "Contoso", "--json"])["client_secret"],
        "set (…3e1d)"
    );
    assert!(!db_contains(&env.db_path(), CANARY_SECRET));
}

#[test]
fn master_key_from_the_environment() {
    let env = TestEnv::new();
    let key = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8="; // 32 bytes, base64
    let mut cmd = env.command();
    cmd.env("MAILGATE_MASTER_KEY", key);
    let out = env.run_with(
        cmd,
        &[
            "app",
            "add",
            "--kind",
            "google",
            "--name",
            "G",
            "--client-id",
            "1234.apps.googleusercontent.com",
            "--client-secret-stdin",
        ],
        Some("GOCSPX-CANARY-google-secret"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        !env.data_dir().join("master.key").exists(),
        "no key file when the key comes from the environment"
    );
    // Without the key, the secret cannot be read: a clear error, not garbage.
    let out = env.run(&["app", "show", "G"], None);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("not in the keyring"),
        "{}",
        text(&out.stderr)
    );
    // Rotation with an environment key needs the new key on stdin.
    let mut cmd = env.command();
    cmd.env("MAILGATE_MASTER_KEY", key);
    let out = env.run_with(cmd, &["keys", "rotate"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--new-key-stdin"),
        "{}",
        text(&out.stderr)
    );
}

/// Each bad input: exit 2, an error naming the field, and not one byte of data changed.
#[tokio::test]
async fn bad_input_is_refused_and_changes_nothing() {
    let env = TestEnv::new();
    env.add_microsoft_app("Contoso");
    env.ok(
        &[
            "account",
            "add",
            "--name",
            "support",
            "--app",
            "Contoso",
            "--email",
            "support@contoso.com",
        ],
        None,
    );
    let before = env.dump_db().await;

    let ms = [
        "app",
        "add",
        "--kind",
        "microsoft",
        "--tenant",
        "common",
        "--client-id",
        MS_CLIENT_ID,
    ];
    let cases: Vec<(Vec<&str>, Option<&str>, &str)> = vec![
        (
            vec![
                "app",
                "add",
                "--kind",
                "exchange",
                "--name",
                "X",
                "--client-id",
                MS_CLIENT_ID,
            ],
            None,
            "app kind",
        ),
        (
            [&ms[..], &["--name", "Contoso"]].concat(),
            None,
            "already exists",
        ),
        (
            vec![
                "app",
                "add",
                "--kind",
                "microsoft",
                "--name",
                "NoTenant",
                "--client-id",
                MS_CLIENT_ID,
            ],
            None,
            "--tenant",
        ),
        (
            [&ms[..], &["--name", "Bad id"]]
                .concat()
                .into_iter()
                .map(|a| if a == MS_CLIENT_ID { "not-a-guid" } else { a })
                .collect(),
            None,
            "--client-id",
        ),
        (
            [&ms[..], &["--name", "SecretId", "--client-secret-stdin"]].concat(),
            Some("11111111-2222-3333-4444-555555555555"),
            "secret's ID",
        ),
        (
            [&ms[..], &["--name", "Empty", "--client-secret-stdin"]].concat(),
            Some("  \n"),
            "empty",
        ),
        (
            [
                &ms[..],
                &["--name", "Date", "--secret-expires", "31/12/2027"],
            ]
            .concat(),
            None,
            "YYYY-MM-DD",
        ),
        (
            [
                &ms[..],
                &["--name", "Url", "--authority", "login.example.com"],
            ]
            .concat(),
            None,
            "--authority",
        ),
        (
            vec![
                "app",
                "add",
                "--kind",
                "generic",
                "--name",
                "Gen",
                "--client-id",
                "x",
            ],
            None,
            "--token-url",
        ),
        (
            vec![
                "account",
                "add",
                "--name",
                "a",
                "--app",
                "Contoso",
                "--email",
                "not-an-email",
            ],
            None,
            "email address",
        ),
        (
            vec![
                "account",
                "add",
                "--name",
                "a",
                "--app",
                "Contoso",
                "--email",
                "a@contoso.com",
                "--inbound-port",
                "0",
            ],
            None,
            "1 to 65535",
        ),
        (
            vec![
                "account",
                "add",
                "--name",
                "a",
                "--app",
                "Contoso",
                "--email",
                "a@contoso.com",
                "--smtp-port",
                "70000",
            ],
            None,
            "1 to 65535",
        ),
        (
            vec![
                "account",
                "add",
                "--name",
                "a",
                "--app",
                "Contoso",
                "--email",
                "a@contoso.com",
                "--inbound",
                "exchange",
            ],
            None,
            "imap, pop3 or none",
        ),
        (
            vec![
                "account",
                "add",
                "--name",
                "a",
                "--app",
                "Nope",
                "--email",
                "a@contoso.com",
            ],
            None,
            "--app",
        ),
        (
            vec![
                "account",
                "add",
                "--name",
                "support",
                "--app",
                "Contoso",
                "--email",
                "b@contoso.com",
            ],
            None,
            "already exists",
        ),
        (
            vec![
                "account",
                "add",
                "--name",
                "a",
                "--app",
                "Contoso",
                "--email",
                "a@contoso.com",
                "--inbound",
                "none",
                "--outbound",
                "none",
            ],
            None,
            "--inbound",
        ),
        (
            vec![
                "account",
                "add",
                "--name",
                "a",
                "--app",
                "Contoso",
                "--email",
                "a@contoso.com",
                "--inbound",
                "pop3",
                "--on-received",
                "move:Archive",
            ],
            None,
            "--on-received",
        ),
        (
            vec!["account", "update", "support", "--inbound-port", "0"],
            None,
            "1 to 65535",
        ),
        (
            vec!["account", "update", "ghost", "--description", "x"],
            None,
            "no account",
        ),
        (vec!["app", "remove", "Contoso"], None, "support"),
        (vec!["app", "show", "Nope"], None, "no app"),
    ];
    for (args, stdin, expect) in cases {
        let out = env.run(&args, stdin);
        let err = text(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?} should exit 2; stderr: {err}"
        );
        assert!(
            err.contains(expect),
            "{args:?}: error should mention {expect:?}, got: {err}"
        );
        assert!(
            err.lines().filter(|l| l.starts_with("error")).count() == 1,
            "{args:?}: one error line expected: {err}"
        );
        assert!(!err.contains("CANARY"));
        assert_eq!(env.dump_db().await, before, "{args:?} changed the database");
    }
}

#[test]
fn bad_configuration_is_one_line_naming_the_key() {
    let env = TestEnv::new();
    for (key, value, expect) in [
        ("MAILGATE_LISTEN", "localhost", "IP:PORT"),
        ("MAILGATE_PUBLIC_URL", "mail.example.com", "http"),
        (
            "MAILGATE_DATABASE_URL",
            "mysql://u:hunter2@db/x",
            "sqlite://",
        ),
        ("MAILGATE_MASTER_KEY", "c2hvcnQ=", "32 bytes"),
    ] {
        let mut cmd = env.command();
        cmd.env(key, value);
        let out = env.run_with(cmd, &["app", "list"], None);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{key}: {err}");
        assert!(err.starts_with(&format!("error: {key}: ")), "{key}: {err}");
        assert!(err.contains(expect), "{key}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{key}: {err}");
        assert!(!err.contains("hunter2"));
    }
    let cfg = env.dir.path().join("mailgate.toml");
    std::fs::write(
        &cfg,
        "listen = \"127.0.0.1:0\"\npublic_url = \"https://mail.example.com\"\n",
    )
    .unwrap();
    let app = env.ok(&["--config", cfg.to_str().unwrap(), "app", "list"], None);
    assert!(app.contains("No apps yet"), "{app}");
    std::fs::write(
        &cfg,
        "listen = \"127.0.0.1:0\"\npublik_url = \"https://x\"\n",
    )
    .unwrap();
    let out = env.run(&["--config", cfg.to_str().unwrap(), "app", "list"], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("publik_url"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn public_url_sets_the_redirect_uri() {
    let env = TestEnv::new();
    let mut cmd = env.command();
    cmd.env("MAILGATE_PUBLIC_URL", "https://mail.example.com/gateway");
    let out = env.run_with(
        cmd,
        &[
            "app",
            "add",
            "--kind",
            "google",
            "--name",
            "G",
            "--client-id",
            "1.apps.googleusercontent.com",
            "--client-secret-stdin",
        ],
        Some("GOCSPX-CANARY-value"),
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout)
            .contains("redirect URI:    https://mail.example.com/gateway/oauth/callback"),
        "{}",
        text(&out.stdout)
    );
}
