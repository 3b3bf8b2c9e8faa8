//! The first-time administrator's path (issue 17), the points `admin_path` leaves open:
//! a provider's error and a cancelled consent at 390 px, the sign-out link of a Google and
//! of a generic app (only at the provider the app uses), revoking a token and removing a
//! user asking first, each page's own title, secret fields that browsers do not remember,
//! the 404 and the favicon, the test message sent elsewhere, the step list polling through
//! failed fetches, and the dashboard's cards, colours and chart after some activity (with
//! the README's screenshots).
//! docs/testing.md maps each point to its test.

use crate::browser::{CLIENT_SECRET, World, world};
use crate::fixtures::PASSWORD;
use mailgate_testkit::browser::screenshot_dir;
use std::time::{Duration, Instant};

use crate::admin_path::{WAIT, closed_port};

impl World {
    /// An HTTP GET from the page itself (its cookies): status, content type and body.
    async fn fetch_in_page(&self, path: &str) -> (i64, String, String) {
        let v = self
            .js(&format!(
                "var x = new XMLHttpRequest(); x.open('GET', '{path}', false); x.send();
                 return [x.status, x.getResponseHeader('content-type') || '', x.responseText];"
            ))
            .await;
        (
            v[0].as_i64().unwrap(),
            v[1].as_str().unwrap().to_owned(),
            v[2].as_str().unwrap().to_owned(),
        )
    }

    /// The computed background colour of the first element matching `css`, as (r, g, b).
    async fn background_of(&self, css: &str) -> (u32, u32, u32) {
        let colour = self
            .js(&format!(
                "return getComputedStyle(document.querySelector(\"{css}\")).backgroundColor;"
            ))
            .await;
        let colour = colour.as_str().unwrap().to_owned();
        let parts: Vec<u32> = colour
            .trim_start_matches("rgba(")
            .trim_start_matches("rgb(")
            .trim_end_matches(')')
            .split(',')
            .map(|n| n.trim().parse::<f64>().unwrap() as u32)
            .collect();
        assert!(
            parts.len() == 3 || parts[3] > 0,
            "{css} has no background of its own: {colour}"
        );
        (parts[0], parts[1], parts[2])
    }

    /// The app form for a provider `kind`, with the emulator's client and `advanced` fields
    /// (css, value) filled in; saved, and the save confirmed.
    async fn add_app_of_kind(&self, kind: &str, name: &str, advanced: &[(&str, &str)]) {
        self.goto("/admin/apps/new").await;
        let kinds = self.browser.find("#kind").await.unwrap();
        kinds.select_option(kind).await.unwrap();
        self.fill("#name", name).await;
        self.fill("#client_id", &self.client_id).await;
        self.fill("#client_secret", CLIENT_SECRET).await;
        self.js("document.querySelector('details').open = true")
            .await;
        for (css, value) in advanced {
            self.fill(css, value).await;
        }
        self.click("#save").await;
        assert!(self.text_of("#saved").await.starts_with("Saved"), "{kind}");
    }

    /// Authorize, sign in at the provider as `intruder`, and wait for the wrong-user page.
    async fn sign_in_as_wrong_user(&self, intruder: &str) {
        self.sign_in_as(intruder).await;
        self.browser
            .wait_for_text("Signed in as the wrong user", WAIT)
            .await
            .unwrap();
    }

    /// Loads `path` again until the text of `css` contains `words` (bounded: 30 s), for what
    /// a background job changes: the outbox's send, the inbound watcher's failure.
    async fn reload_until(&self, path: &str, css: &str, words: &str) {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            self.goto(path).await;
            let text = self.text_of(css).await;
            if text.contains(words) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{path}: {css} never said {words:?}; it says {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
    }

    /// Waits for the outcome page of an authorization, and checks the way on from it: the
    /// navigation with the accounts marked, "Back to the account", "Try again", the problem
    /// code linked to its help entry, the code gone from the address, and no sideways scroll.
    async fn assert_outcome_leaves_a_way_on(&self, what: &str) {
        assert_eq!(
            self.text_of("#outcome").await,
            "Authorization failed",
            "{what}"
        );
        let url = self
            .browser
            .wait_for_url(|u| !u.contains('?'), WAIT)
            .await
            .unwrap();
        assert!(url.ends_with("/oauth/callback"), "{what}: {url}");
        self.assert_frame("Mail accounts").await;
        let back = self.attr_of("#back-to-account", "href").await;
        assert!(back.ends_with("/admin/accounts/1"), "{what}: {back}");
        assert!(self.browser.find("#try-again").await.is_ok(), "{what}");
        let help = self
            .attr_of("#outcome ~ p a[href^='/admin/help#']", "href")
            .await;
        assert!(help.len() > "/admin/help#".len(), "{what}: {help}");
        self.assert_fits(what).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_provider_error_and_a_cancelled_consent_leave_a_way_on_at_390_px() {
    let w = world("provider-error-390").await;
    w.browser.set_window_size(390, 844).await.unwrap();
    w.create_admin().await;
    w.add_app().await;
    // A secret the provider does not know: the code exchange fails at the provider.
    w.goto("/admin/apps/1").await;
    w.fill("#client_secret", "not-the-registered-secret~1")
        .await;
    w.click("#save").await;
    assert!(w.text_of("#saved").await.starts_with("Saved"));
    w.add_account().await;

    // The provider's error, with the code in the address at first.
    w.sign_in_as(&w.mailbox).await;
    w.assert_outcome_leaves_a_way_on("provider error").await;
    let text = w.browser.body_text().await.unwrap();
    assert!(text.contains("The provider said"), "{text}");
    assert!(!text.contains("not-the-registered-secret"), "{text}");

    // Try again: a new authorization; consent cancelled this time.
    w.click("#try-again").await;
    w.fill("#email", &w.mailbox).await;
    w.fill("#password", PASSWORD).await;
    w.click("#signin").await;
    w.click("#cancel").await;
    w.assert_outcome_leaves_a_way_on("cancelled consent").await;
    w.click("#back-to-account").await;
    w.browser
        .wait_for_text("State: unauthorized", WAIT)
        .await
        .unwrap();
    w.assert_fits("account after a failed authorization").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_google_app_shows_google_in_effect_and_signs_out_only_at_google() {
    let w = world("google-app").await;
    let intruder = w.add_intruder().await;
    w.create_admin().await;
    w.add_app_of_kind("google", "Workspace", &[("#authority", w.idp.base_url())])
        .await;
    // What is in effect: Google's endpoints at the configured sign-in host, Google's scope,
    // and Google's sign-out page there.
    let origin = w.idp.base_url().trim_end_matches('/').to_owned();
    let in_effect = w.text_of("#in-effect").await;
    for words in [
        format!("{origin}/o/oauth2/v2/auth"),
        format!("{origin}/token"),
        format!("{origin}/oauth2/v3/certs"),
        "https://mail.google.com/".to_owned(),
        "Sign out of Google".to_owned(),
    ] {
        assert!(in_effect.contains(&words), "{words}: {in_effect}");
    }

    w.add_account().await;
    w.sign_in_as_wrong_user(&intruder).await;
    let link = w.browser.find("#sign-out-provider").await.unwrap();
    assert_eq!(
        link.attr("href").await.unwrap().unwrap(),
        format!("{origin}/Logout")
    );
    assert_eq!(link.text().await.unwrap(), "Sign out of Google");
    let source = w.browser.page_source().await.unwrap();
    for other in ["Microsoft", "microsoftonline", "login.live.com"] {
        assert!(!source.contains(other), "{other} on a Google app's page");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revoking_a_token_and_removing_a_user_ask_first_and_each_save_confirms_itself() {
    let w = world("ask-first").await;
    w.create_admin().await;

    // An API token: created (shown once), then revoked only when the dialog is accepted.
    w.goto("/admin/api-tokens").await;
    w.fill("#name", "ci").await;
    w.click("input[name=scope][value='messages:send']").await;
    w.click("#create-token").await;
    assert_eq!(w.text_of("#created-name").await, "ci");
    w.goto("/admin/api-tokens").await;
    w.click("form[action$='/revoke'] button").await;
    let asked = w.browser.answer_dialog(false).await.unwrap();
    assert!(asked.contains("Revoke the token ci"), "{asked}");
    let listed = w.env.json(&["api-token", "list", "--json"]);
    assert!(listed[0]["revoked_at"].is_null(), "{listed}");
    w.click("form[action$='/revoke'] button").await;
    w.browser.answer_dialog(true).await.unwrap();
    // The list again, the token marked revoked (waited for: the page is being replaced).
    assert_eq!(w.text_of("tr .badge.bad").await, "revoked");
    let listed = w.env.json(&["api-token", "list", "--json"]);
    assert!(!listed[0]["revoked_at"].is_null(), "{listed}");

    // A user: added (the list says so), then removed only when the dialog is accepted.
    w.goto("/admin/users").await;
    w.fill("#username", "olga").await;
    w.fill("#password", "a long enough passphrase for olga")
        .await;
    w.fill("#password_repeat", "a long enough passphrase for olga")
        .await;
    w.click("#add-user").await;
    assert!(w.text_of("#notice").await.starts_with("User added"));
    w.click("#user-2 a").await;
    w.click("#remove-user").await;
    let asked = w.browser.answer_dialog(false).await.unwrap();
    assert!(asked.contains("Remove the user olga"), "{asked}");
    assert!(
        w.env
            .ok(&["user", "list"], None)
            .lines()
            .any(|l| l.contains("olga"))
    );
    w.click("#remove-user").await;
    w.browser.answer_dialog(true).await.unwrap();
    w.browser.wait_for_text("User removed", WAIT).await.unwrap();
    assert!(
        !w.env
            .ok(&["user", "list"], None)
            .lines()
            .any(|l| l.contains("olga"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_page_has_its_title_secret_fields_are_not_remembered_and_404_is_styled() {
    let w = world("titles").await;
    w.first_account().await;
    // Secret-bearing inputs on a page: each tells the browser not to fill in or keep it.
    const SECRET_INPUTS: &str = "return Array.from(document.querySelectorAll(
        'input[type=password], input[name=client_secret], input[name*=password], #api-token'))
        .map(function (e) { return (e.name || e.id) + '=' + e.getAttribute('autocomplete'); });";
    let mut titles = Vec::new();
    for (path, title, secrets) in [
        ("/admin", "Dashboard", 0),
        ("/admin/apps", "OAuth apps", 0),
        ("/admin/apps/new", "New OAuth app", 1),
        ("/admin/apps/1", "Edit OAuth app Contoso", 1),
        ("/admin/accounts", "Mail accounts", 0),
        ("/admin/accounts/new", "New mail account", 0),
        ("/admin/accounts/1", "Mail account support", 0),
        ("/admin/accounts/1/edit", "Edit mail account support", 0),
        ("/admin/events", "Events", 0),
        ("/admin/webhooks", "Webhooks", 0),
        ("/admin/api-tokens", "API tokens", 0),
        ("/admin/users", "Users", 2),
        ("/admin/users/1", "User admin", 2),
        ("/admin/help", "Problem codes", 0),
    ] {
        w.goto(path).await;
        let shown = w.browser.title().await.unwrap();
        assert_eq!(shown, format!("{title} — mailgate"), "{path}");
        titles.push(shown);
        let fields = w.js(SECRET_INPUTS).await;
        let fields = fields.as_array().unwrap();
        assert_eq!(fields.len(), secrets, "{path}: {fields:?}");
        for f in fields {
            let f = f.as_str().unwrap();
            assert!(
                f.ends_with("=new-password") || f.ends_with("=off"),
                "{path}: {f}"
            );
        }
    }
    titles.sort();
    titles.dedup();
    assert_eq!(titles.len(), 14, "one title per page");

    // The forms: help text under each visible field (below it, not beside it).
    for path in [
        "/admin/apps/new",
        "/admin/accounts/new",
        "/admin/accounts/1/edit",
    ] {
        w.goto(path).await;
        let missing = w
            .js(
                "return Array.from(document.querySelectorAll('main p.field'))
                 .filter(function (p) { return p.offsetParent !== null; })
                 .map(function (p) {
                     var control = p.querySelector('input:not([type=checkbox]), select, textarea');
                     if (!control) return null;
                     var help = p.querySelector('small.help');
                     if (!help) return control.id + ': no help';
                     return help.getBoundingClientRect().top
                         >= control.getBoundingClientRect().bottom - 1
                         ? null : control.id + ': help beside the field';
                 })
                 .filter(function (m) { return m; });",
            )
            .await;
        assert_eq!(missing, serde_json::json!([]), "{path}");
    }

    // The token shown once is not remembered either.
    w.goto("/admin/api-tokens").await;
    w.fill("#name", "ci").await;
    w.click("input[name=scope][value='messages:read']").await;
    w.click("#create-token").await;
    assert!(w.browser.find("#api-token").await.is_ok(), "shown once");
    assert_eq!(
        w.browser.title().await.unwrap(),
        "API token created — mailgate"
    );
    assert_eq!(
        w.js(SECRET_INPUTS).await,
        serde_json::json!(["api-token=off"])
    );

    // A page that does not exist under /admin: a 404, in the admin's frame, with a way back.
    let (status, kind, _) = w.fetch_in_page("/admin/no-such-page").await;
    assert_eq!((status, kind.starts_with("text/html")), (404, true));
    w.goto("/admin/no-such-page").await;
    assert_eq!(w.browser.title().await.unwrap(), "Not found — mailgate");
    assert!(w.browser.find("header nav").await.is_ok(), "navigation");
    let facts = w
        .js("return [!!document.querySelector('main h1'),
                     getComputedStyle(document.body).margin,
                     document.querySelectorAll('nav a[aria-current]').length,
                     !!document.querySelector('main a[href=\"/admin\"]')];")
        .await;
    assert_eq!(facts, serde_json::json!([true, "0px", 0, true]));

    // The favicon the pages name is served.
    let (status, kind, body) = w.fetch_in_page("/static/favicon.svg").await;
    assert_eq!((status, kind.as_str()), (200, "image/svg+xml"));
    assert!(body.trim_start().starts_with("<svg"), "{body}");

    // The sign-in page asks for the current password, not a new one.
    w.browser.delete_all_cookies().await.unwrap();
    w.goto("/login").await;
    assert_eq!(
        w.js(SECRET_INPUTS).await,
        serde_json::json!(["password=current-password"])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_test_message_goes_to_the_mailbox_or_where_the_admin_says() {
    let w = world("test-destination").await;
    w.first_account().await;
    w.authorize_account().await;
    // By default, the mailbox itself.
    let to = w.browser.find("#to").await.unwrap();
    assert_eq!(
        to.attr("placeholder").await.unwrap().as_deref(),
        Some(w.mailbox.as_str())
    );
    assert!(
        w.text_of("#to + small, #to ~ small")
            .await
            .contains("Empty: the mailbox itself")
    );
    // Elsewhere when asked: sent there, and not looked for in this inbox.
    let elsewhere = format!("copy-{}", w.mailbox);
    w.fill("#to", &elsewhere).await;
    w.click("#test-configuration").await;
    w.browser
        .wait_for_text("All steps passed", Duration::from_secs(60))
        .await
        .unwrap();
    let steps = w.text_of("#test-steps").await;
    assert!(
        steps.contains("the test message went to another address"),
        "{steps}"
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let delivered = crate::outbox::maildir_messages(&w.rig, &elsewhere);
        if delivered
            .iter()
            .any(|m| m.contains("mailgate test message"))
        {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the test message never reached {elsewhere}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_trouble_at_a_glance_in_colour() {
    let w = world("dashboard").await;
    w.first_account().await;
    // The state badges, each in its own colour: unauthorized, active, failing.
    w.goto("/admin/accounts").await;
    assert_eq!(w.text_of("td .badge").await, "unauthorized");
    let unauthorized = w.background_of("td .badge").await;
    w.goto("/admin/accounts/1").await;
    w.authorize_account().await;
    w.goto("/admin/accounts").await;
    assert_eq!(w.text_of("td .badge").await, "active");
    let active = w.background_of("td .badge").await;

    // Some activity: the first run's test, and a message sent through the API.
    w.goto("/admin/accounts/1").await;
    w.click("#test-configuration").await;
    w.browser
        .wait_for_text("All steps passed", Duration::from_secs(60))
        .await
        .unwrap();
    w.goto("/admin/api-tokens").await;
    w.fill("#name", "sender").await;
    w.click("input[name=scope][value='messages:send']").await;
    w.click("#create-token").await;
    let token = w.attr_of("#api-token", "value").await;
    let queued = reqwest::Client::new()
        .post(format!("{}/api/v1/accounts/1/messages", w.server.base))
        .bearer_auth(&token)
        .json(&serde_json::json!({"to": [w.mailbox], "subject": "dashboard", "text": "hello"}))
        .send()
        .await
        .unwrap();
    assert_eq!(queued.status(), reqwest::StatusCode::ACCEPTED);
    w.reload_until("/admin", "#chart-24h .legend", "1 sent")
        .await;

    // Trouble: the inbound server moves away while mail is watched (an on-received action),
    // so the watcher fails (account.inbound_failed). The edit confirms itself.
    let closed = closed_port();
    w.goto("/admin/accounts/1/edit").await;
    w.fill("#inbound_host", "127.0.0.1").await;
    w.fill("#inbound_port", &closed).await;
    w.browser
        .find("#on_received")
        .await
        .unwrap()
        .select_option("mark_seen")
        .await
        .unwrap();
    w.click("#save").await;
    assert!(w.text_of("#done").await.contains("Saved"));
    w.reload_until("/admin/accounts", "td .badge", "failing")
        .await;
    let problem = w.text_of(".recent-failure").await;
    assert!(problem.starts_with("inbound failed"), "{problem}");
    let failing = w.background_of("td .badge").await;
    // The account page says so too: its badge, and the inbound failure in words.
    w.goto("/admin/accounts/1").await;
    assert_eq!(w.text_of("#account-badge").await, "failing");
    let inbound = w.text_of("#inbound-failure").await;
    assert!(inbound.starts_with("inbound failed"), "{inbound}");
    assert!(
        unauthorized != active && active != failing && failing != unauthorized,
        "three colours: {unauthorized:?} {active:?} {failing:?}"
    );
    assert!(active.1 > active.0, "active is green: {active:?}");
    assert!(failing.0 > failing.1, "failing is red: {failing:?}");

    // The dashboard: cards by state, and the last 24 hours drawn from the events.
    w.goto("/admin").await;
    let number = |card: &'static str| {
        let w = &w;
        async move { w.text_of(&format!("#{card} .number")).await }
    };
    assert_eq!(number("card-accounts-active").await, "0");
    assert_eq!(number("card-accounts-attention").await, "1");
    assert_eq!(number("card-secrets-expiring").await, "0");
    assert_eq!(number("card-outbox-failed").await, "0");
    let attention = w.text_of("#attention").await;
    assert!(
        attention.contains("failing") && attention.contains("inbound failed"),
        "{attention}"
    );
    let chart = w
        .js("var c = document.getElementById('chart-24h');
             function sum(cls) { return Array.from(c.querySelectorAll('rect.' + cls))
                 .reduce(function (n, r) { return n + r.getBBox().height; }, 0); }
             return [c.querySelector('.legend').innerText, sum('sends') > 0, sum('failures') > 0,
                     getComputedStyle(c.querySelector('rect.sends')).fill
                         != getComputedStyle(c.querySelector('rect.failures')).fill];")
        .await;
    let legend = chart[0].as_str().unwrap();
    assert!(
        legend.contains("1 sent") && !legend.contains(" 0 failures"),
        "{legend}"
    );
    assert_eq!(chart[1], true, "a sends bar");
    assert_eq!(chart[2], true, "a failures bar");
    assert_eq!(chart[3], true, "sends and failures in their own colours");

    // The README's pictures: the dashboard, and the account page on a phone.
    let readme = screenshot_dir().join("readme");
    w.browser.set_window_size(1280, 1000).await.unwrap();
    w.goto("/admin").await;
    w.browser
        .save_screenshot(&readme, "dashboard")
        .await
        .unwrap();
    w.browser.set_window_size(390, 844).await.unwrap();
    w.goto("/admin/accounts/1").await;
    w.assert_fits("account page").await;
    w.browser
        .save_screenshot(&readme, "account-390")
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_generic_app_offers_no_sign_out_link_of_another_provider() {
    let w = world("generic-app").await;
    let intruder = w.add_intruder().await;
    w.create_admin().await;
    let issuer = w.idp.base_url().trim_end_matches('/');
    let scopes = "openid email https://mail.google.com/";
    w.add_app_of_kind(
        "generic",
        "Standard",
        &[("#issuer", issuer), ("#scopes", scopes)],
    )
    .await;
    assert!(!w.text_of("#in-effect").await.contains("Sign out"));
    w.add_account().await;
    w.sign_in_as_wrong_user(&intruder).await;
    // No standard sign-out address: the page says what to do, and links no provider.
    assert!(
        w.browser
            .find_all("#sign-out-provider")
            .await
            .unwrap()
            .is_empty()
    );
    let text = w.browser.body_text().await.unwrap();
    assert!(text.contains("Sign out of the provider"), "{text}");
    let source = w.browser.page_source().await.unwrap();
    for other in [
        "Microsoft",
        "Google",
        "microsoftonline",
        "accounts.google.com",
    ] {
        assert!(!source.contains(other), "{other} on a generic app's page");
    }
    assert!(w.browser.find("#try-again").await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_step_list_keeps_polling_through_failed_fetches() {
    let w = world("poll-retry").await;
    w.first_account().await;
    w.authorize_account().await;
    // An inbound server that accepts the connection and then says nothing: the run stays
    // at its TLS step until the step's timeout (15 s), a window to break the page's polls.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = silent.local_addr().unwrap().port().to_string();
    w.env.ok(
        &[
            "account",
            "update",
            "support",
            "--inbound-host",
            "127.0.0.1",
            "--inbound-port",
            &port,
        ],
        None,
    );
    w.goto("/admin/accounts/1").await;
    w.click("#test-configuration").await;
    assert!(
        w.browser.find("#test-running").await.is_ok(),
        "still running"
    );
    // The next three fetches fail as on a flaky network; later ones go through.
    w.js("window.failFetches = 3; var realFetch = window.fetch;
          window.fetch = function (url, options) {
              if (window.failFetches-- > 0) return Promise.reject(new TypeError('offline'));
              return realFetch(url, options);
          };")
        .await;
    w.browser
        .wait_for_text("The test failed.", Duration::from_secs(60))
        .await
        .unwrap();
    let after = w
        .js("return [window.failFetches < 0, !!document.getElementById('poll-lost')];")
        .await;
    assert_eq!(
        after,
        serde_json::json!([true, false]),
        "the failed fetches were tried again, and the list was not given up"
    );
    drop(silent);
}
