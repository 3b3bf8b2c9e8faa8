//! `mailgate test` against the rig's real Dovecot and Postfix: the round trips, and each
//! failure caught at the right step with the right remediation code.

use crate::fixtures::Fixture;
use crate::support::text;
use mailgate_testkit::idp::{Fault, FaultSpec};
use mailgate_testkit::raw::{RawClient, imap_status_is};
use mailgate_testkit::rig::{MailRig, RigOptions};
use serde_json::Value;

/// A fixture whose account points at the rig: IMAP (implicit TLS) in, submission
/// (STARTTLS) out, trusting the rig's CA.
async fn on_rig() -> (Fixture, MailRig) {
    on_rig_with(&[]).await
}

pub async fn on_rig_with(vars: &[(&str, &str)]) -> (Fixture, MailRig) {
    let (f, rig) = Fixture::start_on_rig_with(vars).await;
    point_at_rig(&f, &rig);
    (f, rig)
}

/// Sets the fixture's account to read over the rig's IMAPS and send over its submission
/// port, trusting its CA.
pub fn point_at_rig(f: &Fixture, rig: &MailRig) {
    f.env
        .set_var("MAILGATE_EXTRA_CA_FILE", rig.ca_cert().to_str().unwrap());
    let imaps = rig.imaps_port().to_string();
    let submission = rig.submission_port().to_string();
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--inbound-host",
            "localhost",
            "--inbound-port",
            &imaps,
            "--inbound-tls",
            "implicit",
            "--smtp-host",
            "localhost",
            "--smtp-port",
            &submission,
            "--smtp-tls",
            "starttls",
            "--from-name",
            "Support Desk",
        ],
        None,
    );
}

/// Runs `mailgate test --json` with a short step timeout; returns (exit code, report).
fn test_json(f: &Fixture, extra: &[&str]) -> (i32, Value) {
    let mut args = vec![
        "test",
        "support",
        "--json",
        "--step-timeout",
        "3",
        "--find-within",
        "20",
    ];
    args.extend_from_slice(extra);
    let out = f.env.run(&args, None);
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    assert!(!text(&out.stdout).contains("CANARY") && !text(&out.stderr).contains("CANARY"));
    (out.status.code().unwrap_or(-1), report)
}

/// The first failed step: (name, remediation code).
fn failed_step(report: &Value) -> (String, String) {
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["status"] == "failed")
        .unwrap_or_else(|| panic!("no failed step: {report:#}"));
    (
        step["name"].as_str().unwrap().to_owned(),
        step["remediation"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

fn assert_fails_at(report: &Value, step_prefix: &str, code: &str) {
    let (name, got) = failed_step(report);
    assert!(
        name.starts_with(step_prefix),
        "failed at {name:?}, expected {step_prefix:?}: {report:#}"
    );
    assert_eq!(got, code, "{report:#}");
    assert_eq!(report["ok"], false);
}

/// Checks with the raw protocol (not mailgate's client) that the message is in the INBOX.
pub(crate) async fn raw_imap_has(f: &Fixture, rig: &MailRig, message_id: &str) -> bool {
    let token = f.env.ok(&["token", "support"], None).trim().to_owned();
    let mut imap = RawClient::connect_tls(rig.host(), rig.imaps_port(), rig.tls_config().unwrap())
        .await
        .unwrap();
    imap.read_line().await.unwrap();
    let ir = mailgate_proto::sasl::xoauth2_initial_response(&f.mailbox, &token);
    let auth = imap
        .imap_command("r1", &format!("AUTHENTICATE XOAUTH2 {ir}"))
        .await
        .unwrap();
    assert!(imap_status_is(auth.last().unwrap(), "r1", "OK"), "{auth:?}");
    imap.imap_command("r2", "SELECT INBOX").await.unwrap();
    let found = imap
        .imap_command("r3", &format!("SEARCH HEADER Message-ID \"{message_id}\""))
        .await
        .unwrap();
    found
        .iter()
        .any(|l| l.starts_with("* SEARCH ") && l.len() > "* SEARCH ".len())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_round_trip_passes_every_step() {
    let (f, rig) = on_rig().await;
    f.authorize().await;
    let (code, report) = test_json(&f, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["ok"], true);
    let names: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    for wanted in [
        "imap: resolve",
        "imap: connect",
        "imap: TLS",
        "imap: greeting",
        "imap: OAuth offered",
        "imap: token",
        "imap: authenticate",
        "imap: select INBOX",
        "smtp: STARTTLS",
        "smtp: authenticate",
        "smtp: send test message",
        "imap: find the test message",
    ] {
        assert!(
            names.iter().any(|n| n.starts_with(wanted)),
            "missing step {wanted}: {names:?}"
        );
    }
    assert!(
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["status"] == "ok"),
        "{report:#}"
    );
    let id = report["message_id"].as_str().unwrap();
    assert!(
        raw_imap_has(&f, &rig, id).await,
        "the test message is really in the mailbox"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_round_trip_passes_every_step() {
    let (f, rig) = on_rig().await;
    let pop3s = rig.pop3s_port().to_string();
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--inbound",
            "pop3",
            "--inbound-host",
            "localhost",
            "--inbound-port",
            &pop3s,
            "--inbound-tls",
            "implicit",
        ],
        None,
    );
    f.authorize().await;
    let (code, report) = test_json(&f, &[]);
    assert_eq!(code, 0, "{report:#}");
    let names: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"pop3: STAT") && names.contains(&"pop3: find the test message"),
        "{names:?}"
    );
    assert!(raw_imap_has(&f, &rig, report["message_id"].as_str().unwrap()).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn starttls_ports_work_too() {
    let (f, rig) = on_rig().await;
    let imap = rig.imap_port().to_string();
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--inbound-port",
            &imap,
            "--inbound-tls",
            "starttls",
        ],
        None,
    );
    f.authorize().await;
    let (code, report) = test_json(&f, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert!(
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "imap: STARTTLS" && s["status"] == "ok")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_refused() {
    let (f, _rig) = on_rig().await;
    f.authorize().await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--inbound-host",
            "127.0.0.1",
            "--inbound-port",
            &closed,
        ],
        None,
    );
    let (code, report) = test_json(&f, &[]);
    assert_eq!(code, 1);
    assert_fails_at(&report, "imap: connect", "connection_refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_port_speaking_another_protocol() {
    let (f, rig) = on_rig().await;
    f.authorize().await;
    let smtp = rig.smtp_port().to_string();
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--inbound-port",
            &smtp,
            "--inbound-tls",
            "starttls",
        ],
        None,
    );
    let (_, report) = test_json(&f, &[]);
    assert_fails_at(&report, "imap: greeting", "wrong_protocol");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plaintext_port_with_implicit_tls() {
    let (f, rig) = on_rig().await;
    f.authorize().await;
    let plain = rig.imap_port().to_string();
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--inbound-port",
            &plain,
            "--inbound-tls",
            "implicit",
        ],
        None,
    );
    let (_, report) = test_json(&f, &[]);
    let (name, code) = failed_step(&report);
    assert_eq!(name, "imap: TLS", "{report:#}");
    assert!(code == "not_tls" || code == "tls_failed", "{report:#}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_name_mismatch() {
    let (f, _rig) = on_rig().await;
    f.authorize().await;
    // The IPv4-mapped IPv6 form reaches the same loopback server, but the certificate
    // names only localhost and 127.0.0.1.
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--inbound-host",
            "::ffff:127.0.0.1",
        ],
        None,
    );
    let (_, report) = test_json(&f, &[]);
    assert_fails_at(&report, "imap: TLS", "tls_name_mismatch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_without_xoauth2() {
    let (f, rig) = on_rig().await;
    f.authorize().await;
    let plain_rig = MailRig::start_temp(
        rig.introspect_url().unwrap(),
        RigOptions {
            no_oauth: true,
            ..Default::default()
        },
    )
    .await
    .expect("the no-OAuth rig must start");
    f.env.set_var(
        "MAILGATE_EXTRA_CA_FILE",
        plain_rig.ca_cert().to_str().unwrap(),
    );
    let port = plain_rig.imaps_port().to_string();
    f.env.ok(
        &["account", "update", "support", "--inbound-port", &port],
        None,
    );
    let (_, report) = test_json(&f, &[]);
    assert_fails_at(&report, "imap: OAuth offered", "xoauth2_not_offered");
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "imap: OAuth offered")
        .unwrap();
    assert!(
        step["server_says"].as_str().unwrap().contains("AUTH=PLAIN"),
        "the server's capabilities are shown: {step}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_another_user_is_refused_by_dovecot() {
    let (f, _rig) = on_rig().await;
    f.authorize().await;
    // The grant stays support's; the account now names another mailbox.
    let other = format!("someone-{}@example.test", &f.client_id[..8]);
    f.env
        .ok(&["account", "update", "support", "--email", &other], None);
    let (_, report) = test_json(&f, &[]);
    assert_fails_at(&report, "imap: authenticate", "auth_failed");
    let step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "imap: authenticate")
        .unwrap();
    assert!(
        step["server_says"].as_str().unwrap().starts_with("NO"),
        "Dovecot's own words: {step}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_is_refused_at_authentication() {
    let (f, _rig) = on_rig().await;
    f.authorize().await;
    f.idp.revoke_user(&f.mailbox).await.unwrap();
    let (_, report) = test_json(&f, &[]);
    // The refusal forces one refresh, which tells the revoked grant from a token problem
    // (issue 12: the test used to blame the audience or scopes).
    assert_fails_at(&report, "imap: refresh the refused token", "grant_revoked");
    let account = f.state("support");
    assert_eq!(account["state"], "reauth_required", "{account}");
    assert_eq!(account["last_problem"]["code"], "grant_revoked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_without_the_mail_scope_is_caught_before_the_server() {
    let (f, _rig) = on_rig().await;
    f.env.ok(
        &[
            "app",
            "update",
            "Contoso",
            "--scopes",
            "openid email offline_access https://outlook.office.com/SMTP.Send",
        ],
        None,
    );
    f.authorize().await;
    let (_, report) = test_json(&f, &[]);
    assert_fails_at(&report, "imap: token", "token_missing_scope");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graph_token_is_caught_as_the_wrong_audience() {
    let (f, _rig) = on_rig().await;
    f.env.ok(
        &[
            "app",
            "update",
            "Contoso",
            "--scopes",
            "openid email offline_access User.Read",
        ],
        None,
    );
    f.authorize().await;
    let (_, report) = test_json(&f, &[]);
    assert_fails_at(&report, "imap: token", "token_wrong_audience");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_secret_at_refresh() {
    let (f, _rig) = on_rig().await;
    f.authorize().await;
    f.expire_stored_token().await;
    f.idp
        .inject_fault(FaultSpec::token(
            &f.client_id,
            Fault::Aadsts { code: 7000222 },
        ))
        .await
        .unwrap();
    let (_, report) = test_json(&f, &[]);
    assert_fails_at(&report, "imap: token", "secret_expired");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_never_answers_is_a_failed_step_not_a_hang() {
    let (f, _rig) = on_rig().await;
    f.authorize().await;
    // Accepts TCP, says nothing.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    let holder = std::thread::spawn(move || {
        let conn = silent.accept();
        std::thread::sleep(std::time::Duration::from_secs(8));
        drop(conn);
    });
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--inbound-host",
            "127.0.0.1",
            "--inbound-port",
            &port,
            "--inbound-tls",
            "starttls",
        ],
        None,
    );
    let started = std::time::Instant::now();
    let (_, report) = test_json(&f, &[]);
    assert!(
        started.elapsed() < std::time::Duration::from_secs(7),
        "bounded by the step timeout"
    );
    assert_fails_at(&report, "imap: greeting", "deadline");
    let _ = holder.join();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outbound_only_and_disabled_accounts() {
    let (f, _rig) = on_rig().await;
    f.authorize().await;
    f.env
        .ok(&["account", "update", "support", "--inbound", "none"], None);
    let (code, report) = test_json(&f, &[]);
    assert_eq!(code, 0, "{report:#}");
    let names: Vec<&str> = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert!(!names.iter().any(|n| n.starts_with("imap")), "{names:?}");
    assert!(
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["status"] == "skipped")
    );
    f.env
        .ok(&["account", "update", "support", "--disable"], None);
    let (code, report) = test_json(&f, &[]);
    assert_eq!(code, 1);
    assert_fails_at(&report, "account", "account_disabled");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_fetch_flag_move_and_idle_through_the_client() {
    use mailgate_mail::imap::ImapClient;
    use mailgate_mail::net::{Conn, resolve};
    let (f, rig) = on_rig().await;
    f.authorize().await;
    let (code, report) = test_json(&f, &[]);
    assert_eq!(code, 0, "{report:#}");
    let tls_step = report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "imap: TLS")
        .unwrap();
    assert!(
        tls_step["detail"]
            .as_str()
            .unwrap()
            .contains("certificate expires 20"),
        "{tls_step}"
    );
    let id = report["message_id"].as_str().unwrap().to_owned();

    let tls = mailgate_mail::TlsSettings::new(Some(rig.ca_cert())).unwrap();
    let token = f.env.ok(&["token", "support"], None).trim().to_owned();
    let open = || async {
        let timeout = std::time::Duration::from_secs(5);
        let addrs = resolve("localhost", rig.imaps_port(), timeout)
            .await
            .unwrap();
        let (mut conn, _) = Conn::connect("localhost", &addrs, timeout).await.unwrap();
        conn.start_tls(&tls).await.unwrap();
        let mut c = ImapClient::greet(conn).await.unwrap();
        c.capability().await.unwrap();
        let mech = c.oauth_mechanism().unwrap();
        c.authenticate(mech, &f.mailbox, &token, rig.imaps_port())
            .await
            .unwrap();
        c
    };
    let mut c = open().await;
    assert_eq!(c.select("INBOX").await.unwrap(), 1);
    let uids = c.search_message_id(&id).await.unwrap();
    assert_eq!(uids.len(), 1);
    let body = c.fetch(uids[0]).await.unwrap().unwrap();
    let body = String::from_utf8_lossy(&body);
    assert!(
        body.contains("Support Desk") && body.contains(&id),
        "{body}"
    );
    c.add_flags(uids[0], "\\Seen").await.unwrap();
    let flags = c
        .command(&format!("UID FETCH {} (FLAGS)", uids[0]))
        .await
        .unwrap();
    assert!(
        flags
            .untagged
            .iter()
            .any(|r| format!("{r:?}").contains("\\\\Seen")),
        "marked seen"
    );
    c.command("CREATE Processed").await.unwrap();
    c.move_to(uids[0], "Processed").await.unwrap();
    assert_eq!(
        c.select("INBOX").await.unwrap(),
        0,
        "moved out of the INBOX"
    );
    assert_eq!(c.select("Processed").await.unwrap(), 1);

    // IDLE in INBOX wakes up when a message is delivered.
    c.select("INBOX").await.unwrap();
    let idle = tokio::spawn(async move {
        let n = c.idle(std::time::Duration::from_secs(20)).await;
        (n, c)
    });
    let (code, report) = test_json(&f, &["--to", &f.mailbox.clone()]);
    assert_eq!(code, 0, "{report:#}");
    let (n, _c) = idle.await.unwrap();
    assert!(
        n.unwrap().is_some_and(|n| n >= 1),
        "IDLE reported the new message"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pop3_uidl_retr_and_dele_through_the_client() {
    use mailgate_mail::net::{Conn, resolve};
    use mailgate_mail::pop3::Pop3Client;
    let (f, rig) = on_rig().await;
    let pop3 = rig.pop3_port().to_string();
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--inbound",
            "pop3",
            "--inbound-host",
            "localhost",
            "--inbound-port",
            &pop3,
            "--inbound-tls",
            "starttls",
        ],
        None,
    );
    f.authorize().await;
    let (code, report) = test_json(&f, &[]);
    assert_eq!(code, 0, "{report:#}");
    assert!(
        report["steps"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["name"] == "pop3: STLS" && s["status"] == "ok")
    );
    let id = report["message_id"].as_str().unwrap().to_owned();

    let tls = mailgate_mail::TlsSettings::new(Some(rig.ca_cert())).unwrap();
    let token = f.env.ok(&["token", "support"], None).trim().to_owned();
    let open = || async {
        let timeout = std::time::Duration::from_secs(5);
        let addrs = resolve("localhost", rig.pop3_port(), timeout)
            .await
            .unwrap();
        let (conn, _) = Conn::connect("localhost", &addrs, timeout).await.unwrap();
        let mut c = Pop3Client::greet(conn).await.unwrap();
        c.capa().await.unwrap();
        c.stls(&tls).await.unwrap();
        c.capa().await.unwrap();
        let mech = c.oauth_mechanism().unwrap();
        c.authenticate(mech, &f.mailbox, &token, rig.pop3_port())
            .await
            .unwrap();
        c
    };
    let mut c = open().await;
    let uidl = c.uidl().await.unwrap();
    assert_eq!(uidl.len(), 1, "{uidl:?}");
    let message = c.retr(uidl[0].0).await.unwrap();
    let text: Vec<String> = message
        .iter()
        .map(|l| String::from_utf8_lossy(l).into_owned())
        .collect();
    assert!(text.iter().any(|l| l.contains(&id)), "{text:?}");
    c.dele(uidl[0].0).await.unwrap();
    c.quit().await;
    let mut c = open().await;
    assert_eq!(c.stat().await.unwrap().0, 0, "deleted at QUIT");
    c.quit().await;
}
