//! API send throughput with several `serve` instances on one PostgreSQL (issue 18), against
//! one instance on SQLite, in one run. Run with
//! `cargo run --release -p mailgate --example bench_instances` (as root: it starts a private
//! mail rig and a throwaway PostgreSQL cluster; see docs/benchmarks.md).
//!
//! Four set-ups, each with its own database, data directories and authorized account:
//! SQLite with one instance (the baseline), PostgreSQL with one, two and three instances
//! sharing the database and the key. Each round posts [`MESSAGES`] messages to the account,
//! spread round-robin over the set-up's instances ([`IN_FLIGHT`] at a time), and times from
//! the first POST until the database holds them all as `sent`. The rounds go in ABBA order
//! (each set-up measured twice, early and late) and the report gives their mean.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "common/mod.rs"]
mod common;
use common::{Owned, free_port, mailgate_exe, spawn_serve};

use mailgate_testkit::idp::{ClientSpec, Idp, IdpConfig, UserSpec, sign_in};
use mailgate_testkit::postgres::PgCluster;
use mailgate_testkit::rig::{MailRig, RigOptions};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const SECRET: &str = "bench-instances-client-secret";
const PASSWORD: &str = "bench-password";
const MAILBOX: &str = "bench-instances@example.test";
/// A domain the rig's Postfix discards: the mail server's queue works as for any message,
/// but no mailbox grows (see `bench_mail --throughput`).
const RECIPIENT: &str = "sink@discarded.test";
const MESSAGES: usize = 300;
const IN_FLIGHT: usize = 16;
const LIMIT: Duration = Duration::from_secs(300);

/// One `mailgate serve` (ended when dropped) and where it answers.
struct Serve {
    _process: Owned,
    base: String,
}

/// One set-up: its database and its instances.
struct Setup {
    name: String,
    database: String,
    instances: Vec<Serve>,
    token: String,
}

fn command(exe: &Path, data: &Path, database: &str, public_url: &str, ca: &Path) -> Command {
    let mut c = Command::new(exe);
    for (k, _) in std::env::vars() {
        if k.starts_with("MAILGATE_") {
            c.env_remove(k);
        }
    }
    c.env("MAILGATE_DATA_DIR", data)
        .env("MAILGATE_DATABASE_URL", database)
        .env("MAILGATE_PUBLIC_URL", public_url)
        .env("MAILGATE_EXTRA_CA_FILE", ca)
        .env("MAILGATE_IDP_ALLOW_PRIVATE", "true")
        .env_remove("RUST_LOG");
    c
}

fn ok(mut c: Command, args: &[&str], stdin: Option<&str>) -> String {
    use std::io::Write;
    let mut child = c
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

fn start_serve(mut c: Command, port: u16, log: &Path) -> Serve {
    c.env("MAILGATE_LISTEN", format!("127.0.0.1:{port}"));
    let (process, lines) = spawn_serve(c, log);
    let line = lines
        .recv_timeout(Duration::from_secs(60))
        .expect("mailgate serve printed no listening line");
    assert!(line.contains("listening on"), "{line}");
    Serve {
        _process: process,
        base: format!("http://127.0.0.1:{port}"),
    }
}

/// Registers a client at the emulator for this set-up's public URL, creates the app and
/// account in `database`, starts `instances` of `serve` on it (one data directory each, the
/// same key) and authorizes the account through the first.
#[allow(clippy::too_many_arguments)]
async fn setup(
    name: &str,
    client_id: &str,
    exe: &Path,
    dir: &Path,
    database: String,
    instances: usize,
    idp: &Idp,
    rig: &MailRig,
    http: &reqwest::Client,
) -> Setup {
    let public_port = free_port();
    let public_url = format!("http://127.0.0.1:{public_port}");
    let ca = rig.ca_cert().to_owned();
    let data: Vec<PathBuf> = (0..instances)
        .map(|i| dir.join(format!("{name}-{i}")))
        .collect();
    let cmd = |i: usize| command(exe, &data[i], &database, &public_url, &ca);
    idp.admin()
        .add_client(ClientSpec::confidential(
            client_id,
            SECRET,
            &format!("{public_url}/oauth/callback"),
        ))
        .await
        .unwrap();
    ok(
        cmd(0),
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
            client_id,
            "--client-secret-stdin",
            "--authority",
            &idp.base_url(),
        ],
        Some(SECRET),
    );
    let (imaps, submission) = (
        rig.imaps_port().to_string(),
        rig.submission_port().to_string(),
    );
    ok(
        cmd(0),
        &[
            "account", "add", "--name", "bench", "--app", "Bench", "--email", MAILBOX,
        ],
        None,
    );
    ok(
        cmd(0),
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
    for d in &data[1..] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::copy(data[0].join("master.key"), d.join("master.key")).unwrap();
    }
    // The first instance listens on the public URL (the emulator's registered callback).
    let mut serves = vec![start_serve(
        cmd(0),
        public_port,
        &dir.join(format!("{name}-0.log")),
    )];
    for i in 1..instances {
        serves.push(start_serve(
            cmd(i),
            free_port(),
            &dir.join(format!("{name}-{i}.log")),
        ));
    }
    let link = ok(cmd(0), &["authorize", "bench", "--no-wait"], None);
    let callback = sign_in(http, link.trim(), MAILBOX, PASSWORD).await.unwrap();
    let resp = http.get(callback.as_str()).send().await.unwrap();
    assert_eq!(resp.status(), reqwest::StatusCode::OK);
    let token = ok(
        cmd(0),
        &[
            "api-token",
            "create",
            "--name",
            "bench",
            "--scope",
            "messages:send",
        ],
        None,
    )
    .trim()
    .to_owned();
    Setup {
        name: name.to_owned(),
        database,
        instances: serves,
        token,
    }
}

async fn sent_count(database: &str) -> i64 {
    use sqlx::{Connection, Row};
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(database).await.unwrap();
    let n = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE status = 'sent'")
        .fetch_one(&mut conn)
        .await
        .unwrap()
        .try_get("n")
        .unwrap();
    let _ = conn.close().await;
    n
}

/// One round: [`MESSAGES`] posts over the set-up's instances; messages per second until the
/// database holds them all as sent.
async fn round(s: &Setup, http: &reqwest::Client, round: usize) -> f64 {
    let before = sent_count(&s.database).await;
    let started = Instant::now();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let mut posts = tokio::task::JoinSet::new();
    for n in 0..MESSAGES {
        let base = s.instances[n % s.instances.len()].base.clone();
        let (http, token, limit) = (http.clone(), s.token.clone(), limit.clone());
        posts.spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            let resp = http
                .post(format!("{base}/api/v1/accounts/1/messages"))
                .bearer_auth(token)
                .json(&json!({ "to": [RECIPIENT], "subject": format!("round {round} message {n}"), "text": "A benchmark message." }))
                .send()
                .await
                .unwrap();
            let status = resp.status();
            let v: Value = resp.json().await.unwrap();
            assert_eq!(status, reqwest::StatusCode::ACCEPTED, "{v}");
        });
    }
    while let Some(done) = posts.join_next().await {
        done.unwrap();
    }
    let want = before + MESSAGES as i64;
    loop {
        if sent_count(&s.database).await >= want {
            break;
        }
        assert!(started.elapsed() < LIMIT, "{}: not all sent", s.name);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    MESSAGES as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let exe = mailgate_exe();
    let idp = Idp::start(IdpConfig::default()).unwrap();
    let rig = MailRig::start_temp(
        &format!("{}/introspect", idp.base_url()),
        RigOptions::default(),
    )
    .await
    .expect("the mail rig must start (it needs root; see docs/testing.md)");
    let pg = PgCluster::start().expect("PostgreSQL must start (apt-get install postgresql)");
    let dir = tempfile::tempdir().unwrap();
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    idp.admin()
        .add_user(UserSpec::new(MAILBOX, PASSWORD))
        .await
        .unwrap();

    let mut setups = Vec::new();
    for (n, (name, instances)) in [("sqlite", 1), ("pg1", 1), ("pg2", 2), ("pg3", 3)]
        .into_iter()
        .enumerate()
    {
        let client_id = format!("00000000-0000-4000-8000-00000000be1{n}");
        let database = if name == "sqlite" {
            format!("sqlite://{}", dir.path().join("bench.db").display())
        } else {
            pg.create_database(name).unwrap()
        };
        // Each set-up has its own public URL, so its own registered callback.
        setups.push(
            setup(
                name,
                &client_id,
                &exe,
                dir.path(),
                database,
                instances,
                &idp,
                &rig,
                &http,
            )
            .await,
        );
    }
    let order: Vec<usize> = (0..setups.len()).chain((0..setups.len()).rev()).collect();
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); setups.len()];
    for (r, &i) in order.iter().enumerate() {
        let rate = round(&setups[i], &http, r).await;
        eprintln!("round {r}: {} {rate:.0} msg/s", setups[i].name);
        rates[i].push(rate);
    }
    let mean = |v: &Vec<f64>| v.iter().sum::<f64>() / v.len() as f64;
    let base = mean(&rates[0]);
    println!(
        "API send, {MESSAGES} messages to one account per round, {IN_FLIGHT} posts in flight, spread over the instances; mean of 2 rounds (ABBA):"
    );
    for (s, r) in setups.iter().zip(&rates) {
        println!(
            "  {:<28} {:>6.0} msg/s   {:.2}x SQLite  (rounds: {})",
            format!("{} ({} instance(s))", s.name, s.instances.len()),
            mean(r),
            mean(r) / base,
            r.iter()
                .map(|x| format!("{x:.0}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    drop(setups);
    drop(pg);
}
