//! What mailgate sends to identity providers and what it takes back: loopback and private
//! endpoints need the operator's `MAILGATE_IDP_ALLOW_PRIVATE`, a reply that is not an OAuth
//! JSON error is never echoed, and a huge reply is abandoned at the response limit.

use crate::support::{TestEnv, text};
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// What the test-local token endpoint answers.
#[derive(Clone, Copy)]
enum Reply {
    /// A valid token response.
    Token,
    /// HTTP 404 with a body that is not an OAuth error (an internal service's page).
    InternalPage,
    /// HTTP 200 with a body of this many bytes, written as fast as loopback takes it.
    Huge(usize),
}

const INTERNAL_CANARY: &str = "INTERNAL-CANARY admin panel: db=10.0.0.5 password=hunter2";

/// A one-route HTTP server on loopback that counts the connections it accepts, so a test
/// can show that nothing at all reached it.
struct Endpoint {
    port: u16,
    connections: Arc<AtomicUsize>,
}

impl Endpoint {
    fn start(reply: Reply) -> Endpoint {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let connections = Arc::new(AtomicUsize::new(0));
        let counter = connections.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { break };
                counter.fetch_add(1, Ordering::SeqCst);
                std::thread::spawn(move || answer(stream, reply));
            }
        });
        Endpoint { port, connections }
    }

    fn url(&self, host: &str) -> String {
        format!("http://{host}:{}/token", self.port)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

fn answer(mut stream: TcpStream, reply: Reply) {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    // Read the head and the form body (small), so closing does not reset the connection.
    let mut request = Vec::new();
    let mut buf = [0u8; 4096];
    let head_end = loop {
        let Ok(n) = stream.read(&mut buf) else { return };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&buf[..n]);
        if let Some(i) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        if request.len() > 65536 {
            return;
        }
    };
    let head = String::from_utf8_lossy(&request[..head_end]).to_ascii_lowercase();
    let length: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    while request.len() < head_end + length {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => request.extend_from_slice(&buf[..n]),
        }
    }
    let _ = match reply {
        Reply::Token => {
            let body = r#"{"access_token":"at-from-test-endpoint","token_type":"Bearer","expires_in":3600}"#;
            write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        Reply::InternalPage => write!(
            stream,
            "HTTP/1.1 404 Not Found\r\ncontent-type: text/plain\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{INTERNAL_CANARY}",
            INTERNAL_CANARY.len()
        ),
        Reply::Huge(total) => {
            // No content-length: the client learns the size only by reading.
            let _ = stream.write_all(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n\r\n{\"access_token\":\"",
            );
            let chunk = vec![b'a'; 64 * 1024];
            let mut sent = 0;
            // Bounded: stops at `total` or as soon as the client hangs up.
            while sent < total {
                if stream.write_all(&chunk).is_err() {
                    break;
                }
                sent += chunk.len();
            }
            Ok(())
        }
    };
}

/// A generic app using the client-credentials flow (one token request, no browser) whose
/// token endpoint is `token_url`, and an account on it.
fn app_and_account(env: &TestEnv, token_url: &str) {
    env.ok(
        &[
            "app",
            "add",
            "--kind",
            "generic",
            "--name",
            "Internal",
            "--client-id",
            "internal-client",
            "--client-secret-stdin",
            "--flow",
            "client_credentials",
            "--token-url",
            token_url,
            "--scopes",
            "mail",
        ],
        Some("internal-client-secret"),
    );
    env.ok(
        &[
            "account",
            "add",
            "--name",
            "robot",
            "--app",
            "Internal",
            "--email",
            "robot@example.test",
            "--inbound-host",
            "mail.example.test",
            "--outbound",
            "none",
        ],
        None,
    );
}

/// Issue 12: token, JWKS and userinfo requests had no private-address filter. Without
/// `MAILGATE_IDP_ALLOW_PRIVATE`, a token endpoint on loopback — written as an IP or as a
/// name that resolves to one — is refused with a message naming the setting, and not one
/// connection reaches it; with the setting, the same app works.
#[test]
fn a_loopback_identity_provider_needs_the_operator_setting() {
    let endpoint = Endpoint::start(Reply::Token);
    let env = TestEnv::new();
    env.set_var("MAILGATE_IDP_ALLOW_PRIVATE", "false");
    app_and_account(&env, &endpoint.url("127.0.0.1"));
    for host in ["127.0.0.1", "localhost"] {
        env.ok(
            &[
                "app",
                "update",
                "Internal",
                "--token-url",
                &endpoint.url(host),
                "--client-secret-stdin",
            ],
            Some("internal-client-secret"),
        );
        let out = env.run(&["authorize", "robot"], None);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{host}: {stderr}");
        assert!(
            stderr.contains("MAILGATE_IDP_ALLOW_PRIVATE=true")
                && stderr.contains("loopback or private address"),
            "{host}: {stderr}"
        );
        assert_eq!(endpoint.connections(), 0, "{host}: a connection was made");
    }
    // The same endpoint with the operator's allow: the request is made and succeeds.
    env.set_var("MAILGATE_IDP_ALLOW_PRIVATE", "true");
    let out = env.ok(&["authorize", "robot"], None);
    assert!(out.contains("is now active"), "{out}");
    assert_eq!(endpoint.connections(), 1);
}

/// Issue 12: an internal service's reply was shown as "The provider said: …". Only the
/// fields of an OAuth JSON error may be shown; any other body is not, on the command line,
/// in the account's state or in the event log.
#[test]
fn a_reply_that_is_not_an_oauth_error_is_never_echoed() {
    let endpoint = Endpoint::start(Reply::InternalPage);
    let env = TestEnv::new();
    app_and_account(&env, &endpoint.url("127.0.0.1"));
    let out = env.run(&["authorize", "robot"], None);
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(endpoint.connections(), 1);
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    let shown = [
        stderr,
        text(
            &env.run(&["account", "show", "robot", "--json"], None)
                .stdout,
        ),
        text(&env.run(&["events", "--json"], None).stdout),
    ];
    for s in shown {
        assert!(
            !s.contains("hunter2") && !s.contains("INTERNAL-CANARY"),
            "{s}"
        );
    }
}

/// The peak resident memory (VmHWM, kB) a running process has reached, read until it
/// exits; and its exit status and stderr.
fn run_measuring_peak(env: &TestEnv, args: &[&str]) -> (u64, std::process::Output, Duration) {
    let started = Instant::now();
    let child = env
        .command()
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let status_file = format!("/proc/{}/status", child.id());
    let peak = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let (peak, done) = (peak.clone(), done.clone());
        std::thread::spawn(move || {
            // Bounded: 120 s of samples at most; VmHWM only grows, so the last read counts.
            for _ in 0..120_000 {
                if done.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(s) = std::fs::read_to_string(&status_file)
                    && let Some(kb) = s
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<usize>().ok())
                {
                    peak.fetch_max(kb, Ordering::SeqCst);
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let out = child.wait_with_output().unwrap();
    done.store(true, Ordering::SeqCst);
    sampler.join().unwrap();
    (peak.load(Ordering::SeqCst) as u64, out, started.elapsed())
}

/// Issue 12: the 1 MiB token-response limit was checked only after the whole body was in
/// memory (a 1.5 GB answer took 4.5 GB). A 256 MiB answer is now abandoned at the limit:
/// the command fails fast with an error naming the endpoint, and its peak memory stays
/// within a few MB of a normal token request's.
#[test]
fn a_huge_provider_reply_is_abandoned_at_the_limit() {
    let normal = Endpoint::start(Reply::Token);
    let huge = Endpoint::start(Reply::Huge(256 << 20));
    let env = TestEnv::new();
    app_and_account(&env, &normal.url("127.0.0.1"));
    let (baseline_kb, out, _) = run_measuring_peak(&env, &["authorize", "robot"]);
    assert!(out.status.success(), "{}", text(&out.stderr));

    env.ok(
        &[
            "app",
            "update",
            "Internal",
            "--token-url",
            &huge.url("127.0.0.1"),
            "--client-secret-stdin",
        ],
        Some("internal-client-secret"),
    );
    let (peak_kb, out, took) = run_measuring_peak(&env, &["authorize", "robot"]);
    let stderr = text(&out.stderr);
    eprintln!(
        "peak memory: {baseline_kb} kB for a normal token request, {peak_kb} kB against a 256 MiB reply; {} ms",
        took.as_millis()
    );
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("larger than 1024 KiB") && stderr.contains(&huge.url("127.0.0.1")),
        "{stderr}"
    );
    assert!(took < Duration::from_secs(15), "took {took:?}");
    assert!(
        peak_kb < baseline_kb + 50 * 1024,
        "peak {peak_kb} kB vs {baseline_kb} kB for a normal request"
    );
}

/// The same through the browser: the callback page of an authorization whose token
/// endpoint answers with an internal page names the status, not the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_callback_page_never_echoes_a_reply_that_is_not_an_oauth_error() {
    use crate::fixtures::{CLIENT_SECRET, Fixture};
    let endpoint = Endpoint::start(Reply::InternalPage);
    let f = Fixture::start().await;
    // The secret is given again with the new endpoint (as a change of where it is sent
    // may require).
    f.env.ok(
        &[
            "app",
            "update",
            "Contoso",
            "--token-url",
            &endpoint.url("127.0.0.1"),
            "--client-secret-stdin",
        ],
        Some(CLIENT_SECRET),
    );
    let url = f.authorize_url("support");
    let (_, page) = f.sign_in_and_callback(&url, &f.mailbox).await;
    assert_eq!(endpoint.connections(), 1, "{page}");
    assert!(page.contains("HTTP 404"), "{page}");
    assert!(
        !page.contains("hunter2") && !page.contains("INTERNAL-CANARY"),
        "{page}"
    );
}
