//! The OAuth engine through the real binary, against the identity-provider emulator.

// The mail fixture moved to `fixtures.rs`; its old path stays for modules written against it.
pub use crate::fixtures::{CLIENT_SECRET, Fixture, PASSWORD};
use crate::support::text;
use mailgate_testkit::idp::{Fault, FaultSpec, LifetimeSpec, UserSpec, sign_in};
use std::process::Stdio;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_flow_stores_an_encrypted_grant_and_activates_the_account() {
    let f = Fixture::start().await;
    let url = f.authorize_url("support");
    let parsed = url::Url::parse(&url).unwrap();
    let q: std::collections::HashMap<_, _> = parsed.query_pairs().into_owned().collect();
    assert_eq!(q["code_challenge_method"], "S256");
    assert_eq!(q["login_hint"], f.mailbox);
    assert_eq!(q["prompt"], "select_account");
    assert!(q["scope"].contains("offline_access") && q["scope"].contains("IMAP.AccessAsUser.All"));
    assert_eq!(
        q["redirect_uri"],
        format!("{}/oauth/callback", f.server.base)
    );
    assert!(q["state"].len() >= 43 && q["nonce"].len() >= 20);

    let (status, page) = f.sign_in_and_callback(&url, &f.mailbox).await;
    assert_eq!(status, 200, "{page}");
    assert!(
        page.contains("Authorized") && page.contains(&f.mailbox),
        "{page}"
    );
    let acc = f.state("support");
    assert_eq!(acc["state"], "active");

    let out = f.token();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert!(token.len() > 100, "a JWT access token: {token}");
    assert!(
        !crate::support::db_contains(&f.env.db_path(), &token),
        "access token stored in plaintext"
    );
    let events = f.env.ok(&["events", "--account", "support"], None);
    assert!(
        events.contains("account.authorized")
            && events.contains(&format!("authorized as {}", f.mailbox)),
        "{events}"
    );
    assert_eq!(f.counter("token:authorization_code").await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wrong_user_is_refused_and_nothing_is_stored() {
    let f = Fixture::start().await;
    let intruder = format!("someone-else-{}@example.test", &f.client_id[..8]);
    f.idp
        .add_user(UserSpec::new(&intruder, PASSWORD))
        .await
        .unwrap();
    let url = f.authorize_url("support");
    let (status, page) = f.sign_in_and_callback(&url, &intruder).await;
    assert_eq!(status, 403, "{page}");
    assert!(
        page.contains(&format!("You signed in as <strong>{intruder}</strong>")),
        "{page}"
    );
    assert!(
        page.contains(&format!("this account is <strong>{}</strong>", f.mailbox)),
        "{page}"
    );
    assert!(
        page.contains("Sign out") && page.contains("private window"),
        "{page}"
    );
    assert_eq!(f.state("support")["state"], "unauthorized");
    let grants = f.env.dump_db().await;
    assert!(
        grants.contains("== grants\n== "),
        "no grant row may exist: {grants}"
    );
    let events = f.env.ok(&["events", "--account", "support"], None);
    assert!(
        events
            .lines()
            .any(|l| l.contains("account.authorization_failed")
                && l.contains(&format!("You signed in as {intruder}"))
                && l.contains("[wrong_user]")),
        "the failure is recorded as an event naming who signed in: {events}"
    );
    let out = f.token();
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("unauthorized"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replayed_foreign_and_expired_states_are_refused() {
    let f = Fixture::start().await;
    let url = f.authorize_url("support");
    let callback = sign_in(&f.http, &url, &f.mailbox, PASSWORD).await.unwrap();
    let first = f.http.get(callback.as_str()).send().await.unwrap();
    assert_eq!(first.status(), 200);
    // The same response again: the state was one-time.
    let replay = f.http.get(callback.as_str()).send().await.unwrap();
    assert_eq!(replay.status(), 400);
    assert!(replay.text().await.unwrap().contains("already used"));
    // A state mailgate never issued, while a genuine authorization is pending: it changes
    // neither the account, its grant, nor the pending authorization, which still completes.
    let pending = f.authorize_url("support");
    let genuine = sign_in(&f.http, &pending, &f.mailbox, PASSWORD)
        .await
        .unwrap();
    let before = (f.state("support"), authorization_rows(&f).await);
    let foreign = f
        .http
        .get(format!(
            "{}/oauth/callback?code=abc&state=forged-state-value",
            f.server.base
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 400);
    assert!(
        foreign.text().await.unwrap().contains("unknown"),
        "the page says the state is unknown"
    );
    assert_eq!(
        (f.state("support"), authorization_rows(&f).await),
        before,
        "a forged state changed the account, its grant or the pending authorization"
    );
    let completed = f.http.get(genuine.as_str()).send().await.unwrap();
    assert_eq!(completed.status(), 200);
    // An expired request (older than ten minutes).
    let url = f.authorize_url("support");
    f.sql("UPDATE oauth_states SET expires_at = 1000").await;
    let (status, page) = f.sign_in_and_callback(&url, &f.mailbox).await;
    assert_eq!(status, 400, "{page}");
    assert!(page.contains("expired"), "{page}");
    // A missing state.
    let none = f
        .http
        .get(format!("{}/oauth/callback?code=abc", f.server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(none.status(), 400);
}

/// The grant and pending-authorization tables of the database dump.
async fn authorization_rows(f: &Fixture) -> String {
    f.env
        .dump_db()
        .await
        .split("== ")
        .filter(|table| table.starts_with("grants\n") || table.starts_with("oauth_states\n"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_waits_for_the_callback() {
    let f = Fixture::start().await;
    let mut child = f
        .env
        .command()
        .args(["authorize", "support"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout).lines() {
            let _ = tx.send(line.unwrap());
        }
    });
    let url = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
    let (status, _) = f.sign_in_and_callback(url.trim(), &f.mailbox).await;
    assert_eq!(status, 200);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let rest: Vec<String> = rx.try_iter().collect();
    assert!(
        rest.iter()
            .any(|l| l.contains(&format!("authorized as {}", f.mailbox))),
        "{rest:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_keeps_the_newest_refresh_token() {
    let f = Fixture::start().await;
    f.authorize().await;
    for round in 1..=10 {
        f.expire_stored_token().await;
        let out = f.token();
        assert!(out.status.success(), "round {round}: {}", text(&out.stderr));
    }
    // Ten refreshes, each with a rotated refresh token the emulator refuses once replaced:
    // the eleventh works only if mailgate stored the newest one every time.
    f.expire_stored_token().await;
    assert!(f.token().status.success());
    assert_eq!(f.counter("token:refresh_token").await, 11);
    assert_eq!(f.state("support")["state"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_share_one_refresh() {
    let f = Fixture::start().await;
    f.authorize().await;
    f.expire_stored_token().await;
    let before = f.counter("token:refresh_token").await;

    // 40 tasks in this process, through the library, plus 10 `mailgate token` processes.
    let store = {
        let key =
            mailgate_store::crypto::load_or_create_key_file(&f.env.data_dir().join("master.key"))
                .unwrap();
        let url = format!("sqlite://{}", f.env.db_path().display());
        std::sync::Arc::new(
            mailgate_store::Store::open(
                &url,
                key,
                mailgate_store::crypto::KeySource::File(f.env.data_dir().join("master.key")),
            )
            .await
            .unwrap(),
        )
    };
    let engine = std::sync::Arc::new(
        mailgate_grants::Engine::new(
            store.clone(),
            std::sync::Arc::new(mailgate_core::SystemClock),
            mailgate_grants::EngineOptions {
                // The emulator listens on loopback.
                allow_private_idp: true,
                ..Default::default()
            },
        )
        .unwrap(),
    );
    let id = store.find_account("support").await.unwrap().id;
    let mut procs = Vec::new();
    for _ in 0..10 {
        procs.push(
            f.env
                .command()
                .args(["token", "support"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        );
    }
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let e = engine.clone();
        tasks.push(tokio::spawn(async move {
            e.access_token(id)
                .await
                .map(|t| t.access_token.expose().to_owned())
        }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap().unwrap());
    }
    for p in procs {
        let out = tokio::task::spawn_blocking(move || p.wait_with_output().unwrap())
            .await
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        tokens.push(text(&out.stdout).trim().to_owned());
    }
    assert_eq!(tokens.len(), 50);
    assert_eq!(
        f.counter("token:refresh_token").await - before,
        1,
        "exactly one refresh at the provider"
    );
    assert!(
        tokens.iter().all(|t| t == &tokens[0]),
        "all 50 callers got the same new token"
    );
}

async fn fault_leads_to(
    fault: Fault,
    expected_state: &str,
    expected_code: Option<&str>,
) -> Fixture {
    let f = Fixture::start().await;
    f.authorize().await;
    // A second account of the same app, to see what a failure does to its neighbours.
    let other = format!("billing-{}@example.test", &f.client_id[..8]);
    f.idp
        .add_user(UserSpec::new(&other, PASSWORD))
        .await
        .unwrap();
    f.env.ok(
        &[
            "account", "add", "--name", "billing", "--app", "Contoso", "--email", &other,
        ],
        None,
    );
    f.authorize_as("billing", &other).await;
    f.expire_stored_token().await;
    f.idp
        .inject_fault(FaultSpec::token(&f.client_id, fault))
        .await
        .unwrap();
    let out = f.token();
    let acc = f.state("support");
    assert_eq!(acc["state"], expected_state, "{}", text(&out.stderr));
    if let Some(code) = expected_code {
        assert!(!out.status.success());
        assert_eq!(acc["last_problem"]["code"], code, "{acc}");
        assert!(text(&out.stderr).contains(code), "{}", text(&out.stderr));
        assert!(
            acc["last_problem"]["detail"]
                .as_str()
                .unwrap()
                .contains("AADSTS"),
            "the provider's words are kept: {acc}"
        );
    }
    f
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_secret_needs_reauthorization_of_every_account_of_the_app() {
    let f = fault_leads_to(
        Fault::Aadsts { code: 7000222 },
        "reauth_required",
        Some("secret_expired"),
    )
    .await;
    let events = f.env.ok(&["events", "--account", "support"], None);
    assert!(events.contains("account.reauth_required"), "{events}");
    let billing = f.state("billing");
    assert_eq!(
        billing["state"], "reauth_required",
        "an expired secret breaks every account of the app"
    );
    assert_eq!(billing["last_problem"]["code"], "secret_expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secret_id_instead_of_value_is_named() {
    fault_leads_to(
        Fault::Aadsts { code: 7000215 },
        "reauth_required",
        Some("secret_id_instead_of_value"),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_is_named_and_touches_only_its_account() {
    let f = fault_leads_to(
        Fault::Aadsts { code: 50173 },
        "reauth_required",
        Some("grant_revoked"),
    )
    .await;
    assert_eq!(f.state("billing")["state"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_503s_then_success_keep_the_account_active() {
    let f = Fixture::start().await;
    f.authorize().await;
    f.expire_stored_token().await;
    let mut spec = FaultSpec::token(&f.client_id, Fault::HttpStatus { status: 503 });
    spec.count = 3;
    f.idp.inject_fault(spec).await.unwrap();
    let out = f.token();
    assert!(
        out.status.success(),
        "retried through the 503s: {}",
        text(&out.stderr)
    );
    assert_eq!(f.state("support")["state"], "active");
    assert_eq!(
        f.counter("token:refresh_token").await,
        4,
        "three failures, one success"
    );
    let events = f.env.ok(&["events", "--account", "support"], None);
    assert!(
        events.contains("account.refresh_failed") && events.contains("[transient]"),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_provider_is_a_transient_timeout() {
    let f = Fixture::start_with(&[("MAILGATE_OAUTH_TIMEOUT_SECS", "1")]).await;
    f.authorize().await;
    f.expire_stored_token().await;
    let mut spec = FaultSpec::token(&f.client_id, Fault::Delay { seconds: 30.0 });
    spec.count = 10;
    f.idp.inject_fault(spec).await.unwrap();
    let started = std::time::Instant::now();
    let out = f.token();
    assert!(!out.status.success());
    assert!(
        started.elapsed() < std::time::Duration::from_secs(25),
        "timeouts bound the wait"
    );
    assert!(
        text(&out.stderr).contains("[timeout]"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        f.state("support")["state"],
        "active",
        "a transient failure keeps the grant"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_lived_tokens_are_not_refreshed_on_every_use() {
    let f = Fixture::start().await;
    f.idp
        .set_lifetimes(LifetimeSpec {
            client_id: Some(f.client_id.clone()),
            access_token_secs: Some(120),
            ..Default::default()
        })
        .await
        .unwrap();
    f.authorize().await;
    for _ in 0..3 {
        assert!(f.token().status.success());
    }
    assert_eq!(f.counter("token:refresh_token").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_or_token_in_logs_at_trace_level() {
    let f = Fixture::start_with(&[("RUST_LOG", "trace")]).await;
    f.authorize().await;
    f.expire_stored_token().await;
    let out = f.env.run(&["token", "support", "--json"], None);
    assert!(out.status.success());
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let access = json["access_token"].as_str().unwrap().to_owned();
    assert_eq!(json["refreshed"], true);
    // The refresh token, read back the way mailgate does.
    let key_path = f.env.data_dir().join("master.key");
    let store = mailgate_store::Store::open(
        &format!("sqlite://{}", f.env.db_path().display()),
        mailgate_store::crypto::load_or_create_key_file(&key_path).unwrap(),
        mailgate_store::crypto::KeySource::File(key_path),
    )
    .await
    .unwrap();
    let id = store.find_account("support").await.unwrap().id;
    let refresh = store
        .grant(id)
        .await
        .unwrap()
        .unwrap()
        .refresh_token
        .unwrap()
        .expose()
        .to_owned();
    let server_log = std::fs::read_to_string(f.env.dir.path().join("serve.log")).unwrap();
    assert!(server_log.len() > 1000, "trace logging is on");
    let cli_log = text(&out.stderr);
    for (name, canary) in [
        ("client secret", CLIENT_SECRET),
        ("access token", access.as_str()),
        ("refresh token", refresh.as_str()),
    ] {
        assert!(!server_log.contains(canary), "{name} in the server log");
        assert!(!cli_log.contains(canary), "{name} in the CLI log");
    }
}

/// Polls `check` every 100 ms until it is true, failing after `secs`.
async fn eventually(secs: u64, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    while !check().await {
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_refreshes_before_expiry_without_being_asked() {
    let f = Fixture::start_with(&[("MAILGATE_REFRESH_INTERVAL_SECS", "1")]).await;
    f.authorize().await;
    // Due within the margin, not yet expired: the scheduler's job.
    let soon = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs() + 120;
    f.sql(&format!(
        "UPDATE grants SET access_expires_at = {soon}, access_issued_at = {}",
        soon - 3600
    ))
    .await;
    eventually(30, "a proactive refresh", async || {
        f.counter("token:refresh_token").await == 1
    })
    .await;
    let events = f.env.ok(&["events", "--account", "support"], None);
    assert!(events.contains("account.token_refreshed"), "{events}");
    assert_eq!(f.state("support")["state"], "active");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expiring_client_secrets_raise_a_warning_once() {
    let f = Fixture::start_with(&[("MAILGATE_REFRESH_INTERVAL_SECS", "1")]).await;
    let in_ten_days = (std::time::UNIX_EPOCH.elapsed().unwrap().as_secs() / 86_400 + 10) as i64;
    let date = time::Date::from_julian_day(2_440_588 + in_ten_days as i32).unwrap();
    f.env.ok(
        &[
            "app",
            "update",
            "Contoso",
            "--secret-expires",
            &date.to_string(),
        ],
        None,
    );
    let list = f.env.ok(&["app", "list"], None);
    assert!(list.contains("secret expires in 10 day(s)"), "{list}");
    eventually(30, "the expiry warning", async || {
        f.env.ok(&["events"], None).contains("app.secret_expiring")
    })
    .await;
    let events = f.env.ok(&["events"], None);
    assert!(
        events.contains("expires on") && events.contains("in 10 day(s)"),
        "{events}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_refresh_token_is_an_error_with_the_remedy() {
    let f = Fixture::start().await;
    // Without offline_access Microsoft returns no refresh token.
    f.env.ok(
        &[
            "app",
            "update",
            "Contoso",
            "--scopes",
            "openid email https://outlook.office.com/IMAP.AccessAsUser.All",
        ],
        None,
    );
    let url = f.authorize_url("support");
    let (status, page) = f.sign_in_and_callback(&url, &f.mailbox).await;
    assert_eq!(status, 502, "{page}");
    assert!(
        page.contains("no_refresh_token") && page.contains("offline_access"),
        "{page}"
    );
    assert_eq!(
        f.state("support")["state"],
        "unauthorized",
        "no half-working grant"
    );
    let events = f.env.ok(&["events", "--account", "support"], None);
    assert!(
        events.contains("account.authorization_failed") && events.contains("no_refresh_token"),
        "{events}"
    );
}

/// The crash window: the provider rotated the refresh token (mailgate received the answer)
/// but mailgate died before persisting it. Within the provider's reuse grace the stored,
/// replaced token still works and the next refresh stores a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_before_persisting_a_rotation_is_covered_by_the_grace() {
    let f = Fixture::start().await;
    f.idp
        .set_lifetimes(LifetimeSpec {
            client_id: Some(f.client_id.clone()),
            refresh_reuse_grace_secs: Some(300),
            ..Default::default()
        })
        .await
        .unwrap();
    f.authorize().await;
    let stored = stored_refresh_token(&f).await;
    // What the lost refresh did at the provider: a rotation mailgate never saw.
    let resp = reqwest::Client::new()
        .post(format!(
            "{}/{}/oauth2/v2.0/token",
            f.idp.base_url(),
            mailgate_testkit::idp::DEFAULT_TENANT_ID
        ))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", stored.as_str()),
            ("client_id", &f.client_id),
            ("client_secret", CLIENT_SECRET),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    f.expire_stored_token().await;
    let out = f.token();
    assert!(
        out.status.success(),
        "the replaced token is accepted within the grace: {}",
        text(&out.stderr)
    );
    assert_ne!(
        stored_refresh_token(&f).await,
        stored,
        "and a new one is stored"
    );
    assert_eq!(f.state("support")["state"], "active");
}

async fn stored_refresh_token(f: &Fixture) -> String {
    let key_path = f.env.data_dir().join("master.key");
    let store = mailgate_store::Store::open(
        &format!("sqlite://{}", f.env.db_path().display()),
        mailgate_store::crypto::load_or_create_key_file(&key_path).unwrap(),
        mailgate_store::crypto::KeySource::File(key_path),
    )
    .await
    .unwrap();
    let id = store.find_account("support").await.unwrap().id;
    let rt = store
        .grant(id)
        .await
        .unwrap()
        .unwrap()
        .refresh_token
        .unwrap()
        .expose()
        .to_owned();
    store.close().await;
    rt
}
