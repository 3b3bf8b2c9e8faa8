//! The legacy proxy: proxy passwords, and password-only clients (Python's imaplib) logging
//! in to mailgate's IMAP listener and reaching the rig's real Dovecot through it.

use crate::fixtures::Fixture;
use crate::mailtest::point_at_rig;
use crate::proxy_fixture::{admin_dashboard, connect, imap_logged_in};
use crate::support::{TestEnv, db_contains, folder_subjects, text};
use mailgate_testkit::raw::{RawClient, imap_status_is};
use mailgate_testkit::rig::MailRig;
use std::process::Command;
use std::time::{Duration, Instant};

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

/// The fixture's account on the rig, authorized, with the IMAP proxy on a loopback port;
/// returns the proxy's address and the account's proxy password.
pub(crate) async fn proxied() -> (Fixture, MailRig, String, String) {
    proxied_with(&[("MAILGATE_PROXY_IMAP_LISTEN", "127.0.0.1:0")], "IMAP").await
}

/// [`proxied`] with `serve`'s settings in `env` (the listeners among them); returns the
/// address of the `protocol` listener and the account's proxy password.
pub(crate) async fn proxied_with(
    env: &[(&str, &str)],
    protocol: &str,
) -> (Fixture, MailRig, String, String) {
    let (f, rig) = Fixture::start_on_rig_with(env).await;
    point_at_rig(&f, &rig);
    f.authorize().await;
    let addr = proxy_addr(&f, protocol);
    let password = new_proxy_password(&f);
    (f, rig, addr, password)
}

/// Generates the fixture account's proxy password (`mailgate account proxy-password`).
pub(crate) fn new_proxy_password(f: &Fixture) -> String {
    f.env
        .ok(&["account", "proxy-password", "support"], None)
        .trim()
        .to_owned()
}

/// The shared rig's certificate chain and key (PEM paths), for the proxy's own TLS.
pub(crate) fn rig_certificate() -> (String, String) {
    let shared = MailRig::from_env()
        .unwrap()
        .expect("the tests run with a shared rig");
    let path = |name: &str| shared.dir().join(name).to_str().unwrap().to_owned();
    (path("tls/server-chain.pem"), path("tls/server.key"))
}

/// The address `serve` printed for the `protocol` proxy (a later stdout line).
pub(crate) fn proxy_addr(f: &Fixture, protocol: &str) -> String {
    let prefix = format!("{protocol} proxy listening on ");
    for line in std::iter::once(f.server.stdout_line.clone())
        .chain((0..10).map_while(|_| f.server.lines.recv_timeout(Duration::from_secs(10)).ok()))
    {
        if let Some(rest) = line.strip_prefix(&prefix) {
            return rest
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned();
        }
    }
    panic!("serve printed no {prefix:?} line");
}

/// Hands a message to the rig's Postfix (plain SMTP, no auth), which delivers it over LMTP,
/// then waits (bounded) until it is in the INBOX.
pub(crate) async fn deliver(f: &Fixture, rig: &MailRig, subject: &str, body: &str) {
    let mut smtp = RawClient::connect(rig.host(), rig.smtp_port())
        .await
        .unwrap();
    assert_eq!(smtp.read_smtp_reply().await.unwrap().code, 220);
    for (line, code) in [
        ("EHLO sender.test".to_owned(), 250),
        ("MAIL FROM:<ann@sender.test>".to_owned(), 250),
        (format!("RCPT TO:<{}>", f.mailbox), 250),
        ("DATA".to_owned(), 354),
    ] {
        let reply = smtp.smtp_command(&line).await.unwrap();
        assert_eq!(reply.code, code, "{line}: {reply:?}");
    }
    let message = format!(
        "From: Ann Sender <ann@sender.test>\r\nTo: {}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@sender.test>\r\n\r\n{body}\r\n.\r\n",
        f.mailbox
    );
    smtp.send_raw(message.as_bytes()).await.unwrap();
    assert_eq!(smtp.read_smtp_reply().await.unwrap().code, 250);
    let _ = smtp.smtp_command("QUIT").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !folder_subjects(f, rig, "INBOX")
        .await
        .iter()
        .any(|s| s == subject)
    {
        assert!(
            Instant::now() < deadline,
            "{subject} not delivered within 20 s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Python's imaplib, unmodified, through the proxy: LOGIN (or AUTHENTICATE PLAIN), then
/// SELECT INBOX and FETCH of the message with `subject`. Prints what happened, one fact a
/// line; a refused login prints `ERR <server's words>`.
const IMAPLIB: &str = r#"
import imaplib, os, ssl
host, port = os.environ["PROXY"].rsplit(":", 1)
if os.environ.get("TLS_CA"):
    m = imaplib.IMAP4_SSL(host, int(port), ssl_context=ssl.create_default_context(cafile=os.environ["TLS_CA"]))
else:
    m = imaplib.IMAP4(host, int(port))
print("GREETING", m.welcome.decode())
print("CAPS", " ".join(m.capabilities))
try:
    if os.environ.get("MECH") == "PLAIN":
        user, pw = os.environ["LOGIN"], os.environ["PW"]
        typ, data = m.authenticate("PLAIN", lambda _: ("\0" + user + "\0" + pw).encode())
    else:
        typ, data = m.login(os.environ["LOGIN"], os.environ["PW"])
except imaplib.IMAP4.error as e:
    print("ERR", e)
    raise SystemExit(0)
print("LOGIN", typ, data[0].decode())
typ, data = m.select("INBOX")
print("SELECT", typ, data[0].decode())
typ, data = m.search(None, "SUBJECT", '"%s"' % os.environ["SUBJECT"])
ids = data[0].split()
if ids:
    typ, data = m.fetch(ids[-1], "(RFC822)")
    print("FETCH", typ)
    print(data[0][1].decode())
m.logout()
print("LOGOUT")
"#;

fn imaplib(addr: &str, login: &str, password: &str, mech: &str, subject: &str) -> String {
    imaplib_with(addr, login, password, mech, subject, "")
}

/// Runs a Python client script with `env`; it must succeed. Its stdout.
pub(crate) fn python(script: &str, env: &[(&str, &str)]) -> String {
    let out = Command::new("python3")
        .args(["-c", script])
        .envs(env.iter().copied())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

pub(crate) fn imaplib_with(
    addr: &str,
    login: &str,
    password: &str,
    mech: &str,
    subject: &str,
    tls_ca: &str,
) -> String {
    python(
        IMAPLIB,
        &[
            ("TLS_CA", tls_ca),
            ("PROXY", addr),
            ("LOGIN", login),
            ("PW", password),
            ("MECH", mech),
            ("SUBJECT", subject),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imaplib_logs_in_with_the_proxy_password_and_reads_real_mail() {
    let (f, rig, addr, password) = proxied().await;
    deliver(&f, &rig, "proxy-read-1", "Hello through the proxy.").await;

    let out = imaplib(&addr, &f.mailbox, &password, "LOGIN", "proxy-read-1");
    assert!(
        out.contains("GREETING * OK [CAPABILITY IMAP4rev1 SASL-IR AUTH=PLAIN]"),
        "{out}"
    );
    // Before login the proxy offers its own mechanism, never the upstream's XOAUTH2.
    assert!(!out.contains("XOAUTH2"), "{out}");
    // After login the client gets Dovecot's own capabilities in the tagged OK.
    let login = out
        .lines()
        .find(|l| l.starts_with("LOGIN "))
        .unwrap_or_default();
    assert!(
        login
            .to_ascii_uppercase()
            .starts_with("LOGIN OK [CAPABILITY IMAP4REV1"),
        "{out}"
    );
    assert!(login.contains("IDLE") && !login.contains("AUTH="), "{out}");
    assert!(out.contains("SELECT OK"), "{out}");
    assert!(out.contains("Subject: proxy-read-1"), "{out}");
    assert!(out.contains("Hello through the proxy."), "{out}");
    assert!(out.contains("LOGOUT"), "{out}");

    // AUTHENTICATE PLAIN (imaplib waits for the continuation), with the account's name.
    let out = imaplib(&addr, "support", &password, "PLAIN", "proxy-read-1");
    assert!(out.contains("Hello through the proxy."), "{out}");

    // The client's password never reaches the mail server: Dovecot saw XOAUTH2 only.
    let rig_log = std::fs::read_to_string(rig.dir().join("log/dovecot.log")).unwrap();
    assert!(rig_log.contains("method=XOAUTH2"), "{rig_log}");
    assert!(
        !rig_log.contains(&password),
        "the proxy password reached Dovecot"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_or_another_accounts_password_is_refused_and_counted() {
    let (f, rig, addr, password) = proxied().await;
    deliver(&f, &rig, "proxy-private-1", "Only for support.").await;
    let other_mailbox = format!("other-{}", f.mailbox);
    f.env.ok(
        &[
            "account",
            "add",
            "--name",
            "other",
            "--app",
            "Contoso",
            "--email",
            &other_mailbox,
        ],
        None,
    );
    let other_password = f
        .env
        .ok(&["account", "proxy-password", "other"], None)
        .trim()
        .to_owned();

    let wrong = imaplib(&addr, &f.mailbox, "not-the-password", "LOGIN", "x");
    assert!(
        wrong.contains("ERR") && wrong.contains("[AUTHENTICATIONFAILED]"),
        "{wrong}"
    );
    // Another account's valid password does not open this mailbox, under either login.
    for login in [f.mailbox.as_str(), "support"] {
        let out = imaplib(&addr, login, &other_password, "LOGIN", "proxy-private-1");
        assert!(out.contains("[AUTHENTICATIONFAILED]"), "{out}");
        assert!(out.contains("wrong_proxy_password"), "{out}");
        assert!(!out.contains("Only for support."), "{out}");
    }
    // The other account's own login: a good password, but it was never authorized; the
    // refusal names what to do.
    let out = imaplib(&addr, &other_mailbox, &other_password, "LOGIN", "x");
    assert!(
        out.contains("[AUTHENTICATIONFAILED]") && out.contains("not_authorized"),
        "{out}"
    );

    let events = f.env.ok(&["events", "--limit", "200"], None);
    let refused = events.matches("proxy.login_failed").count();
    assert_eq!(refused, 4, "{events}");
    assert!(
        !events.contains(&other_password) && !events.contains(&password),
        "{events}"
    );
    // Regenerating the password makes the old one useless at once.
    f.env.ok(&["account", "proxy-password", "support"], None);
    let out = imaplib(&addr, &f.mailbox, &password, "LOGIN", "x");
    assert!(out.contains("[AUTHENTICATIONFAILED]"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revoked_grant_gives_a_clear_refusal_then_refuses_without_the_provider() {
    let (f, _rig, addr, password) = proxied().await;
    f.idp.revoke_user(&f.mailbox).await.unwrap();
    // The stored token still looks valid: Dovecot refuses it, the forced refresh finds the
    // grant revoked, and the account needs re-authorization.
    let out = imaplib(&addr, &f.mailbox, &password, "LOGIN", "x");
    assert!(
        out.contains("[AUTHENTICATIONFAILED]") && out.contains("grant_revoked"),
        "{out}"
    );
    assert_eq!(f.state("support")["state"], "reauth_required");
    let refreshes = f.counter("token:refresh_token").await;
    let out = imaplib(&addr, &f.mailbox, &password, "LOGIN", "x");
    assert!(
        out.contains("[AUTHENTICATIONFAILED]") && out.contains("grant_revoked"),
        "{out}"
    );
    assert_eq!(
        f.counter("token:refresh_token").await,
        refreshes,
        "an account in reauth_required is refused without a call to the provider"
    );
}

/// Python's smtplib, unmodified, through the proxy: EHLO, AUTH (PLAIN with an initial
/// response, or LOGIN answering both prompts), then a real message to the account's own
/// mailbox. Prints `SENT`, or `ERR <code> <server's words>`.
const SMTPLIB: &str = r#"
import os, smtplib
from email.message import EmailMessage
host, port = os.environ["PROXY"].rsplit(":", 1)
s = smtplib.SMTP(host, int(port), timeout=30)
code, ehlo = s.ehlo("client.test")
print("EHLO", code, ehlo.decode().replace("\n", " | "))
try:
    if os.environ["MECH"] == "LOGIN":
        s.user, s.password = os.environ["LOGIN"], os.environ["PW"]
        code, text = s.auth("LOGIN", s.auth_login, initial_response_ok=False)
    else:
        code, text = s.login(os.environ["LOGIN"], os.environ["PW"])
    print("AUTH", code, text.decode())
except smtplib.SMTPAuthenticationError as e:
    print("ERR", e.smtp_code, e.smtp_error.decode())
    raise SystemExit(0)
m = EmailMessage()
m["From"] = os.environ["TO"]
m["To"] = os.environ["TO"]
m["Subject"] = os.environ["SUBJECT"]
m.set_content("Sent by a password-only client through mailgate.")
s.send_message(m)
s.quit()
print("SENT")
"#;

fn smtplib(addr: &str, login: &str, password: &str, mech: &str, to: &str, subject: &str) -> String {
    python(
        SMTPLIB,
        &[
            ("PROXY", addr),
            ("LOGIN", login),
            ("PW", password),
            ("MECH", mech),
            ("TO", to),
            ("SUBJECT", subject),
        ],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtplib_sends_real_mail_through_the_proxy() {
    let (f, rig, addr, password) =
        proxied_with(&[("MAILGATE_PROXY_SMTP_LISTEN", "127.0.0.1:0")], "SMTP").await;

    let out = smtplib(
        &addr,
        &f.mailbox,
        &password,
        "PLAIN",
        &f.mailbox,
        "proxy-sent-plain",
    );
    // The proxy offers its own mechanisms, never the upstream's XOAUTH2.
    assert!(
        out.contains("EHLO 250") && out.contains("AUTH PLAIN LOGIN"),
        "{out}"
    );
    assert!(!out.contains("XOAUTH2"), "{out}");
    assert!(out.contains("AUTH 235") && out.contains("SENT"), "{out}");
    let out = smtplib(
        &addr,
        "support",
        &password,
        "LOGIN",
        &f.mailbox,
        "proxy-sent-login",
    );
    assert!(out.contains("AUTH 235") && out.contains("SENT"), "{out}");

    // Both arrive in the mailbox (checked over raw IMAP, not through the proxy).
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let subjects = folder_subjects(&f, &rig, "INBOX").await;
        if ["proxy-sent-plain", "proxy-sent-login"]
            .iter()
            .all(|s| subjects.iter().any(|got| got == s))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered within 20 s: {subjects:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let out = smtplib(&addr, &f.mailbox, "wrong", "PLAIN", &f.mailbox, "never");
    assert!(
        out.contains("ERR 535") && out.contains("wrong_proxy_password"),
        "{out}"
    );
    let rig_log = std::fs::read_to_string(rig.dir().join("log/dovecot.log")).unwrap();
    assert!(
        !rig_log.contains(&password),
        "the proxy password reached Dovecot"
    );
}

/// Python's poplib, unmodified, through the proxy: USER/PASS (or AUTH PLAIN by hand, as
/// poplib has no helper for it), STAT, RETR of the newest message.
const POPLIB: &str = r#"
import base64, os, poplib
host, port = os.environ["PROXY"].rsplit(":", 1)
p = poplib.POP3(host, int(port), timeout=30)
print("GREETING", p.getwelcome().decode())
print("CAPA", sorted(p.capa().keys()))
try:
    if os.environ["MECH"] == "PLAIN":
        ir = base64.b64encode(("\0" + os.environ["LOGIN"] + "\0" + os.environ["PW"]).encode()).decode()
        print("AUTH", p._shortcmd("AUTH PLAIN " + ir).decode())
    else:
        p.user(os.environ["LOGIN"])
        print("PASS", p.pass_(os.environ["PW"]).decode())
except poplib.error_proto as e:
    print("ERR", e.args[0].decode())
    raise SystemExit(0)
count, size = p.stat()
print("STAT", count)
resp, lines, octets = p.retr(count)
print("\n".join(l.decode() for l in lines))
p.quit()
print("QUIT")
"#;

fn poplib(addr: &str, login: &str, password: &str, mech: &str) -> String {
    python(
        POPLIB,
        &[
            ("PROXY", addr),
            ("LOGIN", login),
            ("PW", password),
            ("MECH", mech),
        ],
    )
}

/// The fixture's account reads the rig's POP3 (implicit TLS) instead of IMAP.
pub(crate) fn inbound_pop3_on_rig(f: &Fixture, rig: &MailRig) {
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
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poplib_reads_real_mail_through_the_proxy() {
    let (f, rig) =
        Fixture::start_on_rig_with(&[("MAILGATE_PROXY_POP3_LISTEN", "127.0.0.1:0")]).await;
    point_at_rig(&f, &rig);
    inbound_pop3_on_rig(&f, &rig);
    f.authorize().await;
    let addr = proxy_addr(&f, "POP3");
    let password = new_proxy_password(&f);
    deliver(&f, &rig, "proxy-pop-1", "Hello over POP3.").await;

    let out = poplib(&addr, &f.mailbox, &password, "USER");
    assert!(
        out.contains("GREETING +OK mailgate POP3 proxy ready"),
        "{out}"
    );
    assert!(out.contains("'SASL'") && !out.contains("XOAUTH2"), "{out}");
    assert!(out.contains("PASS +OK"), "{out}");
    assert!(
        out.contains("Subject: proxy-pop-1") && out.contains("Hello over POP3."),
        "{out}"
    );
    assert!(out.contains("QUIT"), "{out}");
    let out = poplib(&addr, "support", &password, "PLAIN");
    assert!(
        out.contains("AUTH +OK") && out.contains("Hello over POP3."),
        "{out}"
    );

    let out = poplib(&addr, &f.mailbox, "wrong", "USER");
    assert!(
        out.contains("ERR -ERR [AUTH]") && out.contains("wrong_proxy_password"),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn regenerating_the_proxy_password_ends_open_sessions() {
    let (f, _rig, addr, password) = proxied().await;
    let mut imap = imap_logged_in(&f, &addr, &password).await;
    let selected = imap.imap_command("a2", "SELECT INBOX").await.unwrap();
    assert!(
        imap_status_is(selected.last().unwrap(), "a2", "OK"),
        "{selected:?}"
    );

    f.env.ok(&["account", "proxy-password", "support"], None);
    // The server checks every 2 s; the client then reads the end of the connection.
    let ended = tokio::time::timeout(Duration::from_secs(15), imap.read_line()).await;
    match ended {
        Ok(Err(e)) if format!("{e:#}").contains("closed the connection") => {}
        other => panic!("the session stayed open: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_failed_logins_from_one_source_are_throttled() {
    let (f, _rig, addr, password) = proxied().await;
    let (host, port) = addr.rsplit_once(':').unwrap();
    let port: u16 = port.parse().unwrap();
    // Three failures per connection (then the proxy closes it), ten in all.
    let mut failures = 0;
    for _ in 0..4 {
        let mut imap = RawClient::connect(host, port).await.unwrap();
        imap.read_line().await.unwrap();
        for _ in 0..3 {
            if failures == 10 {
                break;
            }
            let tag = format!("w{failures}");
            let reply = imap
                .imap_command(
                    &tag,
                    &format!("LOGIN guess-{failures}@example.test \"wrong\""),
                )
                .await
                .unwrap();
            assert!(
                reply.last().unwrap().contains("[AUTHENTICATIONFAILED]"),
                "{reply:?}"
            );
            failures += 1;
        }
    }
    // Now even the right password is refused from this address, without being checked.
    let mut imap = RawClient::connect(host, port).await.unwrap();
    imap.read_line().await.unwrap();
    let reply = imap
        .imap_command("r1", &format!("LOGIN {} \"{password}\"", f.mailbox))
        .await
        .unwrap();
    let last = reply.last().unwrap();
    assert!(
        last.starts_with("r1 NO [UNAVAILABLE]") && last.contains("proxy_login_throttled"),
        "{reply:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_drops_the_session_closes_the_client() {
    let (f, rig, addr, password) = proxied().await;
    let mut imap = imap_logged_in(&f, &addr, &password).await;
    imap.imap_command("a2", "SELECT INBOX").await.unwrap();
    // As Exchange does when the token inside the session expires.
    rig.kick(&f.mailbox).unwrap();
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        assert!(
            Instant::now() < deadline,
            "still open after the kick: {seen:?}"
        );
        match tokio::time::timeout(Duration::from_secs(15), imap.read_line()).await {
            Ok(Ok(line)) => seen.push(line),
            Ok(Err(e)) => {
                assert!(format!("{e:#}").contains("closed the connection"), "{e:#}");
                break;
            }
            Err(_) => panic!("no close within 15 s: {seen:?}"),
        }
    }
    // The server's own farewell reaches the client before the close.
    assert!(seen.iter().any(|l| l.starts_with("* BYE")), "{seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listeners_speak_implicit_tls_with_the_configured_certificate() {
    let (chain, key) = rig_certificate();
    let (f, rig, addr, password) = proxied_with(
        &[
            ("MAILGATE_PROXY_IMAP_LISTEN", "127.0.0.1:0"),
            ("MAILGATE_PROXY_TLS_CERT_FILE", &chain),
            ("MAILGATE_PROXY_TLS_KEY_FILE", &key),
        ],
        "IMAP",
    )
    .await;
    deliver(&f, &rig, "proxy-tls-1", "Hello over TLS.").await;
    let ca = rig.ca_cert().to_str().unwrap().to_owned();
    let out = imaplib_with(&addr, &f.mailbox, &password, "LOGIN", "proxy-tls-1", &ca);
    assert!(out.contains("Hello over TLS."), "{out}");
    // The administrators' dashboard says which listeners are on, and where.
    let dashboard = admin_dashboard(&f).await;
    assert!(
        dashboard.contains(&format!("Legacy proxy: <code>IMAP on {addr} (TLS)</code>")),
        "{dashboard}"
    );
    // A plain-text client gets no greeting: the listener expects a TLS handshake.
    let mut plain = connect(&addr).await;
    plain.send_line("a1 CAPABILITY").await.unwrap();
    // (rustls may answer with a TLS alert before closing: anything but IMAP.)
    if let Ok(line) = plain.read_line().await {
        assert!(
            !line.contains("OK") && !line.contains("CAPABILITY"),
            "{line:?}"
        );
    }
}

#[test]
fn a_plain_listener_off_loopback_is_refused_at_start() {
    let env = TestEnv::new();
    let mut serve = env
        .command()
        .arg("serve")
        .env("MAILGATE_LISTEN", "127.0.0.1:0")
        .env("MAILGATE_PROXY_IMAP_LISTEN", "0.0.0.0:0")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = serve.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = serve.kill();
            panic!("serve kept running with a plain proxy listener on 0.0.0.0");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut serve.stderr.take().unwrap(), &mut stderr).unwrap();
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("proxy_imap_listen") && stderr.contains("proxy_allow_plain"),
        "{stderr}"
    );
}

/// Reads until the proxy closes the connection (bounded); the lines seen before.
async fn until_closed(client: &mut RawClient, within: Duration) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, client.read_line()).await {
            Ok(Ok(line)) => seen.push(line),
            Ok(Err(e)) => {
                assert!(format!("{e:#}").contains("closed the connection"), "{e:#}");
                return seen;
            }
            Err(_) => panic!("still open after {within:?}: {seen:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_clients_are_closed_before_and_after_login() {
    let (f, _rig, addr, password) = proxied_with(
        &[
            ("MAILGATE_PROXY_IMAP_LISTEN", "127.0.0.1:0"),
            ("MAILGATE_PROXY_LOGIN_TIMEOUT_SECS", "1"),
            ("MAILGATE_PROXY_IDLE_TIMEOUT_SECS", "2"),
        ],
        "IMAP",
    )
    .await;
    let (host, port) = addr.rsplit_once(':').unwrap();
    let port: u16 = port.parse().unwrap();

    // Connected, never logged in: closed after the login timeout, with a BYE.
    let opened = Instant::now();
    let mut silent = RawClient::connect(host, port).await.unwrap();
    let seen = until_closed(&mut silent, Duration::from_secs(10)).await;
    assert!(opened.elapsed() >= Duration::from_secs(1), "{seen:?}");
    assert!(
        seen.iter()
            .any(|l| l.starts_with("* BYE") && l.contains("login timeout")),
        "{seen:?}"
    );

    // Logged in, then quiet: closed after the idle timeout; talking keeps it open.
    let mut imap = imap_logged_in(&f, &addr, &password).await;
    let logged_in = Instant::now();
    for n in 0..3 {
        let tag = format!("n{n}");
        let noop = imap.imap_command(&tag, "NOOP").await.unwrap();
        assert!(imap_status_is(noop.last().unwrap(), &tag, "OK"), "{noop:?}");
        // A pause shorter than the idle timeout is what is under test, not a wait for a
        // condition.
        tokio::time::sleep(Duration::from_millis(900)).await;
    }
    assert!(
        logged_in.elapsed() > Duration::from_secs(2),
        "activity kept it open past 2 s"
    );
    until_closed(&mut imap, Duration::from_secs(10)).await;
}

fn curl(args: &[&str]) -> String {
    let out = Command::new("curl")
        .args(["--silent", "--show-error", "--max-time", "30"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "curl {args:?}: {}\n{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_reads_and_sends_through_the_proxy() {
    let (f, rig) = Fixture::start_on_rig_with(&[
        ("MAILGATE_PROXY_IMAP_LISTEN", "127.0.0.1:0"),
        ("MAILGATE_PROXY_SMTP_LISTEN", "127.0.0.1:0"),
    ])
    .await;
    point_at_rig(&f, &rig);
    f.authorize().await;
    let imap = proxy_addr(&f, "IMAP");
    let smtp = proxy_addr(&f, "SMTP");
    let password = new_proxy_password(&f);
    let user = format!("{}:{password}", f.mailbox);

    let message = f.env.dir.path().join("curl-message.eml");
    std::fs::write(
        &message,
        format!(
            "From: {0}\r\nTo: {0}\r\nSubject: proxy-curl-1\r\n\r\nSent by curl through mailgate.\r\n",
            f.mailbox
        ),
    )
    .unwrap();
    curl(&[
        &format!("smtp://{smtp}"),
        "--mail-from",
        &f.mailbox,
        "--mail-rcpt",
        &f.mailbox,
        "--upload-file",
        message.to_str().unwrap(),
        "--user",
        &user,
    ]);

    // Delivered through Postfix and LMTP: wait for it, then read it with curl.
    let deadline = Instant::now() + Duration::from_secs(20);
    let index = loop {
        let found = curl(&[
            &format!("imap://{imap}/INBOX?SUBJECT%20proxy-curl-1"),
            "--user",
            &user,
        ]);
        let number = found
            .lines()
            .find_map(|l| l.strip_prefix("* SEARCH "))
            .and_then(|n| n.split_whitespace().last().map(str::to_owned));
        if let Some(number) = number {
            break number;
        }
        assert!(
            Instant::now() < deadline,
            "not delivered within 20 s: {found}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let body = curl(&[
        &format!("imap://{imap}/INBOX;MAILINDEX={index}"),
        "--user",
        &user,
    ]);
    assert!(body.contains("Sent by curl through mailgate."), "{body}");

    let wrong = Command::new("curl")
        .args([
            "--silent",
            "--max-time",
            "30",
            &format!("imap://{imap}/INBOX"),
            "--user",
        ])
        .arg(format!("{}:wrong", f.mailbox))
        .output()
        .unwrap();
    // 67: "the user name, password, or similar was not accepted".
    assert_eq!(wrong.status.code(), Some(67), "{}", text(&wrong.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_account_has_at_most_its_share_of_sessions() {
    let (f, _rig, addr, password) = proxied_with(
        &[
            ("MAILGATE_PROXY_IMAP_LISTEN", "127.0.0.1:0"),
            ("MAILGATE_PROXY_MAX_SESSIONS_PER_ACCOUNT", "1"),
        ],
        "IMAP",
    )
    .await;
    let (host, port) = addr.rsplit_once(':').unwrap();
    let port: u16 = port.parse().unwrap();
    let login = format!("LOGIN {} \"{password}\"", f.mailbox);

    let mut first = RawClient::connect(host, port).await.unwrap();
    first.read_line().await.unwrap();
    let reply = first.imap_command("a1", &login).await.unwrap();
    assert!(
        imap_status_is(reply.last().unwrap(), "a1", "OK"),
        "{reply:?}"
    );

    let mut second = RawClient::connect(host, port).await.unwrap();
    second.read_line().await.unwrap();
    let reply = second.imap_command("b1", &login).await.unwrap();
    let last = reply.last().unwrap();
    assert!(
        last.starts_with("b1 NO [UNAVAILABLE]") && last.contains("too_many_proxy_sessions"),
        "{reply:?}"
    );

    // Once the first session has ended, the place is free again.
    first.imap_command("a2", "LOGOUT").await.unwrap();
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut tries = 0;
    loop {
        tries += 1;
        let tag = format!("c{tries}");
        let reply = second.imap_command(&tag, &login).await.unwrap();
        if imap_status_is(reply.last().unwrap(), &tag, "OK") {
            break;
        }
        assert!(
            Instant::now() < deadline && tries < 3,
            "still refused: {reply:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn administrators_generate_the_proxy_password_on_the_account_page() {
    let (f, rig, addr, old_password) = proxied().await;
    deliver(
        &f,
        &rig,
        "proxy-ui-1",
        "Opened with a password from the admin page.",
    )
    .await;
    for (user, role) in [("ada", "admin"), ("olga", "operator")] {
        f.env.ok(
            &["user", "add", user, "--role", role, "--password-stdin"],
            Some("a long passphrase for the ui\n"),
        );
    }
    let browser = crate::support::Browser {
        http: &f.http,
        base: &f.server.base,
    };
    let ada = browser.sign_in("ada", "a long passphrase for the ui").await;
    let (_, account_page) = browser.get("/admin/accounts/1", &ada).await;
    assert!(
        account_page.contains("id=\"proxy-password\""),
        "{account_page}"
    );
    let csrf = browser.csrf(&ada).await;
    let resp = browser
        .post("/admin/accounts/1/proxy-password", &ada, &[("csrf", &csrf)])
        .await;
    assert_eq!(resp.status(), 200);
    let shown = resp.text().await.unwrap();
    let password = crate::support::input_value(&shown, "id", "proxy-password-value");
    assert_eq!(password.len(), 32, "{shown}");
    assert!(shown.contains("shown-once"), "{shown}");

    // The shown password opens the mailbox; the one it replaced no longer does.
    let out = imaplib(&addr, &f.mailbox, &password, "LOGIN", "proxy-ui-1");
    assert!(
        out.contains("Opened with a password from the admin page."),
        "{out}"
    );
    let out = imaplib(&addr, &f.mailbox, &old_password, "LOGIN", "x");
    assert!(out.contains("[AUTHENTICATIONFAILED]"), "{out}");

    // Operators see no button and are refused the form.
    let olga = browser
        .sign_in("olga", "a long passphrase for the ui")
        .await;
    let (_, account_page) = browser.get("/admin/accounts/1", &olga).await;
    assert!(
        !account_page.contains("id=\"proxy-password\""),
        "{account_page}"
    );
    let csrf = browser.csrf(&olga).await;
    let resp = browser
        .post(
            "/admin/accounts/1/proxy-password",
            &olga,
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(resp.status(), 403);
    let out = imaplib(&addr, &f.mailbox, &password, "LOGIN", "proxy-ui-1");
    assert!(
        out.contains("LOGIN OK"),
        "the operator's attempt changed nothing: {out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_and_malformed_commands_get_protocol_errors_and_the_proxy_runs_on() {
    let (f, _rig, addr, password) = proxied().await;
    let (host, port) = addr.rsplit_once(':').unwrap();
    let port: u16 = port.parse().unwrap();

    let mut imap = RawClient::connect(host, port).await.unwrap();
    imap.read_line().await.unwrap();
    for (tag, line, expected) in [
        ("m1", "LOGIN {5}", "m1 BAD literals are not accepted"),
        (
            "m2",
            "LOGIN \"unclosed",
            "m2 BAD a quoted string is not closed",
        ),
        ("m3", "SELECT INBOX", "m3 BAD SELECT needs a login first"),
        ("m4", "AUTHENTICATE XOAUTH2 abc", "m4 NO [CANNOT]"),
    ] {
        let reply = imap.imap_command(tag, line).await.unwrap();
        assert!(
            reply.last().unwrap().starts_with(expected),
            "{line}: {reply:?}"
        );
    }
    // 10 KB without a line end: refused as soon as the 8 KiB cap is passed, then closed.
    imap.send_raw(&vec![b'a'; 10 * 1024]).await.unwrap();
    let seen = until_closed(&mut imap, Duration::from_secs(10)).await;
    assert!(
        seen.iter()
            .any(|l| l.starts_with("* BYE") && l.contains("longer than")),
        "{seen:?}"
    );

    // The listener still serves the next client.
    let out = imaplib(&addr, &f.mailbox, &password, "LOGIN", "none");
    assert!(out.contains("LOGIN OK"), "{out}");
}
