//! `mailgate authorize` and `mailgate token` when things go wrong (issue 12): a failed
//! sign-in is reported with the provider's own words as soon as the server's callback
//! records it, and `token` on an account that needs authorizing again is a runtime failure
//! (exit 1) with the remediation, not bad input.

use crate::fixtures::{Fixture, PASSWORD};
use crate::support::text;
use mailgate_testkit::idp::{Fault, FaultSpec, UserSpec, sign_in};
use std::io::BufRead;
use std::process::{Child, Output, Stdio};
use std::time::{Duration, Instant};

/// `mailgate authorize support`, waiting; the sign-in URL it printed and the running child.
fn start_authorize(f: &Fixture) -> (String, Child) {
    let mut child = f
        .env
        .command()
        .args(["authorize", "support"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let url = rx.recv_timeout(Duration::from_secs(30)).unwrap();
    (url.trim().to_owned(), child)
}

/// The child's exit within `limit` (it is killed and the test fails otherwise); stderr is
/// read after the exit (the command writes little).
async fn exit_within(mut child: Child, limit: Duration) -> (Output, Duration) {
    let started = Instant::now();
    tokio::task::spawn_blocking(move || {
        loop {
            if child.try_wait().unwrap().is_some() {
                return (child.wait_with_output().unwrap(), started.elapsed());
            }
            if started.elapsed() > limit {
                let _ = child.kill();
                let out = child.wait_with_output().unwrap();
                panic!(
                    "mailgate authorize still waiting after {limit:?}: {}",
                    text(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_prints_the_providers_words_and_stops_when_the_callback_reports_an_error() {
    let f = Fixture::start().await;
    let (url, child) = start_authorize(&f);
    let state = url::Url::parse(&url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == "state")
        .unwrap()
        .1
        .into_owned();
    // The emulator's answer when the user presses Cancel on the consent page.
    let description = "AADSTS65004: User declined to consent to access the app.";
    let callback = reqwest::Url::parse_with_params(
        &format!("{}/oauth/callback", f.server.base),
        &[
            ("state", state.as_str()),
            ("error", "access_denied"),
            ("error_description", description),
        ],
    )
    .unwrap();
    let page = f.http.get(callback).send().await.unwrap();
    let page = page.text().await.unwrap();
    assert!(page.contains("User declined to consent"), "{page}");
    let (out, waited) = exit_within(child, Duration::from_secs(20)).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("authorization failed") && err.contains("[access_denied]"),
        "{err}"
    );
    assert!(
        err.contains(description),
        "the provider's words, as on the page: {err}"
    );
    assert!(
        waited < Duration::from_secs(10),
        "stopped at once: {waited:?}"
    );
    assert_eq!(f.state("support")["state"], "unauthorized");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_stops_when_someone_else_signs_in_at_the_provider() {
    let f = Fixture::start().await;
    let intruder = format!("intruder-{}@example.test", &f.client_id[..8]);
    f.idp
        .add_user(UserSpec::new(&intruder, PASSWORD))
        .await
        .unwrap();
    let (url, child) = start_authorize(&f);
    let callback = sign_in(&f.http, &url, &intruder, PASSWORD).await.unwrap();
    let page = f.http.get(callback.as_str()).send().await.unwrap();
    assert_eq!(page.status(), 403);
    let (out, _) = exit_within(child, Duration::from_secs(20)).await;
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("You signed in as {intruder}")) && err.contains("[wrong_user]"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_for_an_account_that_needs_authorizing_again_exits_1_with_the_remedy() {
    let f = Fixture::start().await;
    f.authorize().await;
    f.expire_stored_token().await;
    f.idp
        .inject_fault(FaultSpec::token(
            &f.client_id,
            Fault::Aadsts { code: 50173 },
        ))
        .await
        .unwrap();
    let first = f.token();
    assert_eq!(first.status.code(), Some(1), "{}", text(&first.stderr));
    assert_eq!(f.state("support")["state"], "reauth_required");
    // Later calls find the account waiting for a person: a runtime state, not bad input.
    let again = f.token();
    let err = text(&again.stderr);
    assert_eq!(again.status.code(), Some(1), "{err}");
    assert!(
        err.contains("reauth_required") && err.contains("[grant_revoked]"),
        "{err}"
    );
    assert!(err.contains("Authorize the account again"), "{err}");
}
