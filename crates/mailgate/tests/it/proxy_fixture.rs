//! What the proxy tests share beyond `proxy::proxied`: a raw client on a proxy listener, an
//! IMAP session logged in through one, and the administrators' dashboard that names the
//! listeners.

use crate::fixtures::Fixture;
use mailgate_testkit::raw::{RawClient, imap_status_is};

/// A raw client connected to the proxy listener at `addr` (`host:port`, as `serve` printed it).
pub(crate) async fn connect(addr: &str) -> RawClient {
    let (host, port) = addr.rsplit_once(':').unwrap();
    RawClient::connect(host, port.parse().unwrap())
        .await
        .unwrap()
}

/// An IMAP session through the proxy at `addr`: greeted, then logged in as the fixture's
/// mailbox with the proxy `password` (tag `a1`), the login asserted OK.
pub(crate) async fn imap_logged_in(f: &Fixture, addr: &str, password: &str) -> RawClient {
    let mut imap = connect(addr).await;
    imap.read_line().await.unwrap();
    let login = imap
        .imap_command("a1", &format!("LOGIN {} \"{password}\"", f.mailbox))
        .await
        .unwrap();
    assert!(
        imap_status_is(login.last().unwrap(), "a1", "OK"),
        "{login:?}"
    );
    imap
}

/// The administrators' dashboard, as a new administrator `ada` sees it.
pub(crate) async fn admin_dashboard(f: &Fixture) -> String {
    f.env.ok(
        &["user", "add", "ada", "--role", "admin", "--password-stdin"],
        Some("a long admin passphrase\n"),
    );
    let browser = crate::support::Browser {
        http: &f.http,
        base: &f.server.base,
    };
    let cookie = browser.sign_in("ada", "a long admin passphrase").await;
    browser.get("/admin", &cookie).await.1
}
