//! The HTTP edge through the real binary: connection limits and timeouts, the send route's
//! slots, security headers, the sign-in lock-out per (user, source) with trusted proxies,
//! and the setup link (token checked before hashing, expiry).

use crate::support::{Browser, Server, TestEnv, input_value, session_cookie, text};
use reqwest::StatusCode;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ADMIN_PASSWORD: &str = "a long enough admin passphrase";

fn start(vars: &[(&str, &str)]) -> (TestEnv, Server) {
    let env = TestEnv::new();
    for (k, v) in vars {
        env.set_var(k, v);
    }
    let server = Server::start(&env);
    (env, server)
}

fn host_port(server: &Server) -> String {
    server.base.trim_start_matches("http://").to_owned()
}

/// A client whose connections leave from `source` (any 127.x.y.z is this machine), so one
/// test can play several clients on loopback.
fn client_from(source: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .local_address(IpAddr::V4(Ipv4Addr::from(source)))
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// `mailgate_password_hashes_total` from `/metrics`: argon2 runs in the server so far.
async fn argon2_runs(server: &Server) -> u64 {
    let body = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    body.lines()
        .find_map(|l| l.strip_prefix("mailgate_password_hashes_total "))
        .unwrap_or_else(|| panic!("no password hash counter in {body}"))
        .trim()
        .parse()
        .unwrap()
}

/// Reads until the server closes the connection (Ok: what it sent) or `within` passes (Err).
async fn read_until_closed(stream: &mut TcpStream, within: Duration) -> Result<String, String> {
    let mut got = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let mut buf = [0u8; 4096];
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Err(_) => return Err(text(&got)),
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(text(&got)),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthz_answers_while_idle_sockets_exceed_the_servers_file_limit() {
    let (_env, server) = start(&[
        ("MAILGATE_HTTP_MAX_CONNECTIONS", "64"),
        ("MAILGATE_HTTP_HEADER_TIMEOUT_SECS", "1"),
    ]);
    // Give the running server a small descriptor limit (soft and hard), as a busy host
    // would: more idle sockets than descriptors is then easy to reach.
    let pid = server.child.id().to_string();
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=512:512"])
        .output()
        .unwrap();
    assert!(out.status.success(), "prlimit: {}", text(&out.stderr));

    let addr = host_port(&server);
    let mut idle = Vec::new();
    for _ in 0..600 {
        // Connections beyond the listen backlog may not complete; those are skipped.
        if let Ok(Ok(s)) =
            tokio::time::timeout(Duration::from_millis(500), TcpStream::connect(&addr)).await
        {
            idle.push(s);
        }
    }
    assert!(idle.len() > 512, "only {} idle sockets opened", idle.len());

    let started = Instant::now();
    let resp = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
        .get(format!("{}/healthz", server.base))
        .send()
        .await
        .expect("/healthz must answer while idle sockets are held");
    assert_eq!(resp.status(), 200);
    let waited = started.elapsed();
    eprintln!(
        "healthz answered in {waited:?} with {} idle sockets held",
        idle.len()
    );
    assert!(waited < Duration::from_secs(30));
    drop(idle);
    // And the server is still healthy afterwards.
    let resp = reqwest::get(format!("{}/healthz", server.base))
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn half_a_request_head_is_cut_off_after_the_header_timeout() {
    let (_env, server) = start(&[("MAILGATE_HTTP_HEADER_TIMEOUT_SECS", "1")]);
    let mut slow = TcpStream::connect(host_port(&server)).await.unwrap();
    let started = Instant::now();
    // No blank line: the head never ends.
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ")
        .await
        .unwrap();
    let sent = read_until_closed(&mut slow, Duration::from_secs(15))
        .await
        .expect("the server must close a connection whose head does not arrive");
    let after = started.elapsed();
    eprintln!("half a head: closed after {after:?}, server sent {sent:?}");
    assert!(
        after >= Duration::from_millis(900),
        "closed before the timeout: {after:?}"
    );
    assert!(!sent.contains("200 OK"), "{sent}");

    // A silent connection (nothing sent at all) is closed the same way.
    let mut silent = TcpStream::connect(host_port(&server)).await.unwrap();
    read_until_closed(&mut silent, Duration::from_secs(15))
        .await
        .expect("a silent connection must be closed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_request_body_is_cut_off_after_the_idle_timeout() {
    let (_env, server) = start(&[("MAILGATE_HTTP_IDLE_TIMEOUT_SECS", "2")]);
    let mut slow = TcpStream::connect(host_port(&server)).await.unwrap();
    let started = Instant::now();
    slow.write_all(
        b"POST /login HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 1000\r\n\r\nusername=a",
    )
    .await
    .unwrap();
    read_until_closed(&mut slow, Duration::from_secs(20))
        .await
        .expect("the server must close a connection whose body stalls");
    let after = started.elapsed();
    eprintln!("stalled body: closed after {after:?}");
    assert!(after >= Duration::from_millis(1900), "{after:?}");
}

/// Starts a send whose body never finishes: it holds a send slot until dropped.
async fn hold_a_send_slot(server: &Server, token: &str) -> TcpStream {
    let mut s = TcpStream::connect(host_port(server)).await.unwrap();
    s.write_all(
        format!(
            "POST /api/v1/accounts/1/messages HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {token}\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{{\"to\":"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    s
}

async fn send(server: &Server, token: &str) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/api/v1/accounts/1/messages", server.base))
        .bearer_auth(token)
        .json(&serde_json::json!({"to": ["bob@example.test"], "subject": "hi", "text": "hi"}))
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_beyond_the_concurrency_limit_get_503_with_retry_after() {
    let (env, server) = start(&[
        ("MAILGATE_HTTP_SEND_CONCURRENCY", "2"),
        ("MAILGATE_HTTP_SEND_WAIT_SECS", "1"),
    ]);
    let out = env.run(
        &[
            "api-token",
            "create",
            "--name",
            "sender",
            "--scope",
            "messages:send",
        ],
        None,
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();

    // A free slot: the request reaches the handler (no such account here).
    let first = send(&server, &token).await;
    assert_ne!(first.status(), StatusCode::SERVICE_UNAVAILABLE);

    // Two slow uploads take the two slots. A holder that was refused (it waited in vain
    // while a probe and the other holder had the slots) is replaced until both hold.
    let mut holders = vec![
        hold_a_send_slot(&server, &token).await,
        hold_a_send_slot(&server, &token).await,
    ];
    let deadline = Instant::now() + Duration::from_secs(15);
    let busy = loop {
        for holder in holders.iter_mut() {
            let mut answer = [0u8; 64];
            if !matches!(holder.try_read(&mut answer), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
            {
                *holder = hold_a_send_slot(&server, &token).await;
            }
        }
        let asked = Instant::now();
        let resp = send(&server, &token).await;
        if resp.status() == StatusCode::SERVICE_UNAVAILABLE {
            let waited = asked.elapsed();
            eprintln!("send refused after waiting {waited:?} for a slot");
            assert!(waited >= Duration::from_millis(900), "{waited:?}");
            break resp;
        }
        assert!(
            Instant::now() < deadline,
            "never refused: {}",
            resp.status()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let retry_after: u64 = busy.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1);
    let body: serde_json::Value = busy.json().await.unwrap();
    assert_eq!(body["type"], "urn:mailgate:problem:send_busy", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("http_send_concurrency")
    );

    // Without a valid token nobody takes or waits for a slot: 401 as ever.
    let stranger = reqwest::Client::new()
        .post(format!("{}/api/v1/accounts/1/messages", server.base))
        .bearer_auth("mgt_not-a-token")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(stranger.status(), StatusCode::UNAUTHORIZED);

    // Reading the inbox (GET on the same path) is not a send and is not limited.
    let list = reqwest::Client::new()
        .get(format!("{}/api/v1/accounts/1/messages", server.base))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_ne!(list.status(), StatusCode::SERVICE_UNAVAILABLE);

    // A slow upload that goes away frees its slot.
    let last = holders.pop();
    drop(holders);
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let resp = send(&server, &token).await;
        if resp.status() != StatusCode::SERVICE_UNAVAILABLE {
            break;
        }
        assert!(Instant::now() < deadline, "the slot was never freed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_the_security_headers() {
    let (_env, server) = start(&[]);
    let http = client_from([127, 0, 0, 1]);
    for (method, path) in [
        ("GET", "/login"),
        ("GET", "/setup?token=wrong"),
        ("GET", "/admin"),
        ("GET", "/healthz"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/accounts"),
        ("GET", "/api/v1/openapi.json"),
        ("POST", "/api/v1/accounts/1/messages"),
        ("GET", "/no/such/page"),
    ] {
        let resp = http
            .request(method.parse().unwrap(), format!("{}{path}", server.base))
            .send()
            .await
            .unwrap();
        let h = resp.headers();
        for (name, value) in [
            ("x-frame-options", "DENY"),
            ("content-security-policy", "frame-ancestors 'none'"),
            ("x-content-type-options", "nosniff"),
            ("referrer-policy", "no-referrer"),
        ] {
            assert_eq!(
                h.get(name).and_then(|v| v.to_str().ok()),
                Some(value),
                "{method} {path} ({}): {name}",
                resp.status()
            );
        }
    }
}

fn add_admin(env: &TestEnv) {
    env.ok(
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
}

/// A fresh sign-in form: (its mg_login cookie, its token).
async fn login_form(http: &reqwest::Client, base: &str) -> (String, String) {
    let form = http.get(format!("{base}/login")).send().await.unwrap();
    let cookie = session_cookie(&form, "mg_login");
    let token = input_value(&form.text().await.unwrap(), "name", "login_token");
    (cookie, token)
}

async fn post_login(
    http: &reqwest::Client,
    base: &str,
    form: &(String, String),
    password: &str,
    forwarded_for: Option<&str>,
) -> StatusCode {
    let mut req = http
        .post(format!("{base}/login"))
        .header("cookie", &form.0)
        .form(&[
            ("username", "admin"),
            ("password", password),
            ("login_token", form.1.as_str()),
        ]);
    if let Some(xff) = forwarded_for {
        req = req.header("x-forwarded-for", xff);
    }
    req.send().await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_parallel_wrong_passwords_get_five_checks_and_the_admin_elsewhere_signs_in() {
    let (env, server) = start(&[]);
    add_admin(&env);
    let attacker = client_from([127, 0, 0, 2]);
    let mut forms = Vec::new();
    for _ in 0..60 {
        forms.push(login_form(&attacker, &server.base).await);
    }
    let before = argon2_runs(&server).await;
    let mut guesses = tokio::task::JoinSet::new();
    for (i, form) in forms.into_iter().enumerate() {
        let (http, base) = (attacker.clone(), server.base.clone());
        guesses.spawn(async move {
            post_login(
                &http,
                &base,
                &form,
                &format!("wrong guess number {i}"),
                None,
            )
            .await
        });
    }
    let mut statuses = Vec::new();
    while let Some(status) = guesses.join_next().await {
        statuses.push(status.unwrap());
    }
    let checks = argon2_runs(&server).await - before;
    let wrong = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let locked = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    eprintln!("60 parallel guesses: {checks} password checks, {wrong} × 401, {locked} × 429");
    assert_eq!(wrong + locked, 60, "{statuses:?}");
    assert!(
        checks <= 5,
        "{checks} password checks for 60 parallel guesses"
    );
    assert!(wrong <= 4, "{wrong} guesses were told 'wrong password'");

    // The attacker's address is locked out of "admin", even with the right password…
    let form = login_form(&attacker, &server.base).await;
    assert_eq!(
        post_login(&attacker, &server.base, &form, ADMIN_PASSWORD, None).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // …but the administrator at another address signs in.
    let admin_http = client_from([127, 0, 0, 1]);
    let admin = Browser {
        http: &admin_http,
        base: &server.base,
    };
    admin.sign_in("admin", ADMIN_PASSWORD).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn x_forwarded_for_counts_only_from_a_trusted_proxy() {
    // 127.0.0.3 plays the reverse proxy; 127.0.0.2 is a client talking directly.
    let (env, server) = start(&[("MAILGATE_TRUSTED_PROXIES", "127.0.0.3")]);
    add_admin(&env);
    let base = &server.base;

    // A direct client cannot pick a new address per guess: the header is ignored.
    let direct = client_from([127, 0, 0, 2]);
    for i in 0..5 {
        let form = login_form(&direct, base).await;
        let xff = format!("203.0.113.{i}");
        post_login(&direct, base, &form, "a wrong guess", Some(&xff)).await;
    }
    let form = login_form(&direct, base).await;
    assert_eq!(
        post_login(&direct, base, &form, ADMIN_PASSWORD, Some("203.0.113.99")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "an untrusted X-Forwarded-For must not escape the lock"
    );

    // Behind the trusted proxy, the client's address is the right-most forwarded one.
    let proxy = client_from([127, 0, 0, 3]);
    for _ in 0..5 {
        let form = login_form(&proxy, base).await;
        post_login(&proxy, base, &form, "a wrong guess", Some("198.51.100.7")).await;
    }
    let form = login_form(&proxy, base).await;
    assert_eq!(
        post_login(&proxy, base, &form, ADMIN_PASSWORD, Some("198.51.100.7")).await,
        StatusCode::TOO_MANY_REQUESTS,
        "198.51.100.7 is locked"
    );
    // A forged entry left of the proxy's own does not help the locked client.
    let form = login_form(&proxy, base).await;
    assert_eq!(
        post_login(
            &proxy,
            base,
            &form,
            ADMIN_PASSWORD,
            Some("198.51.100.8, 198.51.100.7")
        )
        .await,
        StatusCode::TOO_MANY_REQUESTS
    );
    // Another client behind the same proxy is not locked, and neither is the proxy itself.
    let form = login_form(&proxy, base).await;
    assert_eq!(
        post_login(&proxy, base, &form, ADMIN_PASSWORD, Some("198.51.100.8")).await,
        StatusCode::SEE_OTHER
    );
}

async fn post_setup(server: &Server, token: &str) -> reqwest::Response {
    client_from([127, 0, 0, 1])
        .post(format!("{}/setup", server.base))
        .form(&[
            ("token", token),
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("confirm", ADMIN_PASSWORD),
        ])
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_setup_token_is_refused_before_any_hashing() {
    let (_env, server) = start(&[]);
    let link = server.setup_link();
    let token = link.split("token=").nth(1).unwrap().to_owned();
    assert_eq!(
        post_setup(&server, &token).await.status(),
        StatusCode::SEE_OTHER
    );

    let before = argon2_runs(&server).await;
    let started = Instant::now();
    for guess in ["", "wrong", token.as_str()] {
        // The used token, a wrong one and none: all refused, none hashed.
        for _ in 0..5 {
            let resp = post_setup(&server, guess).await;
            assert_eq!(resp.status(), StatusCode::NOT_FOUND, "token {guess:?}");
        }
    }
    let per_request = started.elapsed() / 15;
    let hashed = argon2_runs(&server).await - before;
    eprintln!("15 refused setup POSTs: {per_request:?} each, {hashed} argon2 runs");
    assert_eq!(hashed, 0, "a refused setup POST must not hash the password");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_setup_link_is_refused_and_says_how_to_get_a_new_one() {
    let (env, server) = start(&[]);
    let link = server.setup_link();
    let token = link.split("token=").nth(1).unwrap().to_owned();
    let http = client_from([127, 0, 0, 1]);
    assert_eq!(
        http.get(&link).send().await.unwrap().status(),
        StatusCode::OK
    );

    // Age the link by 25 hours in the database instead of waiting a day.
    {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}", env.db_path().display());
        let mut conn = sqlx::AnyConnection::connect(&url).await.unwrap();
        let aged = sqlx::query(
            "UPDATE settings SET value = CAST(CAST(value AS INTEGER) - 25 * 3600 AS TEXT) WHERE key = 'setup_token_issued_at'",
        )
        .execute(&mut conn)
        .await
        .unwrap();
        assert_eq!(aged.rows_affected(), 1, "the issue time is recorded");
        conn.close().await.unwrap();
    }

    let page = http.get(&link).send().await.unwrap();
    assert_eq!(page.status(), StatusCode::GONE);
    let html = page.text().await.unwrap();
    assert!(html.contains("expired"), "{html}");
    assert!(html.contains("mailgate user add"), "{html}");
    assert!(html.contains("Restart"), "{html}");

    let before = argon2_runs(&server).await;
    let resp = post_setup(&server, &token).await;
    assert_eq!(resp.status(), StatusCode::GONE);
    assert_eq!(argon2_runs(&server).await, before, "nothing hashed");
    let users = env.json(&["user", "list", "--json"]);
    assert_eq!(
        users.as_array().unwrap().len(),
        0,
        "no administrator created"
    );
}
