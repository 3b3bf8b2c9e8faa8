//! The key file under concurrent writers (`keys rotate`, `keys prune`, a first start on an
//! empty data directory), and the modes of the files in the data directory.

use crate::support::{CANARY_SECRET, MS_CLIENT_ID, TestEnv, text};
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Output, Stdio};

const PROCESSES: usize = 6;
const ROUNDS: usize = 10;

/// Starts `mailgate args…` without waiting, with `stdin` written and closed.
fn spawn(env: &TestEnv, args: &[String], stdin: Option<&str>) -> Child {
    use std::io::Write;
    let mut child = env
        .command()
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
    child
}

fn add_app_args(name: &str) -> Vec<String> {
    [
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
    ]
    .map(str::to_owned)
    .to_vec()
}

/// Every app's secret opens (`app show` decrypts it), and one more rotation, which decrypts
/// every sealed value in the database, succeeds. `Err` says what was lost.
fn every_secret_opens(env: &TestEnv, apps: &[String]) -> Result<(), String> {
    for name in apps {
        let out = env.run(&["app", "show", name, "--json"], None);
        if !out.status.success() {
            return Err(format!("app show {name}: {}", text(&out.stderr)));
        }
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        if shown["client_secret"] != "set (…3e1d)" {
            return Err(format!(
                "app show {name}: secret shown as {}",
                shown["client_secret"]
            ));
        }
    }
    let out = env.run(&["keys", "rotate", "--json"], None);
    if !out.status.success() {
        return Err(format!("keys rotate afterwards: {}", text(&out.stderr)));
    }
    let rotation: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    if rotation["reencrypted"] != apps.len() {
        return Err(format!(
            "keys rotate re-encrypted {}",
            rotation["reencrypted"]
        ));
    }
    Ok(())
}

fn failures(outputs: Vec<Output>, what: &str) -> Vec<String> {
    outputs
        .into_iter()
        .filter(|o| !o.status.success())
        .map(|o| format!("{what}: {}", text(&o.stderr).trim()))
        .collect()
}

/// Issue 12, critical finding: concurrent writers of `master.key` lost keys (a fixed temp
/// name each deleted for the other, a create overwrote an existing file). Six processes
/// create the data directory at once, then three rotations and three prunes run at once;
/// every command succeeds and every secret still opens, ten rounds in a row.
#[test]
fn concurrent_key_writers_lose_no_key() {
    let mut lost = Vec::new();
    for round in 0..ROUNDS {
        let env = TestEnv::new();
        // First start on an empty data directory: every process may create the key file.
        let apps: Vec<String> = (0..PROCESSES).map(|i| format!("App{i}")).collect();
        let children: Vec<Child> = apps
            .iter()
            .map(|name| {
                spawn(
                    &env,
                    &add_app_args(name),
                    Some(&format!("{CANARY_SECRET}\n")),
                )
            })
            .collect();
        let outputs = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        let mut problems = failures(outputs, "app add");
        if let Err(e) = every_secret_opens(&env, &apps) {
            problems.push(format!("after the first start: {e}"));
        }

        // Rotations and prunes racing each other.
        let children: Vec<Child> = (0..PROCESSES)
            .map(|i| {
                let command = if i % 2 == 0 { "rotate" } else { "prune" };
                spawn(&env, &["keys".to_owned(), command.to_owned()], None)
            })
            .collect();
        let outputs = children
            .into_iter()
            .map(|c| c.wait_with_output().unwrap())
            .collect();
        problems.extend(failures(outputs, "keys rotate/prune"));
        if let Err(e) = every_secret_opens(&env, &apps) {
            problems.push(format!("after rotate/prune: {e}"));
        }
        if !problems.is_empty() {
            lost.push(format!("round {round}: {problems:#?}"));
        }
        let leftovers: Vec<String> = std::fs::read_dir(env.data_dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(".tmp"))
            .collect();
        assert!(
            leftovers.is_empty(),
            "temporary key files left: {leftovers:?}"
        );
    }
    assert!(
        lost.is_empty(),
        "{} of {ROUNDS} rounds lost a key or failed:\n{}",
        lost.len(),
        lost.join("\n")
    );
}

/// Issue 12, low finding: with a data directory that already existed (0755), mailgate.db
/// was created 0644. Every file mailgate creates there is 0600, and the open directory is
/// reported once on stderr.
#[test]
fn files_in_an_existing_data_directory_are_private() {
    let env = TestEnv::new();
    std::fs::create_dir(env.data_dir()).unwrap();
    std::fs::set_permissions(env.data_dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let args = add_app_args("Contoso");
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = env.run(&args, Some(CANARY_SECRET));
    assert!(out.status.success(), "{}", text(&out.stderr));
    let stderr = text(&out.stderr);
    assert_eq!(
        stderr.matches("open to other users").count(),
        1,
        "one warning about the data directory: {stderr}"
    );
    assert!(stderr.contains("chmod 700"), "{stderr}");
    // The write-ahead log and shared-memory files exist while a connection is open: check
    // them from a running server too, after the command above left them (or not).
    let server = crate::support::Server::start(&env);
    let mut names = Vec::new();
    for entry in std::fs::read_dir(env.data_dir()).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let mode = entry.metadata().unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{name} is {mode:o}");
        names.push(name);
    }
    server.terminate();
    for expected in [
        "mailgate.db",
        "mailgate.db-wal",
        "mailgate.db-shm",
        "master.key",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "{expected} missing: {names:?}"
        );
    }
}
