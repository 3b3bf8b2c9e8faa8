//! PostgreSQL and several instances (issue 18): `mailgate migrate`, a schema newer than
//! the binary, and three `serve` processes on one PostgreSQL sharing the work so that what
//! must happen once happens once. Every test starts a throwaway cluster of its own
//! (`testkit::postgres`); a machine without PostgreSQL fails here, it never skips.

use std::collections::HashMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use mailgate_testkit::postgres::PgCluster;
use reqwest::StatusCode;

use crate::oauth::Fixture;
use crate::support::{Server, TestEnv, text};

fn cluster() -> PgCluster {
    PgCluster::start().expect("PostgreSQL is needed (scripts/test installs it)")
}

/// `mailgate migrate --json` in `env`: (schema version, versions it applied).
fn migrate(env: &TestEnv) -> (i64, Vec<i64>) {
    let v = env.json(&["migrate", "--json"]);
    let applied = v["applied"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["version"].as_i64().unwrap())
        .collect();
    (v["schema_version"].as_i64().unwrap(), applied)
}

/// Runs one statement against the database `url` (SQLite or PostgreSQL) from outside mailgate.
async fn sql(url: &str, statement: &str) {
    sqlx::any::install_default_drivers();
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(url)
        .await
        .unwrap();
    sqlx::raw_sql(statement).execute(&mut conn).await.unwrap();
}

async fn migrate_once_then_refuse_a_newer_schema(env: &TestEnv, url: &str) {
    let (version, applied) = migrate(env);
    assert!(version >= 12, "{version}");
    assert_eq!(applied.first(), Some(&1));
    assert_eq!(applied.last(), Some(&version));
    assert!(
        applied.windows(2).all(|w| w[0] < w[1]),
        "a fresh database gets every migration, in order: {applied:?}"
    );
    let out = env.ok(&["migrate"], None);
    assert!(out.contains("nothing to apply"), "{out}");
    assert_eq!(
        migrate(env),
        (version, vec![]),
        "a second run applies nothing"
    );

    // A newer mailgate has been here: this one must not touch the database.
    let newer = version + 1;
    sql(
        url,
        &format!(
            "INSERT INTO schema_migrations (version, name, applied_at) VALUES ({newer}, 'from_the_future', 0)"
        ),
    )
    .await;
    for args in [&["migrate"][..], &["account", "list"][..]] {
        let out = env.run(args, None);
        assert_eq!(out.status.code(), Some(2), "mailgate {args:?}");
        let err = text(&out.stderr);
        assert!(
            err.contains(&format!(
                "version {newer}, newer than this mailgate knows ({version})"
            )),
            "{err}"
        );
    }
    let mut serve = env.command();
    let out = env.run_with(
        {
            serve.env("MAILGATE_LISTEN", "127.0.0.1:0");
            serve
        },
        &["serve"],
        None,
    );
    assert!(!out.status.success(), "serve must refuse a newer schema");
    assert!(
        text(&out.stderr).contains("newer than this mailgate knows"),
        "{}",
        text(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_each_migration_once_and_a_newer_schema_is_refused_on_sqlite() {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    let url = format!("sqlite://{}", env.db_path().display());
    migrate_once_then_refuse_a_newer_schema(&env, &url).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_applies_each_migration_once_and_a_newer_schema_is_refused_on_postgres() {
    let pg = cluster();
    let url = pg.create_database("mailgate").unwrap();
    let env = TestEnv::new();
    env.set_var("MAILGATE_DATABASE_URL", &url);
    migrate_once_then_refuse_a_newer_schema(&env, &url).await;
    // The service's tables are in PostgreSQL, not in a SQLite file beside the key.
    assert!(!env.db_path().exists());
}

/// Instances started at the same moment against an empty database: each migration is
/// applied by exactly one of them, and all of them succeed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_migrating_an_empty_postgres_at_once_apply_each_migration_once() {
    let pg = cluster();
    let url = pg.create_database("mailgate").unwrap();
    let env = TestEnv::new();
    env.set_var("MAILGATE_DATABASE_URL", &url);
    let children: Vec<_> = (0..4)
        .map(|_| {
            env.command()
                .args(["migrate", "--json"])
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut applied = Vec::new();
    let mut version = 0;
    for child in children {
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let reported = v["schema_version"].as_i64().unwrap();
        assert!(version == 0 || version == reported);
        version = reported;
        applied.extend(
            v["applied"]
                .as_array()
                .unwrap()
                .iter()
                .map(|m| m["version"].as_i64().unwrap()),
        );
    }
    applied.sort_unstable();
    // What one instance alone applies to an empty database, for comparison.
    let alone = TestEnv::new();
    alone.set_var(
        "MAILGATE_DATABASE_URL",
        &pg.create_database("alone").unwrap(),
    );
    let (alone_version, every) = migrate(&alone);
    assert_eq!(alone_version, version);
    assert_eq!(
        applied, every,
        "each migration applied by exactly one of the four"
    );
}

/// A second and third `serve` beside the fixture's, on the same PostgreSQL and key, behind
/// the same public URL (as behind a load balancer).
fn another_instance(f: &Fixture, url: &str, ca: &str) -> (TestEnv, Server) {
    another_instance_with(f, url, ca, &[])
}

fn another_instance_with(
    f: &Fixture,
    url: &str,
    ca: &str,
    vars: &[(&str, &str)],
) -> (TestEnv, Server) {
    let env = TestEnv::new();
    for (k, v) in vars {
        env.set_var(k, v);
    }
    std::fs::create_dir_all(env.data_dir()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(env.data_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let key = env.data_dir().join("master.key");
    std::fs::copy(f.env.data_dir().join("master.key"), &key).unwrap();
    env.set_var("MAILGATE_DATABASE_URL", url);
    env.set_var("MAILGATE_EXTRA_CA_FILE", ca);
    env.set_var("MAILGATE_PUBLIC_URL", &f.server.base);
    let server = Server::start(&env);
    (env, server)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_on_one_postgres_do_each_job_once() {
    const MESSAGES: usize = 500;
    const TOKEN_REQUESTS: usize = 300;
    let pg = cluster();
    let url = pg.create_database("mailgate").unwrap();
    let (f, rig) = Fixture::start_on_rig_with(&[("MAILGATE_DATABASE_URL", &url)]).await;
    crate::mailtest::point_at_rig(&f, &rig);
    let ca = rig.ca_cert().to_str().unwrap().to_owned();
    let (b_env, b) = another_instance(&f, &url, &ca);
    let (c_env, c) = another_instance(&f, &url, &ca);
    // On a failure, what the three servers said.
    let logs = || {
        [&f.env, &b_env, &c_env]
            .iter()
            .map(|e| {
                let log =
                    std::fs::read_to_string(e.dir.path().join("serve.log")).unwrap_or_default();
                let start = log.len().saturating_sub(3000);
                log[log.ceil_char_boundary(start)..].to_owned()
            })
            .collect::<Vec<_>>()
            .join("\n----\n")
    };
    let bases = [f.server.base.clone(), b.base.clone(), c.base.clone()];

    // An authorization started on A (its link names A's callback, the public URL) and
    // called back on B completes: the pending state is in the database.
    let link = f.authorize_url("support");
    let callback =
        mailgate_testkit::idp::sign_in(&f.http, &link, &f.mailbox, crate::oauth::PASSWORD)
            .await
            .unwrap();
    let on_b = callback.as_str().replacen(&bases[0], &bases[1], 1);
    assert_ne!(on_b, callback.as_str());
    let resp = f.http.get(&on_b).send().await.unwrap();
    assert_eq!(
        resp.status(),
        StatusCode::OK,
        "{}",
        resp.text().await.unwrap()
    );
    assert_eq!(f.state("support")["state"], "active");

    let token = f
        .env
        .ok(
            &[
                "api-token",
                "create",
                "--name",
                "app",
                "--scope",
                "tokens:read",
                "--scope",
                "messages:send",
                "--scope",
                "messages:read",
                "--scope",
                "accounts:read",
                "--scope",
                "accounts:write",
            ],
            None,
        )
        .trim()
        .to_owned();

    // An expired token, 300 concurrent requests spread over the three: one refresh.
    sql(
        &url,
        "UPDATE grants SET access_expires_at = 1000, access_issued_at = 0",
    )
    .await;
    let refreshes_before = f.counter("token:refresh_token").await;
    let client = reqwest::Client::new();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..TOKEN_REQUESTS {
        let (client, token) = (client.clone(), token.clone());
        let url = format!("{}/api/v1/accounts/1/token", bases[n % 3]);
        tasks.spawn(async move {
            let resp = client.get(url).bearer_auth(token).send().await.unwrap();
            let status = resp.status();
            let body: serde_json::Value = resp.json().await.unwrap();
            (status, body["access_token"].as_str().map(str::to_owned))
        });
    }
    let mut tokens = std::collections::HashSet::new();
    while let Some(done) = tasks.join_next().await {
        let (status, access) = done.unwrap();
        assert_eq!(status, StatusCode::OK);
        tokens.insert(access.unwrap());
    }
    assert_eq!(
        f.counter("token:refresh_token").await,
        refreshes_before + 1,
        "{TOKEN_REQUESTS} requests over three instances share one refresh"
    );
    assert_eq!(tokens.len(), 1, "every request got the one new token");

    // 500 messages accepted round-robin by the three; each reaches the mailbox once.
    let started = Instant::now();
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(24));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..MESSAGES {
        let (client, token, limit) = (client.clone(), token.clone(), limit.clone());
        let url = format!("{}/api/v1/accounts/1/messages", bases[n % 3]);
        let body = serde_json::json!({
            "to": [f.mailbox],
            "subject": format!("instances {n}"),
            "text": format!("message {n}"),
        });
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            let resp = client
                .post(url)
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
            let v: serde_json::Value = resp.json().await.unwrap();
            (
                v["id"].as_i64().unwrap(),
                v["message_id"].as_str().unwrap().to_owned(),
            )
        });
    }
    let mut message_ids: HashMap<i64, String> = HashMap::new();
    while let Some(done) = tasks.join_next().await {
        let (id, message_id) = done.unwrap();
        message_ids.insert(id, message_id);
    }
    assert_eq!(message_ids.len(), MESSAGES);

    // Sent by whichever instance claimed each, none failed.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let counts = pg
            .psql(
                "mailgate",
                "SELECT status || ':' || COUNT(*) FROM outbox GROUP BY status ORDER BY status",
            )
            .unwrap();
        if counts == format!("sent:{MESSAGES}") {
            break;
        }
        assert!(
            !counts.contains("failed") && Instant::now() < deadline,
            "not all sent within 240 s: {counts}\n{}",
            logs()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let sent_after = started.elapsed();

    // In the mailbox, over raw IMAP, by Message-ID: each exactly once, nothing else.
    let deadline = Instant::now() + Duration::from_secs(120);
    let headers = loop {
        let mut imap = crate::support::raw_imap(&f, &rig, "INBOX").await;
        let lines = imap
            .imap_command("i3", "FETCH 1:* (BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)])")
            .await
            .unwrap_or_default();
        let ids: Vec<String> = lines
            .iter()
            .filter(|l| l.to_ascii_lowercase().starts_with("message-id:"))
            .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
            .collect();
        if ids.len() >= MESSAGES || Instant::now() > deadline {
            break ids;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for id in &headers {
        *seen.entry(id.as_str()).or_default() += 1;
    }
    for message_id in message_ids.values() {
        assert_eq!(
            seen.get(format!("<{message_id}>").as_str()).copied(),
            Some(1),
            "Message-ID {message_id} arrives exactly once"
        );
    }
    assert_eq!(headers.len(), MESSAGES, "nothing else and nothing twice");

    // A test run started on C is followed on B while it runs and once it ended.
    let started: serde_json::Value = client
        .post(format!("{}/api/v1/accounts/1/tests", bases[2]))
        .bearer_auth(&token)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let run = started["id"].as_str().unwrap().to_owned();
    let deadline = Instant::now() + Duration::from_secs(120);
    let on_b = loop {
        let resp = client
            .get(format!("{}/api/v1/tests/{run}", bases[1]))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::OK, "B finds the run C started");
        let v: serde_json::Value = resp.json().await.unwrap();
        if v["status"] != "running" {
            break v;
        }
        assert!(
            Instant::now() < deadline,
            "the test run did not finish: {v}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(on_b["status"], "passed", "{on_b}");
    let on_c: serde_json::Value = client
        .get(format!("{}/api/v1/tests/{run}", bases[2]))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(on_b, on_c, "the same run on both instances");
    eprintln!(
        "three instances: {MESSAGES} messages sent in {sent_after:?}, {TOKEN_REQUESTS} token requests, one refresh"
    );
    drop((b, c));
}

/// Who holds the live `watch:` leases: holder → account ids.
fn watch_holders(pg: &PgCluster) -> HashMap<String, Vec<i64>> {
    let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs();
    let rows = pg
        .psql(
            "mailgate",
            &format!(
                "SELECT holder || ' ' || substr(name, 7) FROM leases WHERE substr(name, 1, 6) = 'watch:' AND expires_at >= {now}"
            ),
        )
        .unwrap();
    let mut by_holder: HashMap<String, Vec<i64>> = HashMap::new();
    for line in rows.lines().filter(|l| !l.is_empty()) {
        let (holder, account) = line.rsplit_once(' ').unwrap();
        by_holder
            .entry(holder.to_owned())
            .or_default()
            .push(account.parse().unwrap());
    }
    by_holder
}

/// The holder name of the `serve` with process id `pid` (`<instance id>/<pid>-<random>`).
fn holder_of(holders: &HashMap<String, Vec<i64>>, pid: u32) -> Option<String> {
    holders
        .keys()
        .find(|h| h.contains(&format!("/{pid}-")))
        .cloned()
}

/// 20 watched mailboxes on three instances: they spread (no instance over its share of
/// ⌈20/3⌉ = 7), and when one instance is killed (`kill -9`, no goodbye) the others take its
/// mailboxes within the stated bound. A message delivered to one of them during the
/// takeover is webhooked exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watchers_spread_over_instances_and_move_when_one_dies() {
    use crate::webhooks::{Receiver, api_token, deliver, subscribe};
    const MAILBOXES: usize = 20;
    const LEASE_SECS: u64 = 6;
    // The stated bound (watch.rs): watch_lease_secs for the dead one's leases to run out,
    // a third of it for the survivors' heartbeat to grow their share (which wakes their
    // waiting watchers), half of it for a watcher that looked too early to look again:
    // 2 × the lease, and 10 s for a loaded machine (the whole suite runs beside it).
    let bound = Duration::from_secs(LEASE_SECS * 2 + 10);
    let pg = cluster();
    let url = pg.create_database("mailgate").unwrap();
    let lease = LEASE_SECS.to_string();
    let vars = [
        ("MAILGATE_WATCH_LEASE_SECS", lease.as_str()),
        ("MAILGATE_WEBHOOK_ALLOW_PRIVATE", "true"),
        ("MAILGATE_WEBHOOK_RETRY_SECS", "1"),
    ];
    let mut a_vars = vec![("MAILGATE_DATABASE_URL", url.as_str())];
    a_vars.extend(vars);
    let (f, rig) = Fixture::start_on_rig_with(&a_vars).await;
    crate::mailtest::point_at_rig(&f, &rig);
    let ca = rig.ca_cert().to_str().unwrap().to_owned();

    // Twenty mailboxes: the fixture's and 19 more, each authorized as itself.
    let imaps = rig.imaps_port().to_string();
    let mut mailboxes = vec![("support".to_owned(), f.mailbox.clone())];
    for n in 1..MAILBOXES {
        let name = format!("watched{n}");
        let mailbox = format!("w{n}-{}", f.mailbox);
        f.idp
            .add_user(mailgate_testkit::idp::UserSpec::new(
                &mailbox,
                crate::oauth::PASSWORD,
            ))
            .await
            .unwrap();
        f.env.ok(
            &[
                "account", "add", "--name", &name, "--app", "Contoso", "--email", &mailbox,
            ],
            None,
        );
        f.env.ok(
            &[
                "account",
                "update",
                &name,
                "--inbound-host",
                "localhost",
                "--inbound-port",
                &imaps,
                "--inbound-tls",
                "implicit",
            ],
            None,
        );
        mailboxes.push((name, mailbox));
    }
    for (name, mailbox) in &mailboxes {
        f.authorize_as(name, mailbox).await;
    }
    let token = api_token(&f, "app", &["webhooks:write", "accounts:read"], &[]);
    let rx = Receiver::start(&[]).await;
    subscribe(&f, &token, &rx.url, &["message.received"], None).await;

    let (_b_env, mut b) = another_instance_with(&f, &url, &ca, &vars);
    let (_c_env, c) = another_instance_with(&f, &url, &ca, &vars);
    let pids = [f.server.child.id(), b.child.id(), c.child.id()];

    // Spread: every mailbox watched, by all three, none over its share.
    let share = MAILBOXES.div_ceil(3);
    let deadline = Instant::now() + Duration::from_secs(120);
    let spread = loop {
        let holders = watch_holders(&pg);
        let total: usize = holders.values().map(Vec::len).sum();
        let ours = pids
            .iter()
            .filter(|p| holder_of(&holders, **p).is_some())
            .count();
        if total == MAILBOXES && ours == 3 && holders.values().all(|a| a.len() <= share) {
            break holders;
        }
        assert!(
            Instant::now() < deadline,
            "the watchers did not spread within 120 s: {holders:?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let b_holder = holder_of(&spread, pids[1]).unwrap();
    let b_accounts = spread[&b_holder].clone();
    eprintln!(
        "spread: {:?}",
        spread.values().map(Vec::len).collect::<Vec<_>>()
    );

    // B dies without releasing anything; mail arrives for one of its mailboxes meanwhile.
    let killed = Instant::now();
    assert!(
        std::process::Command::new("kill")
            .args(["-KILL", &pids[1].to_string()])
            .status()
            .unwrap()
            .success()
    );
    b.child.wait().unwrap();
    let orphan = b_accounts[0];
    let orphan_mailbox = &mailboxes[(orphan - 1) as usize].1;
    let subject = format!("during the takeover {}", &f.client_id[..8]);
    deliver(&rig, orphan_mailbox, &subject, "sent while nobody watched").await;

    // Every mailbox watched again, by A and C only, within the bound.
    let taken_over = loop {
        let holders = watch_holders(&pg);
        let total: usize = holders.values().map(Vec::len).sum();
        if total == MAILBOXES && !holders.contains_key(&b_holder) {
            break killed.elapsed();
        }
        assert!(
            killed.elapsed() < bound,
            "B's mailboxes were not taken over within {bound:?}: {holders:?}\n{}\n{}\n{}",
            pg.psql("mailgate", "SELECT pid || ' ' || coalesce(state,'') || ' ' || coalesce(wait_event_type,'') || ' ' || left(query, 100) FROM pg_stat_activity WHERE datname = 'mailgate'").unwrap(),
            pg.psql("mailgate", "SELECT name || ' ' || holder || ' ' || expires_at FROM leases ORDER BY name").unwrap(),
            [&f.env, &_c_env]
                .iter()
                .map(|e| std::fs::read_to_string(e.dir.path().join("serve.log"))
                    .unwrap_or_default()
                    .lines()
                    .filter(|l| l.contains("watch"))
                    .collect::<Vec<_>>()
                    .join("\n"))
                .collect::<Vec<_>>()
                .join("\n----\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!("takeover after kill -9: {taken_over:?} (bound {bound:?})");

    // The message is webhooked once: a second one to the same mailbox comes after it, and
    // by then there is still exactly one of the first.
    let with_subject = |hits: &[crate::webhooks::Hit], s: &str| {
        hits.iter()
            .filter(|h| h.json()["data"]["message"]["subject"] == s)
            .count()
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while with_subject(&rx.hits(), &subject) == 0 {
        assert!(Instant::now() < deadline, "the message was never webhooked");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = format!("after the takeover {}", &f.client_id[..8]);
    deliver(
        &rig,
        orphan_mailbox,
        &after,
        "sent once the mailbox was watched again",
    )
    .await;
    while with_subject(&rx.hits(), &after) == 0 {
        assert!(
            Instant::now() < deadline,
            "the second message was never webhooked"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hits = rx.hits();
    assert_eq!(with_subject(&hits, &subject), 1, "exactly once, not twice");
    assert_eq!(with_subject(&hits, &after), 1);
    for hit in hits
        .iter()
        .filter(|h| h.json()["data"]["message"]["subject"] == subject.as_str())
    {
        assert_eq!(hit.json()["account"]["id"], orphan);
    }
    drop(c);
}

/// `mailgate test` of the account `support` in `env`: passes, as the real servers say.
fn passes_test_configuration(env: &TestEnv) {
    let out = env.run(
        &[
            "test",
            "support",
            "--json",
            "--step-timeout",
            "5",
            "--find-within",
            "30",
        ],
        None,
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", text(&out.stdout), text(&out.stderr)));
    assert_eq!(out.status.code(), Some(0), "{report:#}");
    assert_eq!(report["ok"], true, "{report:#}");
}

/// A data directory of its own holding a copy of `from`'s key file, on `database`.
fn moved_env(from: &TestEnv, database: &str, ca: &str) -> TestEnv {
    let env = TestEnv::new();
    std::fs::create_dir_all(env.data_dir()).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(env.data_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    std::fs::copy(
        from.data_dir().join("master.key"),
        env.data_dir().join("master.key"),
    )
    .unwrap();
    env.set_var("MAILGATE_DATABASE_URL", database);
    env.set_var("MAILGATE_EXTRA_CA_FILE", ca);
    env
}

/// SQLite → export → import into PostgreSQL: the account still gives a token and passes
/// test configuration; and back into a new SQLite, the same. The export holds no secret in
/// the clear and not the key; an import into a database holding data, or with a key file
/// that lacks the export's key, is refused and changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_move_everything_between_sqlite_and_postgres() {
    let (f, rig) = crate::mailtest::on_rig_with(&[]).await;
    f.authorize().await;
    let ca = rig.ca_cert().to_str().unwrap().to_owned();
    let token_before = f.env.ok(&["token", "support"], None);
    let export = f.env.dir.path().join("mailgate.export");
    let said = f.env.ok(&["export", export.to_str().unwrap()], None);
    assert!(said.contains("Exported"), "{said}");
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&export).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the export holds sealed secrets: 0600");
    }
    let content = std::fs::read_to_string(&export).unwrap();
    assert!(
        !content.contains(crate::oauth::CLIENT_SECRET.trim()),
        "the client secret is sealed"
    );
    assert!(
        !content.contains(token_before.trim()),
        "the access token is sealed"
    );
    let key_text = std::fs::read_to_string(f.env.data_dir().join("master.key")).unwrap();
    for line in key_text
        .lines()
        .filter(|l| !l.starts_with('#') && l.len() > 20)
    {
        assert!(
            !content.contains(line.trim()),
            "the key is not in the export"
        );
    }
    // Refused again over an existing file.
    let out = f.env.run(&["export", export.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));

    // Into PostgreSQL.
    let pg = cluster();
    let pg_url = pg.create_database("mailgate").unwrap();
    let on_pg = moved_env(&f.env, &pg_url, &ca);
    let said = on_pg.ok(&["import", export.to_str().unwrap()], None);
    assert!(said.contains("Imported"), "{said}");
    assert!(!on_pg.db_path().exists(), "nothing went to a SQLite file");
    let token = on_pg.ok(&["token", "support"], None);
    assert!(!token.trim().is_empty());
    passes_test_configuration(&on_pg);

    // A second import into the now full database is refused and changes nothing.
    let accounts = on_pg.json(&["account", "list", "--json"]);
    let out = on_pg.run(&["import", export.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(on_pg.json(&["account", "list", "--json"]), accounts);

    // A key file without the export's key: refused before anything is opened.
    let stranger = TestEnv::new();
    stranger.set_var(
        "MAILGATE_DATABASE_URL",
        &pg.create_database("stranger").unwrap(),
    );
    stranger.ok(&["keys", "rotate"], None);
    let out = stranger.run(&["import", export.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("lacks key id"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        pg.psql("stranger", "SELECT COUNT(*) FROM accounts")
            .unwrap(),
        "0"
    );

    // And back: PostgreSQL → export → a new SQLite.
    let back_file = on_pg.dir.path().join("back.export");
    on_pg.ok(&["export", back_file.to_str().unwrap()], None);
    let back = moved_env(&f.env, "", &ca);
    back.set_var(
        "MAILGATE_DATABASE_URL",
        &format!("sqlite://{}", back.db_path().display()),
    );
    back.ok(&["import", back_file.to_str().unwrap()], None);
    assert!(back.db_path().exists());
    assert!(!back.ok(&["token", "support"], None).trim().is_empty());
    passes_test_configuration(&back);
    // The cut file: refused, naming the problem.
    let cut = on_pg.dir.path().join("cut.export");
    let full = std::fs::read_to_string(&back_file).unwrap();
    std::fs::write(&cut, &full[..full.len() / 2]).unwrap();
    let fresh = moved_env(&f.env, "", &ca);
    fresh.set_var(
        "MAILGATE_DATABASE_URL",
        &format!("sqlite://{}", fresh.db_path().display()),
    );
    let out = fresh.run(&["import", cut.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("line"), "{}", text(&out.stderr));
}
