//! Device code, client credentials and service account: each ends with a token the rig's
//! real Dovecot accepts.

use crate::fixtures::{Fixture, PASSWORD};
use crate::support::text;
use mailgate_testkit::idp::{DeviceConsent, LifetimeSpec, ServiceAccountSpec, answer_device_code};
use mailgate_testkit::raw::{RawClient, imap_status_is};
use mailgate_testkit::rig::MailRig;
use std::process::Stdio;

/// Logs in to the rig's IMAP (implicit TLS) with XOAUTH2 as `user` and selects INBOX.
async fn dovecot_accepts(rig: &MailRig, user: &str, token: &str) {
    let mut imap = RawClient::connect_tls(rig.host(), rig.imaps_port(), rig.tls_config().unwrap())
        .await
        .unwrap();
    let greeting = imap.read_line().await.unwrap();
    assert!(greeting.starts_with("* OK"), "{greeting}");
    let ir = mailgate_proto::sasl::xoauth2_initial_response(user, token);
    let reply = imap
        .imap_command("a1", &format!("AUTHENTICATE XOAUTH2 {ir}"))
        .await
        .unwrap();
    let last = reply.last().cloned().unwrap_or_default();
    assert!(
        imap_status_is(&last, "a1", "OK"),
        "Dovecot refused mailgate's token for {user}: {reply:?}"
    );
    let select = imap.imap_command("a2", "SELECT INBOX").await.unwrap();
    assert!(
        imap_status_is(select.last().unwrap(), "a2", "OK"),
        "{select:?}"
    );
}

fn token(f: &Fixture, account: &str) -> String {
    let out = f.env.run(&["token", account], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_flow_token_opens_dovecot() {
    let (f, rig) = Fixture::start_on_rig().await;
    f.authorize().await;
    dovecot_accepts(&rig, &f.mailbox, &token(&f, "support")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn device_code_flow() {
    let (f, rig) = Fixture::start_on_rig().await;
    f.idp
        .set_lifetimes(LifetimeSpec {
            client_id: Some(f.client_id.clone()),
            device_code_interval_secs: Some(1),
            ..Default::default()
        })
        .await
        .unwrap();
    let mut child = f
        .env
        .command()
        .args(["authorize", "support", "--device"])
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
    let line = rx.recv_timeout(std::time::Duration::from_secs(30)).unwrap();
    let rest = line
        .strip_prefix("Open ")
        .unwrap_or_else(|| panic!("{line}"));
    let (uri, code) = rest.split_once(" and enter the code ").unwrap();
    answer_device_code(
        &f.http,
        uri,
        code,
        &f.mailbox,
        PASSWORD,
        DeviceConsent::Accept,
    )
    .await
    .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap())
        .await
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(f.state("support")["state"], "active");
    assert!(
        f.counter("token:urn:ietf:params:oauth:grant-type:device_code")
            .await
            >= 1
    );
    dovecot_accepts(&rig, &f.mailbox, &token(&f, "support")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_credentials_flow() {
    let (f, rig) = Fixture::start_on_rig().await;
    f.add_app("Contoso app-only", "client_credentials");
    f.env.ok(
        &[
            "account",
            "add",
            "--name",
            "robot",
            "--app",
            "Contoso app-only",
            "--email",
            &f.mailbox,
        ],
        None,
    );
    let shown = f.env.json(&["app", "show", "Contoso app-only", "--json"]);
    assert_eq!(
        shown["scopes"],
        serde_json::json!(["https://outlook.office365.com/.default"])
    );
    let out = f.env.ok(&["authorize", "robot"], None);
    assert!(out.contains("is now active"), "{out}");
    assert_eq!(f.counter("token:client_credentials").await, 1);
    dovecot_accepts(&rig, &f.mailbox, &token(&f, "robot")).await;
    // Expired: a new app-only token, no refresh token involved.
    f.expire_stored_token().await;
    dovecot_accepts(&rig, &f.mailbox, &token(&f, "robot")).await;
    assert_eq!(f.counter("token:client_credentials").await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn google_service_account_flow() {
    let (f, rig) = Fixture::start_on_rig().await;
    let key = f
        .idp
        .add_service_account(ServiceAccountSpec::default())
        .await
        .unwrap();
    let key_file = f.env.dir.path().join("service-account.json");
    std::fs::write(&key_file, serde_json::to_vec(&key).unwrap()).unwrap();
    let client_id = key["client_id"].as_str().unwrap();
    f.env.ok(
        &[
            "app",
            "add",
            "--kind",
            "google",
            "--name",
            "Workspace",
            "--client-id",
            client_id,
            "--flow",
            "service_account",
            "--service-account-key-file",
            key_file.to_str().unwrap(),
            "--authority",
            f.idp.base_url(),
        ],
        None,
    );
    assert!(
        !crate::support::db_contains(&f.env.db_path(), "PRIVATE KEY"),
        "the key file is stored encrypted"
    );
    f.env.ok(
        &[
            "account",
            "add",
            "--name",
            "gsuite",
            "--app",
            "Workspace",
            "--email",
            &f.mailbox,
        ],
        None,
    );
    let out = f.env.ok(&["authorize", "gsuite"], None);
    assert!(out.contains("is now active"), "{out}");
    let t = token(&f, "gsuite");
    assert!(t.starts_with("ya29."), "a Google-shaped access token");
    dovecot_accepts(&rig, &f.mailbox, &t).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_service_account_key_file_is_refused() {
    let (f, _rig) = Fixture::start_on_rig().await;
    let bad = f.env.dir.path().join("not-a-key.json");
    std::fs::write(&bad, r#"{"type":"authorized_user"}"#).unwrap();
    let out = f.env.run(
        &[
            "app",
            "add",
            "--kind",
            "google",
            "--name",
            "W",
            "--client-id",
            "1",
            "--flow",
            "service_account",
            "--service-account-key-file",
            bad.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--service-account-key-file"),
        "{}",
        text(&out.stderr)
    );
}
