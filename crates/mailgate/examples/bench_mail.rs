//! How fast does mail go through mailgate, compared with talking to the mail server
//! directly? Run with `cargo run --release -p mailgate --example bench_mail` (as root: it
//! starts a private mail rig; see docs/benchmarks.md and docs/testing.md).
//!
//! Everything is measured in the same run against baselines that do not use mailgate's own
//! mail code (raw protocol lines over `mailgate_testkit::raw::RawClient`):
//! - send: the same messages submitted directly to the rig's submission port, one
//!   XOAUTH2 session each, with the token `mailgate token` prints;
//! - receive: a raw IMAP session asking `STATUS INBOX (MESSAGES)` every 20 ms, i.e. how soon
//!   the mail server itself shows a message Postfix has accepted; and a raw IMAP session in
//!   IDLE, i.e. when the server tells an IDLE client (Dovecot waits 500 ms after a change
//!   before it does: `NOTIFY_DELAY_MSECS` in its `mailbox-watch.c`).
//!
//! With `-- --throughput` it measures only the outbox's throughput (issue 15): 500 messages
//! to one account against one direct session, and 500 over 10 accounts with one session at
//! a time against the parallel senders; then 200 over the same 10 accounts with their
//! submission 20 ms of round trip away (a delaying relay, as a provider on the internet is).
//!
//! With `-- --watchers N` (issue 15's scale run) it watches N mailboxes over IMAP IDLE from
//! one `serve`, on a rig configured for N sessions (`--max-imap-sessions`), and reports
//! `serve`'s memory per watcher, its CPU while they sit idle, and the database's commits
//! per second meanwhile (lease renewals among them).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;
use common::{Owned, mailgate_exe, spawn_serve};

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use base64::Engine as _;
use mailgate_testkit::idp::{ClientSpec, Idp, IdpConfig, UserSpec, sign_in};
use mailgate_testkit::raw::{RawClient, imap_status_is};
use mailgate_testkit::rig::{MailRig, RigOptions};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "00000000-0000-4000-8000-00000000be4d";
const SECRET: &str = "bench-client-secret-value";
const PASSWORD: &str = "bench-password";
/// The account's mailbox: it sends, and it is the watched inbox.
const MAILBOX: &str = "bench@example.test";
/// Where sent messages go (delivered by the rig like any local address), so that the
/// watched inbox only receives the receive rounds.
const SINK: &str = "bench-sink@example.test";
/// Where `--throughput` sends: a domain the rig's Postfix discards (`default_transport =
/// discard`). Submission, Postfix's queue and mailgate work as for any message, but no
/// mailbox grows by a thousand messages: Dovecot's LMTP delivery into one ever larger
/// maildir took a quarter of the two cores, competed with both sides, and ran on into the
/// next block after the direct side's last `250`.
const DISCARDED: &str = "bench-sink@discarded.test";
static RECIPIENT: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// The benchmark messages' recipient: [`SINK`], or [`DISCARDED`] under `--throughput`.
fn recipient() -> &'static str {
    RECIPIENT.get().copied().unwrap_or(SINK)
}

/// Messages per send measurement.
const SEND_COUNT: usize = 100;
/// The send measurements alternate in this many blocks.
const SEND_BLOCKS: usize = 4;
/// POSTs in flight at once.
const IN_FLIGHT: usize = 16;
/// Rounds per receive measurement.
const RECEIVE_ROUNDS: usize = 15;
/// How often the raw IMAP baseline asks, and how often the API is polled for `sent`.
const POLL_EVERY: Duration = Duration::from_millis(20);
/// A pause between receive rounds, so each message meets an idle watcher (or poller).
const BETWEEN_ROUNDS: Duration = Duration::from_millis(300);
/// Upper bound for any one wait: a message to show up, a webhook to arrive.
const WAIT_LIMIT: Duration = Duration::from_secs(30);
/// Upper bound for the whole send through the API.
const SEND_LIMIT: Duration = Duration::from_secs(300);

/// The environment every mailgate command and the server run with.
struct Env {
    exe: PathBuf,
    data: PathBuf,
    public_url: String,
    ca_file: PathBuf,
}

impl Env {
    fn command(&self) -> Command {
        let mut c = Command::new(&self.exe);
        for (k, _) in std::env::vars() {
            if k.starts_with("MAILGATE_") {
                c.env_remove(k);
            }
        }
        c.env("MAILGATE_DATA_DIR", &self.data)
            .env("MAILGATE_PUBLIC_URL", &self.public_url)
            .env("MAILGATE_EXTRA_CA_FILE", &self.ca_file)
            .env("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true")
            .env("MAILGATE_IDP_ALLOW_PRIVATE", "true")
            .env_remove("RUST_LOG");
        c
    }

    /// Runs `mailgate args…` to success; returns its stdout.
    fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        use std::io::Write;
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            pipe.write_all(s.as_bytes()).unwrap();
        }
        drop(pipe);
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "mailgate {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

/// The `mailgate serve` this benchmark started, ended when dropped (`common::Owned`).
struct Serve(Owned);

impl Serve {
    fn start(env: &Env, listen: &str, log: &Path, extra: &[(&str, &str)]) -> Serve {
        let mut command = env.command();
        command
            .env("MAILGATE_LISTEN", listen)
            .envs(extra.iter().copied());
        let (serve, lines) = spawn_serve(command, log);
        let line = lines
            .recv_timeout(WAIT_LIMIT)
            .expect("mailgate serve printed no listening line");
        assert!(line.contains("listening on"), "{line}");
        Serve(serve)
    }
}

/// One POST the webhook receiver got, and when.
#[derive(Clone)]
struct Hit {
    at: Instant,
    headers: HeaderMap,
    body: Vec<u8>,
}

#[derive(Clone, Default)]
struct Hits {
    list: Arc<Mutex<Vec<Hit>>>,
    arrived: Arc<tokio::sync::Notify>,
}

async fn receive(
    State(hits): State<Hits>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> StatusCode {
    hits.list.lock().unwrap().push(Hit {
        at: Instant::now(),
        headers,
        body: body.to_vec(),
    });
    hits.arrived.notify_waiters();
    StatusCode::OK
}

impl Hits {
    /// A receiver on a loopback port; returns its URL.
    async fn serve(&self) -> String {
        let app = axum::Router::new()
            .route("/hook", axum::routing::post(receive))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    /// Waits (at most `WAIT_LIMIT`) for the `message.received` hit about `subject`.
    async fn wait_for(&self, subject: &str) -> Hit {
        let deadline = Instant::now() + WAIT_LIMIT;
        loop {
            let notified = self.arrived.notified();
            let found = self
                .list
                .lock()
                .unwrap()
                .iter()
                .find(|h| {
                    serde_json::from_slice::<Value>(&h.body).is_ok_and(|v| {
                        v["type"] == "message.received"
                            && v["data"]["message"]["subject"] == subject
                    })
                })
                .cloned();
            if let Some(hit) = found {
                return hit;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero(),
                "no webhook for {subject:?} within {WAIT_LIMIT:?}"
            );
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

/// Checks `X-Mailgate-Signature` (`t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`).
fn assert_signed(hit: &Hit, secret: &str) {
    let header = hit
        .headers
        .get("x-mailgate-signature")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (t, v1) = header
        .split_once(',')
        .and_then(|(t, v)| Some((t.strip_prefix("t=")?, v.strip_prefix("v1=")?)))
        .unwrap_or_else(|| panic!("signature header {header:?}"));
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(&hit.body);
    assert!(
        ring::hmac::verify(&key, &signed, &hex::decode(v1).unwrap()).is_ok(),
        "the webhook signature verifies"
    );
}

/// A plain-text message as a small application would write it.
fn message(from: &str, to: &str, subject: &str, message_id: &str) -> String {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\nDate: Mon, 23 Nov 2026 12:00:00 +0000\r\n\
         Message-ID: <{message_id}>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\
         A benchmark message.\r\n"
    )
}

async fn expect(smtp: &mut RawClient, line: &str, code: u16) {
    let reply = smtp.smtp_command(line).await.unwrap();
    assert_eq!(reply.code, code, "{line}: {reply}");
}

/// The baseline sender: one session to the submission port (STARTTLS, `AUTH XOAUTH2` in the
/// two-line form that long tokens need), one message, `QUIT`.
async fn submit_directly(rig: &MailRig, token: &str, subject: &str, message_id: &str) {
    let tls = rig.tls_config().unwrap();
    let mut smtp = RawClient::connect(rig.host(), rig.submission_port())
        .await
        .unwrap();
    assert_eq!(smtp.read_smtp_reply().await.unwrap().code, 220);
    expect(&mut smtp, "EHLO bench.test", 250).await;
    smtp.smtp_starttls(tls).await.unwrap();
    expect(&mut smtp, "EHLO bench.test", 250).await;
    expect(&mut smtp, "AUTH XOAUTH2", 334).await;
    let initial = base64::engine::general_purpose::STANDARD
        .encode(format!("user={MAILBOX}\x01auth=Bearer {token}\x01\x01"));
    expect(&mut smtp, &initial, 235).await;
    expect(&mut smtp, &format!("MAIL FROM:<{MAILBOX}>"), 250).await;
    expect(&mut smtp, &format!("RCPT TO:<{}>", recipient()), 250).await;
    expect(&mut smtp, "DATA", 354).await;
    let body = message(MAILBOX, recipient(), subject, message_id);
    smtp.send_raw(format!("{body}.\r\n").as_bytes())
        .await
        .unwrap();
    let done = smtp.read_smtp_reply().await.unwrap();
    assert_eq!(done.code, 250, "{done}");
    let _ = smtp.smtp_command("QUIT").await;
}

/// Hands a message to the rig's Postfix (plain SMTP, no auth), as mail from the internet
/// arrives; returns the moment Postfix answered `250` to the data.
async fn deliver(rig: &MailRig, subject: &str, message_id: &str) -> Instant {
    let mut smtp = RawClient::connect(rig.host(), rig.smtp_port())
        .await
        .unwrap();
    assert_eq!(smtp.read_smtp_reply().await.unwrap().code, 220);
    expect(&mut smtp, "EHLO sender.test", 250).await;
    expect(&mut smtp, "MAIL FROM:<ann@sender.test>", 250).await;
    expect(&mut smtp, &format!("RCPT TO:<{MAILBOX}>"), 250).await;
    expect(&mut smtp, "DATA", 354).await;
    let body = message("ann@sender.test", MAILBOX, subject, message_id);
    smtp.send_raw(format!("{body}.\r\n").as_bytes())
        .await
        .unwrap();
    let done = smtp.read_smtp_reply().await.unwrap();
    let accepted = Instant::now();
    assert_eq!(done.code, 250, "{done}");
    let _ = smtp.smtp_command("QUIT").await;
    accepted
}

/// A raw IMAP session (implicit TLS, XOAUTH2) in the authenticated state.
async fn raw_imap(rig: &MailRig, token: &str) -> RawClient {
    let mut imap = RawClient::connect_tls(rig.host(), rig.imaps_port(), rig.tls_config().unwrap())
        .await
        .unwrap();
    imap.read_line().await.unwrap();
    let initial = base64::engine::general_purpose::STANDARD
        .encode(format!("user={MAILBOX}\x01auth=Bearer {token}\x01\x01"));
    let auth = imap
        .imap_command("a1", &format!("AUTHENTICATE XOAUTH2 {initial}"))
        .await
        .unwrap();
    assert!(imap_status_is(auth.last().unwrap(), "a1", "OK"), "{auth:?}");
    imap
}

/// `STATUS INBOX (MESSAGES)`: how many messages the server shows now.
async fn inbox_count(imap: &mut RawClient, tag: &str) -> u64 {
    let lines = imap
        .imap_command(tag, "STATUS INBOX (MESSAGES)")
        .await
        .unwrap();
    assert!(
        imap_status_is(lines.last().unwrap(), tag, "OK"),
        "{lines:?}"
    );
    lines
        .iter()
        .find_map(|l| {
            let rest = l.strip_prefix("* STATUS ")?;
            let n = rest.split("MESSAGES ").nth(1)?;
            n.trim_end_matches(')')
                .split([' ', ')'])
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no MESSAGES in {lines:?}"))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The value below which `p` percent of `v` lie (nearest rank).
fn percentile(v: &[Duration], p: usize) -> Duration {
    let mut v = v.to_vec();
    v.sort();
    let rank = (v.len() * p).div_ceil(100).max(1);
    v[rank - 1]
}

/// Asks the API for each message until every one is `sent` (in id order, so a pass stops at
/// the first one still queued); returns when the last was seen sent.
async fn wait_until_sent(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    ids: &[i64],
    deadline: Instant,
) -> Instant {
    let mut pending: Vec<i64> = ids.to_vec();
    pending.sort();
    let max_polls = (SEND_LIMIT.as_millis() / POLL_EVERY.as_millis()) as usize + ids.len();
    for _ in 0..max_polls {
        while let Some(&id) = pending.first() {
            let v: Value = http
                .get(format!("{base}/api/v1/messages/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            assert_ne!(v["status"], "failed", "{v}");
            if v["status"] != "sent" {
                break;
            }
            pending.remove(0);
        }
        if pending.is_empty() {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{} messages not sent within {SEND_LIMIT:?}",
            pending.len()
        );
        tokio::time::sleep(POLL_EVERY).await;
    }
    panic!(
        "{} messages not sent after {max_polls} polls",
        pending.len()
    );
}

/// `POST /api/v1/accounts/{account}/messages`; returns the outbox id and how long the 202 took.
async fn post_message(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    account: i64,
    subject: &str,
) -> (i64, Duration) {
    let started = Instant::now();
    let resp = http
        .post(format!("{base}/api/v1/accounts/{account}/messages"))
        .bearer_auth(token)
        .json(&json!({ "to": [recipient()], "subject": subject, "text": "A benchmark message." }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let v: Value = resp.json().await.unwrap();
    let took = started.elapsed();
    assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{v}");
    (v["id"].as_i64().unwrap(), took)
}

/// The baseline: messages `numbers` submitted one after another, one session each.
async fn send_directly(
    rig: &MailRig,
    token: &str,
    numbers: std::ops::Range<usize>,
    run_id: u128,
) -> Duration {
    let started = Instant::now();
    for n in numbers {
        submit_directly(
            rig,
            token,
            &format!("direct {n} of {SEND_COUNT}"),
            &format!("direct-{n}-{run_id}@bench.test"),
        )
        .await;
    }
    started.elapsed()
}

struct ApiTimes {
    /// From the first POST until every message is `sent`.
    all_sent: Duration,
    /// From the first POST until the last `202`.
    all_accepted: Duration,
    /// Each POST's own time.
    answers: Vec<Duration>,
}

/// Messages `numbers` posted to the API, `IN_FLIGHT` at a time, then waited for until sent;
/// message `n` goes to `accounts[n % accounts.len()]`.
async fn send_through_api(
    http: &reqwest::Client,
    base: &str,
    token: &str,
    accounts: &[i64],
    numbers: std::ops::Range<usize>,
) -> ApiTimes {
    let limit = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut posts = tokio::task::JoinSet::new();
    let started = Instant::now();
    for n in numbers {
        let (http, base, token, limit) = (
            http.clone(),
            base.to_owned(),
            token.to_owned(),
            limit.clone(),
        );
        let account = accounts[n % accounts.len()];
        posts.spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            post_message(&http, &base, &token, account, &format!("api {n}")).await
        });
    }
    let mut ids = Vec::new();
    let mut answers = Vec::new();
    while let Some(done) = posts.join_next().await {
        let (id, took) = done.unwrap();
        ids.push(id);
        answers.push(took);
    }
    let all_accepted = started.elapsed();
    let all_sent = wait_until_sent(http, base, token, &ids, started + SEND_LIMIT).await;
    ApiTimes {
        all_sent: all_sent - started,
        all_accepted,
        answers,
    }
}

/// Messages per throughput measurement (`--throughput`, issue 15), in two blocks per side.
const THROUGHPUT_COUNT: usize = 500;
/// Accounts the parallel throughput measurement sends from.
const THROUGHPUT_ACCOUNTS: usize = 10;
/// The added delay each way of the "far" parallel measurement: 20 ms of round trip, about
/// what a client in the same region sees to Exchange Online or Gmail.
const LATENCY_ONE_WAY: Duration = Duration::from_millis(10);
/// Messages of the "far" measurement (fewer: one session at a time sends ~10 a second).
const LATENCY_COUNT: usize = 200;

/// What the throughput measurement works with.
struct Bench<'a> {
    env: &'a Env,
    rig: &'a MailRig,
    admin: &'a mailgate_testkit::idp::IdpAdmin,
    http: &'a reqwest::Client,
    base: &'a str,
    listen: String,
    logs: &'a Path,
    api_token: &'a str,
    access_token: &'a str,
    run_id: u128,
}

/// The throughput baseline: messages `numbers` over one session (STARTTLS and AUTH once,
/// then MAIL FROM, RCPT TO and DATA per message, QUIT at the end): what the mail server
/// allows one client.
async fn send_directly_one_session(
    rig: &MailRig,
    token: &str,
    numbers: std::ops::Range<usize>,
    run_id: u128,
) -> Duration {
    let started = Instant::now();
    let tls = rig.tls_config().unwrap();
    let mut smtp = RawClient::connect(rig.host(), rig.submission_port())
        .await
        .unwrap();
    assert_eq!(smtp.read_smtp_reply().await.unwrap().code, 220);
    expect(&mut smtp, "EHLO bench.test", 250).await;
    smtp.smtp_starttls(tls).await.unwrap();
    expect(&mut smtp, "EHLO bench.test", 250).await;
    expect(&mut smtp, "AUTH XOAUTH2", 334).await;
    let initial = base64::engine::general_purpose::STANDARD
        .encode(format!("user={MAILBOX}\x01auth=Bearer {token}\x01\x01"));
    expect(&mut smtp, &initial, 235).await;
    for n in numbers {
        expect(&mut smtp, &format!("MAIL FROM:<{MAILBOX}>"), 250).await;
        expect(&mut smtp, &format!("RCPT TO:<{}>", recipient()), 250).await;
        expect(&mut smtp, "DATA", 354).await;
        let body = message(
            MAILBOX,
            recipient(),
            &format!("session {n}"),
            &format!("session-{n}-{run_id}@bench.test"),
        );
        smtp.send_raw(format!("{body}.\r\n").as_bytes())
            .await
            .unwrap();
        let done = smtp.read_smtp_reply().await.unwrap();
        assert_eq!(done.code, 250, "{done}");
    }
    let _ = smtp.smtp_command("QUIT").await;
    started.elapsed()
}

/// The one-account lines of `--throughput`.
fn print_one_account(direct: Duration, api: Duration) {
    let per_sec = |d: Duration| THROUGHPUT_COUNT as f64 / d.as_secs_f64();
    println!(
        "throughput: {THROUGHPUT_COUNT} messages to one account, 2 alternating blocks per side (release build, 2 cores)"
    );
    println!(
        "  directly, one SMTP session per block (baseline)  {:>7.2} s  {:>6.1} msg/s",
        direct.as_secs_f64(),
        per_sec(direct)
    );
    println!(
        "  through the API, {IN_FLIGHT} in flight, until all sent {:>7.2} s  {:>6.1} msg/s  = {:.0} % of baseline throughput",
        api.as_secs_f64(),
        per_sec(api),
        100.0 * direct.as_secs_f64() / api.as_secs_f64()
    );
}

/// `--throughput` (issue 15): 500 messages to one account through the API against the
/// same over one direct SMTP session; then 500 messages spread over 10 accounts with the
/// outbox sending one session at a time (`outbox_concurrency = 1`) against its default
/// (8 in parallel, one per account). Both in alternating blocks (ABBA).
async fn throughput(b: &Bench<'_>, serve: Serve) {
    submit_directly(
        b.rig,
        b.access_token,
        "warm-up direct",
        &format!("warm-{}@bench.test", b.run_id),
    )
    .await;
    let (id, _) = post_message(b.http, b.base, b.api_token, 1, "warm-up api").await;
    wait_until_sent(
        b.http,
        b.base,
        b.api_token,
        &[id],
        Instant::now() + WAIT_LIMIT,
    )
    .await;
    let half = THROUGHPUT_COUNT / 2;
    let (mut direct, mut api) = (Duration::ZERO, Duration::ZERO);
    for (block, direct_turn) in [true, false, false, true].into_iter().enumerate() {
        let numbers = if block == 0 || block == 1 {
            0..half
        } else {
            half..THROUGHPUT_COUNT
        };
        if direct_turn {
            direct += send_directly_one_session(b.rig, b.access_token, numbers, b.run_id).await;
        } else {
            api += send_through_api(b.http, b.base, b.api_token, &[1], numbers)
                .await
                .all_sent;
        }
    }

    if std::env::var_os("BENCH_ONE_ACCOUNT").is_some() {
        // Only the one-account figure (`BENCH_ONE_ACCOUNT=1`): a quicker run while tuning.
        print_one_account(direct, api);
        return;
    }

    // Ten more accounts, each its own mailbox at the rig.
    let submission = b.rig.submission_port().to_string();
    let mut accounts = Vec::new();
    for k in 0..THROUGHPUT_ACCOUNTS {
        let (name, mailbox) = (format!("bench{k}"), format!("bench{k}@example.test"));
        b.admin
            .add_user(UserSpec::new(&mailbox, PASSWORD))
            .await
            .unwrap();
        b.env.ok(
            &[
                "account", "add", "--name", &name, "--app", "Bench", "--email", &mailbox,
            ],
            None,
        );
        b.env.ok(
            &[
                "account",
                "update",
                &name,
                "--smtp-host",
                "localhost",
                "--smtp-port",
                &submission,
                "--smtp-tls",
                "starttls",
            ],
            None,
        );
        let url = b.env.ok(&["authorize", &name, "--no-wait"], None);
        let callback = sign_in(b.http, url.trim(), &mailbox, PASSWORD)
            .await
            .unwrap();
        assert_eq!(
            b.http.get(callback.as_str()).send().await.unwrap().status(),
            200
        );
        let shown: Value =
            serde_json::from_str(&b.env.ok(&["account", "show", &name, "--json"], None)).unwrap();
        accounts.push(shown["id"].as_i64().unwrap());
    }
    let (one_at_a_time, parallel, serve) =
        one_at_a_time_against_parallel(b, serve, &accounts, THROUGHPUT_COUNT, "").await;

    // The same accounts with their submission 2 × LATENCY_ONE_WAY of round trip away, as a
    // provider on the internet is: what parallel sessions are for.
    let relay = common::latency_relay(
        std::net::SocketAddr::from(([127, 0, 0, 1], b.rig.submission_port())),
        LATENCY_ONE_WAY,
    )
    .await
    .to_string();
    for k in 0..THROUGHPUT_ACCOUNTS {
        b.env.ok(
            &[
                "account",
                "update",
                &format!("bench{k}"),
                "--smtp-port",
                &relay,
            ],
            None,
        );
    }
    let (far_one, far_parallel, serve) =
        one_at_a_time_against_parallel(b, serve, &accounts, LATENCY_COUNT, "-far").await;
    drop(serve);

    let per_sec = |d: Duration| THROUGHPUT_COUNT as f64 / d.as_secs_f64();
    print_one_account(direct, api);
    println!(
        "throughput: {THROUGHPUT_COUNT} messages over {THROUGHPUT_ACCOUNTS} accounts through the API, 2 alternating blocks per side"
    );
    println!(
        "  one session at a time, outbox_concurrency = 1 (baseline) {:>7.2} s  {:>6.1} msg/s",
        one_at_a_time.as_secs_f64(),
        per_sec(one_at_a_time)
    );
    println!(
        "  in parallel, outbox_concurrency = 8               {:>7.2} s  {:>6.1} msg/s  = {:.2}x baseline",
        parallel.as_secs_f64(),
        per_sec(parallel),
        one_at_a_time.as_secs_f64() / parallel.as_secs_f64()
    );
    let far_per_sec = |d: Duration| LATENCY_COUNT as f64 / d.as_secs_f64();
    println!(
        "throughput: {LATENCY_COUNT} messages over {THROUGHPUT_ACCOUNTS} accounts, submission {} ms of round trip away (a relay), 2 alternating blocks per side",
        2 * LATENCY_ONE_WAY.as_millis()
    );
    println!(
        "  one session at a time, outbox_concurrency = 1 (baseline) {:>7.2} s  {:>6.1} msg/s",
        far_one.as_secs_f64(),
        far_per_sec(far_one)
    );
    println!(
        "  in parallel, outbox_concurrency = 8               {:>7.2} s  {:>6.1} msg/s  = {:.2}x baseline",
        far_parallel.as_secs_f64(),
        far_per_sec(far_parallel),
        far_one.as_secs_f64() / far_parallel.as_secs_f64()
    );
}

/// `count` messages over `accounts` through the API, in blocks alternating (ABBA) between
/// `serve` sending one session at a time (`outbox_concurrency = 1`) and its default (8);
/// returns the two sums and the `serve` left running.
async fn one_at_a_time_against_parallel(
    b: &Bench<'_>,
    mut serve: Serve,
    accounts: &[i64],
    count: usize,
    tag: &str,
) -> (Duration, Duration, Serve) {
    let half = count / 2;
    let (mut one_at_a_time, mut parallel) = (Duration::ZERO, Duration::ZERO);
    for (block, sessions) in ["1", "8", "8", "1"].into_iter().enumerate() {
        drop(serve);
        serve = Serve::start(
            b.env,
            &b.listen,
            &b.logs.join(format!("serve{tag}-{block}.log")),
            &[("MAILGATE_OUTBOX_CONCURRENCY", sessions)],
        );
        // Unmeasured: each account's first message after a start reads its token.
        let mut warm = Vec::new();
        for &account in accounts {
            warm.push(
                post_message(b.http, b.base, b.api_token, account, "warm-up")
                    .await
                    .0,
            );
        }
        wait_until_sent(
            b.http,
            b.base,
            b.api_token,
            &warm,
            Instant::now() + WAIT_LIMIT,
        )
        .await;
        let numbers = if block == 0 || block == 1 {
            0..half
        } else {
            half..count
        };
        let took = send_through_api(b.http, b.base, b.api_token, accounts, numbers)
            .await
            .all_sent;
        if sessions == "1" {
            one_at_a_time += took;
        } else {
            parallel += took;
        }
    }
    (one_at_a_time, parallel, serve)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let exe = mailgate_exe();
    let run_id = std::time::UNIX_EPOCH.elapsed().unwrap().as_millis() % 1_000_000;
    let watcher_count = watchers_argument();
    let idp = Idp::start(IdpConfig::default()).unwrap();
    let rig = MailRig::start_temp(
        &format!("{}/introspect", idp.base_url()),
        RigOptions {
            // Room for the watchers and the benchmark's own sessions.
            max_imap_sessions: watcher_count.map(|n| n as u32 + 20),
            ..RigOptions::default()
        },
    )
    .await
    .expect("the mail rig must start (it needs root; see docs/testing.md)");
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let base = format!("http://127.0.0.1:{port}");
    let env = Env {
        exe,
        data: dir.path().join("data"),
        public_url: base.clone(),
        ca_file: rig.ca_cert().to_owned(),
    };
    let admin = idp.admin();
    admin
        .add_client(ClientSpec::confidential(
            CLIENT_ID,
            SECRET,
            &format!("{base}/oauth/callback"),
        ))
        .await
        .unwrap();
    admin
        .add_user(UserSpec::new(MAILBOX, PASSWORD))
        .await
        .unwrap();
    env.ok(
        &[
            "app",
            "add",
            "--kind",
            "microsoft",
            "--name",
            "Bench",
            "--tenant",
            mailgate_testkit::idp::DEFAULT_TENANT_ID,
            "--client-id",
            CLIENT_ID,
            "--client-secret-stdin",
            "--authority",
            &idp.base_url(),
        ],
        Some(SECRET),
    );
    env.ok(
        &[
            "account", "add", "--name", "bench", "--app", "Bench", "--email", MAILBOX,
        ],
        None,
    );
    let (imaps, submission) = (
        rig.imaps_port().to_string(),
        rig.submission_port().to_string(),
    );
    env.ok(
        &[
            "account",
            "update",
            "bench",
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
        ],
        None,
    );
    let serve = Serve::start(
        &env,
        &format!("127.0.0.1:{port}"),
        &dir.path().join("serve.log"),
        &[],
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let url = env.ok(&["authorize", "bench", "--no-wait"], None);
    let callback = sign_in(&http, url.trim(), MAILBOX, PASSWORD).await.unwrap();
    assert_eq!(
        http.get(callback.as_str()).send().await.unwrap().status(),
        200
    );
    let api_token = env
        .ok(
            &[
                "api-token",
                "create",
                "--name",
                "bench",
                "--scope",
                "messages:send",
                "--scope",
                "webhooks:write",
                "--scope",
                "accounts:read",
            ],
            None,
        )
        .trim()
        .to_owned();
    let access_token = env.ok(&["token", "bench"], None).trim().to_owned();
    if std::env::args().any(|a| a == "--throughput") {
        RECIPIENT.set(DISCARDED).unwrap();
        let bench = Bench {
            env: &env,
            rig: &rig,
            admin: &admin,
            http: &http,
            base: &base,
            listen: format!("127.0.0.1:{port}"),
            logs: dir.path(),
            api_token: &api_token,
            access_token: &access_token,
            run_id,
        };
        throughput(&bench, serve).await;
        return;
    }
    if let Some(n) = watcher_count {
        let bench = Bench {
            env: &env,
            rig: &rig,
            admin: &admin,
            http: &http,
            base: &base,
            listen: format!("127.0.0.1:{port}"),
            logs: dir.path(),
            api_token: &api_token,
            access_token: &access_token,
            run_id,
        };
        watchers(&bench, &serve, n).await;
        return;
    }

    // ---- Send -------------------------------------------------------------------------
    // One unmeasured message each way first: TLS session setup, the first introspection and
    // the worker's first token read are not what a steady sender pays.
    submit_directly(
        &rig,
        &access_token,
        "warm-up direct",
        &format!("warm-{run_id}@bench.test"),
    )
    .await;
    let (id, _) = post_message(&http, &base, &api_token, 1, "warm-up api").await;
    wait_until_sent(&http, &base, &api_token, &[id], Instant::now() + WAIT_LIMIT).await;

    // In blocks, alternating which side goes first (ABBA), so that a change in the machine's
    // load during the run falls on both sides alike.
    let mut direct_send = Duration::ZERO;
    let mut api_send = Duration::ZERO;
    let mut all_accepted = Duration::ZERO;
    let mut answers = Vec::with_capacity(SEND_COUNT);
    let block = SEND_COUNT / SEND_BLOCKS;
    for b in 0..SEND_BLOCKS {
        let numbers = b * block..(b + 1) * block;
        for direct_turn in [b % 2 == 0, b % 2 == 1] {
            if direct_turn {
                direct_send += send_directly(&rig, &access_token, numbers.clone(), run_id).await;
            } else {
                let timed = send_through_api(&http, &base, &api_token, &[1], numbers.clone()).await;
                api_send += timed.all_sent;
                all_accepted += timed.all_accepted;
                answers.extend(timed.answers);
            }
        }
    }

    // ---- Receive ----------------------------------------------------------------------
    // Baseline first, while nothing watches the inbox (the watcher starts with the
    // subscription below).
    let mut imap = raw_imap(&rig, &access_token).await;
    let mut visible = Vec::with_capacity(RECEIVE_ROUNDS);
    let mut tags = 0u64;
    for round in 0..=RECEIVE_ROUNDS {
        tags += 1;
        let before = inbox_count(&mut imap, &format!("s{tags}")).await;
        let accepted = deliver(
            &rig,
            &format!("visible {round} {run_id}"),
            &format!("visible-{round}-{run_id}@sender.test"),
        )
        .await;
        let max_polls = (WAIT_LIMIT.as_millis() / POLL_EVERY.as_millis()) as usize;
        let mut seen = None;
        for _ in 0..max_polls {
            tags += 1;
            if inbox_count(&mut imap, &format!("s{tags}")).await > before {
                seen = Some(Instant::now());
                break;
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        let seen = seen.unwrap_or_else(|| panic!("round {round}: never visible over IMAP"));
        // Round 0 warms up and is not counted.
        if round > 0 {
            visible.push(seen.saturating_duration_since(accepted));
        }
        tokio::time::sleep(BETWEEN_ROUNDS).await;
    }
    let _ = imap.imap_command("z1", "LOGOUT").await;

    // A second baseline: a raw IMAP client in IDLE, told `* n EXISTS` by the server. This is
    // what any IDLE client (mailgate's watcher too) can know at the earliest.
    let mut imap = raw_imap(&rig, &access_token).await;
    let selected = imap.imap_command("i0", "SELECT INBOX").await.unwrap();
    assert!(
        imap_status_is(selected.last().unwrap(), "i0", "OK"),
        "{selected:?}"
    );
    let mut idled = Vec::with_capacity(RECEIVE_ROUNDS);
    for round in 0..=RECEIVE_ROUNDS {
        let tag = format!("i{}", round + 1);
        let go_ahead = imap.imap_command(&tag, "IDLE").await.unwrap();
        assert!(go_ahead.last().unwrap().starts_with('+'), "{go_ahead:?}");
        let accepted = deliver(
            &rig,
            &format!("idled {round} {run_id}"),
            &format!("idled-{round}-{run_id}@sender.test"),
        )
        .await;
        let mut seen = None;
        for _ in 0..100 {
            let line = imap.read_line().await.unwrap();
            if line.starts_with("* ") && line.ends_with(" EXISTS") {
                seen = Some(Instant::now());
                break;
            }
        }
        let seen = seen.unwrap_or_else(|| panic!("round {round}: no EXISTS in IDLE"));
        imap.send_line("DONE").await.unwrap();
        let done = imap.read_until_tagged(&tag).await.unwrap();
        assert!(imap_status_is(done.last().unwrap(), &tag, "OK"), "{done:?}");
        if round > 0 {
            idled.push(seen.saturating_duration_since(accepted));
        }
        tokio::time::sleep(BETWEEN_ROUNDS).await;
    }
    let _ = imap.imap_command("z2", "LOGOUT").await;

    let hits = Hits::default();
    let hook_url = hits.serve().await;
    let resp = http
        .post(format!("{base}/api/v1/webhooks"))
        .bearer_auth(&api_token)
        .json(&json!({ "url": hook_url, "events": ["message.received"], "account_id": 1 }))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::CREATED);
    let subscription: Value = resp.json().await.unwrap();
    let secret = subscription["secret"].as_str().unwrap().to_owned();
    // The watcher is up once the account's `inbound_watching` event is recorded.
    let deadline = Instant::now() + WAIT_LIMIT;
    for attempt in 0.. {
        let events: Value = http
            .get(format!("{base}/api/v1/accounts/1/events"))
            .bearer_auth(&api_token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let watching = events
            .as_array()
            .is_some_and(|a| a.iter().any(|e| e["kind"] == "inbound_watching"));
        if watching {
            break;
        }
        assert!(
            Instant::now() < deadline && attempt < 1000,
            "the inbound watcher did not start: {events}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut webhooked = Vec::with_capacity(RECEIVE_ROUNDS);
    for round in 0..=RECEIVE_ROUNDS {
        let subject = format!("hooked {round} {run_id}");
        let accepted = deliver(
            &rig,
            &subject,
            &format!("hooked-{round}-{run_id}@sender.test"),
        )
        .await;
        let hit = hits.wait_for(&subject).await;
        assert_signed(&hit, &secret);
        if round > 0 {
            webhooked.push(hit.at.saturating_duration_since(accepted));
        }
        tokio::time::sleep(BETWEEN_ROUNDS).await;
    }

    drop(serve);
    drop(rig);

    let per_sec = |d: Duration| SEND_COUNT as f64 / d.as_secs_f64();
    println!(
        "send: {SEND_COUNT} messages, one SMTP session each, in {SEND_BLOCKS} alternating blocks (release build, 2 cores)"
    );
    println!(
        "  directly to submission, sequential (baseline)  {:>8.2} s  {:>6.1} msg/s",
        direct_send.as_secs_f64(),
        per_sec(direct_send)
    );
    println!(
        "  through the API, {IN_FLIGHT} in flight, until all sent {:>8.2} s  {:>6.1} msg/s  = {:.2}x baseline",
        api_send.as_secs_f64(),
        per_sec(api_send),
        api_send.as_secs_f64() / direct_send.as_secs_f64()
    );
    println!(
        "  all {SEND_COUNT} API answers (202), summed over blocks {:>6.2} s",
        all_accepted.as_secs_f64()
    );
    println!(
        "  one API answer (202)                         median {:>6.2} ms, p95 {:>6.2} ms",
        ms(percentile(&answers, 50)),
        ms(percentile(&answers, 95))
    );
    println!("receive: from Postfix's 250 to ..., median / max of {RECEIVE_ROUNDS} rounds");
    let (v_med, v_max) = (percentile(&visible, 50), percentile(&visible, 100));
    let (w_med, w_max) = (percentile(&webhooked, 50), percentile(&webhooked, 100));
    println!(
        "  raw IMAP STATUS every 20 ms sees it (baseline) {:>8.1} ms / {:>7.1} ms",
        ms(v_med),
        ms(v_max)
    );
    let (i_med, i_max) = (percentile(&idled, 50), percentile(&idled, 100));
    println!(
        "  raw IMAP IDLE gets * n EXISTS (baseline 2)     {:>8.1} ms / {:>7.1} ms  = {:.2}x baseline",
        ms(i_med),
        ms(i_max),
        i_med.as_secs_f64() / v_med.as_secs_f64()
    );
    println!(
        "  signed webhook arrives (IMAP IDLE watcher)     {:>8.1} ms / {:>7.1} ms  = {:.2}x baseline",
        ms(w_med),
        ms(w_max),
        w_med.as_secs_f64() / v_med.as_secs_f64()
    );
    println!(
        "    of which mailgate (webhook minus raw IDLE)   {:>8.1} ms            = {:.2}x baseline 2",
        ms(w_med.saturating_sub(i_med)),
        w_med.as_secs_f64() / i_med.as_secs_f64()
    );
}

/// `--watchers N`, if given.
fn watchers_argument() -> Option<usize> {
    let args: Vec<String> = std::env::args().collect();
    let at = args.iter().position(|a| a == "--watchers")?;
    let n = args
        .get(at + 1)
        .and_then(|v| v.parse().ok())
        .expect("--watchers wants a number of mailboxes, e.g. --watchers 1000");
    Some(n)
}

/// How long the idle measurement of `--watchers` lasts: three lease heartbeats (20 s).
const IDLE_WINDOW: Duration = Duration::from_secs(60);
/// How long all watchers may take to report `account.inbound_watching`.
const WATCHERS_LIMIT: Duration = Duration::from_secs(600);

/// Resident memory of a process, in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of a process so far, in clock ticks (`/proc/PID/stat`).
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which may hold spaces) start at `state`.
    let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are fields 14 and 15 of stat, i.e. 11 and 12 after `state` (field 3).
    field(11) + field(12)
}

fn clock_ticks_per_sec() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(100.0)
}

/// Proportional memory of a process in KiB (`Pss`: shared pages divided among the processes
/// that map them), so that a thousand processes of one program add up to what they use.
fn pss_kib(pid: u32) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Pss:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// The processes of the rig's Dovecot (its master is a session leader: its group) and their
/// summed proportional memory in KiB.
fn dovecot_memory(rig: &MailRig) -> (usize, u64) {
    let master = std::fs::read_to_string(rig.dir().join("run/dovecot/master.pid"))
        .unwrap_or_default()
        .trim()
        .to_owned();
    let (mut count, mut total) = (0, 0);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let rest = stat.rsplit_once(") ").map_or("", |(_, r)| r);
        // pgrp is field 5 of stat, the third after `state`.
        if rest.split_whitespace().nth(2) == Some(master.as_str()) {
            count += 1;
            total += pss_kib(pid);
        }
    }
    (count, total)
}

async fn sql_count(db: &mut sqlx::AnyConnection, sql: &str) -> i64 {
    use sqlx::Row;
    sqlx::query(sql)
        .fetch_one(db)
        .await
        .unwrap()
        .try_get(0)
        .unwrap()
}

/// `--watchers N`: N more accounts at the rig, each watched over IMAP IDLE (an on-received
/// action makes an account watched), one `serve`. Then, with every watcher in IDLE and no
/// mail arriving, `serve`'s CPU over [`IDLE_WINDOW`] and the commits its connections make
/// meanwhile, counted from a connection of the benchmark's own by `PRAGMA data_version`
/// (which changes when another connection committed; read every 10 ms, so two commits
/// within 10 ms count once).
async fn watchers(b: &Bench<'_>, serve: &Serve, n: usize) {
    use sqlx::Connection;
    let pid = serve.0.pid();
    let rss_before = rss_kib(pid);
    let (_, dovecot_before) = dovecot_memory(b.rig);
    let imaps = b.rig.imaps_port().to_string();
    let set_up = Instant::now();
    for k in 0..n {
        let (name, mailbox) = (
            format!("watch{k}"),
            format!("watch{k}-{}@example.test", b.run_id),
        );
        b.admin
            .add_user(UserSpec::new(&mailbox, PASSWORD))
            .await
            .unwrap();
        b.env.ok(
            &[
                "account",
                "add",
                "--name",
                &name,
                "--app",
                "Bench",
                "--email",
                &mailbox,
                "--inbound",
                "imap",
                "--inbound-host",
                "localhost",
                "--inbound-port",
                &imaps,
                "--inbound-tls",
                "implicit",
                "--outbound",
                "none",
                "--on-received",
                "mark_seen",
            ],
            None,
        );
        let url = b.env.ok(&["authorize", &name, "--no-wait"], None);
        let callback = sign_in(b.http, url.trim(), &mailbox, PASSWORD)
            .await
            .unwrap();
        assert_eq!(
            b.http.get(callback.as_str()).send().await.unwrap().status(),
            200
        );
    }
    let accounts_added = set_up.elapsed();
    sqlx::any::install_default_drivers();
    let mut db = sqlx::AnyConnection::connect(&format!(
        "sqlite://{}",
        b.env.data.join("mailgate.db").display()
    ))
    .await
    .unwrap();
    let deadline = Instant::now() + WATCHERS_LIMIT;
    loop {
        let watching = sql_count(
            &mut db,
            "SELECT COUNT(DISTINCT account_id) FROM events WHERE kind = 'account.inbound_watching'",
        )
        .await;
        if watching as usize >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "only {watching} of {n} mailboxes watched after {WATCHERS_LIMIT:?} (serve's log: {})",
            b.logs.join("serve.log").display()
        );
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let all_watching = set_up.elapsed();
    // Let the start-up work (first token reads, SELECTs, the first renewals) pass.
    tokio::time::sleep(Duration::from_secs(25)).await;
    let failed = sql_count(
        &mut db,
        "SELECT COUNT(*) FROM events WHERE kind = 'account.inbound_failed'",
    )
    .await;

    let ticks_before = cpu_ticks(pid);
    let window = Instant::now();
    let mut last: Option<i64> = None;
    let mut commits = 0u64;
    while window.elapsed() < IDLE_WINDOW {
        let version = sql_count(&mut db, "PRAGMA data_version").await;
        if last.is_some_and(|l| l != version) {
            commits += 1;
        }
        last = Some(version);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let measured = window.elapsed().as_secs_f64();
    let cpu_secs = (cpu_ticks(pid) - ticks_before) as f64 / clock_ticks_per_sec();
    let rss_after = rss_kib(pid);
    let (dovecot_processes, dovecot_after) = dovecot_memory(b.rig);

    println!(
        "watchers: {n} mailboxes watched over IMAP IDLE by one serve (release build, 2 cores)"
    );
    println!(
        "  accounts added and authorized in {:.1} s; all {n} watching after {:.1} s; inbound_failed events: {failed}",
        accounts_added.as_secs_f64(),
        all_watching.as_secs_f64()
    );
    println!(
        "  serve RSS {:.1} MiB before, {:.1} MiB with {n} watchers: {:.1} KiB per watcher",
        rss_before as f64 / 1024.0,
        rss_after as f64 / 1024.0,
        rss_after.saturating_sub(rss_before) as f64 / n as f64
    );
    println!(
        "  serve CPU while idle: {:.2} s in {measured:.0} s = {:.2} % of one core",
        cpu_secs,
        cpu_secs / measured * 100.0
    );
    println!(
        "  commits to the database while idle: {commits} in {measured:.0} s = {:.2} per second (lease renewals included)",
        commits as f64 / measured
    );
    println!(
        "  Dovecot: {dovecot_processes} processes, PSS {:.1} MiB before, {:.1} MiB with the sessions: {:.1} KiB per session",
        dovecot_before as f64 / 1024.0,
        dovecot_after as f64 / 1024.0,
        dovecot_after.saturating_sub(dovecot_before) as f64 / n as f64
    );
}
