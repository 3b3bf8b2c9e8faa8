//! Shared mailboxes (issue 16): a delegate signs in for `support@`, mailgate opens the shared
//! mailbox with the delegate's token and sends as it. The rig models Exchange's permissions:
//! Dovecot opens a shared mailbox for a delegate only with FullAccess, and submission refuses
//! an envelope sender the delegate may not send as (SendAs), both granted at the emulator.

use crate::fixtures::{Fixture, PASSWORD};
use crate::mailtest::on_rig_with;
use crate::support::text;
use mailgate_testkit::idp::UserSpec;
use mailgate_testkit::rig::MailRig;
use serde_json::Value;
use std::time::Duration;

/// Registers the delegate `alice-…` with the given permissions on the fixture's mailbox and
/// names it as the account's delegate. Returns its address.
async fn with_delegate(f: &Fixture, full_access: bool, send_as: bool) -> String {
    let delegate = format!("alice-{}@example.test", &f.client_id[..8]);
    let grant = |on: bool| if on { vec![f.mailbox.clone()] } else { vec![] };
    f.idp
        .add_user(UserSpec {
            full_access: grant(full_access),
            send_as: grant(send_as),
            ..UserSpec::new(&delegate, PASSWORD)
        })
        .await
        .unwrap();
    f.env.ok(
        &["account", "update", "support", "--delegate", &delegate],
        None,
    );
    delegate
}

/// `mailgate test support --json`: (exit code, report).
fn test_json(f: &Fixture) -> (i32, Value) {
    test_account_json(f, "support")
}

fn test_account_json(f: &Fixture, account: &str) -> (i32, Value) {
    let out = f.env.run(
        &[
            "test",
            account,
            "--json",
            "--step-timeout",
            "5",
            "--find-within",
            "20",
        ],
        None,
    );
    let report: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    (out.status.code().unwrap_or(-1), report)
}

/// The step named `name`, else the first whose name starts with it (the send step names
/// its recipient).
fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    let steps = report["steps"].as_array().unwrap();
    steps
        .iter()
        .find(|s| s["name"] == name)
        .or_else(|| {
            steps
                .iter()
                .find(|s| s["name"].as_str().unwrap().starts_with(name))
        })
        .unwrap_or_else(|| panic!("no step {name:?}: {report:#}"))
}

/// Queues a message to the shared mailbox itself through the API; its outbox id.
async fn queue_message(f: &Fixture, subject: &str) -> i64 {
    queue_message_to(f, &f.mailbox, subject).await
}

/// Queues a message from the shared mailbox (account 1) to `to` through the API; its id.
async fn queue_message_to(f: &Fixture, to: &str, subject: &str) -> i64 {
    let token = api_send_token(f);
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"to": [to], "subject": subject, "text": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::ACCEPTED);
    resp.json::<Value>().await.unwrap()["id"].as_i64().unwrap()
}

fn api_send_token(f: &Fixture) -> String {
    // Token names are unique per instance.
    static MADE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = MADE.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let out = f.env.run(
        &[
            "api-token",
            "create",
            "--name",
            &format!("sender-{n}"),
            "--scope",
            "messages:send",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

/// Polls the outbox message until it is `wanted` (30 s at most); its JSON.
async fn wait_for_message(f: &Fixture, id: i64, wanted: &str) -> Value {
    let token = api_send_token(f);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let v: Value = reqwest::Client::new()
            .get(format!("{}/api/v1/messages/{id}", f.server.base))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if v["status"] == wanted {
            return v;
        }
        assert!(std::time::Instant::now() < deadline, "never {wanted}: {v}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// From and Sender of the message with `subject` in the shared mailbox's INBOX, once it
/// has been delivered (raw IMAP, polled for at most 20 s).
async fn headers_of(f: &Fixture, rig: &MailRig, subject: &str) -> String {
    headers_in(f, rig, "support", &f.mailbox, subject).await
}

/// A second rig mailbox, `carol-…@example.test`, with its own account `recipient` authorized
/// as itself (read-only): the recipient of outbox messages from the shared mailbox, so that
/// its headers are what another person receives. Returns its address.
async fn recipient_mailbox(f: &Fixture, rig: &MailRig) -> String {
    let carol = format!("carol-{}@example.test", &f.client_id[..8]);
    f.idp
        .add_user(UserSpec::new(&carol, PASSWORD))
        .await
        .unwrap();
    let imaps = rig.imaps_port().to_string();
    f.env.ok(
        &[
            "account",
            "add",
            "--name",
            "recipient",
            "--app",
            "Contoso",
            "--email",
            &carol,
            "--inbound-host",
            "localhost",
            "--inbound-port",
            &imaps,
            "--inbound-tls",
            "implicit",
            "--outbound",
            "none",
        ],
        None,
    );
    f.authorize_as("recipient", &carol).await;
    carol
}

/// From and Sender of the message with `subject` in `user`'s INBOX, logged in over raw IMAP
/// with the token of mailgate's `account`, once it has arrived (polled for at most 20 s).
async fn headers_in(
    f: &Fixture,
    rig: &MailRig,
    account: &str,
    user: &str,
    subject: &str,
) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let mut imap = raw_inbox(f, rig, account, user).await;
        let found = imap
            .imap_command("s1", &format!("SEARCH SUBJECT \"{subject}\""))
            .await
            .unwrap();
        let seq = found
            .iter()
            .find_map(|l| l.strip_prefix("* SEARCH "))
            .and_then(|l| l.split_whitespace().next().map(str::to_owned));
        if let Some(seq) = seq {
            let lines = imap
                .imap_command(
                    "s2",
                    &format!("FETCH {seq} (BODY.PEEK[HEADER.FIELDS (FROM SENDER)])"),
                )
                .await
                .unwrap();
            return lines.join("\n");
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{subject:?} never arrived"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// `user`'s INBOX over raw IMAP (not mailgate's client), with the token `mailgate token
/// ACCOUNT` prints.
async fn raw_inbox(
    f: &Fixture,
    rig: &MailRig,
    account: &str,
    user: &str,
) -> mailgate_testkit::raw::RawClient {
    use mailgate_testkit::raw::{RawClient, imap_status_is};
    let token = f.env.ok(&["token", account], None).trim().to_owned();
    let mut imap = RawClient::connect_tls(rig.host(), rig.imaps_port(), rig.tls_config().unwrap())
        .await
        .unwrap();
    imap.read_line().await.unwrap();
    let ir = mailgate_proto::sasl::xoauth2_initial_response(user, &token);
    let auth = imap
        .imap_command("r1", &format!("AUTHENTICATE XOAUTH2 {ir}"))
        .await
        .unwrap();
    assert!(imap_status_is(auth.last().unwrap(), "r1", "OK"), "{auth:?}");
    let selected = imap.imap_command("r2", "SELECT \"INBOX\"").await.unwrap();
    assert!(
        imap_status_is(selected.last().unwrap(), "r2", "OK"),
        "{selected:?}"
    );
    imap
}

/// The headers of the newest message in the shared mailbox's INBOX, over raw IMAP with the
/// delegate's token and `user=` the shared mailbox.
async fn newest_headers(f: &Fixture, rig: &MailRig) -> String {
    let mut imap = crate::support::raw_imap(f, rig, "INBOX").await;
    let lines = imap
        .imap_command("h1", "FETCH * (BODY.PEEK[HEADER.FIELDS (FROM SENDER)])")
        .await
        .unwrap();
    lines.join("\n")
}

fn assert_sasl_users(report: &Value, inbound: &str, mailbox: &str, delegate: &str) {
    let login = step(report, &format!("{inbound}: authenticate"));
    assert!(
        login["detail"]
            .as_str()
            .unwrap()
            .ends_with(&format!("as {mailbox}")),
        "{inbound} logs in with user= the shared mailbox: {report:#}"
    );
    let smtp = step(report, "smtp: authenticate");
    assert!(
        smtp["detail"]
            .as_str()
            .unwrap()
            .ends_with(&format!("as {delegate}")),
        "SMTP authenticates as the delegate: {report:#}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delegate_with_full_access_and_send_as_reads_and_sends_as_the_shared_mailbox() {
    let (f, rig) = on_rig_with(&[]).await;
    let delegate = with_delegate(&f, true, true).await;

    let shown = f.env.ok(&["account", "show", "support"], None);
    let access = format!("{} accessed as {delegate}", f.mailbox);
    assert!(shown.contains(&access), "{shown}");
    assert_eq!(f.state("support")["access"], access.as_str());

    let url = f.authorize_url("support");
    assert!(
        url.contains(&format!("login_hint={}", delegate.replace('@', "%40"))),
        "the delegate is asked to sign in: {url}"
    );
    f.authorize_as("support", &delegate).await;
    assert_eq!(f.state("support")["state"], "active");

    // IMAP: the whole round trip (send to the shared mailbox, find it there).
    let (code, report) = test_json(&f);
    assert_eq!(code, 0, "{report:#}");
    assert_sasl_users(&report, "imap", &f.mailbox, &delegate);
    let headers = newest_headers(&f, &rig).await;
    assert!(
        headers.contains(&format!("<{}>", f.mailbox)) && !headers.contains("Sender:"),
        "From is the shared mailbox (SendAs): {headers}"
    );

    // The outbox (its own SMTP path): sent as the shared mailbox, delivered to it.
    let id = queue_message(&f, "from the outbox").await;
    wait_for_message(&f, id, "sent").await;
    let headers = headers_of(&f, &rig, "from the outbox").await;
    assert!(
        headers.contains(&format!("From: \"Support Desk\" <{}>", f.mailbox)),
        "{headers}"
    );

    // What another person receives from the outbox: From the shared mailbox, no Sender.
    let carol = recipient_mailbox(&f, &rig).await;
    let id = queue_message_to(&f, &carol, "to carol as support").await;
    wait_for_message(&f, id, "sent").await;
    let headers = headers_in(&f, &rig, "recipient", &carol, "to carol as support").await;
    assert!(
        headers.contains(&format!("From: \"Support Desk\" <{}>", f.mailbox))
            && !headers.contains("Sender:")
            && !headers.contains(&delegate),
        "the recipient sees only the shared mailbox (SendAs): {headers}"
    );

    // POP3 on the same grant.
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
    let (code, report) = test_json(&f);
    assert_eq!(code, 0, "{report:#}");
    assert_sasl_users(&report, "pop3", &f.mailbox, &delegate);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_on_behalf_puts_the_delegate_in_sender_and_the_mailbox_in_from() {
    let (f, rig) = on_rig_with(&[]).await;
    let delegate = with_delegate(&f, true, true).await;
    f.env.ok(
        &["account", "update", "support", "--send-on-behalf", "true"],
        None,
    );
    f.authorize_as("support", &delegate).await;
    let (code, report) = test_json(&f);
    assert_eq!(code, 0, "{report:#}");
    let headers = newest_headers(&f, &rig).await;
    assert!(
        headers.contains(&format!("From: \"Support Desk\" <{}>", f.mailbox)),
        "{headers}"
    );
    assert!(
        headers.contains(&format!("Sender: <{delegate}>")),
        "{headers}"
    );

    // An outbox message to another mailbox: the recipient's copy names both.
    let carol = recipient_mailbox(&f, &rig).await;
    let id = queue_message_to(&f, &carol, "on behalf of support").await;
    wait_for_message(&f, id, "sent").await;
    let headers = headers_in(&f, &rig, "recipient", &carol, "on behalf of support").await;
    assert!(
        headers.contains(&format!("From: \"Support Desk\" <{}>", f.mailbox))
            && headers.contains(&format!("Sender: <{delegate}>")),
        "the recipient sees the shared mailbox in From and the delegate in Sender: {headers}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_full_access_test_configuration_stops_at_login_with_shared_mailbox_no_access() {
    let (f, _rig) = on_rig_with(&[]).await;
    let delegate = with_delegate(&f, false, true).await;
    f.authorize_as("support", &delegate).await;
    let (code, report) = test_json(&f);
    assert_eq!(code, 1, "{report:#}");
    let login = step(&report, "imap: authenticate");
    assert_eq!(login["status"], "failed", "{report:#}");
    assert_eq!(
        login["remediation"]["code"], "shared_mailbox_no_access",
        "{report:#}"
    );
    let sentence = login["remediation"]["text"].as_str().unwrap();
    assert!(
        sentence.contains("Add-MailboxPermission") && sentence.contains("FullAccess"),
        "{report:#}"
    );
    assert!(
        login["detail"].as_str().unwrap().contains(&delegate),
        "{report:#}"
    );
    // The delegate's own SMTP login and SendAs still work.
    assert_eq!(step(&report, "smtp: send test message")["status"], "ok");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_send_as_the_send_and_an_outbox_message_fail_at_once_with_send_as_denied() {
    let (f, rig) = on_rig_with(&[("MAILGATE_OUTBOX_RETRY_SECS", "1")]).await;
    assert!(
        rig.info().sender_login_map.is_some(),
        "this test needs a rig whose submission checks SendAs: the shared rig of scripts/test \
         (scripts/mail-rig start --sender-login-map, from the emulator's sender_login_map)"
    );
    let delegate = with_delegate(&f, true, false).await;
    f.authorize_as("support", &delegate).await;

    let (code, report) = test_json(&f);
    assert_eq!(code, 1, "{report:#}");
    assert_eq!(step(&report, "imap: authenticate")["status"], "ok");
    let send = step(&report, "smtp: send test message");
    assert_eq!(send["status"], "failed", "{report:#}");
    assert_eq!(send["remediation"]["code"], "send_as_denied", "{report:#}");
    let says = send["server_says"].as_str().unwrap();
    assert!(
        says.starts_with('5') && says.contains("SendAsDenied") && says.contains(&delegate),
        "the server's words: {report:#}"
    );

    // The outbox: failed after its first attempt, with the same remediation.
    let id = queue_message(&f, "as support").await;
    let failed = wait_for_message(&f, id, "failed").await;
    assert_eq!(failed["attempts"], 1, "a permanent refusal: {failed}");
    let error = failed["last_error"].as_str().unwrap();
    assert!(
        error.contains("[send_as_denied]") && error.contains("Add-RecipientPermission"),
        "{failed}"
    );
}

/// No rig: only the identity check at the callback.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_delegate_may_authorize_a_delegated_account_and_nothing_is_stored_otherwise() {
    let f = Fixture::start().await;
    let delegate = with_delegate(&f, true, true).await;
    let other = format!("mallory-{}@example.test", &f.client_id[..8]);
    f.idp
        .add_user(UserSpec::new(&other, PASSWORD))
        .await
        .unwrap();
    let before = f.env.dump_db().await;
    // The shared mailbox itself and a third user are both refused, with both names shown.
    for intruder in [f.mailbox.clone(), other] {
        let url = f.authorize_url("support");
        let (status, page) = f.sign_in_and_callback(&url, &intruder).await;
        assert_eq!(status, 403, "{page}");
        assert!(
            page.contains(&format!("You signed in as <strong>{intruder}</strong>"))
                && page.contains(&format!("this account is <strong>{delegate}</strong>")),
            "{page}"
        );
        assert_eq!(f.state("support")["state"], "unauthorized");
    }
    let grants = f.env.dump_db().await;
    assert!(
        grants.contains("== grants\n== "),
        "no grant row may exist: {grants}"
    );
    assert!(before.contains("== grants\n== "), "{before}");
    f.authorize_as("support", &delegate).await;
    assert_eq!(f.state("support")["state"], "active");
    // Another delegate must sign in itself: the previous one's grant is dropped.
    let bob = format!("bob-{}@example.test", &f.client_id[..8]);
    f.env
        .ok(&["account", "update", "support", "--delegate", &bob], None);
    let acc = f.state("support");
    assert_eq!(acc["state"], "unauthorized", "{acc}");
    assert!(
        acc["last_problem"]["remediation"]
            .as_str()
            .unwrap()
            .contains("delegate"),
        "{acc}"
    );
    assert!(
        f.env.dump_db().await.contains("== grants\n== "),
        "the grant is gone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mail_delivered_to_the_shared_mailbox_reaches_a_webhook() {
    use crate::webhooks::{Receiver, api_token, deliver, subscribe, wait_for_watching};
    let (f, rig) = on_rig_with(&[("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true")]).await;
    let delegate = with_delegate(&f, true, true).await;
    f.authorize_as("support", &delegate).await;
    let token = api_token(&f, "app", &["webhooks:write", "accounts:read"], &[]);
    let rx = Receiver::start(&[]).await;
    subscribe(&f, &token, &rx.url, &["message.received"], Some(1)).await;
    // The watcher logs in to the shared mailbox with the delegate's token.
    wait_for_watching(&f, &token, "").await;
    let subject = format!("for the help desk {}", &f.client_id[..8]);
    deliver(&rig, &f.mailbox, &subject, "delivered to support@").await;
    let hit = rx.wait_for(1, Duration::from_secs(30)).await.remove(0);
    assert_eq!(hit.json()["data"]["message"]["subject"], subject.as_str());
}

/// App-only (client credentials): the app's token opens the mailbox it was granted (the
/// emulator's `app_only_mailboxes`) and is refused for another, named `app_mailbox_not_granted`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn app_only_reads_a_granted_mailbox_and_names_the_missing_grant_for_another() {
    let (f, rig) = on_rig_with(&[]).await;
    f.add_app("Contoso app-only", "client_credentials");
    let imaps = rig.imaps_port().to_string();
    let other = format!("invoices-{}@example.test", &f.client_id[..8]);
    for (name, mailbox) in [("robot", f.mailbox.as_str()), ("invoices", other.as_str())] {
        f.env.ok(
            &[
                "account",
                "add",
                "--name",
                name,
                "--app",
                "Contoso app-only",
                "--email",
                mailbox,
                "--inbound-host",
                "localhost",
                "--inbound-port",
                &imaps,
                "--inbound-tls",
                "implicit",
                "--outbound",
                "none",
            ],
            None,
        );
        let out = f.env.ok(&["authorize", name], None);
        assert!(out.contains("is now active"), "{out}");
    }
    let (code, report) = test_account_json(&f, "robot");
    assert_eq!(code, 0, "{report:#}");
    let (code, report) = test_account_json(&f, "invoices");
    assert_eq!(code, 1, "{report:#}");
    let login = step(&report, "imap: authenticate");
    assert_eq!(login["status"], "failed", "{report:#}");
    assert_eq!(
        login["remediation"]["code"], "app_mailbox_not_granted",
        "{report:#}"
    );
    assert!(
        login["remediation"]["text"]
            .as_str()
            .unwrap()
            .contains("Add-MailboxPermission"),
        "{report:#}"
    );
}

/// No rig: the admin form and the API set the delegate, show "… accessed as …", and refuse
/// a delegate that is the mailbox itself, naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_form_and_the_api_set_the_delegate_and_show_who_accesses_the_mailbox() {
    const ADMIN_PASSWORD: &str = "an admin passphrase for the form";
    let f = Fixture::start().await;
    f.env.ok(
        &[
            "user",
            "add",
            "admin",
            "--role",
            "admin",
            "--password-stdin",
        ],
        Some(ADMIN_PASSWORD),
    );
    let ui = crate::support::Browser {
        http: &f.http,
        base: &f.server.base,
    };
    let admin = ui.sign_in("admin", ADMIN_PASSWORD).await;
    let csrf = ui.csrf(&admin).await;
    let (status, html) = ui.get("/admin/accounts/1/edit", &admin).await;
    assert_eq!(status, 200, "{html}");
    assert!(
        html.contains("name=\"delegate\"") && html.contains("name=\"send_on_behalf\""),
        "{html}"
    );
    let alice = format!("alice-{}@example.test", &f.client_id[..8]);
    let resp = ui
        .post(
            "/admin/accounts/1/edit",
            &admin,
            &[
                ("csrf", csrf.as_str()),
                ("name", "support"),
                ("app", "1"),
                ("email", f.mailbox.as_str()),
                ("delegate", alice.as_str()),
                ("send_on_behalf", "on"),
                ("enabled", "on"),
                ("inbound", "imap"),
                ("outbound", "smtp"),
                ("on_received", "none"),
            ],
        )
        .await;
    assert_eq!(resp.status(), reqwest::StatusCode::SEE_OTHER);
    let shown = f.state("support");
    assert_eq!(shown["delegate"], alice.as_str(), "{shown}");
    assert_eq!(shown["send_on_behalf"], true, "{shown}");
    let (_, page) = ui.get("/admin/accounts/1", &admin).await;
    assert!(
        page.contains(&format!(
            "<span id=\"account-access\">{} accessed as {alice}</span>",
            f.mailbox
        )) && page.contains(&format!("sign in as <strong>{alice}</strong>")),
        "{page}"
    );

    let token = {
        let out = f.env.run(
            &[
                "api-token",
                "create",
                "--name",
                "admin",
                "--scope",
                "accounts:read",
                "--scope",
                "accounts:write",
            ],
            None,
        );
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    let patch = |body: Value| {
        reqwest::Client::new()
            .patch(format!("{}/api/v1/accounts/1", f.server.base))
            .bearer_auth(&token)
            .json(&body)
            .send()
    };
    let bob = format!("bob-{}@example.test", &f.client_id[..8]);
    let resp = patch(serde_json::json!({ "delegate": bob, "send_on_behalf": false }))
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["access"],
        format!("{} accessed as {bob}", f.mailbox).as_str(),
        "{v}"
    );
    assert_eq!(v["send_on_behalf"], false, "{v}");
    let before = f.env.dump_db().await;
    let resp = patch(serde_json::json!({ "delegate": f.mailbox }))
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::UNPROCESSABLE_ENTITY);
    let problem = resp.text().await.unwrap();
    assert!(problem.contains("delegate"), "{problem}");
    assert_eq!(f.env.dump_db().await, before, "nothing stored");

    // Removing the delegate: the API, the form (an emptied field) and the CLI.
    let resp = patch(serde_json::json!({ "clear_delegate": true }))
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["delegate"], Value::Null, "{v}");
    assert_eq!(v["access"], f.mailbox.as_str(), "{v}");
    f.env.ok(
        &["account", "update", "support", "--delegate", &alice],
        None,
    );
    let form = |delegate: &'static str| {
        [
            ("csrf", csrf.clone()),
            ("name", "support".to_owned()),
            ("app", "1".to_owned()),
            ("email", f.mailbox.clone()),
            ("delegate", delegate.to_owned()),
            ("enabled", "on".to_owned()),
            ("inbound", "imap".to_owned()),
            ("outbound", "smtp".to_owned()),
            ("on_received", "none".to_owned()),
        ]
    };
    let fields = form("");
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let resp = ui.post("/admin/accounts/1/edit", &admin, &fields).await;
    assert_eq!(resp.status(), reqwest::StatusCode::SEE_OTHER);
    assert_eq!(f.state("support")["delegate"], Value::Null);
    f.env.ok(
        &["account", "update", "support", "--delegate", &alice],
        None,
    );
    f.env
        .ok(&["account", "update", "support", "--no-delegate"], None);
    let shown = f.state("support");
    assert_eq!(shown["delegate"], Value::Null, "{shown}");
    assert_eq!(shown["access"], f.mailbox.as_str(), "{shown}");
}
