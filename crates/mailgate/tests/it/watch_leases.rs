//! The inbound watchers' leases are renewed by one task per instance, in one write per
//! heartbeat (issue 15): a watcher whose lease another instance took still finds out and
//! ends its session, as it did when each watcher renewed its own.

use crate::mailtest::on_rig_with;
use serde_json::Value;
use std::time::{Duration, Instant};

/// Waits (bounded) until the account has an event of `kind` whose message contains `words`.
async fn wait_for_event(f: &crate::fixtures::Fixture, kind: &str, words: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let events = f.env.json(&["events", "--account", "support", "--json"]);
        let found = events.as_array().unwrap().iter().any(|e: &Value| {
            e["kind"].as_str().unwrap_or_default().ends_with(kind)
                && e["message"].as_str().unwrap_or_default().contains(words)
        });
        if found {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "no {kind} event saying {words:?} within {within:?}: {events}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watcher_whose_lease_another_instance_took_ends_its_session() {
    let (f, _rig) = on_rig_with(&[]).await;
    f.env.ok(
        &["account", "update", "support", "--on-received", "mark_seen"],
        None,
    );
    f.authorize().await;
    wait_for_event(&f, "inbound_watching", "IMAP", Duration::from_secs(40)).await;
    // Another instance holds the lease now (as if this one's had expired and been taken).
    f.sql("UPDATE leases SET holder = 'other-instance/1-abcdef', expires_at = expires_at + 600 WHERE name = 'watch:1'")
        .await;
    // The next batched renewal (every 20 s) no longer returns it.
    wait_for_event(
        &f,
        "inbound_failed",
        "another instance took over the mailbox",
        Duration::from_secs(40),
    )
    .await;
}
