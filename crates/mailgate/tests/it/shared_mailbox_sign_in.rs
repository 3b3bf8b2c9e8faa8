//! Issue 16, "an unlicensed mailbox tried directly": an administrator authorizes a shared
//! mailbox by signing in as the mailbox itself. Microsoft refuses, because a shared mailbox's
//! account is disabled for sign-in (AADSTS50057); mailgate names that
//! `shared_mailbox_sign_in_blocked`, with the delegate as the way out, at sign-in and when the
//! refusal comes later, at a refresh.

use crate::fixtures::Fixture;
use crate::support::text;
use mailgate_testkit::idp::{Endpoint, Fault, FaultSpec};

const DISABLED: Fault = Fault::Aadsts { code: 50057 };

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_as_the_shared_mailbox_itself_is_named_shared_mailbox_sign_in_blocked() {
    let f = Fixture::start().await;
    // The emulator refuses this sign-in the way Microsoft does: a redirect to the callback
    // with AADSTS50057.
    f.idp
        .inject_fault(FaultSpec {
            endpoint: Endpoint::Authorize,
            ..FaultSpec::token(&f.client_id, DISABLED)
        })
        .await
        .unwrap();
    let before = f.env.dump_db().await;
    let url = f.authorize_url("support");
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let refused = no_redirects.get(&url).send().await.unwrap();
    assert!(refused.status().is_redirection(), "{}", refused.status());
    let callback = refused.headers()[reqwest::header::LOCATION]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        callback.starts_with(&format!("{}/oauth/callback?", f.server.base))
            && callback.contains("AADSTS50057"),
        "{callback}"
    );

    let resp = f.http.get(&callback).send().await.unwrap();
    let status = resp.status().as_u16();
    let page = resp.text().await.unwrap();
    assert_eq!(status, 502, "{page}");
    assert!(
        page.contains("<code>shared_mailbox_sign_in_blocked</code>")
            && page.contains("FullAccess")
            && page.contains("delegate")
            && page.contains("AADSTS50057"),
        "the remediation and the provider's words: {page}"
    );
    assert_eq!(f.state("support")["state"], "unauthorized");
    let after = f.env.dump_db().await;
    assert!(after.contains("== grants\n== "), "no grant row: {after}");
    assert!(before.contains("== grants\n== "), "{before}");
    let events = f.env.ok(&["events", "--account", "support"], None);
    assert!(
        events.contains("[shared_mailbox_sign_in_blocked]"),
        "`mailgate authorize` learns the code from this event: {events}"
    );
}

/// A mailbox authorized while it still had a sign-in, then converted to a shared mailbox:
/// the next refresh is refused with the same code, and the account needs a person.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_refused_with_50057_needs_reauthorization_as_a_delegate() {
    let f = Fixture::start().await;
    f.authorize().await;
    f.expire_stored_token().await;
    f.idp
        .inject_fault(FaultSpec::token(&f.client_id, DISABLED))
        .await
        .unwrap();
    let out = f.token();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("shared_mailbox_sign_in_blocked"),
        "{}",
        text(&out.stderr)
    );
    let acc = f.state("support");
    assert_eq!(acc["state"], "reauth_required", "{acc}");
    assert_eq!(
        acc["last_problem"]["code"], "shared_mailbox_sign_in_blocked",
        "{acc}"
    );
    assert!(
        acc["last_problem"]["remediation"]
            .as_str()
            .unwrap()
            .contains("delegate"),
        "{acc}"
    );
}
