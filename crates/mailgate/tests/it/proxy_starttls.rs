//! The legacy proxy's transport edges: STARTTLS offered to IMAP clients (logins only after
//! it, nothing pipelined across it), and an upstream that drops in the middle of a large
//! FETCH closing the client cleanly (no hang, bounded).

use crate::mailtest::point_at_rig;
use crate::proxy::{
    deliver, inbound_pop3_on_rig, new_proxy_password, proxied, proxied_with, python,
    rig_certificate,
};
use crate::proxy_fixture::{admin_dashboard, connect, imap_logged_in};
use mailgate_testkit::raw::{RawClient, imap_status_is};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A loopback TCP relay to `target` that forwards both ways (TLS passes through untouched)
/// and cuts each connection once `cut_after` bytes have gone from the server to mailgate.
/// Returns its port and how many server bytes it forwarded in all.
async fn cutting_relay(target: (String, u16), cut_after: usize) -> (u16, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let forwarded = Arc::new(AtomicUsize::new(0));
    let counter = forwarded.clone();
    tokio::spawn(async move {
        while let Ok((downstream, _)) = listener.accept().await {
            let upstream = TcpStream::connect((target.0.as_str(), target.1))
                .await
                .unwrap();
            let counter = counter.clone();
            tokio::spawn(async move {
                let (mut down_read, mut down_write) = downstream.into_split();
                let (mut up_read, mut up_write) = upstream.into_split();
                let to_server = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut down_read, &mut up_write).await;
                });
                let mut sent = 0usize;
                let mut buf = vec![0u8; 16 * 1024];
                while sent < cut_after {
                    let n = match up_read.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n.min(cut_after - sent),
                    };
                    if down_write.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                    counter.fetch_add(n, Ordering::Relaxed);
                }
                // Both halves dropped: mailgate sees the server's connection end mid-stream.
                to_server.abort();
            });
        }
    });
    (port, forwarded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_cut_in_the_middle_of_a_large_fetch_closes_the_client() {
    let (f, rig, addr, password) = proxied().await;
    // 2 MB of text: far more than the relay lets through.
    let body = "x".repeat(76) + "\r\n";
    let body = body.repeat(2 * 1024 * 1024 / 78);
    deliver(&f, &rig, "proxy-cut-1", &body).await;
    const CUT_AFTER: usize = 256 * 1024;
    let (relay_port, forwarded) =
        cutting_relay(("127.0.0.1".into(), rig.imaps_port()), CUT_AFTER).await;
    point_at_rig(&f, &rig);
    f.env.ok(
        &[
            "account",
            "update",
            "support",
            "--inbound-port",
            &relay_port.to_string(),
        ],
        None,
    );

    let mut imap = imap_logged_in(&f, &addr, &password).await;
    imap.set_timeout(Duration::from_secs(20));
    let select = imap.imap_command("a2", "SELECT INBOX").await.unwrap();
    assert!(
        imap_status_is(select.last().unwrap(), "a2", "OK"),
        "{select:?}"
    );
    imap.send_line("a3 FETCH 1:* BODY.PEEK[]").await.unwrap();
    // The client must see the end within a bounded time, never a completed FETCH.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(30);
    let mut lines = 0usize;
    let mut saw_body = false;
    let closed = loop {
        assert!(
            Instant::now() < deadline,
            "still open 30 s after the cut ({lines} lines)"
        );
        match imap.read_line().await {
            Ok(line) => {
                assert!(
                    !imap_status_is(&line, "a3", "OK"),
                    "the FETCH completed although the upstream was cut: {line}"
                );
                saw_body |= line.starts_with("xxxx");
                lines += 1;
                assert!(lines < 100_000, "unbounded output after the cut");
            }
            Err(e) => break format!("{e:#}"),
        }
    };
    assert!(closed.contains("closed the connection"), "{closed}");
    assert!(
        saw_body,
        "the cut came before the message started: {lines} lines"
    );
    let forwarded = forwarded.load(Ordering::Relaxed);
    assert!(forwarded <= CUT_AFTER, "{forwarded}");
    eprintln!(
        "cut after {forwarded} upstream bytes; client saw {lines} lines, closed {} ms after the FETCH",
        started.elapsed().as_millis()
    );
    // The proxy runs on: a new session logs in through the real server.
    point_at_rig(&f, &rig);
    imap_logged_in(&f, &addr, &password).await;
}

/// The fixture's account on the rig with the IMAP proxy on a loopback port offering
/// STARTTLS with the rig's certificate; returns the proxy's address and the password.
async fn starttls_proxied() -> (
    crate::fixtures::Fixture,
    mailgate_testkit::rig::MailRig,
    String,
    String,
) {
    let (chain, key) = rig_certificate();
    proxied_with(
        &[
            ("MAILGATE_PROXY_IMAP_LISTEN", "127.0.0.1:0"),
            ("MAILGATE_PROXY_TLS_CERT_FILE", &chain),
            ("MAILGATE_PROXY_TLS_KEY_FILE", &key),
            ("MAILGATE_PROXY_IMAP_STARTTLS", "true"),
        ],
        "IMAP",
    )
    .await
}

/// Python's imaplib, unmodified: `starttls()` with the rig's CA, LOGIN, SELECT, FETCH.
const IMAPLIB_STARTTLS: &str = r#"
import imaplib, os, ssl
host, port = os.environ["PROXY"].rsplit(":", 1)
m = imaplib.IMAP4(host, int(port))
print("CAPS", " ".join(m.capabilities))
print("STARTTLS", m.starttls(ssl_context=ssl.create_default_context(cafile=os.environ["TLS_CA"]))[0])
print("CAPS-TLS", " ".join(m.capabilities))
typ, data = m.login(os.environ["LOGIN"], os.environ["PW"])
print("LOGIN", typ)
m.select("INBOX")
typ, data = m.search(None, "SUBJECT", '"%s"' % os.environ["SUBJECT"])
typ, data = m.fetch(data[0].split()[-1], "(RFC822)")
print(data[0][1].decode())
m.logout()
print("LOGOUT")
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn imap_starttls_is_offered_and_logins_wait_for_the_upgrade() {
    let (f, rig, addr, password) = starttls_proxied().await;
    deliver(&f, &rig, "proxy-starttls-1", "Hello after STARTTLS.").await;
    let tls = rig.tls_config().unwrap();
    let (host, port) = addr.rsplit_once(':').unwrap();

    // Before the upgrade: STARTTLS and LOGINDISABLED, no mechanism, and LOGIN refused.
    let mut imap = RawClient::connect(host, port.parse().unwrap())
        .await
        .unwrap();
    let greeting = imap.read_line().await.unwrap();
    assert!(
        greeting.contains("STARTTLS") && greeting.contains("LOGINDISABLED"),
        "{greeting}"
    );
    assert!(!greeting.contains("AUTH="), "{greeting}");
    let refused = imap
        .imap_command("a1", &format!("LOGIN {} \"{password}\"", f.mailbox))
        .await
        .unwrap();
    assert!(
        imap_status_is(refused.last().unwrap(), "a1", "NO")
            && refused.last().unwrap().contains("PRIVACYREQUIRED"),
        "{refused:?}"
    );
    let refused = imap
        .imap_command("a1b", "AUTHENTICATE PLAIN AGZvbwBiYXI=")
        .await
        .unwrap();
    assert!(
        imap_status_is(refused.last().unwrap(), "a1b", "NO"),
        "{refused:?}"
    );

    // A LOGIN pipelined after STARTTLS in the same packet is discarded, not run over TLS.
    imap.send_raw(format!("a2 STARTTLS\r\na3 LOGIN {} \"{password}\"\r\n", f.mailbox).as_bytes())
        .await
        .unwrap();
    let ok = imap.read_line().await.unwrap();
    assert!(imap_status_is(&ok, "a2", "OK"), "{ok}");
    imap.upgrade_tls(tls.clone()).await.unwrap();
    let caps = imap.imap_command("a4", "CAPABILITY").await.unwrap();
    assert!(
        caps.iter().all(|l| !l.starts_with("a3 ")),
        "the pipelined LOGIN was run: {caps:?}"
    );
    assert!(
        caps[0].contains("AUTH=PLAIN") && !caps[0].contains("LOGINDISABLED"),
        "{caps:?}"
    );
    let again = imap.imap_command("a5", "STARTTLS").await.unwrap();
    assert!(
        imap_status_is(again.last().unwrap(), "a5", "BAD"),
        "{again:?}"
    );
    let login = imap
        .imap_command("a6", &format!("LOGIN {} \"{password}\"", f.mailbox))
        .await
        .unwrap();
    assert!(
        imap_status_is(login.last().unwrap(), "a6", "OK"),
        "{login:?}"
    );

    // Python's imaplib with starttls().
    let ca = rig.ca_cert().to_str().unwrap().to_owned();
    let text = python(
        IMAPLIB_STARTTLS,
        &[
            ("TLS_CA", &ca),
            ("PROXY", &addr),
            ("LOGIN", &f.mailbox),
            ("PW", &password),
            ("SUBJECT", "proxy-starttls-1"),
        ],
    );
    assert!(
        text.contains("LOGINDISABLED") && text.contains("STARTTLS OK"),
        "{text}"
    );
    assert!(
        text.contains("LOGIN OK") && text.contains("Hello after STARTTLS."),
        "{text}"
    );

    // curl, which must not fall back to plain text.
    let out = std::process::Command::new("curl")
        .args([
            "--silent",
            "--show-error",
            "--max-time",
            "20",
            "--ssl-reqd",
            "--cacert",
            &ca,
            "--user",
            &format!("{}:{password}", f.mailbox),
            &format!("imap://localhost:{port}/INBOX;UID=1"),
        ])
        .output()
        .unwrap();
    let body = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(body.contains("Hello after STARTTLS."), "{body}");

    // The administrators' dashboard says how the listener speaks.
    let dashboard = admin_dashboard(&f).await;
    assert!(
        dashboard.contains(&format!("IMAP on {addr} (STARTTLS)")),
        "{dashboard}"
    );
}

/// Python's smtplib and poplib, unmodified: `starttls()` / `stls()` with the rig's CA, then
/// a login with the proxy password; sends one message, then lists the mailbox over POP3.
const PY_STARTTLS: &str = r#"
import os, poplib, smtplib, ssl
from email.message import EmailMessage
ctx = ssl.create_default_context(cafile=os.environ["TLS_CA"])
host, port = os.environ["SMTP"].rsplit(":", 1)
s = smtplib.SMTP(host, int(port), timeout=30)
s.ehlo("client.test")
print("EHLO-PLAIN", s.esmtp_features)
print("STARTTLS", s.starttls(context=ctx)[0])
s.ehlo("client.test")
print("EHLO-TLS", s.esmtp_features)
print("AUTH", s.login(os.environ["LOGIN"], os.environ["PW"])[0])
m = EmailMessage()
m["From"] = os.environ["LOGIN"]
m["To"] = os.environ["LOGIN"]
m["Subject"] = os.environ["SUBJECT"]
m.set_content("Sent after STARTTLS.")
s.send_message(m)
s.quit()
print("SENT")
host, port = os.environ["POP3"].rsplit(":", 1)
p = poplib.POP3(host, int(port), timeout=30)
print("CAPA-PLAIN", sorted(p.capa()))
print("STLS", p.stls(context=ctx).decode())
print("CAPA-TLS", sorted(p.capa()))
p.user(os.environ["LOGIN"])
print("PASS", p.pass_(os.environ["PW"]).decode())
print("STAT", p.stat())
p.quit()
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_and_pop3_starttls_are_offered_and_logins_wait_for_the_upgrade() {
    let (chain, key) = rig_certificate();
    let (f, rig) = crate::fixtures::Fixture::start_on_rig_with(&[
        ("MAILGATE_PROXY_SMTP_LISTEN", "127.0.0.1:0"),
        ("MAILGATE_PROXY_POP3_LISTEN", "127.0.0.1:0"),
        ("MAILGATE_PROXY_TLS_CERT_FILE", &chain),
        ("MAILGATE_PROXY_TLS_KEY_FILE", &key),
        ("MAILGATE_PROXY_SMTP_STARTTLS", "true"),
        ("MAILGATE_PROXY_POP3_STARTTLS", "true"),
    ])
    .await;
    point_at_rig(&f, &rig);
    inbound_pop3_on_rig(&f, &rig);
    f.authorize().await;
    // serve prints the SMTP listener before the POP3 one.
    let smtp_addr = crate::proxy::proxy_addr(&f, "SMTP");
    let pop3_addr = crate::proxy::proxy_addr(&f, "POP3");
    let password = new_proxy_password(&f);
    let tls = rig.tls_config().unwrap();

    // SMTP before the upgrade: STARTTLS offered, no AUTH, AUTH refused; an AUTH pipelined
    // after STARTTLS in the same packet is dropped.
    let mut smtp = connect(&smtp_addr).await;
    assert_eq!(smtp.read_smtp_reply().await.unwrap().code, 220);
    let ehlo = smtp.smtp_command("EHLO client.test").await.unwrap();
    assert!(
        ehlo.text().contains("STARTTLS") && !ehlo.text().contains("AUTH"),
        "{ehlo:?}"
    );
    let plain = {
        use base64::Engine as _;
        base64::engine::general_purpose::STANDARD.encode(format!("\0{}\0{password}", f.mailbox))
    };
    let refused = smtp
        .smtp_command(&format!("AUTH PLAIN {plain}"))
        .await
        .unwrap();
    assert_eq!(refused.code, 530, "{refused:?}");
    smtp.send_raw(format!("STARTTLS\r\nAUTH PLAIN {plain}\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(smtp.read_smtp_reply().await.unwrap().code, 220);
    smtp.upgrade_tls(tls.clone()).await.unwrap();
    // The first reply over TLS answers this EHLO, not the pipelined AUTH (no 235).
    let ehlo = smtp.smtp_command("EHLO client.test").await.unwrap();
    assert_eq!(ehlo.code, 250, "the pipelined AUTH was run: {ehlo:?}");
    assert!(
        ehlo.text().contains("AUTH PLAIN LOGIN") && !ehlo.text().contains("STARTTLS"),
        "{ehlo:?}"
    );

    // POP3 before STLS: no USER/SASL in CAPA, USER refused.
    let mut pop3 = connect(&pop3_addr).await;
    assert!(pop3.read_line().await.unwrap().starts_with("+OK"));
    pop3.send_line(&format!("USER {}", f.mailbox))
        .await
        .unwrap();
    let refused = pop3.read_line().await.unwrap();
    assert!(
        refused.starts_with("-ERR") && refused.contains("STLS"),
        "{refused}"
    );
    pop3.send_raw(format!("STLS\r\nUSER {}\r\nPASS {password}\r\n", f.mailbox).as_bytes())
        .await
        .unwrap();
    assert!(pop3.read_line().await.unwrap().starts_with("+OK"));
    pop3.upgrade_tls(tls).await.unwrap();
    pop3.send_line("NOOP").await.unwrap();
    let first = pop3.read_line().await.unwrap();
    assert!(
        first.starts_with("-ERR") && first.contains("NOOP"),
        "the pipelined USER/PASS was run: {first}"
    );

    // Python's smtplib and poplib with starttls() / stls().
    let text = python(
        PY_STARTTLS,
        &[
            ("TLS_CA", rig.ca_cert().to_str().unwrap()),
            ("SMTP", &smtp_addr),
            ("POP3", &pop3_addr),
            ("LOGIN", &f.mailbox),
            ("PW", &password),
            ("SUBJECT", "proxy-starttls-sent"),
        ],
    );
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_default()
            .to_owned()
    };
    assert!(
        line("EHLO-PLAIN ").contains("starttls") && !line("EHLO-PLAIN ").contains("auth"),
        "{text}"
    );
    assert!(line("EHLO-TLS ").contains("PLAIN LOGIN"), "{text}");
    assert!(
        line("AUTH ").contains("235") && text.contains("SENT"),
        "{text}"
    );
    assert!(
        line("CAPA-PLAIN ").contains("STLS") && !line("CAPA-PLAIN ").contains("USER"),
        "{text}"
    );
    assert!(line("CAPA-TLS ").contains("USER"), "{text}");
    assert!(line("PASS ").starts_with("PASS +OK"), "{text}");
    assert!(line("STAT ").starts_with("STAT ("), "{text}");
}
