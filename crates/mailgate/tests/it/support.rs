//! Starting the real binary the way an administrator would.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

pub const MS_CLIENT_ID: &str = "00000000-0000-0000-0000-00000000a001";
pub const CANARY_SECRET: &str = "Q7x~CANARY.client-secret.9f3e1d";

/// A fresh data directory and the environment to run mailgate against it.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    /// Extra environment for every command of this test (e.g. MAILGATE_PUBLIC_URL).
    pub vars: std::sync::Mutex<Vec<(String, String)>>,
}

impl TestEnv {
    pub fn new() -> Self {
        TestEnv {
            dir: tempfile::tempdir().unwrap(),
            vars: Default::default(),
        }
    }

    pub fn set_var(&self, key: &str, value: &str) {
        let mut vars = self.vars.lock().unwrap();
        vars.retain(|(k, _)| k != key);
        vars.push((key.to_owned(), value.to_owned()));
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn db_path(&self) -> PathBuf {
        self.data_dir().join("mailgate.db")
    }

    pub fn command(&self) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mailgate"));
        for (k, _) in std::env::vars() {
            if k.starts_with("MAILGATE_") {
                c.env_remove(k);
            }
        }
        c.env("MAILGATE_DATA_DIR", self.data_dir())
            // The emulator listens on loopback; a test that wants the refusal sets it false.
            .env("MAILGATE_IDP_ALLOW_PRIVATE", "true")
            .env("NO_COLOR", "1")
            .current_dir(self.dir.path());
        for (k, v) in self.vars.lock().unwrap().iter() {
            c.env(k, v);
        }
        c
    }

    /// Runs a command with `stdin` piped in; returns its output.
    pub fn run(&self, args: &[&str], stdin: Option<&str>) -> Output {
        self.run_with(self.command(), args, stdin)
    }

    pub fn run_with(&self, mut cmd: Command, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        cmd.args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(s) = stdin {
            pipe.write_all(s.as_bytes()).unwrap();
        }
        drop(pipe);
        child.wait_with_output().unwrap()
    }

    /// Runs and insists on success; returns stdout.
    pub fn ok(&self, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(args, stdin);
        assert!(
            out.status.success(),
            "mailgate {args:?} failed: {}\n{}",
            out.status,
            text(&out.stderr)
        );
        assert_no_canary(&out);
        text(&out.stdout)
    }

    pub fn json(&self, args: &[&str]) -> serde_json::Value {
        serde_json::from_str(&self.ok(args, None)).unwrap()
    }

    pub fn add_microsoft_app(&self, name: &str) -> String {
        self.ok(
            &[
                "app",
                "add",
                "--kind",
                "microsoft",
                "--name",
                name,
                "--tenant",
                "contoso.onmicrosoft.com",
                "--client-id",
                MS_CLIENT_ID,
                "--client-secret-stdin",
                "--secret-expires",
                "2027-06-30",
            ],
            Some(&format!("{CANARY_SECRET}\n")),
        )
    }

    /// Every row of every table, for "nothing changed" checks.
    pub async fn dump_db(&self) -> String {
        use sqlx::Row;
        let url = format!("sqlite://{}?mode=ro", self.db_path().display());
        sqlx::any::install_default_drivers();
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        let tables: Vec<String> =
            sqlx::query("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
                .fetch_all(&mut conn)
                .await
                .unwrap()
                .iter()
                .map(|r| r.get::<String, _>("name"))
                .collect();
        let mut out = String::new();
        for t in tables {
            out.push_str(&format!("== {t}\n"));
            let rows = sqlx::query(&format!("SELECT * FROM {t} ORDER BY 1"))
                .fetch_all(&mut conn)
                .await
                .unwrap();
            for r in rows {
                let cells: Vec<String> = (0..r.columns().len())
                    .map(|i| {
                        r.try_get::<Option<i64>, _>(i)
                            .map(|v| format!("{v:?}"))
                            .or_else(|_| {
                                r.try_get::<Option<String>, _>(i).map(|v| format!("{v:?}"))
                            })
                            .unwrap_or_else(|_| "?".into())
                    })
                    .collect();
                out.push_str(&cells.join("|"));
                out.push('\n');
            }
        }
        out
    }
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

pub fn assert_no_canary(out: &Output) {
    for (name, stream) in [("stdout", &out.stdout), ("stderr", &out.stderr)] {
        assert!(
            !text(stream).contains("CANARY"),
            "a secret appeared on {name}:\n{}",
            text(stream)
        );
    }
}

/// True if `needle` occurs in the file or its WAL.
pub fn db_contains(db: &Path, needle: &str) -> bool {
    let mut bytes = std::fs::read(db).unwrap();
    for ext in ["db-wal", "db-shm"] {
        if let Ok(b) = std::fs::read(db.with_extension(ext)) {
            bytes.extend(b);
        }
    }
    bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// A running `mailgate serve`; killed on drop if the test did not stop it.
pub struct Server {
    pub child: Child,
    pub base: String,
    pub stdout_line: String,
    /// Later stdout lines (the setup link).
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Server {
    pub fn start(env: &TestEnv) -> Server {
        let mut cmd = env.command();
        // The log goes to a file: a pipe nobody reads would block the server once full.
        let log = std::fs::File::create(env.dir.path().join("serve.log")).unwrap();
        cmd.arg("serve")
            .env("MAILGATE_LISTEN", "127.0.0.1:0")
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = cmd.spawn().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("mailgate serve printed no listening line within 60 s");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {line:?}"))
            .to_owned();
        Server {
            child,
            base: addr,
            stdout_line: line,
            lines: rx,
        }
    }

    /// The setup link `serve` prints when there is no administrator.
    pub fn setup_link(&self) -> String {
        let line = self
            .lines
            .recv_timeout(Duration::from_secs(30))
            .expect("no setup link printed");
        line.split("Create one at: ")
            .nth(1)
            .unwrap_or_else(|| panic!("{line}"))
            .trim()
            .to_owned()
    }

    /// SIGTERM, then wait (bounded) for the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        assert!(
            Command::new("kill")
                .args(["-TERM", &pid])
                .status()
                .unwrap()
                .success()
        );
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "mailgate did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A raw IMAP session (not mailgate's client) on the fixture's mailbox, logged in with the
/// token `mailgate token` prints, with `folder` selected.
pub async fn raw_imap(
    f: &crate::fixtures::Fixture,
    rig: &mailgate_testkit::rig::MailRig,
    folder: &str,
) -> mailgate_testkit::raw::RawClient {
    use mailgate_testkit::raw::{RawClient, imap_status_is};
    let token = f.env.ok(&["token", "support"], None).trim().to_owned();
    let mut imap = RawClient::connect_tls(rig.host(), rig.imaps_port(), rig.tls_config().unwrap())
        .await
        .unwrap();
    imap.read_line().await.unwrap();
    let ir = mailgate_proto::sasl::xoauth2_initial_response(&f.mailbox, &token);
    let auth = imap
        .imap_command("o1", &format!("AUTHENTICATE XOAUTH2 {ir}"))
        .await
        .unwrap();
    assert!(imap_status_is(auth.last().unwrap(), "o1", "OK"));
    let selected = imap
        .imap_command("o2", &format!("SELECT \"{folder}\""))
        .await
        .unwrap();
    assert!(
        imap_status_is(selected.last().unwrap(), "o2", "OK"),
        "{selected:?}"
    );
    imap
}

/// Subjects of the messages in `folder`, over raw IMAP.
pub async fn folder_subjects(
    f: &crate::fixtures::Fixture,
    rig: &mailgate_testkit::rig::MailRig,
    folder: &str,
) -> Vec<String> {
    let mut imap = raw_imap(f, rig, folder).await;
    let lines = imap
        .imap_command("o3", "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (SUBJECT)])")
        .await
        .unwrap_or_default();
    lines
        .iter()
        .filter_map(|l| l.strip_prefix("Subject: ").map(|s| s.trim().to_owned()))
        .collect()
}

/// How many messages with `subject` are in `folder` once at least one has arrived: a
/// message the submission server accepted reaches the mailbox through Postfix and LMTP a
/// moment later, more so on a loaded machine. Polls for at most `within`.
pub async fn arrivals(
    f: &crate::fixtures::Fixture,
    rig: &mailgate_testkit::rig::MailRig,
    folder: &str,
    subject: &str,
    within: std::time::Duration,
) -> usize {
    let deadline = std::time::Instant::now() + within;
    loop {
        let n = folder_subjects(f, rig, folder)
            .await
            .iter()
            .filter(|s| *s == subject)
            .count();
        if n > 0 || std::time::Instant::now() >= deadline {
            return n;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// The `name=value` of the cookie `name` that `resp` sets.
pub fn session_cookie(resp: &reqwest::Response, name: &str) -> String {
    resp.headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.starts_with(&format!("{name}=")))
        .unwrap_or_else(|| panic!("no {name} cookie"))
        .split(';')
        .next()
        .unwrap()
        .to_owned()
}

/// The `value` of the input named (or with the id) `key`.
pub fn input_value(html: &str, attr: &str, key: &str) -> String {
    let at = html
        .find(&format!("{attr}=\"{key}\""))
        .unwrap_or_else(|| panic!("no input {attr}={key} in {html}"));
    let marker = "value=\"";
    let start = at + html[at..].find(marker).unwrap() + marker.len();
    html[start..].split('"').next().unwrap().to_owned()
}

/// The admin UI as a browser sees it: requests with a session cookie, the CSRF token every
/// admin page carries, and the login form.
pub struct Browser<'a> {
    pub http: &'a reqwest::Client,
    pub base: &'a str,
}

impl Browser<'_> {
    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub async fn get(&self, path: &str, cookie: &str) -> (reqwest::StatusCode, String) {
        let resp = self
            .http
            .get(self.url(path))
            .header("cookie", cookie)
            .send()
            .await
            .unwrap();
        (resp.status(), resp.text().await.unwrap())
    }

    pub async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.http
            .post(self.url(path))
            .header("cookie", cookie)
            .form(form)
            .send()
            .await
            .unwrap()
    }

    /// The session's CSRF token, from the sign-out form every admin page has.
    pub async fn csrf(&self, cookie: &str) -> String {
        let (status, html) = self.get("/admin", cookie).await;
        assert_eq!(status, 200, "{html}");
        input_value(&html, "name", "csrf")
    }

    /// Signs in through the login form: the response (303 with a session, or the refusal).
    pub async fn login(&self, user: &str, password: &str) -> reqwest::Response {
        let form = self.http.get(self.url("/login")).send().await.unwrap();
        let pre = session_cookie(&form, "mg_login");
        let token = input_value(&form.text().await.unwrap(), "name", "login_token");
        self.http
            .post(self.url("/login"))
            .header("cookie", pre)
            .form(&[
                ("username", user),
                ("password", password),
                ("login_token", &token),
            ])
            .send()
            .await
            .unwrap()
    }

    /// [`login`](Self::login) that must succeed; the session cookie.
    pub async fn sign_in(&self, user: &str, password: &str) -> String {
        let resp = self.login(user, password).await;
        assert_eq!(
            resp.status(),
            reqwest::StatusCode::SEE_OTHER,
            "{user} signs in"
        );
        session_cookie(&resp, "mg_session")
    }
}

/// What the SMTP proxy does after the message's data has gone through.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AfterData {
    /// Relays the server's reply to the data (DATA's 250), then relays nothing more in
    /// either direction and keeps the connection open: QUIT is never answered.
    HoldAfterReply,
    /// Stops relaying before the data is complete (from `threshold` bytes on), keeping the
    /// connection open: the message is mid-send and the server never takes it.
    StallMidData,
    /// Relays everything (the proxy only counts connections).
    PassThrough,
    /// On the first connection only: closes it (both ways) right after relaying the reply
    /// to the `n`-th message's data, as a server ending a session between two messages.
    CloseAfterMessages(u64),
    /// On the first connection only: after `n` messages went through, closes it in the
    /// middle of the next message's data (once `threshold / 2` of it went up).
    CutMidMessage(u64),
}

/// A loopback TCP proxy in front of the rig's submission port (STARTTLS passes through
/// untouched). The messages are the only large uploads, so `threshold` bytes sent by the
/// client (in all, or since the server last spoke) mark a message's data without reading
/// the encrypted stream. `connections` counts the SMTP sessions opened through it; while
/// held ([`SmtpProxy::hold`]) a new connection waits before it reaches the server.
pub struct SmtpProxy {
    pub port: u16,
    pub connections: std::sync::Arc<std::sync::atomic::AtomicU64>,
    gate: std::sync::Arc<tokio::sync::watch::Sender<bool>>,
}

impl SmtpProxy {
    pub async fn start(upstream: u16, threshold: u64, mode: AfterData) -> SmtpProxy {
        use std::sync::atomic::Ordering;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = connections.clone();
        let gate = std::sync::Arc::new(tokio::sync::watch::channel(true).0);
        let open = gate.clone();
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let first = counted.fetch_add(1, Ordering::SeqCst) == 0;
                let mode = match mode {
                    AfterData::CloseAfterMessages(_) | AfterData::CutMidMessage(_) if !first => {
                        AfterData::PassThrough
                    }
                    other => other,
                };
                let mut open = open.subscribe();
                tokio::spawn(async move {
                    if open.wait_for(|open| *open).await.is_err() {
                        return;
                    }
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    else {
                        return;
                    };
                    relay(client, server, threshold, mode).await;
                });
            }
        });
        SmtpProxy {
            port,
            connections,
            gate,
        }
    }

    /// New connections wait (before the server's greeting) until [`SmtpProxy::release`]:
    /// lets a test queue a whole batch before the first message goes out.
    pub fn hold(&self) {
        self.gate.send_replace(false);
    }

    pub fn release(&self) {
        self.gate.send_replace(true);
    }

    pub fn connections(&self) -> u64 {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
}

async fn relay(
    client: tokio::net::TcpStream,
    server: tokio::net::TcpStream,
    threshold: u64,
    mode: AfterData,
) {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = server.into_split();
    let uploaded = Arc::new(AtomicU64::new(0));
    // Bytes the client sent since the server last spoke, and messages whose data the
    // server has answered.
    let since_reply = Arc::new(AtomicU64::new(0));
    let messages = Arc::new(AtomicU64::new(0));
    let held = Arc::new(AtomicBool::new(false));
    let (cut, mut cut_seen) = tokio::sync::watch::channel(false);
    let cut = Arc::new(cut);
    let (up_bytes, up_held, up_since, up_messages, up_cut) = (
        uploaded.clone(),
        held.clone(),
        since_reply.clone(),
        messages.clone(),
        cut.clone(),
    );
    let mut up_cut_seen = cut_seen.clone();
    let up = tokio::spawn(async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = tokio::select! {
                r = client_read.read(&mut buf) => match r {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                },
                _ = up_cut_seen.changed() => return,
            };
            let total = up_bytes.load(Ordering::SeqCst) + n as u64;
            let since = up_since.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
            if let AfterData::CutMidMessage(after) = mode
                && up_messages.load(Ordering::SeqCst) >= after
                && since >= threshold / 2
            {
                up_cut.send_replace(true);
                return;
            }
            if mode == AfterData::StallMidData && total >= threshold {
                up_held.store(true, Ordering::SeqCst);
            }
            if up_held.load(Ordering::SeqCst) {
                continue; // swallowed: the server never sees it
            }
            if server_write.write_all(&buf[..n]).await.is_err() {
                return;
            }
            up_bytes.store(total, Ordering::SeqCst);
        }
    });
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            r = server_read.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            _ = cut_seen.changed() => break,
        };
        if held.load(Ordering::SeqCst) {
            continue;
        }
        let answered_data = since_reply.swap(0, Ordering::SeqCst) >= threshold;
        if client_write.write_all(&buf[..n]).await.is_err() {
            break;
        }
        if mode == AfterData::HoldAfterReply && uploaded.load(Ordering::SeqCst) >= threshold {
            // That was the reply to the data: from here on nothing passes.
            held.store(true, Ordering::SeqCst);
        }
        if answered_data {
            let done = messages.fetch_add(1, Ordering::SeqCst) + 1;
            if mode == AfterData::CloseAfterMessages(done) {
                cut.send_replace(true);
                break;
            }
        }
    }
    let _ = up.await;
}
