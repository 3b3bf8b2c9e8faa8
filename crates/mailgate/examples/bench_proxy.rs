//! How does mailgate's legacy proxy compare with talking to the mail server directly, and
//! with email-oauth2-proxy (the Python tool administrators run today)? Run with
//! `cargo run --release -p mailgate --example bench_proxy` (as root: it starts a private mail
//! rig; see docs/benchmarks.md, "The legacy proxy").
//!
//! Three ways to the same Dovecot mailbox, measured in the same run:
//! - direct: implicit TLS to Dovecot's IMAP port (STARTTLS on submission), `AUTHENTICATE
//!   XOAUTH2` with the token `mailgate token` prints;
//! - mailgate: plain text to `serve`'s proxy listeners on loopback, `LOGIN` / `AUTH PLAIN`
//!   with the account's proxy password; mailgate opens Dovecot with TLS and XOAUTH2;
//! - email-oauth2-proxy: the same client lines to the PyPI package `emailproxy`, run headless
//!   (`--no-gui --local-server-auth`) from a virtualenv the benchmark creates under the target
//!   directory, authorized once against the identity-provider emulator.
//!
//! Figures: login (connect, login, SELECT INBOX, LOGOUT) p50/p99; FETCH of 1,000 messages of
//! 50 KB; 500 SMTP sends over one session; the RSS each proxy needs per idle IMAP session
//! (1,000 sessions); and 200 clients logging in at once. The rig's Dovecot is given room for
//! that many sessions of one user (its defaults allow 10 per user and address). Knobs:
//! `BENCH_LOGIN_ROUNDS` (100), `BENCH_IDLE_SESSIONS` (1000), `BENCH_BURST` (200), and
//! `BENCH_PARTS` (`login,fetch,send,idle,burst`: the measurements to run), `BENCH_IDLE_WAYS`
//! (`mailgate,emailproxy`: whose idle sessions to measure).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;
use common::{Owned, free_port, mailgate_exe, spawn_serve};

use base64::Engine as _;
use mailgate_testkit::idp::{ClientSpec, Idp, IdpConfig, UserSpec, sign_in};
use mailgate_testkit::rig::{MailRig, RigOptions};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

const CLIENT_ID: &str = "00000000-0000-4000-8000-00000000be4e";
/// email-oauth2-proxy's own app registration, as an administrator would make one for it.
const EP_CLIENT_ID: &str = "00000000-0000-4000-8000-00000000be4f";
const SECRET: &str = "bench-client-secret-value";
const PASSWORD: &str = "bench-password";
/// The password email-oauth2-proxy's clients use: it encrypts the tokens it stores.
const EP_PASSWORD: &str = "benchEmailProxyPassword1";
const MAILBOX: &str = "bench@example.test";
/// Where sent messages go, so the benchmark's INBOX keeps exactly its 1,000 messages.
const SINK: &str = "bench-sink@example.test";
/// The emailproxy release measured (pinned so that runs compare).
const EMAILPROXY: &str = "emailproxy==2026.7.3";

const FETCH_MESSAGES: usize = 1000;
const MESSAGE_BYTES: usize = 50 * 1024;
const FETCH_ROUNDS: usize = 5;
const SEND_COUNT: usize = 500;
const SEND_BLOCKS: usize = 2;
/// Upper bound of any one protocol step (a read, a login, a whole FETCH).
const STEP_LIMIT: Duration = Duration::from_secs(120);
/// Upper bound for a process to print what the benchmark waits for.
const WAIT_LIMIT: Duration = Duration::from_secs(60);
/// Idle sessions opened at once while building up the 1,000.
const OPEN_IN_PARALLEL: usize = 8;

fn knob(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// ---- processes --------------------------------------------------------------------------

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

/// `mailgate serve` with the IMAP and SMTP proxy listeners on the given loopback ports.
fn start_serve(env: &Env, listen: &str, imap: SocketAddr, smtp: SocketAddr, log: &Path) -> Owned {
    let mut command = env.command();
    command
        .env("MAILGATE_LISTEN", listen)
        .env("MAILGATE_PROXY_IMAP_LISTEN", imap.to_string())
        .env("MAILGATE_PROXY_SMTP_LISTEN", smtp.to_string())
        // One account, many sessions: the default (20, Exchange's own limit) would refuse
        // the idle and burst measurements.
        .env("MAILGATE_PROXY_MAX_SESSIONS_PER_ACCOUNT", "1000");
    let (serve, rx) = spawn_serve(command, log);
    let deadline = Instant::now() + WAIT_LIMIT;
    let (mut imap_up, mut smtp_up) = (false, false);
    while !(imap_up && smtp_up) {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .expect("mailgate serve did not report its proxy listeners");
        imap_up |= line.starts_with("IMAP proxy listening on");
        smtp_up |= line.starts_with("SMTP proxy listening on");
    }
    serve
}

/// The resident set of a process, in KiB (`VmRSS` of /proc/PID/status).
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS for {pid}"))
}

/// The number of threads of a process.
fn threads(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

// ---- the rig's Dovecot, with room for the run ------------------------------------------

/// Dovecot allows 10 sessions per user and client address and about 100 processes per
/// service by default; the idle and burst measurements need a thousand of one user from
/// 127.0.0.1. Appended to the rig's own configuration, then `doveadm reload`.
const DOVECOT_ROOM: &str = r#"
# bench_proxy: 1,000 idle sessions and 200 logins at once, all of one user from 127.0.0.1.
mail_max_userip_connections = 3000
default_process_limit = 3000
default_client_limit = 6000
default_vsz_limit = 1G
service imap-login {
  # One login process for many connections (Dovecot's "high-performance" mode): a process
  # per TLS connection would need thousands of processes on the client side as well.
  service_count = 0
  client_limit = 3000
  process_min_avail = 2
}
service submission-login {
  service_count = 0
  client_limit = 3000
  process_min_avail = 1
}
service imap {
  process_limit = 3000
}
service auth {
  client_limit = 6000
}
service anvil {
  client_limit = 6000
}
"#;

fn make_room_in_dovecot(rig: &MailRig) {
    use std::io::Write;
    let config = rig.dir().join("dovecot/dovecot.conf");
    let log = rig.dir().join("log/dovecot.log");
    let logged_before = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("reloading configuration")
        .count();
    std::fs::OpenOptions::new()
        .append(true)
        .open(&config)
        .unwrap()
        .write_all(DOVECOT_ROOM.as_bytes())
        .unwrap();
    let out = Command::new("doveadm")
        .arg("-c")
        .arg(&config)
        .arg("reload")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "doveadm reload: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The master says so in its log once it has re-read the configuration.
    let deadline = Instant::now() + WAIT_LIMIT;
    while std::fs::read_to_string(&log)
        .unwrap_or_default()
        .matches("reloading configuration")
        .count()
        <= logged_before
    {
        assert!(
            Instant::now() < deadline,
            "Dovecot did not reload its configuration"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---- a minimal line client, the same for all three ways ---------------------------------

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

type Fallible<T> = Result<T, String>;

/// One connection: lines in, lines out, every step bounded by [`STEP_LIMIT`].
struct Conn {
    io: BufReader<Box<dyn Io>>,
    line: Vec<u8>,
}

async fn step<T>(
    what: &str,
    f: impl std::future::Future<Output = std::io::Result<T>>,
) -> Fallible<T> {
    match tokio::time::timeout(STEP_LIMIT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {}", io_kind(&e))),
        Err(_) => Err(format!("{what}: timeout")),
    }
}

/// An error's kind in a few words, so that a burst's failures can be counted by kind.
fn io_kind(e: &std::io::Error) -> String {
    use std::io::ErrorKind::*;
    match e.kind() {
        ConnectionRefused => "connection refused".into(),
        ConnectionReset => "connection reset".into(),
        UnexpectedEof => "closed by the server".into(),
        BrokenPipe => "broken pipe".into(),
        _ => e.to_string(),
    }
}

impl Conn {
    async fn plain(addr: SocketAddr) -> Fallible<Conn> {
        let tcp = step("connect", tokio::net::TcpStream::connect(addr)).await?;
        tcp.set_nodelay(true).map_err(|e| e.to_string())?;
        Ok(Conn {
            io: BufReader::new(Box::new(tcp)),
            line: Vec::with_capacity(256),
        })
    }

    async fn tls(port: u16, tls: Arc<rustls::ClientConfig>) -> Fallible<Conn> {
        let conn = Conn::plain(SocketAddr::from(([127, 0, 0, 1], port))).await?;
        conn.upgrade(tls).await
    }

    /// The TLS handshake on this connection (at once, or after STARTTLS was accepted).
    async fn upgrade(self, tls: Arc<rustls::ClientConfig>) -> Fallible<Conn> {
        assert!(self.io.buffer().is_empty(), "bytes before the handshake");
        let inner = self.io.into_inner();
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        let stream = step(
            "TLS handshake",
            tokio_rustls::TlsConnector::from(tls).connect(name, inner),
        )
        .await?;
        Ok(Conn {
            io: BufReader::new(Box::new(stream)),
            line: Vec::with_capacity(256),
        })
    }

    async fn send(&mut self, line: &str) -> Fallible<()> {
        let mut bytes = Vec::with_capacity(line.len() + 2);
        bytes.extend_from_slice(line.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        self.send_raw(&bytes).await
    }

    async fn send_raw(&mut self, bytes: &[u8]) -> Fallible<()> {
        let io = self.io.get_mut();
        step("write", async {
            io.write_all(bytes).await?;
            io.flush().await
        })
        .await
    }

    /// The next line without its CRLF; an error when the server closed.
    async fn read_line(&mut self) -> Fallible<String> {
        self.line.clear();
        let n = step("read", self.io.read_until(b'\n', &mut self.line)).await?;
        if n == 0 {
            return Err("read: closed by the server".into());
        }
        Ok(String::from_utf8_lossy(&self.line)
            .trim_end_matches(['\r', '\n'])
            .to_owned())
    }

    /// Sends an IMAP command and reads up to its tagged completion, which must be OK.
    /// Returns the bytes read (the untagged responses and their literals).
    async fn imap(&mut self, tag: &str, command: &str) -> Fallible<usize> {
        self.send(&format!("{tag} {command}")).await?;
        self.imap_completion(tag, command).await
    }

    async fn imap_completion(&mut self, tag: &str, command: &str) -> Fallible<usize> {
        let prefix = format!("{tag} ").into_bytes();
        let mut bytes = 0;
        loop {
            self.line.clear();
            let n = step("read", self.io.read_until(b'\n', &mut self.line)).await?;
            if n == 0 {
                return Err(format!("{command}: closed by the server"));
            }
            bytes += n;
            if self.line.starts_with(&prefix) {
                let text = String::from_utf8_lossy(&self.line);
                let verb = command.split(' ').next().unwrap_or(command);
                return if text[prefix.len()..].starts_with("OK") {
                    Ok(bytes)
                } else {
                    Err(format!("{verb}: {}", text.trim_end()))
                };
            }
        }
    }

    /// An SMTP reply: its code and last line.
    async fn smtp_reply(&mut self) -> Fallible<(u16, String)> {
        for _ in 0..100 {
            let line = self.read_line().await?;
            if line.len() < 4 || line.as_bytes()[3] != b'-' {
                let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                return Ok((code, line));
            }
        }
        Err("an SMTP reply of more than 100 lines".into())
    }

    async fn smtp(&mut self, line: &str, want: u16) -> Fallible<()> {
        self.send(line).await?;
        let (code, text) = self.smtp_reply().await?;
        if code == want {
            Ok(())
        } else {
            let shown = line.split(' ').take(2).collect::<Vec<_>>().join(" ");
            Err(format!("{shown}: {text}"))
        }
    }
}

// ---- the three ways ------------------------------------------------------------------------

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Way {
    Direct,
    Mailgate,
    EmailProxy,
}

const WAYS: [Way; 3] = [Way::Direct, Way::Mailgate, Way::EmailProxy];

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Direct => "direct to Dovecot (baseline)",
            Way::Mailgate => "through mailgate",
            Way::EmailProxy => "through email-oauth2-proxy",
        }
    }
}

/// Where each way connects, and with what.
struct Targets {
    tls: Arc<rustls::ClientConfig>,
    imaps_port: u16,
    submission_port: u16,
    token: String,
    mailgate_imap: SocketAddr,
    mailgate_smtp: SocketAddr,
    mailgate_password: String,
    ep_imap: SocketAddr,
    ep_smtp: SocketAddr,
}

impl Targets {
    fn xoauth2(&self) -> String {
        base64::engine::general_purpose::STANDARD.encode(format!(
            "user={MAILBOX}\x01auth=Bearer {}\x01\x01",
            self.token
        ))
    }

    /// An IMAP session in the authenticated state.
    async fn imap_login(&self, way: Way) -> Fallible<Conn> {
        let (mut conn, login) = match way {
            Way::Direct => (
                Conn::tls(self.imaps_port, self.tls.clone()).await?,
                format!("AUTHENTICATE XOAUTH2 {}", self.xoauth2()),
            ),
            Way::Mailgate => (
                Conn::plain(self.mailgate_imap).await?,
                format!("LOGIN {MAILBOX} {}", self.mailgate_password),
            ),
            Way::EmailProxy => (
                Conn::plain(self.ep_imap).await?,
                format!("LOGIN {MAILBOX} {EP_PASSWORD}"),
            ),
        };
        let greeting = conn.read_line().await?;
        if !greeting.starts_with("* OK") {
            return Err(format!("greeting: {greeting}"));
        }
        conn.imap("a1", &login).await?;
        Ok(conn)
    }

    /// Connect, log in, SELECT INBOX, LOGOUT: what a polling client does each time.
    async fn login_round(&self, way: Way) -> Fallible<Duration> {
        let started = Instant::now();
        let mut conn = self.imap_login(way).await?;
        conn.imap("a2", "SELECT INBOX").await?;
        conn.imap("a3", "LOGOUT").await?;
        Ok(started.elapsed())
    }

    /// An SMTP session ready for `MAIL FROM`.
    async fn smtp_login(&self, way: Way) -> Fallible<Conn> {
        let plain = base64::engine::general_purpose::STANDARD;
        let mut conn = match way {
            Way::Direct => {
                let addr = SocketAddr::from(([127, 0, 0, 1], self.submission_port));
                let mut conn = Conn::plain(addr).await?;
                conn.smtp_reply().await?;
                conn.smtp("EHLO bench.test", 250).await?;
                conn.smtp("STARTTLS", 220).await?;
                let mut conn = conn.upgrade(self.tls.clone()).await?;
                conn.smtp("EHLO bench.test", 250).await?;
                // The two-line form: a token is longer than some servers' line limit.
                conn.smtp("AUTH XOAUTH2", 334).await?;
                conn.smtp(&self.xoauth2(), 235).await?;
                return Ok(conn);
            }
            Way::Mailgate => Conn::plain(self.mailgate_smtp).await?,
            Way::EmailProxy => Conn::plain(self.ep_smtp).await?,
        };
        let password = match way {
            Way::Mailgate => self.mailgate_password.as_str(),
            _ => EP_PASSWORD,
        };
        conn.smtp_reply().await?;
        conn.smtp("EHLO bench.test", 250).await?;
        let initial = plain.encode(format!("\0{MAILBOX}\0{password}"));
        conn.smtp(&format!("AUTH PLAIN {initial}"), 235).await?;
        Ok(conn)
    }
}

/// A message of exactly [`MESSAGE_BYTES`]: headers, then lines of text.
fn big_message(n: usize, run_id: u128) -> Vec<u8> {
    let mut m = format!(
        "From: <ann@sender.test>\r\nTo: <{MAILBOX}>\r\nSubject: bench {n}\r\n\
         Date: Fri, 04 Dec 2026 12:00:00 +0000\r\nMessage-ID: <bench-{n}-{run_id}@sender.test>\r\n\
         MIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n"
    )
    .into_bytes();
    let filler = b"The quick brown fox jumps over the lazy dog, and the benchmark counts bytes.";
    while m.len() + filler.len() + 2 <= MESSAGE_BYTES {
        m.extend_from_slice(filler);
        m.extend_from_slice(b"\r\n");
    }
    while m.len() < MESSAGE_BYTES - 2 {
        m.push(b'.');
    }
    m.extend_from_slice(b"\r\n");
    m
}

/// Fills the INBOX with [`FETCH_MESSAGES`] messages, directly (APPEND with LITERAL+, in
/// pipelined batches).
async fn fill_inbox(t: &Targets, run_id: u128) {
    let mut conn = t.imap_login(Way::Direct).await.unwrap();
    const BATCH: usize = 50;
    for batch in 0..FETCH_MESSAGES / BATCH {
        for i in 0..BATCH {
            let n = batch * BATCH + i;
            let body = big_message(n, run_id);
            let mut bytes = format!("p{n} APPEND INBOX {{{}+}}\r\n", body.len()).into_bytes();
            bytes.extend_from_slice(&body);
            bytes.extend_from_slice(b"\r\n");
            conn.send_raw(&bytes).await.unwrap();
        }
        for i in 0..BATCH {
            let n = batch * BATCH + i;
            conn.imap_completion(&format!("p{n}"), "APPEND")
                .await
                .unwrap();
        }
    }
    conn.imap("p-end", "LOGOUT").await.unwrap();
}

/// FETCH of every message's body over a session of `way`: the time from the command to its
/// tagged OK, and the bytes received.
async fn fetch_all(t: &Targets, way: Way) -> (Duration, usize) {
    let mut conn = t.imap_login(way).await.unwrap();
    conn.imap("f1", "SELECT INBOX").await.unwrap();
    let started = Instant::now();
    let bytes = conn.imap("f2", "FETCH 1:* (BODY.PEEK[])").await.unwrap();
    let took = started.elapsed();
    assert!(
        bytes >= FETCH_MESSAGES * MESSAGE_BYTES,
        "{way:?}: FETCH returned {bytes} bytes"
    );
    conn.imap("f3", "LOGOUT").await.unwrap();
    (took, bytes)
}

/// `count` messages over one SMTP session of `way` (after its login): the time from the
/// first `MAIL FROM` to the last `250`.
async fn send_block(
    t: &Targets,
    way: Way,
    numbers: std::ops::Range<usize>,
    run_id: u128,
) -> Duration {
    let mut conn = t.smtp_login(way).await.unwrap();
    let started = Instant::now();
    for n in numbers {
        conn.smtp(&format!("MAIL FROM:<{MAILBOX}>"), 250)
            .await
            .unwrap();
        conn.smtp(&format!("RCPT TO:<{SINK}>"), 250).await.unwrap();
        conn.smtp("DATA", 354).await.unwrap();
        let body = format!(
            "From: <{MAILBOX}>\r\nTo: <{SINK}>\r\nSubject: send {n} {way:?}\r\n\
             Message-ID: <send-{n}-{way:?}-{run_id}@bench.test>\r\n\r\nA benchmark message.\r\n.\r\n"
        );
        conn.send_raw(body.as_bytes()).await.unwrap();
        let (code, text) = conn.smtp_reply().await.unwrap();
        assert_eq!(code, 250, "{way:?} DATA: {text}");
    }
    let took = started.elapsed();
    let _ = conn.smtp("QUIT", 221).await;
    took
}

/// Opens `n` IMAP sessions of `way` (login and SELECT INBOX), [`OPEN_IN_PARALLEL`] at a time,
/// and returns them open; at the first failure it stops opening more and says what failed.
async fn open_idle_sessions(t: &Arc<Targets>, way: Way, n: usize) -> (Vec<Conn>, Option<String>) {
    let gate = Arc::new(tokio::sync::Semaphore::new(OPEN_IN_PARALLEL));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (t, gate) = (t.clone(), gate.clone());
        tasks.spawn(async move {
            let _permit = gate.acquire_owned().await.unwrap();
            let mut conn = t.imap_login(way).await?;
            conn.imap("i1", "SELECT INBOX").await?;
            Ok::<_, String>(conn)
        });
    }
    let mut open = Vec::with_capacity(n);
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            Ok(conn) => open.push(conn),
            Err(e) => {
                let failure = format!("session {} failed: {e}", open.len() + 1);
                tasks.abort_all();
                while let Some(joined) = tasks.join_next().await {
                    if let Ok(Ok(conn)) = joined {
                        open.push(conn);
                    }
                }
                return (open, Some(failure));
            }
        }
    }
    (open, None)
}

/// What `clients` logins started at the same moment did.
struct Burst {
    ok: Vec<Duration>,
    errors: std::collections::BTreeMap<String, usize>,
    wall: Duration,
}

async fn burst(t: &Arc<Targets>, way: Way, clients: usize) -> Burst {
    let start = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..clients {
        let (t, start) = (t.clone(), start.clone());
        tasks.spawn(async move {
            start.wait().await;
            t.login_round(way).await
        });
    }
    start.wait().await;
    let started = Instant::now();
    let mut result = Burst {
        ok: Vec::new(),
        errors: Default::default(),
        wall: Duration::ZERO,
    };
    while let Some(joined) = tasks.join_next().await {
        match joined.unwrap() {
            Ok(took) => result.ok.push(took),
            Err(e) => *result.errors.entry(e).or_default() += 1,
        }
    }
    result.wall = started.elapsed();
    result
}

// ---- email-oauth2-proxy ------------------------------------------------------------------

/// `emailproxy` in a virtualenv under the target directory, installed when missing.
fn emailproxy_exe() -> PathBuf {
    let examples = std::env::current_exe().unwrap();
    let target = examples.ancestors().nth(3).unwrap().to_owned();
    let venv = target.join("emailproxy-venv");
    let exe = venv.join("bin/emailproxy");
    if !exe.exists() {
        let status = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .unwrap();
        assert!(status.success(), "python3 -m venv {}", venv.display());
        let status = Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                EMAILPROXY,
            ])
            .status()
            .unwrap();
        assert!(status.success(), "pip install {EMAILPROXY}");
    }
    exe
}

struct EmailProxy {
    process: Owned,
    imap: SocketAddr,
    smtp: SocketAddr,
    log: PathBuf,
}

/// Starts email-oauth2-proxy headless against the rig, with its own app at the emulator.
fn start_emailproxy(idp: &Idp, rig: &MailRig, dir: &Path, redirect_port: u16) -> EmailProxy {
    let exe = emailproxy_exe();
    let (imap_port, smtp_port) = (free_port(), free_port());
    let tenant = mailgate_testkit::idp::DEFAULT_TENANT_ID;
    let base = idp.base_url();
    let config = format!(
        "[IMAP-{imap_port}]\n\
         server_address = localhost\n\
         server_port = {imaps}\n\
         local_address = 127.0.0.1\n\n\
         [SMTP-{smtp_port}]\n\
         server_address = localhost\n\
         server_port = {submission}\n\
         server_starttls = True\n\
         local_address = 127.0.0.1\n\n\
         [{MAILBOX}]\n\
         permission_url = {base}/{tenant}/oauth2/v2.0/authorize\n\
         token_url = {base}/{tenant}/oauth2/v2.0/token\n\
         oauth2_scope = https://outlook.office.com/IMAP.AccessAsUser.All https://outlook.office.com/SMTP.Send offline_access\n\
         redirect_uri = http://127.0.0.1:{redirect_port}/\n\
         client_id = {EP_CLIENT_ID}\n\
         client_secret = {SECRET}\n\
         use_pkce = True\n",
        imaps = rig.imaps_port(),
        submission = rig.submission_port(),
    );
    let config_file = dir.join("emailproxy.config");
    std::fs::write(&config_file, config).unwrap();
    let log = dir.join("emailproxy.log");
    let child = Command::new(exe)
        .args(["--no-gui", "--local-server-auth", "--config-file"])
        .arg(&config_file)
        .arg("--log-file")
        .arg(&log)
        .current_dir(dir)
        // It checks the rig's certificate like any server's: trust the rig's CA.
        .env("SSL_CERT_FILE", rig.ca_cert())
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(dir.join("emailproxy.out")).unwrap())
        .stderr(Stdio::from(
            std::fs::File::create(dir.join("emailproxy.err")).unwrap(),
        ))
        .spawn()
        .unwrap();
    let process = Owned { child };
    let imap = SocketAddr::from(([127, 0, 0, 1], imap_port));
    let smtp = SocketAddr::from(([127, 0, 0, 1], smtp_port));
    let deadline = Instant::now() + WAIT_LIMIT;
    while std::net::TcpStream::connect(imap).is_err() || std::net::TcpStream::connect(smtp).is_err()
    {
        assert!(
            Instant::now() < deadline,
            "email-oauth2-proxy did not listen within {WAIT_LIMIT:?}: {}",
            std::fs::read_to_string(dir.join("emailproxy.err")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    EmailProxy {
        process,
        imap,
        smtp,
        log,
    }
}

/// The first login through email-oauth2-proxy asks for authorization: it logs a URL, and its
/// local server receives the redirect. The emulator's sign-in page is driven like a person.
async fn authorize_emailproxy(t: &Targets, ep: &EmailProxy, http: &reqwest::Client) {
    let ep_imap = t.ep_imap;
    let login = tokio::spawn(async move {
        let mut conn = Conn::plain(ep_imap).await?;
        conn.read_line().await?;
        conn.imap("a1", &format!("LOGIN {MAILBOX} {EP_PASSWORD}"))
            .await?;
        conn.imap("a2", "LOGOUT").await?;
        Ok::<_, String>(())
    });
    let marker = format!("authenticate account {MAILBOX}: ");
    let deadline = Instant::now() + WAIT_LIMIT;
    let url = loop {
        let log = std::fs::read_to_string(&ep.log).unwrap_or_default();
        if let Some(url) = log
            .lines()
            .find_map(|l| l.split_once(&marker).map(|(_, u)| u.trim().to_owned()))
        {
            break url;
        }
        assert!(
            Instant::now() < deadline,
            "email-oauth2-proxy asked for no authorization:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let callback = sign_in(http, &url, MAILBOX, PASSWORD).await.unwrap();
    let answer = http.get(callback.as_str()).send().await.unwrap();
    assert_eq!(answer.status(), 200);
    login.await.unwrap().unwrap();
}

// ---- figures -----------------------------------------------------------------------------

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

fn median(v: &[Duration]) -> Duration {
    percentile(v, 50)
}

/// The three ways in a rotating order, so a change of the machine's load falls on all.
fn order(round: usize) -> [Way; 3] {
    let mut ways = WAYS;
    ways.rotate_left(round % 3);
    if round % 2 == 1 {
        ways.reverse();
    }
    ways
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let login_rounds = knob("BENCH_LOGIN_ROUNDS", 100);
    let idle_sessions = knob("BENCH_IDLE_SESSIONS", 1000);
    let burst_clients = knob("BENCH_BURST", 200);
    let parts =
        std::env::var("BENCH_PARTS").unwrap_or_else(|_| "login,fetch,send,idle,burst".into());
    let want = |part: &str| parts.split(',').any(|p| p.trim() == part);
    let exe = mailgate_exe();
    let run_id = std::time::UNIX_EPOCH.elapsed().unwrap().as_millis();
    let idp = Idp::start(IdpConfig::default()).unwrap();
    let rig = MailRig::start_temp(
        &format!("{}/introspect", idp.base_url()),
        RigOptions::default(),
    )
    .await
    .expect("the mail rig must start (it needs root; see docs/testing.md)");
    make_room_in_dovecot(&rig);
    let dir = tempfile::tempdir().unwrap();
    // The processes' logs and email-oauth2-proxy's files stay after the run, for a look.
    let logs = std::env::current_exe()
        .unwrap()
        .ancestors()
        .nth(3)
        .unwrap()
        .join("bench_proxy");
    let _ = std::fs::remove_dir_all(&logs);
    std::fs::create_dir_all(&logs).unwrap();
    let port = free_port();
    let base = format!("http://127.0.0.1:{port}");
    let env = Env {
        exe,
        data: dir.path().join("data"),
        public_url: base.clone(),
        ca_file: rig.ca_cert().to_owned(),
    };
    let redirect_port = free_port();
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
        .add_client(ClientSpec::confidential(
            EP_CLIENT_ID,
            SECRET,
            &format!("http://127.0.0.1:{redirect_port}/"),
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
    let mailgate_imap = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let mailgate_smtp = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let serve = start_serve(
        &env,
        &format!("127.0.0.1:{port}"),
        mailgate_imap,
        mailgate_smtp,
        &logs.join("serve.log"),
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
    let mailgate_password = env
        .ok(&["account", "proxy-password", "bench"], None)
        .trim()
        .to_owned();
    let token = env.ok(&["token", "bench"], None).trim().to_owned();

    let ep = start_emailproxy(&idp, &rig, &logs, redirect_port);
    let targets = Arc::new(Targets {
        tls: rig.tls_config().unwrap(),
        imaps_port: rig.imaps_port(),
        submission_port: rig.submission_port(),
        token,
        mailgate_imap,
        mailgate_smtp,
        mailgate_password,
        ep_imap: ep.imap,
        ep_smtp: ep.smtp,
    });
    authorize_emailproxy(&targets, &ep, &http).await;
    fill_inbox(&targets, run_id).await;
    let t = &targets;

    // ---- Login --------------------------------------------------------------------------
    // One unmeasured round each first (TLS session caches, the first introspection).
    for way in WAYS {
        t.login_round(way).await.unwrap();
    }
    let mut logins: [Vec<Duration>; 3] = Default::default();
    let rounds = if want("login") { login_rounds } else { 0 };
    for round in 0..rounds {
        for way in order(round) {
            let took = t
                .login_round(way)
                .await
                .unwrap_or_else(|e| panic!("{way:?}: {e}"));
            logins[way as usize].push(took);
        }
    }
    eprintln!("login rounds done");

    // ---- FETCH --------------------------------------------------------------------------
    let fetch_rounds = if want("fetch") { FETCH_ROUNDS } else { 0 };
    for way in WAYS.iter().filter(|_| fetch_rounds > 0) {
        fetch_all(t, *way).await;
    }
    let mut fetches: [Vec<Duration>; 3] = Default::default();
    let mut fetched = 0;
    for round in 0..fetch_rounds {
        for way in order(round) {
            let (took, bytes) = fetch_all(t, way).await;
            fetches[way as usize].push(took);
            fetched = bytes;
        }
    }
    eprintln!("fetch rounds done");

    // ---- SMTP ---------------------------------------------------------------------------
    let send_blocks = if want("send") { SEND_BLOCKS } else { 0 };
    for way in WAYS.iter().filter(|_| send_blocks > 0) {
        send_block(t, *way, 0..1, run_id).await;
    }
    let mut sends = [Duration::ZERO; 3];
    let block = SEND_COUNT / SEND_BLOCKS;
    for b in 0..send_blocks {
        for way in order(b) {
            sends[way as usize] += send_block(t, way, b * block..(b + 1) * block, run_id).await;
        }
    }
    eprintln!("sends done");

    // ---- Burst (before the idle sessions: email-oauth2-proxy does not recover from those) --
    let mut bursts = Vec::new();
    for way in WAYS.into_iter().filter(|_| want("burst")) {
        bursts.push((way, burst(&targets, way, burst_clients).await));
        eprintln!("{way:?}: burst done");
    }

    // ---- Idle sessions ------------------------------------------------------------------
    let mut idle = Vec::new();
    let idle_ways = [
        (Way::Mailgate, serve.pid()),
        (Way::EmailProxy, ep.process.pid()),
    ];
    let idle_wanted =
        std::env::var("BENCH_IDLE_WAYS").unwrap_or_else(|_| "mailgate,emailproxy".into());
    let idle_ways = idle_ways.into_iter().filter(|(way, _)| {
        let name = if *way == Way::Mailgate {
            "mailgate"
        } else {
            "emailproxy"
        };
        want("idle") && idle_wanted.split(',').any(|w| w.trim() == name)
    });
    for (way, pid) in idle_ways {
        let before = rss_kib(pid);
        let started = Instant::now();
        let (mut open, failure) = open_idle_sessions(&targets, way, idle_sessions).await;
        let opened_in = started.elapsed();
        let after = rss_kib(pid);
        let thread_count = threads(pid);
        // Sessions still answer: none was dropped while the others opened.
        if failure.is_none() {
            for (i, conn) in open.iter_mut().enumerate().step_by(100) {
                conn.imap(&format!("n{i}"), "NOOP").await.unwrap();
            }
        }
        let figures = IdleFigures {
            way,
            opened: open.len(),
            failure,
            rss_before: before,
            rss_after: after,
            opened_in,
            threads: thread_count,
        };
        eprintln!("{}", figures.line());
        drop(open);
        idle.push(figures);
    }

    drop(ep);
    drop(serve);
    drop(rig);

    // ---- Report -------------------------------------------------------------------------
    if want("login") {
        report_logins(login_rounds, &logins);
    }
    if want("fetch") {
        report_fetches(fetched, &fetches);
    }
    if want("send") {
        report_sends(&sends);
    }
    if want("idle") {
        report_idle(idle_sessions, &idle);
    }
    if want("burst") {
        report_bursts(burst_clients, &bursts);
    }
}

fn report_logins(login_rounds: usize, logins: &[Vec<Duration>; 3]) {
    println!(
        "login: connect + login + SELECT INBOX + LOGOUT, {login_rounds} rounds per way, rotating order (release build, 2 cores)"
    );
    let direct_p50 = median(&logins[0]);
    for way in WAYS {
        let v = &logins[way as usize];
        let p50 = median(v);
        println!(
            "  {:<32} p50 {:>8.2} ms  p99 {:>8.2} ms  p50 {:+8.2} ms over direct",
            way.label(),
            ms(p50),
            ms(percentile(v, 99)),
            ms(p50) - ms(direct_p50),
        );
    }
    let (mg, ep_p50) = (median(&logins[1]), median(&logins[2]));
    println!(
        "  email-oauth2-proxy / mailgate (p50): {:.1}x",
        ep_p50.as_secs_f64() / mg.as_secs_f64()
    );
}

fn report_fetches(fetched: usize, fetches: &[Vec<Duration>; 3]) {
    println!(
        "fetch: FETCH 1:* (BODY.PEEK[]) of {FETCH_MESSAGES} messages of {} KB ({:.1} MB), median of {FETCH_ROUNDS}",
        MESSAGE_BYTES / 1024,
        fetched as f64 / 1e6
    );
    let direct_fetch = median(&fetches[0]);
    for way in WAYS {
        let took = median(&fetches[way as usize]);
        println!(
            "  {:<32} {:>8.0} ms  {:>7.1} MB/s  = {:>5.1} % of direct throughput",
            way.label(),
            ms(took),
            fetched as f64 / 1e6 / took.as_secs_f64(),
            100.0 * direct_fetch.as_secs_f64() / took.as_secs_f64()
        );
    }
}

fn report_sends(sends: &[Duration; 3]) {
    println!(
        "send: {SEND_COUNT} messages over one SMTP session (login not timed), {SEND_BLOCKS} blocks per way"
    );
    for way in WAYS {
        let took = sends[way as usize];
        println!(
            "  {:<32} {:>8.2} s  {:>7.1} msg/s  = {:>5.1} % of direct throughput",
            way.label(),
            took.as_secs_f64(),
            SEND_COUNT as f64 / took.as_secs_f64(),
            100.0 * sends[0].as_secs_f64() / took.as_secs_f64()
        );
    }
}

/// One proxy's idle sessions.
struct IdleFigures {
    way: Way,
    opened: usize,
    /// Why opening stopped short, if it did.
    failure: Option<String>,
    /// KiB.
    rss_before: u64,
    rss_after: u64,
    opened_in: Duration,
    threads: u64,
}

impl IdleFigures {
    fn per_session_kib(&self) -> f64 {
        (self.rss_after as f64 - self.rss_before as f64) / self.opened.max(1) as f64
    }

    fn line(&self) -> String {
        let mut line = format!(
            "  {:<32} {:>4} open: RSS {:>7.1} -> {:>7.1} MiB = {:>6.1} KiB per session ({} threads; opened in {:.1} s)",
            self.way.label(),
            self.opened,
            self.rss_before as f64 / 1024.0,
            self.rss_after as f64 / 1024.0,
            self.per_session_kib(),
            self.threads,
            self.opened_in.as_secs_f64()
        );
        if let Some(failure) = &self.failure {
            line += &format!("\n      stopped: {failure}");
        }
        line
    }
}

fn report_idle(idle_sessions: usize, idle: &[IdleFigures]) {
    println!("idle: up to {idle_sessions} IMAP sessions logged in and SELECTed, held open");
    let mut per_session = Vec::new();
    for figures in idle {
        per_session.push(figures.per_session_kib());
        println!("{}", figures.line());
    }
    if let [mg, ep] = per_session[..] {
        println!(
            "  mailgate / email-oauth2-proxy per session: {:.3} (1/{:.1})",
            mg / ep,
            ep / mg
        );
    }
}

fn report_bursts(burst_clients: usize, bursts: &[(Way, Burst)]) {
    println!("burst: {burst_clients} clients log in at once (connect + login + SELECT + LOGOUT)");
    for (way, b) in bursts {
        let (p50, p99, max) = if b.ok.is_empty() {
            (Duration::ZERO, Duration::ZERO, Duration::ZERO)
        } else {
            (median(&b.ok), percentile(&b.ok, 99), percentile(&b.ok, 100))
        };
        println!(
            "  {:<32} {:>3} ok in {:>6.2} s; p50 {:>8.1} ms  p99 {:>8.1} ms  max {:>8.1} ms",
            way.label(),
            b.ok.len(),
            b.wall.as_secs_f64(),
            ms(p50),
            ms(p99),
            ms(max)
        );
        for (error, count) in &b.errors {
            println!("      {count} failed: {error}");
        }
    }
}
