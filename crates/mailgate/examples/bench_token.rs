//! How fast is `mailgate token`, and what does a refresh cost? Run with
//! `cargo run --release -p mailgate --example bench_token` (see docs/benchmarks.md).
//!
//! Everything is measured in the same run against baselines: the bare process start of the
//! same binary (`mailgate --version`) for the CLI, and the emulator's own token endpoint for
//! a refresh.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;

use mailgate_testkit::idp::{ClientSpec, Idp, IdpConfig, UserSpec, sign_in};
use std::process::Command;
use std::time::{Duration, Instant};

const CLIENT_ID: &str = "00000000-0000-4000-8000-00000000be4c";
const SECRET: &str = "bench-client-secret-value";
const ROUNDS: u32 = 30;

fn mailgate(dir: &std::path::Path, public_url: &str) -> Command {
    // Built first: `cargo run --example` does not build the package's binaries.
    let mut c = Command::new(common::mailgate_exe());
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

    let data2 = data.clone();
    let public2 = public.clone();
    let (baseline, cached) = tokio::task::spawn_blocking(move || {
        let baseline = time_n(ROUNDS, || {
            run(mailgate(&data2, &public2).arg("--version"), None);
        });
        let cached = time_n(ROUNDS, || {
            run(mailgate(&data2, &public2).args(["token", "bench"]), None);
        });
        (baseline, cached)
    })
    .await
    .unwrap();

    // A refresh through mailgate versus the same refresh request made directly.
    let db = format!("sqlite://{}", data.join("mailgate.db").display());
    let data3 = data.clone();
    let public3 = public.clone();
    let refresh = tokio::task::spawn_blocking(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        time_n(ROUNDS, || {
            rt.block_on(async {
                sqlx::any::install_default_drivers();
                let mut c = <sqlx::AnyConnection as sqlx::Connection>::connect(&db)
                    .await
                    .unwrap();
                sqlx::raw_sql("UPDATE grants SET access_expires_at = 1000, access_issued_at = 0")
                    .execute(&mut c)
                    .await
                    .unwrap();
            });
            run(mailgate(&data3, &public3).args(["token", "bench"]), None);
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
    let direct = median(direct);
    println!("median of {ROUNDS} runs each (release build, 2 cores)");
    println!(
        "  mailgate --version (process start, baseline) {:>8.2} ms",
        baseline.as_secs_f64() * 1e3
    );
    println!(
        "  mailgate token (cached token)                {:>8.2} ms  = {:.2}x baseline",
        cached.as_secs_f64() * 1e3,
        cached.as_secs_f64() / baseline.as_secs_f64()
    );
    println!(
        "  mailgate token (refresh at the provider)     {:>8.2} ms  = {:.2}x cached",
        refresh.as_secs_f64() * 1e3,
        refresh.as_secs_f64() / cached.as_secs_f64()
    );
    println!(
        "  one token request to the emulator, directly  {:>8.2} ms",
        direct.as_secs_f64() * 1e3
    );
}
