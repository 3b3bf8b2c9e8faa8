//! The whole administrator path in a real headless Chromium: setup link → first admin →
//! Microsoft app (at the emulator) → account → Authorize → sign in at the emulator → back,
//! active → Test configuration all green → the test mail is in the rig's mailbox. And the
//! wrong user: the mismatch page, nothing stored.

use crate::fixtures::PASSWORD;
use crate::support::{Server, TestEnv};
use mailgate_testkit::browser::{Browser, screenshot_dir};
use mailgate_testkit::idp::{ClientSpec, Idp, IdpAdmin, IdpConfig, UserSpec};
use mailgate_testkit::raw::{RawClient, imap_status_is};
use mailgate_testkit::rig::{MailRig, RigOptions};
use std::time::Duration;

pub(crate) const ADMIN_PASSWORD: &str = "browser test admin passphrase";
pub(crate) const CLIENT_SECRET: &str = "CANARY-browser-client-secret-9c1e";

pub(crate) struct World {
    pub(crate) env: TestEnv,
    pub(crate) server: Server,
    pub(crate) idp: IdpAdmin,
    _own_idp: Option<Idp>,
    pub(crate) rig: MailRig,
    pub(crate) client_id: String,
    pub(crate) mailbox: String,
    pub(crate) browser: Browser,
    pub(crate) shots: std::path::PathBuf,
}

pub(crate) async fn world(tag: &str) -> World {
    let (rig, own) = match MailRig::from_env().unwrap() {
        Some(rig) => (rig, None),
        None => {
            let idp = Idp::start(IdpConfig::default()).unwrap();
            let rig = MailRig::start_temp(
                &format!("{}/introspect", idp.base_url()),
                RigOptions::default(),
            )
            .await
            .expect("the mail rig must start");
            (rig, Some(idp))
        }
    };
    let idp = IdpAdmin::new(rig.idp_base_url().unwrap().to_owned());
    let env = TestEnv::new();
    env.set_var("MAILGATE_EXTRA_CA_FILE", rig.ca_cert().to_str().unwrap());
    let server = Server::start(&env);
    let n = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos() as u64
        ^ (std::process::id() as u64) << 32;
    let client_id = format!(
        "{:08x}-0000-4000-8000-{:012x}",
        n as u32,
        n & 0xffff_ffff_ffff
    );
    let mailbox = format!("desk-{:x}@example.test", n & 0xffff_ffff);
    idp.add_client(ClientSpec::confidential(
        &client_id,
        CLIENT_SECRET,
        &format!("{}/oauth/callback", server.base),
    ))
    .await
    .unwrap();
    idp.add_user(UserSpec::new(&mailbox, PASSWORD))
        .await
        .unwrap();
    let browser = Browser::start()
        .await
        .expect("Chromium must start (scripts/test installs it)");
    let shots = screenshot_dir().join(tag);
    std::fs::create_dir_all(&shots).unwrap();
    World {
        env,
        server,
        idp,
        _own_idp: own,
        rig,
        client_id,
        mailbox,
        browser,
        shots,
    }
}

impl World {
    pub(crate) async fn shot(&self, name: &str) {
        self.browser
            .save_screenshot(&self.shots, name)
            .await
            .unwrap();
    }

    pub(crate) async fn fill(&self, css: &str, text: &str) {
        let e = self.browser.find(css).await.unwrap();
        e.clear().await.unwrap();
        e.type_text(text).await.unwrap();
    }

    /// Setup link → first administrator → dashboard.
    pub(crate) async fn create_admin(&self) {
        let link = self.server.setup_link();
        self.browser.goto(&link).await.unwrap();
        self.create_admin_on_setup_page().await;
    }

    /// On the setup page: the first administrator → dashboard.
    pub(crate) async fn create_admin_on_setup_page(&self) {
        self.fill("input[name=username]", "admin").await;
        self.fill("input[name=password]", ADMIN_PASSWORD).await;
        self.fill("input[name=confirm]", ADMIN_PASSWORD).await;
        self.shot("01-setup").await;
        self.browser
            .find("button[type=submit]")
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.browser
            .wait_for_text("Needs attention", Duration::from_secs(10))
            .await
            .unwrap();
        self.shot("02-dashboard").await;
    }

    /// The app form: Microsoft, emulator authority; returns the redirect URI shown.
    pub(crate) async fn add_app(&self) -> String {
        self.browser
            .goto(&format!("{}/admin/apps", self.server.base))
            .await
            .unwrap();
        self.browser
            .find("#new-app")
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let redirect = self
            .browser
            .find("#redirect-uri")
            .await
            .unwrap()
            .attr("value")
            .await
            .unwrap()
            .unwrap();
        self.browser
            .find("#copy-redirect")
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.fill("#name", "Contoso").await;
        self.fill("#tenant", mailgate_testkit::idp::DEFAULT_TENANT_ID)
            .await;
        self.fill("#client_id", &self.client_id).await;
        self.fill("#client_secret", CLIENT_SECRET).await;
        self.browser
            .execute("document.querySelector('details').open = true", vec![])
            .await
            .unwrap();
        self.fill("#authority", self.idp.base_url()).await;
        self.shot("03-app-form").await;
        self.browser
            .find("#save")
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.browser
            .wait_for_url(|u| u.contains("/admin/apps/1"), Duration::from_secs(10))
            .await
            .unwrap();
        redirect
    }

    pub(crate) async fn add_account(&self) {
        self.browser
            .goto(&format!("{}/admin/accounts", self.server.base))
            .await
            .unwrap();
        self.browser
            .find("#new-account")
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.fill("#name", "support").await;
        self.fill("#email", &self.mailbox).await;
        self.fill("#inbound_host", "localhost").await;
        self.fill("#inbound_port", &self.rig.imaps_port().to_string())
            .await;
        self.browser
            .find("#inbound_tls")
            .await
            .unwrap()
            .select_option("implicit")
            .await
            .unwrap();
        self.fill("#smtp_host", "localhost").await;
        self.fill("#smtp_port", &self.rig.submission_port().to_string())
            .await;
        self.browser
            .find("#smtp_tls")
            .await
            .unwrap()
            .select_option("starttls")
            .await
            .unwrap();
        self.fill("#from_name", "Support Desk").await;
        self.shot("04-account-form").await;
        self.browser
            .find("#save")
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.browser
            .wait_for_text("State: unauthorized", Duration::from_secs(10))
            .await
            .unwrap();
        self.shot("05-account-unauthorized").await;
    }

    /// Authorize → the emulator's sign-in and consent pages → back at mailgate.
    pub(crate) async fn sign_in_as(&self, email: &str) {
        self.browser
            .find("#authorize")
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        let field = self.browser.find("#email").await.unwrap();
        assert_eq!(
            field.attr("value").await.unwrap().as_deref(),
            Some(self.mailbox.as_str()),
            "login_hint prefilled"
        );
        self.fill("#email", email).await;
        self.fill("#password", PASSWORD).await;
        self.shot("06-provider-sign-in").await;
        self.browser
            .find("#signin")
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
        self.browser
            .find("#accept")
            .await
            .unwrap()
            .click()
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_administrator_path_end_to_end() {
    let w = world("admin-path").await;
    w.create_admin().await;
    let redirect = w.add_app().await;
    assert_eq!(redirect, format!("{}/oauth/callback", w.server.base));
    let app_page = w.browser.page_source().await.unwrap();
    assert!(!app_page.contains("CANARY"), "the secret is write-only");
    assert!(
        w.browser
            .find("#secret-state")
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
            .starts_with("set"),
        "shown as its hint"
    );
    w.add_account().await;
    w.sign_in_as(&w.mailbox).await;
    w.browser
        .wait_for_text("State: active", Duration::from_secs(15))
        .await
        .unwrap();
    w.shot("07-account-active").await;
    w.browser
        .goto(&format!("{}/admin/accounts", w.server.base))
        .await
        .unwrap();
    let list = w.browser.body_text().await.unwrap();
    assert!(
        list.contains("active") && list.contains("Z\t"),
        "state and token expiry listed: {list}"
    );
    w.shot("07b-accounts").await;
    w.browser
        .goto(&format!("{}/admin/accounts/1", w.server.base))
        .await
        .unwrap();

    w.browser
        .find("#test-configuration")
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    w.browser
        .wait_for_text("All steps passed", Duration::from_secs(60))
        .await
        .unwrap();
    w.shot("08-test-configuration").await;
    let text = w.browser.body_text().await.unwrap();
    for step in [
        "imap: authenticate",
        "imap: select INBOX",
        "smtp: send test message",
        "imap: find the test message",
    ] {
        assert!(text.contains(step), "{step} missing: {text}");
    }
    assert!(!w.browser.page_source().await.unwrap().contains("CANARY"));

    // The test mail is in the rig mailbox, checked with the raw protocol.
    let token = w.env.ok(&["token", "support"], None).trim().to_owned();
    let mut imap = RawClient::connect_tls(
        w.rig.host(),
        w.rig.imaps_port(),
        w.rig.tls_config().unwrap(),
    )
    .await
    .unwrap();
    imap.read_line().await.unwrap();
    let ir = mailgate_proto::sasl::xoauth2_initial_response(&w.mailbox, &token);
    let auth = imap
        .imap_command("b1", &format!("AUTHENTICATE XOAUTH2 {ir}"))
        .await
        .unwrap();
    assert!(imap_status_is(auth.last().unwrap(), "b1", "OK"));
    imap.imap_command("b2", "SELECT INBOX").await.unwrap();
    let found = imap
        .imap_command("b3", "SEARCH SUBJECT \"mailgate test message\"")
        .await
        .unwrap();
    assert!(
        found
            .iter()
            .any(|l| l.starts_with("* SEARCH ") && l.len() > 9),
        "{found:?}"
    );
    let _ = w.client_id;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signing_in_as_the_wrong_user_stores_nothing() {
    let w = world("wrong-user").await;
    let intruder = format!("intruder-{}", w.mailbox);
    w.idp
        .add_user(UserSpec::new(&intruder, PASSWORD))
        .await
        .unwrap();
    w.create_admin().await;
    w.add_app().await;
    w.add_account().await;
    w.sign_in_as(&intruder).await;
    w.browser
        .wait_for_text("Signed in as the wrong user", Duration::from_secs(15))
        .await
        .unwrap();
    w.shot("07-wrong-user").await;
    let text = w.browser.body_text().await.unwrap();
    assert!(
        text.contains(&format!("You signed in as {intruder}"))
            && text.contains(&format!("this account is {}", w.mailbox)),
        "{text}"
    );
    let acc = w.env.json(&["account", "show", "support", "--json"]);
    assert_eq!(acc["state"], "unauthorized", "nothing stored");
    assert!(!w.env.run(&["token", "support"], None).status.success());
}
