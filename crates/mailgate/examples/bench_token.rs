//! How fast is `mailgate token`, what does a refresh cost, and how fast does a running
//! server answer the token API? Run with
//! `cargo run --release -p mailgate --example bench_token` (see docs/benchmarks.md).
//!
//! Everything is measured in the same run against baselines: the bare process start of the
//! same binary (`mailgate --version`) for the CLI, the emulator's own token endpoint for
//! a refresh, and `/healthz` of the same server for the token API (with `wrk`, which the
//! example installs from Debian when it runs as root and does not find it).
//! `BENCH_BASELINE_MAILGATE=/path/to/an/older/mailgate` measures that binary too, on the
//! same data directory in the same run, for before/after figures.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use mailgate_testkit::idp::{ClientSpec, Idp, IdpConfig, UserSpec, sign_in};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "00000000-0000-4000-8000-00000000be4c";
const SECRET: &str = "bench-client-secret-value";
const ROUNDS: u32 = 30;

fn mailgate(dir: &std::path::Path, public_url: &str) -> Command {
    // Built first: `cargo run --example` does not build the package's binaries.
    mailgate_at(&common::mailgate_exe(), dir, public_url)
}

fn mailgate_at(exe: &std::path::Path, dir: &std::path::Path, public_url: &str) -> Command {
    let mut c = Command::new(exe);
    c.env("MAILGATE_DATA_DIR", dir)
        .env("MAILGATE_PUBLIC_URL", public_url)
        // The emulator listens on loopback.
        .env("MAILGATE_IDP_ALLOW_PRIVATE", "true")
        .env_remove("RUST_LOG");
    c
}

fn run(c: &mut Command, stdin: Option<&str>) -> String {
    use std::io::Write;
    c.stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    if let Some(s) = stdin {
        child.stdin.take().unwrap().write_all(s.as_bytes()).unwrap();
    }
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn time_n(n: u32, mut f: impl FnMut()) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let idp = Idp::start(IdpConfig::default()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The callback is served by a short-lived `serve`.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let public = format!("http://127.0.0.1:{port}");
    let admin = idp.admin();
    admin
        .add_client(ClientSpec::confidential(
            CLIENT_ID,
            SECRET,
            &format!("{public}/oauth/callback"),
        ))
        .await
        .unwrap();
    admin
        .add_user(UserSpec::new("bench@example.test", "pw"))
        .await
        .unwrap();
    run(
        mailgate(&data, &public).args([
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
        ]),
        Some(SECRET),
    );
    run(
        mailgate(&data, &public).args([
            "account",
            "add",
            "--name",
            "bench",
            "--app",
            "Bench",
            "--email",
            "bench@example.test",
        ]),
        None,
    );
    let mut server = mailgate(&data, &public)
        .env("MAILGATE_LISTEN", format!("127.0.0.1:{port}"))
        .arg("serve")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        // Keep reading: `serve` prints the setup link next, and a closed pipe would end it.
        std::thread::spawn(move || for _ in out.lines() {});
    }
    let url = run(
        mailgate(&data, &public).args(["authorize", "bench", "--no-wait"]),
        None,
    );
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let callback = sign_in(&http, url.trim(), "bench@example.test", "pw")
        .await
        .unwrap();
    assert_eq!(
        http.get(callback.as_str()).send().await.unwrap().status(),
        200
    );
    let _ = server.kill();
    let _ = server.wait();

    ensure_wrk();
    let mut exes = Vec::new();
    if let Some(old) = std::env::var_os("BENCH_BASELINE_MAILGATE") {
        exes.push(("before (BENCH_BASELINE_MAILGATE)", PathBuf::from(old)));
    }
    exes.push(("this build", common::mailgate_exe()));
    let api_token = run(
        mailgate(&data, &public).args([
            "api-token",
            "create",
            "--name",
            "bench",
            "--scope",
            "tokens:read",
        ]),
        None,
    )
    .trim()
    .to_owned();
    let mut results = Vec::new();
    for (label, exe) in &exes {
        let cli = cli_figures(&idp, exe, &data, &public).await;
        let api = api_figures(&admin, exe, &data, &public, port, &api_token).await;
        results.push((label, cli, api));
    }
    for (label, cli, api) in &results {
        println!(
            "{label}: {}",
            exes.iter().find(|e| e.0 == **label).unwrap().1.display()
        );
        cli.print();
        api.print();
    }
    // BENCH_KEEP_DATA=1 leaves the data directory (an authorized account whose token stays
    // cached for an hour) for experiments with `mailgate token`.
    if std::env::var_os("BENCH_KEEP_DATA").is_some() {
        println!("data directory kept: {}", dir.keep().join("data").display());
    }
}

struct CliFigures {
    baseline: Duration,
    cached: Duration,
    refresh: Duration,
    direct: Duration,
}

impl CliFigures {
    fn print(&self) {
        println!("  median of {ROUNDS} runs each (release build, 2 cores)");
        println!(
            "  mailgate --version (process start, baseline) {:>8.2} ms",
            self.baseline.as_secs_f64() * 1e3
        );
        println!(
            "  mailgate token (cached token)                {:>8.2} ms  = {:.2}x baseline",
            self.cached.as_secs_f64() * 1e3,
            self.cached.as_secs_f64() / self.baseline.as_secs_f64()
        );
        println!(
            "  mailgate token (refresh at the provider)     {:>8.2} ms  = {:.2}x cached",
            self.refresh.as_secs_f64() * 1e3,
            self.refresh.as_secs_f64() / self.cached.as_secs_f64()
        );
        println!(
            "  one token request to the emulator, directly  {:>8.2} ms",
            self.direct.as_secs_f64() * 1e3
        );
    }
}

async fn cli_figures(idp: &Idp, exe: &Path, data: &Path, public: &str) -> CliFigures {
    let (exe2, data2, public2) = (exe.to_owned(), data.to_owned(), public.to_owned());
    let (baseline, cached) = tokio::task::spawn_blocking(move || {
        let baseline = time_n(ROUNDS, || {
            run(mailgate_at(&exe2, &data2, &public2).arg("--version"), None);
        });
        let cached = time_n(ROUNDS, || {
            run(
                mailgate_at(&exe2, &data2, &public2).args(["token", "bench"]),
                None,
            );
        });
        (baseline, cached)
    })
    .await
    .unwrap();

    // A refresh through mailgate versus the same refresh request made directly.
    let db = db_url(data);
    let (exe3, data3, public3) = (exe.to_owned(), data.to_owned(), public.to_owned());
    let refresh = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        time_n(ROUNDS, || {
            rt.block_on(expire_stored_token(&db));
            run(
                mailgate_at(&exe3, &data3, &public3).args(["token", "bench"]),
                None,
            );
        })
    })
    .await
    .unwrap();
    let token_url = format!(
        "{}/{}/oauth2/v2.0/token",
        idp.base_url(),
        mailgate_testkit::idp::DEFAULT_TENANT_ID
    );
    let mut direct = Vec::new();
    let client = reqwest::Client::new();
    for _ in 0..ROUNDS {
        let t = Instant::now();
        let r = client
            .post(&token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", CLIENT_ID),
                ("client_secret", SECRET),
                ("scope", "https://outlook.office365.com/.default"),
            ])
            .send()
            .await
            .unwrap();
        assert!(r.status().is_success(), "{}", r.text().await.unwrap());
        direct.push(t.elapsed());
    }
    CliFigures {
        baseline,
        cached,
        refresh,
        direct: median(direct),
    }
}

fn db_url(data: &Path) -> String {
    format!("sqlite://{}", data.join("mailgate.db").display())
}

/// Makes the stored access token expired, from a connection of the benchmark's own (as
/// another process would).
async fn expire_stored_token(db: &str) {
    sqlx::any::install_default_drivers();
    let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(db)
        .await
        .unwrap();
    sqlx::raw_sql("UPDATE grants SET access_expires_at = 1000, access_issued_at = 0")
        .execute(&mut c)
        .await
        .unwrap();
}

/// `wrk` from Debian, installed if missing and this runs as root.
fn ensure_wrk() {
    let found = Command::new("wrk").arg("--version").output().is_ok();
    if !found {
        let status = Command::new("apt-get")
            .args(["install", "-y", "-q", "wrk"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        assert!(
            status.is_ok_and(|s| s.success()),
            "this benchmark needs wrk: apt-get install wrk"
        );
    }
}

/// Requests per second `wrk` reaches over 16 keep-alive connections for `secs` seconds.
fn wrk_rps(url: &str, bearer: Option<&str>, secs: u32) -> f64 {
    let mut c = Command::new("wrk");
    c.args(["-t1", "-c16", &format!("-d{secs}s")]);
    if let Some(b) = bearer {
        c.args(["-H", &format!("Authorization: Bearer {b}")]);
    }
    let out = c.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("Non-2xx"),
        "wrk saw errors from {url}: {text}"
    );
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no Requests/sec in wrk's output: {text}"))
}

struct ApiFigures {
    healthz_rps: f64,
    token_rps: f64,
    cached_p99: Duration,
    expired_p99: Duration,
    refreshes_per_burst: f64,
}

const BURST: usize = 1000;
const BURST_ROUNDS: usize = 9;

impl ApiFigures {
    fn print(&self) {
        println!(
            "  token API, wrk -t1 -c16, alternating blocks of 4 s (healthz, token, token, healthz)"
        );
        println!(
            "  GET /healthz (baseline)                      {:>8.0} req/s",
            self.healthz_rps
        );
        println!(
            "  GET /api/v1/accounts/1/token (cached)        {:>8.0} req/s  = {:.2}x baseline",
            self.token_rps,
            self.token_rps / self.healthz_rps
        );
        println!("  {BURST} concurrent token requests, p99, median of {BURST_ROUNDS} bursts each");
        println!(
            "  cached token (baseline)                      {:>8.1} ms",
            self.cached_p99.as_secs_f64() * 1e3
        );
        println!(
            "  expired token ({:.1} refreshes per burst)      {:>8.1} ms  = {:.2}x baseline",
            self.refreshes_per_burst,
            self.expired_p99.as_secs_f64() * 1e3,
            self.expired_p99.as_secs_f64() / self.cached_p99.as_secs_f64()
        );
    }
}

/// The p99 latency of `BURST` token requests sent at once.
async fn burst_p99(http: &reqwest::Client, url: &str, bearer: &str) -> Duration {
    let tasks: Vec<_> = (0..BURST)
        .map(|_| {
            let (http, url, bearer) = (http.clone(), url.to_owned(), bearer.to_owned());
            tokio::spawn(async move {
                let t = Instant::now();
                let r = http.get(&url).bearer_auth(&bearer).send().await.unwrap();
                assert_eq!(r.status(), 200);
                r.bytes().await.unwrap();
                t.elapsed()
            })
        })
        .collect();
    let mut times = Vec::with_capacity(BURST);
    for t in tasks {
        times.push(t.await.unwrap());
    }
    times.sort();
    times[BURST * 99 / 100]
}

async fn api_figures(
    idp: &mailgate_testkit::idp::IdpAdmin,
    exe: &Path,
    data: &Path,
    public: &str,
    port: u16,
    api_token: &str,
) -> ApiFigures {
    let mut server = mailgate_at(exe, data, public)
        .env("MAILGATE_LISTEN", format!("127.0.0.1:{port}"))
        .arg("serve")
        .stdout(std::process::Stdio::piped())
        .stderr(match std::env::var_os("BENCH_SERVE_LOG") {
            Some(f) => std::fs::File::create(f).unwrap().into(),
            None => std::process::Stdio::null(),
        })
        .spawn()
        .unwrap();
    {
        use std::io::BufRead;
        let mut out = std::io::BufReader::new(server.stdout.take().unwrap());
        let mut line = String::new();
        out.read_line(&mut line).unwrap();
        std::thread::spawn(move || for _ in out.lines() {});
    }
    let healthz = format!("{public}/healthz");
    let token = format!("{public}/api/v1/accounts/1/token");
    let (h, t, bearer) = (healthz.clone(), token.clone(), api_token.to_owned());
    let (healthz_rps, token_rps) = tokio::task::spawn_blocking(move || {
        // Warm-up, then alternating blocks so a change in the machine's load falls on both.
        wrk_rps(&t, Some(&bearer), 1);
        let mut hs = Vec::new();
        let mut ts = Vec::new();
        hs.push(wrk_rps(&h, None, 4));
        ts.push(wrk_rps(&t, Some(&bearer), 4));
        ts.push(wrk_rps(&t, Some(&bearer), 4));
        hs.push(wrk_rps(&h, None, 4));
        (hs.iter().sum::<f64>() / 2.0, ts.iter().sum::<f64>() / 2.0)
    })
    .await
    .unwrap();

    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(BURST)
        .build()
        .unwrap();
    burst_p99(&http, &token, api_token).await;
    let db = db_url(data);
    let refresh_count = || async {
        idp.counters(Some(CLIENT_ID))
            .await
            .unwrap()
            .get("token:refresh_token")
            .copied()
            .unwrap_or(0)
    };
    let before = refresh_count().await;
    let mut cached = Vec::new();
    let mut expired = Vec::new();
    for _ in 0..BURST_ROUNDS {
        cached.push(burst_p99(&http, &token, api_token).await);
        expire_stored_token(&db).await;
        expired.push(burst_p99(&http, &token, api_token).await);
    }
    let refreshes = refresh_count().await - before;
    let _ = server.kill();
    let _ = server.wait();
    ApiFigures {
        healthz_rps,
        token_rps,
        cached_p99: median(cached),
        expired_p99: median(expired),
        refreshes_per_burst: refreshes as f64 / BURST_ROUNDS as f64,
    }
}
