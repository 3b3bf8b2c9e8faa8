//! `mailgate doctor` against a running server and the emulator: a healthy set-up passes
//! (exit 0); each planted problem — a key file others can read, a clock an hour off the
//! provider's `Date`, a plain-http public URL, a client secret about to expire — is
//! reported by its own check, with a fix, and makes the exit code non-zero.

use crate::oauth::Fixture;
use serde_json::Value;

/// Runs `mailgate doctor --json` with `serve`'s real address as `listen` (the server was
/// started on port 0) and `extra` environment; returns (exit code, report).
fn doctor(f: &Fixture, extra: &[(&str, &str)]) -> (i32, Value) {
    let mut cmd = f.env.command();
    cmd.env(
        "MAILGATE_LISTEN",
        f.server.base.trim_start_matches("http://"),
    );
    for (k, v) in extra {
        cmd.env(k, v);
    }
    let out = f.env.run_with(cmd, &["doctor", "--json"], None);
    crate::support::assert_no_canary(&out);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "doctor --json printed no JSON ({e}): {}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), report)
}

/// The checks that failed, by name.
fn failed(report: &Value) -> Vec<String> {
    let mut names: Vec<String> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["check"].as_str().unwrap().to_owned())
        .collect();
    names.dedup();
    names
}

/// The failed finding of `check` (its detail and fix).
fn finding<'a>(report: &'a Value, check: &str) -> &'a Value {
    report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["check"] == check && c["ok"] == false)
        .unwrap_or_else(|| panic!("no failed {check} in {report:#}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_a_healthy_set_up_and_reports_each_planted_problem() {
    let f = Fixture::start().await;
    f.authorize().await;

    let (code, report) = doctor(&f, &[]);
    assert_eq!(failed(&report), Vec::<String>::new(), "{report:#}");
    assert_eq!(
        (code, report["ok"].as_bool()),
        (0, Some(true)),
        "{report:#}"
    );
    let checks: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["check"].as_str().unwrap())
        .collect();
    for check in [
        "public_url",
        "listen",
        "data_dir",
        "key_file",
        "database",
        "schema",
        "secrets",
        "clock",
        "accounts",
    ] {
        assert!(checks.contains(&check), "{check} in {report:#}");
    }

    // A key file other users can read.
    let key = f.env.data_dir().join("master.key");
    let mode = |m: u32| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(m)).unwrap();
    };
    mode(0o644);
    let (code, report) = doctor(&f, &[]);
    mode(0o600);
    assert_ne!(code, 0, "{report:#}");
    // The database cannot be opened without the keys; that is said, not hidden.
    assert_eq!(failed(&report), ["key_file", "database"], "{report:#}");
    let bad = finding(&report, "key_file");
    assert!(
        bad["fix"].as_str().unwrap().starts_with("chmod 600 "),
        "{report:#}"
    );

    // The provider's clock (its Date header) an hour ahead of this machine's.
    f.idp.set_date_skew(3600).await.unwrap();
    let (code, report) = doctor(&f, &[]);
    f.idp.set_date_skew(0).await.unwrap();
    assert_ne!(code, 0, "{report:#}");
    assert_eq!(failed(&report), ["clock"], "{report:#}");
    let detail = finding(&report, "clock")["detail"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        ["3599 s behind", "3600 s behind", "3601 s behind"]
            .iter()
            .any(|s| detail.contains(s)),
        "{detail}"
    );

    // A plain-http public URL on a name that is not loopback.
    let (code, report) = doctor(&f, &[("MAILGATE_PUBLIC_URL", "http://mail.example.test")]);
    assert_ne!(code, 0, "{report:#}");
    assert_eq!(failed(&report), ["public_url"], "{report:#}");
    let http = finding(&report, "public_url");
    assert!(
        http["detail"].as_str().unwrap().contains("plain http")
            && http["fix"].as_str().unwrap().contains("https://"),
        "{report:#}"
    );

    // A client secret that expires in five days.
    let now = std::time::UNIX_EPOCH.elapsed().unwrap().as_secs() as i64;
    let soon = time::OffsetDateTime::from_unix_timestamp(now + 5 * 86400)
        .unwrap()
        .date()
        .to_string();
    f.env.ok(
        &["app", "update", "Contoso", "--secret-expires", &soon],
        None,
    );
    let (code, report) = doctor(&f, &[]);
    assert_ne!(code, 0, "{report:#}");
    assert_eq!(failed(&report), ["secrets"], "{report:#}");
    assert!(
        finding(&report, "secrets")["detail"]
            .as_str()
            .unwrap()
            .contains(&format!("Contoso expires on {soon}")),
        "{report:#}"
    );

    // The text form says the same, with the fix, and exits non-zero.
    let mut cmd = f.env.command();
    cmd.env(
        "MAILGATE_LISTEN",
        f.server.base.trim_start_matches("http://"),
    );
    let out = f.env.run_with(cmd, &["doctor"], None);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("PROBLEM") && l.contains("secrets")),
        "{text}"
    );
    assert!(text.contains("fix: create a new client secret"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_without_a_server_or_data_says_what_is_missing_and_creates_nothing() {
    let env = crate::support::TestEnv::new();
    // A loopback port nothing listens on (bound, then freed), not the default 8080 that
    // something else on the machine may hold.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    env.set_var("MAILGATE_LISTEN", &free.local_addr().unwrap().to_string());
    drop(free);
    let out = env.run(&["doctor", "--json"], None);
    assert_eq!(out.status.code(), Some(1));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let failed = failed(&report);
    for check in ["public_url", "listen", "data_dir", "key_file"] {
        assert!(failed.contains(&check.to_owned()), "{check}: {report:#}");
    }
    assert!(
        !env.data_dir().exists(),
        "doctor created the data directory"
    );
}
