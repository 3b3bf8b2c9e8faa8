//! `mailgate backup` and `mailgate restore` through the binary: a snapshot taken while
//! `serve` accepts and sends 200 API messages restores into a fresh data directory (same
//! key file) to a working instance; refusals (wrong key file, existing files, a running
//! serve) change nothing.

use crate::mailtest::on_rig_with;
use crate::support::{Server, TestEnv, text};
use reqwest::StatusCode;
use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

const MESSAGES: usize = 200;
const IN_FLIGHT: usize = 32;
/// Messages sent (and delivered) before the 200 start.
const EARLY: usize = 10;

/// Copies the key file into `env`'s (new) data directory, as an operator restoring onto a
/// new machine does with the key file kept apart from the backup.
fn install_key_file(from: &Path, env: &TestEnv) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(env.data_dir()).unwrap();
    std::fs::set_permissions(env.data_dir(), std::fs::Permissions::from_mode(0o700)).unwrap();
    let key = env.data_dir().join("master.key");
    std::fs::copy(from, &key).unwrap();
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
}

/// Outbox status by id, read from a backup file directly.
async fn outbox_statuses(file: &Path) -> HashMap<i64, String> {
    use sqlx::Row;
    sqlx::any::install_default_drivers();
    let url = format!("sqlite://{}?mode=ro", file.display());
    let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
        .await
        .unwrap();
    sqlx::query("SELECT id, status FROM outbox")
        .fetch_all(&mut conn)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.get::<i64, _>("id"), r.get::<String, _>("status")))
        .collect()
}

/// Polls `base`'s API until every id in `ids` is `sent` (bounded).
async fn wait_all_sent(base: &str, token: &str, ids: &[i64], within: Duration) {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + within;
    let mut pending: Vec<i64> = ids.to_vec();
    while !pending.is_empty() {
        let mut still = Vec::new();
        for id in pending {
            let v: serde_json::Value = client
                .get(format!("{base}/api/v1/messages/{id}"))
                .bearer_auth(token)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if v["status"] != "sent" {
                still.push(id);
            }
        }
        pending = still;
        assert!(
            pending.is_empty() || Instant::now() < deadline,
            "messages {pending:?} not sent within {within:?}"
        );
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_taken_during_200_sends_restores_to_a_working_instance() {
    let (mut f, rig) = on_rig_with(&[]).await;
    f.authorize().await;
    let token = f
        .env
        .ok(
            &[
                "api-token",
                "create",
                "--name",
                "sender",
                "--scope",
                "messages:send",
            ],
            None,
        )
        .trim()
        .to_owned();
    let backup = f.env.dir.path().join("snapshot.db");

    // A first few messages, sent before the snapshot: they must be `sent` in it.
    let client = reqwest::Client::new();
    let mut subject_of: HashMap<i64, String> = HashMap::new();
    for n in 0..EARLY {
        let v: serde_json::Value = client
            .post(format!("{}/api/v1/accounts/1/messages", f.server.base))
            .bearer_auth(&token)
            .json(&serde_json::json!({
                "to": [f.mailbox],
                "subject": format!("backup early {n}"),
                "text": "sent before the snapshot",
            }))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        subject_of.insert(v["id"].as_i64().unwrap(), format!("backup early {n}"));
    }
    let early: Vec<i64> = subject_of.keys().copied().collect();
    wait_all_sent(&f.server.base, &token, &early, Duration::from_secs(120)).await;

    // 200 sends, IN_FLIGHT at a time; the backup starts once a quarter have been accepted.
    let limit = std::sync::Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
    let accepted_so_far = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (quarter_tx, quarter_rx) = tokio::sync::oneshot::channel::<()>();
    let quarter_tx = std::sync::Arc::new(std::sync::Mutex::new(Some(quarter_tx)));
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..MESSAGES {
        let (client, limit, token) = (client.clone(), limit.clone(), token.clone());
        let (accepted_so_far, quarter_tx) = (accepted_so_far.clone(), quarter_tx.clone());
        let url = format!("{}/api/v1/accounts/1/messages", f.server.base);
        let body = serde_json::json!({
            "to": [f.mailbox],
            "subject": format!("backup {n}"),
            "text": format!("message {n}"),
        });
        tasks.spawn(async move {
            let _permit = limit.acquire_owned().await.unwrap();
            let resp = client
                .post(url)
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), StatusCode::ACCEPTED);
            let v: serde_json::Value = resp.json().await.unwrap();
            let accepted_at = Instant::now();
            if accepted_so_far.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1 == MESSAGES / 4
                && let Some(tx) = quarter_tx.lock().unwrap().take()
            {
                let _ = tx.send(());
            }
            (n, v["id"].as_i64().unwrap(), accepted_at)
        });
    }
    tokio::time::timeout(Duration::from_secs(120), quarter_rx)
        .await
        .expect("a quarter of the sends accepted within 120 s")
        .unwrap();
    let backup_started = Instant::now();
    let out =
        tokio::task::block_in_place(|| f.env.run(&["backup", backup.to_str().unwrap()], None));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    assert!(report.contains("apart"), "{report}");
    let mut accepted_before_backup = early.clone();
    while let Some(done) = tasks.join_next().await {
        let (n, id, accepted_at) = done.unwrap();
        subject_of.insert(id, format!("backup {n}"));
        if accepted_at < backup_started {
            accepted_before_backup.push(id);
        }
    }
    assert_eq!(subject_of.len(), EARLY + MESSAGES);
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&backup).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "the backup holds sealed secrets: 0600");
    }
    let key_file = f.env.data_dir().join("master.key");
    let key_text = std::fs::read_to_string(&key_file).unwrap();
    let backup_bytes = std::fs::read(&backup).unwrap();
    for line in key_text
        .lines()
        .filter(|l| !l.starts_with('#') && l.len() > 20)
    {
        let secret = line.trim();
        assert!(
            !backup_bytes
                .windows(secret.len())
                .any(|w| w == secret.as_bytes()),
            "the key file's key is inside the backup"
        );
    }

    // The original drains its outbox, then stops: what it sent after the snapshot is what
    // the restored instance will send again (the documented limit).
    let ids: Vec<i64> = subject_of.keys().copied().collect();
    wait_all_sent(&f.server.base, &token, &ids, Duration::from_secs(180)).await;
    let pid = f.server.child.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let stop_deadline = Instant::now() + Duration::from_secs(30);
    while f.server.child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < stop_deadline, "serve did not stop");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // What the snapshot holds: nothing accepted before it began is missing.
    let in_backup = outbox_statuses(&backup).await;
    for id in &accepted_before_backup {
        assert!(
            in_backup.contains_key(id),
            "message {id} was accepted before the backup began but is not in it"
        );
    }
    assert!(
        in_backup.values().any(|s| s == "sent"),
        "a message sent before the snapshot is `sent` in it"
    );
    let pending_in_backup: Vec<i64> = in_backup
        .iter()
        .filter(|(_, s)| *s != "sent")
        .map(|(id, _)| *id)
        .collect();

    // Restore into a fresh data directory with the same key file.
    let restored = TestEnv::new();
    for (k, v) in f.env.vars.lock().unwrap().iter() {
        restored.set_var(k, v);
    }
    install_key_file(&key_file, &restored);
    let out = restored.run(&["restore", backup.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let accounts = restored.json(&["account", "list", "--json"]);
    let accounts = accounts.as_array().unwrap();
    assert!(!accounts.is_empty());
    for account in accounts {
        let name = account["name"].as_str().unwrap();
        let out = restored.run(&["token", name], None);
        assert!(
            out.status.success(),
            "account {name} gives no token after restore: {}",
            text(&out.stderr)
        );
    }
    let server = Server::start(&restored);
    // The restored outbox resumes: everything pending in the snapshot is sent.
    wait_all_sent(
        &server.base,
        &token,
        &pending_in_backup,
        Duration::from_secs(180),
    )
    .await;

    // Count arrivals: sent-in-snapshot and not-in-snapshot once; pending-in-snapshot twice
    // (once by the original after the snapshot, once by the restored instance).
    let expected = |id: &i64| match in_backup.get(id).map(String::as_str) {
        Some("sent") | None => 1,
        Some(_) => 2,
    };
    let total: usize = ids.iter().map(expected).sum();
    let deadline = Instant::now() + Duration::from_secs(120);
    let counts = loop {
        let subjects = crate::support::folder_subjects(&f, &rig, "INBOX").await;
        let mut counts: HashMap<String, usize> = HashMap::new();
        for s in subjects.into_iter().filter(|s| s.starts_with("backup ")) {
            *counts.entry(s).or_default() += 1;
        }
        if counts.values().sum::<usize>() >= total || Instant::now() >= deadline {
            break counts;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for id in &ids {
        let subject = &subject_of[id];
        assert_eq!(
            counts.get(subject).copied().unwrap_or(0),
            expected(id),
            "{subject} (id {id}, {:?} in the snapshot)",
            in_backup.get(id)
        );
    }
    eprintln!(
        "backup test: {} accepted before the snapshot began, {} in the snapshot ({} pending), {} after",
        accepted_before_backup.len(),
        in_backup.len(),
        pending_in_backup.len(),
        EARLY + MESSAGES - in_backup.len()
    );
    drop(server);
}

#[tokio::test]
async fn restore_refuses_a_wrong_key_file_a_running_serve_and_existing_files() {
    let source = TestEnv::new();
    source.add_microsoft_app("m365");
    let backup = source.dir.path().join("b.db");
    let out = source.run(&["backup", backup.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report = text(&out.stdout);
    let key_id = report
        .split("key id(s) ")
        .nth(1)
        .and_then(|r| r.split(';').next())
        .unwrap_or_else(|| panic!("no key ids in {report}"))
        .to_owned();

    // Backing up onto an existing file is refused and leaves it as it was.
    std::fs::write(backup.with_extension("other"), b"keep me").unwrap();
    let other = backup.with_extension("other");
    let out = source.run(&["backup", other.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(std::fs::read(&other).unwrap(), b"keep me");
    let out = source.run(&["backup", "--force", other.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A data directory with another key file: refused, naming the missing key id.
    let target = TestEnv::new();
    target.ok(&["account", "list"], None); // creates its own database and key file
    let before = target.dump_db().await;
    let out = target.run(&["restore", "--force", backup.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains(&key_id) && err.contains("key file"), "{err}");
    assert_eq!(
        target.dump_db().await,
        before,
        "a refused restore changes nothing"
    );

    // The right key file, but a database exists and no --force.
    let fresh = TestEnv::new();
    install_key_file(&source.data_dir().join("master.key"), &fresh);
    let out = fresh.run(&["restore", backup.to_str().unwrap()], None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = fresh.run(&["restore", backup.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("--force"),
        "{}",
        text(&out.stderr)
    );

    // A running serve of the data directory: refused even with --force.
    let server = Server::start(&fresh);
    let out = fresh.run(&["restore", "--force", backup.to_str().unwrap()], None);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("serve"), "{}", text(&out.stderr));
    server.terminate();

    // Not a mailgate database.
    let out = fresh.run(
        &[
            "restore",
            "--force",
            other.with_extension("txt").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    std::fs::write(other.with_extension("txt"), b"not sqlite").unwrap();
    let out = fresh.run(
        &[
            "restore",
            "--force",
            other.with_extension("txt").to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("not a mailgate backup"),
        "{}",
        text(&out.stderr)
    );
}
