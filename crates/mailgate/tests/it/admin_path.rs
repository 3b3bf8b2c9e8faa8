//! The first-time administrator's path (issue 17), walked in a real headless Chromium
//! against the real binary, the identity-provider emulator and the mail rig: no page wider
//! than a 390 px phone, no dead end after an authorization, bad secrets caught on save,
//! irreversible actions asking first, the form following the provider, the guided first run,
//! a failed test shown as trouble, and the pages' words (scopes, webhook form, help).

use crate::browser::{World, world};
use crate::oauth::PASSWORD;
use mailgate_testkit::idp::UserSpec;
use std::time::Duration;

pub(crate) const WAIT: Duration = Duration::from_secs(15);

/// A loopback port nothing listens on: bound to learn a free one, then released.
pub(crate) fn closed_port() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port().to_string()
}

impl World {
    pub(crate) async fn goto(&self, path: &str) {
        self.browser
            .goto(&format!("{}{path}", self.server.base))
            .await
            .unwrap();
    }

    pub(crate) async fn click(&self, css: &str) {
        self.browser.find(css).await.unwrap().click().await.unwrap();
    }

    pub(crate) async fn text_of(&self, css: &str) -> String {
        self.browser.find(css).await.unwrap().text().await.unwrap()
    }

    /// The attribute `name` of the first element matching `css` (which must have it).
    pub(crate) async fn attr_of(&self, css: &str, name: &str) -> String {
        let element = self.browser.find(css).await.unwrap();
        element.attr(name).await.unwrap().unwrap()
    }

    /// Another user at the provider, who is not the account's mailbox.
    pub(crate) async fn add_intruder(&self) -> String {
        let intruder = format!("intruder-{}", self.mailbox);
        self.idp
            .add_user(UserSpec::new(&intruder, PASSWORD))
            .await
            .unwrap();
        intruder
    }

    pub(crate) async fn js(&self, script: &str) -> serde_json::Value {
        self.browser.execute(script, Vec::new()).await.unwrap()
    }

    /// The page's layout is no wider than the window: nothing scrolls sideways.
    pub(crate) async fn assert_fits(&self, page: &str) {
        let widths = self
            .js("return [document.documentElement.scrollWidth, window.innerWidth];")
            .await;
        let (scroll, inner) = (widths[0].as_i64().unwrap(), widths[1].as_i64().unwrap());
        assert!(
            scroll <= inner,
            "{page} scrolls sideways: {scroll} px wide in a {inner} px window"
        );
    }

    /// The frame every admin page has: a `<main>`, the stylesheet applied, the favicon, and
    /// the current page marked in the navigation.
    pub(crate) async fn assert_frame(&self, current: &str) {
        let facts = self
            .js(
                "var cur = document.querySelector('nav a[aria-current=page]');
                 return [!!document.querySelector('main'),
                         !!document.querySelector('link[rel=icon][href=\"/static/favicon.svg\"]'),
                         getComputedStyle(document.body).margin,
                         cur ? cur.textContent : null];",
            )
            .await;
        assert_eq!(facts[0], true, "a <main> landmark");
        assert_eq!(facts[1], true, "a favicon");
        assert_eq!(facts[2], "0px", "the stylesheet is applied");
        assert_eq!(facts[3], current, "the current page is marked");
    }

    /// The first administrator, the app and the account `support` (not yet authorized),
    /// all through the UI.
    pub(crate) async fn first_account(&self) {
        self.create_admin().await;
        self.add_app().await;
        self.add_account().await;
    }

    /// Authorize → sign in as the account's own mailbox → back on the account page, active.
    pub(crate) async fn authorize_account(&self) {
        self.sign_in_as(&self.mailbox).await;
        self.browser
            .wait_for_text("State: active", WAIT)
            .await
            .unwrap();
    }

    /// Whether the field `id`'s paragraph is shown (the app form hides what the provider
    /// does not use).
    pub(crate) async fn shown(&self, id: &str) -> bool {
        self.js(&format!(
            "return getComputedStyle(document.getElementById('{id}').closest('p')).display != 'none';"
        ))
        .await
            == true
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_first_run_at_390_px_never_scrolls_sideways() {
    let w = world("first-run-390").await;
    w.browser.set_window_size(390, 844).await.unwrap();
    assert_eq!(w.js("return window.innerWidth;").await, 390);
    // The setup page, then the first administrator.
    w.browser.goto(&w.server.setup_link()).await.unwrap();
    assert!(w.browser.find("input[name=confirm]").await.is_ok());
    w.assert_fits("setup").await;
    w.create_admin_on_setup_page().await;
    w.assert_fits("dashboard").await;
    w.assert_frame("Dashboard").await;
    assert!(w.browser.title().await.unwrap().starts_with("Dashboard"));
    // The guided first run: what comes next, nothing done yet.
    let next = w.text_of("#next-steps").await;
    assert!(
        next.contains("Add an OAuth app") && next.contains("Test its configuration"),
        "{next}"
    );
    assert!(w.browser.find("#chart-24h svg").await.is_ok());

    let redirect = w.add_app().await;
    assert!(redirect.ends_with("/oauth/callback"));
    // The save confirms itself, and the app page shows what is in effect: the stored
    // sign-in host and the endpoints derived from it.
    assert!(w.text_of("#saved").await.contains("Saved"));
    let authority = w.attr_of("#authority", "value").await;
    assert_eq!(authority, w.idp.base_url().trim_end_matches('/'));
    let in_effect = w.text_of("#in-effect").await;
    let tenant = mailgate_testkit::idp::DEFAULT_TENANT_ID;
    for words in [
        format!("{authority}/{tenant}/oauth2/v2.0/authorize"),
        format!("{authority}/{tenant}/oauth2/v2.0/token"),
        format!("{authority}/{tenant}/discovery/v2.0/keys"),
        "IMAP.AccessAsUser.All".to_owned(),
        "offline_access".to_owned(),
        "Sign out of Microsoft".to_owned(),
    ] {
        assert!(in_effect.contains(&words), "{words}: {in_effect}");
    }
    assert!(
        w.browser
            .title()
            .await
            .unwrap()
            .starts_with("Edit OAuth app Contoso")
    );
    w.assert_fits("app form").await;
    w.assert_frame("OAuth apps").await;
    w.goto("/admin/apps").await;
    w.assert_fits("apps").await;

    w.add_account().await;
    assert!(w.text_of("#done").await.contains("Account created"));
    w.assert_fits("account").await;
    w.assert_frame("Mail accounts").await;
    // A test before authorizing says so, rather than failing at a later step. The help
    // under the field already says "Authorize first": wait for the answer's own alert, so
    // that nothing below runs against the page being replaced.
    w.click("#test-configuration").await;
    w.browser
        .wait_for_text("Authorize first: this account has no token yet", WAIT)
        .await
        .unwrap();
    assert!(
        w.text_of("#alert").await.starts_with("Authorize first"),
        "the alert says it"
    );
    w.assert_fits("account, authorize first").await;

    w.authorize_account().await;
    assert!(w.text_of("#done").await.contains("Authorized"));
    assert!(
        !w.browser.current_url().await.unwrap().contains("code="),
        "the code is not in the address"
    );
    w.click("#test-configuration").await;
    w.browser
        .wait_for_text("All steps passed", Duration::from_secs(60))
        .await
        .unwrap();
    w.assert_fits("test steps").await;
    w.shot("09-test-at-390").await;
    // The run is kept: the account page says when it last passed.
    w.goto("/admin/accounts/1").await;
    let last = w.text_of("#last-test").await;
    assert!(last.contains("passed") && last.contains("Z"), "{last}");
    w.goto("/admin").await;
    assert!(
        w.browser.find("#cards").await.is_ok(),
        "the dashboard is shown"
    );
    assert!(
        w.browser.find_all("#next-steps").await.unwrap().is_empty(),
        "the first run is done"
    );

    for (path, current) in [
        ("/admin", Some("Dashboard")),
        ("/admin/accounts", Some("Mail accounts")),
        ("/admin/accounts/1/edit", Some("Mail accounts")),
        ("/admin/apps/new", Some("OAuth apps")),
        ("/admin/events", Some("Events")),
        ("/admin/webhooks", Some("Webhooks")),
        ("/admin/api-tokens", Some("API tokens")),
        ("/admin/users", Some("Users")),
        ("/admin/users/1", Some("Users")),
        ("/admin/help", Some("Help")),
        ("/admin/no-such-page", None),
    ] {
        w.goto(path).await;
        w.assert_fits(path).await;
        if let Some(current) = current {
            w.assert_frame(current).await;
        }
    }
    // The styled 404 under /admin.
    w.goto("/admin/no-such-page").await;
    assert!(
        w.browser
            .body_text()
            .await
            .unwrap()
            .contains("No such page")
    );
    assert!(w.browser.find("main").await.is_ok());
    // And the sign-in page, signed out.
    w.browser.delete_all_cookies().await.unwrap();
    w.goto("/login").await;
    assert!(w.browser.find("input[name=password]").await.is_ok());
    w.assert_fits("sign-in").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorization_outcome_pages_leave_no_dead_end() {
    let w = world("outcomes").await;
    let intruder = w.add_intruder().await;
    w.first_account().await;

    // Wrong user: the way on is on the page, and signing out goes to the app's own
    // sign-in host (here the emulator), not to the public Microsoft host.
    w.sign_in_as(&intruder).await;
    w.browser
        .wait_for_text("Signed in as the wrong user", WAIT)
        .await
        .unwrap();
    assert!(!w.browser.current_url().await.unwrap().contains("code="));
    assert!(w.browser.find("header nav").await.is_ok(), "navigation");
    let back = w.attr_of("#back-to-account", "href").await;
    assert!(back.ends_with("/admin/accounts/1"), "{back}");
    let sign_out = w.attr_of("#sign-out-provider", "href").await;
    assert!(
        sign_out.starts_with(w.idp.base_url().trim_end_matches('/'))
            && sign_out.ends_with("/logout"),
        "{sign_out}"
    );
    assert!(
        !w.browser
            .page_source()
            .await
            .unwrap()
            .contains("microsoftonline")
    );

    // Try again starts a new authorization; this time consent is cancelled.
    w.click("#try-again").await;
    w.fill("#email", &w.mailbox).await;
    w.fill("#password", PASSWORD).await;
    w.click("#signin").await;
    w.click("#cancel").await;
    w.browser
        .wait_for_text("Authorization failed", WAIT)
        .await
        .unwrap();
    assert!(!w.browser.current_url().await.unwrap().contains("code="));
    let code = w.text_of("#outcome ~ p a code").await;
    assert!(!code.is_empty());
    assert!(w.browser.find("#try-again").await.is_ok());
    w.click("#back-to-account").await;
    w.browser
        .wait_for_text("State: unauthorized", WAIT)
        .await
        .unwrap();
    // The problem code links to its entry on the help page.
    w.goto(&format!("/admin/help#{code}")).await;
    assert!(
        w.browser.find(&format!("[id='{code}']")).await.is_ok(),
        "help entry for {code}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_app_form_follows_the_provider_and_catches_bad_secrets() {
    let w = world("app-form").await;
    w.create_admin().await;
    w.goto("/admin/apps/new").await;
    let kind = w.browser.find("#kind").await.unwrap();
    // Microsoft: tenant, and the permissions as the portal names them.
    assert!(w.shown("tenant").await);
    let text = w.browser.body_text().await.unwrap();
    for words in [
        "API permissions → Add a permission → Microsoft Graph → Delegated permissions",
        "IMAP.AccessAsUser.All, POP.AccessAsUser.All, SMTP.Send, offline_access, openid, email",
        "Office 365 Exchange Online → Application permissions",
        // The app-only hint names the Exchange service principal too.
        "New-ServicePrincipal",
    ] {
        assert!(text.contains(words), "{words}: {text}");
    }
    kind.select_option("google").await.unwrap();
    assert!(!w.shown("tenant").await, "Google has no tenant");
    let text = w.browser.body_text().await.unwrap();
    for words in [
        "OAuth consent screen",
        "https://mail.google.com/",
        "Publishing status",
        "Testing",
        "7 days",
    ] {
        assert!(text.contains(words), "Google's steps: {words}: {text}");
    }
    assert!(!text.contains("Microsoft Graph"));
    kind.select_option("generic").await.unwrap();
    w.js("document.querySelector('details').open = true").await;
    assert!(w.shown("issuer").await && w.shown("token_url").await);
    assert!(!w.shown("tenant").await);
    let text = w.browser.body_text().await.unwrap();
    assert!(
        text.contains("issuer") && !text.contains("mail.google.com"),
        "{text}"
    );
    kind.select_option("microsoft").await.unwrap();
    assert!(!w.shown("issuer").await);

    // Where the clipboard API is unavailable (plain http on a LAN address), Copy selects
    // the text instead.
    w.js("Object.defineProperty(navigator, 'clipboard', { value: undefined });")
        .await;
    w.click("#copy-redirect").await;
    assert!(w.text_of("#copy-redirect").await.starts_with("Selected"));
    let selected = w
        .js("var e = document.activeElement; return [e.id, e.selectionStart, e.selectionEnd, e.value.length];")
        .await;
    assert_eq!(selected[0], "redirect-uri");
    assert_eq!(selected[1], 0);
    assert_eq!(selected[2], selected[3], "the whole URI is selected");

    // A pasted Secret ID (a GUID) and a date already passed are refused beside their
    // fields; nothing is saved.
    w.fill("#name", "Contoso").await;
    w.fill("#tenant", mailgate_testkit::idp::DEFAULT_TENANT_ID)
        .await;
    w.fill("#client_id", &w.client_id).await;
    w.fill("#client_secret", "8f14e45f-ceea-467f-a0e6-5d5a2a4b1c2d")
        .await;
    // A date input's typing follows the browser's locale; set the value as a picker would.
    w.js("document.getElementById('secret_expires').value = '2020-01-31';")
        .await;
    w.js("document.querySelector('details').open = true").await;
    w.fill("#authority", w.idp.base_url()).await;
    w.click("#save").await;
    w.browser
        .wait_for_text("Nothing was saved", WAIT)
        .await
        .unwrap();
    let secret_error = w.text_of(".field-error[data-field=client_secret]").await;
    assert!(secret_error.contains("GUID"), "{secret_error}");
    let date_error = w.text_of(".field-error[data-field=secret_expires]").await;
    assert!(date_error.contains("has passed"), "{date_error}");
    assert_eq!(
        w.env.json(&["app", "list", "--json"]),
        serde_json::json!([])
    );
    // Saved anyway when confirmed, and listed as expired.
    w.fill("#client_secret", "a-real-secret-value~1").await;
    w.click("input[name=expired_ok]").await;
    w.click("#save").await;
    w.browser.wait_for_text("Saved", WAIT).await.unwrap();
    w.goto("/admin/apps").await;
    let list = w.browser.body_text().await.unwrap();
    assert!(
        list.contains("2020-01-31") && list.contains("expired"),
        "{list}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn irreversible_actions_ask_first_and_an_account_is_removed_in_the_ui() {
    let w = world("remove").await;
    w.first_account().await;
    // Removing an app: the dialog asks; Cancel changes nothing.
    w.goto("/admin/apps").await;
    w.click("form[action$='/remove'] button").await;
    let asked = w.browser.answer_dialog(false).await.unwrap();
    assert!(asked.contains("Remove the app Contoso"), "{asked}");
    assert!(
        w.browser
            .current_url()
            .await
            .unwrap()
            .ends_with("/admin/apps")
    );
    assert_eq!(
        w.env
            .json(&["app", "list", "--json"])
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Removing the account: the box must be ticked, then the dialog asks.
    w.goto("/admin/accounts/1").await;
    w.click("#remove-account").await;
    assert!(
        w.browser
            .current_url()
            .await
            .unwrap()
            .ends_with("/admin/accounts/1"),
        "not sent without the box ticked"
    );
    w.click("#confirm-remove").await;
    w.click("#remove-account").await;
    let asked = w.browser.answer_dialog(true).await.unwrap();
    assert!(asked.contains("Remove the account support"), "{asked}");
    w.browser
        .wait_for_text("Account removed", WAIT)
        .await
        .unwrap();
    assert_eq!(
        w.env.json(&["account", "list", "--json"]),
        serde_json::json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_test_is_shown_as_trouble_not_as_active() {
    let w = world("failed-test").await;
    w.first_account().await;
    w.authorize_account().await;
    // The test message's destination is a field of its own, checked like any address.
    w.fill("#to", "not an address").await;
    // Past the browser's own check of an email field, to reach mailgate's.
    w.js("document.getElementById('to').form.noValidate = true;")
        .await;
    w.click("#test-configuration").await;
    w.browser
        .wait_for_text("Send the test message to:", WAIT)
        .await
        .unwrap();
    w.goto("/admin/accounts").await;
    let badge = w.text_of("td .badge").await;
    assert_eq!(badge, "active");
    // The inbound server moves away: the test fails at the connection.
    let closed = closed_port();
    w.env.ok(
        &[
            "account",
            "update",
            "support",
            "--inbound-host",
            "127.0.0.1",
            "--inbound-port",
            &closed,
        ],
        None,
    );
    let out = w.env.run(&["test", "support", "--step-timeout", "2"], None);
    assert_eq!(out.status.code(), Some(1));
    w.goto("/admin/accounts").await;
    assert_eq!(w.text_of("td .badge").await, "failing");
    let problem = w.text_of(".recent-failure").await;
    assert!(problem.contains("last test failed"), "{problem}");
    w.goto("/admin/accounts/1").await;
    let last = w.text_of("#last-test").await;
    assert!(last.contains("failed") && last.contains("Z"), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_scopes_the_webhook_form_and_dark_mode() {
    let w = world("words").await;
    w.first_account().await;
    // The account form's "On email received" is a choice.
    w.goto("/admin/accounts/1/edit").await;
    let tag = w
        .js("return document.getElementById('on_received').tagName;")
        .await;
    assert_eq!(tag, "SELECT");
    // Scopes described as the README does.
    w.goto("/admin/api-tokens").await;
    let text = w.browser.body_text().await.unwrap();
    assert!(
        text.contains("messages:read — read an account's inbox")
            && text.contains("accounts:write — create, change and remove apps and accounts"),
        "{text}"
    );
    // An empty webhook URL says "required"; the docs are a link that opens.
    w.goto("/admin/webhooks").await;
    w.click("input[name=events][value='message.sent']").await;
    w.click("#create-webhook").await;
    w.browser
        .wait_for_text("Nothing was saved", WAIT)
        .await
        .unwrap();
    assert!(
        w.text_of(".field-error[data-field=url]")
            .await
            .starts_with("required"),
    );
    // The pages follow the system's dark mode.
    let background = "return getComputedStyle(document.documentElement).backgroundColor;";
    let light = w.js(background).await;
    w.browser.prefer_dark(true).await.unwrap();
    w.goto("/admin/webhooks").await;
    let dark = w.js(background).await;
    let brightness = |c: &serde_json::Value| -> u32 {
        c.as_str()
            .unwrap()
            .trim_start_matches("rgb(")
            .trim_end_matches(')')
            .split(',')
            .map(|n| n.trim().parse::<u32>().unwrap())
            .sum()
    };
    assert!(
        brightness(&light) > 600 && brightness(&dark) < 150,
        "light {light}, dark {dark}"
    );
    w.browser.prefer_dark(false).await.unwrap();
    w.click("#webhooks-doc").await;
    w.browser
        .wait_for_text("X-Mailgate-Signature", WAIT)
        .await
        .unwrap();
}
