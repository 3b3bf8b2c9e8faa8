//! Shared fixtures of the integration tests: the mail fixture (`Fixture`: a running mailgate,
//! the emulator, a Microsoft app and one account), the admin-UI fixture (`AdminUi`: a server
//! whose first administrator came from the setup link) and `create_token`. Modules reach
//! them here; `oauth.rs` re-exports the mail fixture under its old path.

use crate::support::{Browser, Server, TestEnv, session_cookie, text};
use mailgate_testkit::idp::{ClientSpec, Idp, IdpAdmin, IdpConfig, UserSpec, sign_in};
use mailgate_testkit::rig::{MailRig, RigOptions};
use reqwest::StatusCode;

pub const PASSWORD: &str = "correct horse battery staple";
pub const CLIENT_SECRET: &str = "CANARY~emulator.client-secret.4f2a";

/// A running mailgate, an emulator, a Microsoft app registered at both, and one account.
pub struct Fixture {
    pub env: TestEnv,
    /// The emulator: this test's own, or the shared one the mail rig introspects at.
    pub idp: IdpAdmin,
    _own_idp: Option<Idp>,
    pub server: Server,
    pub client_id: String,
    pub mailbox: String,
    pub http: reqwest::Client,
}

fn random_guid() -> String {
    let t = mailgate_testkit_rand();
    format!(
        "{}-{}-4{}-8{}-{}",
        &t[0..8],
        &t[8..12],
        &t[13..16],
        &t[17..20],
        &t[20..32]
    )
}

fn mailgate_testkit_rand() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    let n = N.fetch_add(1, Ordering::SeqCst) ^ (std::process::id() as u64) << 20;
    let nanos = std::time::UNIX_EPOCH.elapsed().unwrap().as_nanos() as u64;
    format!(
        "{:016x}{:016x}",
        n.wrapping_mul(0x9e37_79b9_7f4a_7c15),
        nanos
    )
}

impl Fixture {
    pub async fn start() -> Fixture {
        Self::start_with(&[]).await
    }

    /// `vars`: extra environment for the server and every command.
    pub async fn start_with(vars: &[(&str, &str)]) -> Fixture {
        let env = TestEnv::new();
        for (k, v) in vars {
            env.set_var(k, v);
        }
        let own = Idp::start(IdpConfig::default()).unwrap();
        Self::start_at(env, own.admin(), Some(own)).await
    }

    /// Against the emulator of the mail rig (shared or this test's own), so that tokens
    /// mailgate obtains open the rig's real Dovecot.
    pub async fn start_on_rig() -> (Fixture, MailRig) {
        Self::start_on_rig_with(&[]).await
    }

    /// [`Fixture::start_on_rig`] with extra environment for the server and every command;
    /// the server trusts the rig's CA.
    pub async fn start_on_rig_with(vars: &[(&str, &str)]) -> (Fixture, MailRig) {
        let (rig, own) = match MailRig::from_env().unwrap() {
            Some(rig) => (rig, None),
            None => {
                let idp = Idp::start(IdpConfig::default()).unwrap();
                let rig = MailRig::start_temp(
                    &format!("{}/introspect", idp.base_url()),
                    RigOptions::default(),
                )
                .await
                .expect("the mail rig must start (see docs/testing.md)");
                (rig, Some(idp))
            }
        };
        let admin = IdpAdmin::new(
            rig.idp_base_url()
                .expect("the rig names its emulator")
                .to_owned(),
        );
        let env = TestEnv::new();
        env.set_var("MAILGATE_EXTRA_CA_FILE", rig.ca_cert().to_str().unwrap());
        for (k, v) in vars {
            env.set_var(k, v);
        }
        let f = Self::start_at(env, admin, own).await;
        (f, rig)
    }

    /// Against a mail rig of this test's own, started with `options`, whose Dovecot checks
    /// tokens at the shared emulator (or at this test's own when there is no shared rig).
    pub async fn start_on_own_rig(
        vars: &[(&str, &str)],
        options: RigOptions,
    ) -> (Fixture, MailRig) {
        let (base, own) = match MailRig::from_env().unwrap() {
            Some(shared) => (
                shared
                    .idp_base_url()
                    .expect("the rig names its emulator")
                    .to_owned(),
                None,
            ),
            None => {
                let idp = Idp::start(IdpConfig::default()).unwrap();
                (idp.base_url().to_string(), Some(idp))
            }
        };
        let rig = MailRig::start_temp(&format!("{base}/introspect"), options)
            .await
            .expect("the mail rig must start (see docs/testing.md)");
        let env = TestEnv::new();
        env.set_var("MAILGATE_EXTRA_CA_FILE", rig.ca_cert().to_str().unwrap());
        for (k, v) in vars {
            env.set_var(k, v);
        }
        let f = Self::start_at(env, IdpAdmin::new(base), own).await;
        (f, rig)
    }

    async fn start_at(env: TestEnv, idp: IdpAdmin, own: Option<Idp>) -> Fixture {
        let server = Server::start(&env);
        env.set_var("MAILGATE_PUBLIC_URL", &server.base);
        let client_id = random_guid();
        let mailbox = format!("support-{}@example.test", &client_id[..8]);
        let mut client = ClientSpec::confidential(
            &client_id,
            CLIENT_SECRET,
            &format!("{}/oauth/callback", server.base),
        );
        // App-only tokens act for this mailbox (the emulator's stand-in for Exchange's
        // mailbox permission).
        client.app_only_mailboxes = vec![mailbox.clone()];
        idp.add_client(client).await.unwrap();
        idp.add_user(UserSpec::new(&mailbox, PASSWORD))
            .await
            .unwrap();
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap();
        let f = Fixture {
            env,
            idp,
            _own_idp: own,
            server,
            client_id,
            mailbox,
            http,
        };
        f.add_app("Contoso", "authorization_code");
        f.env.ok(
            &[
                "account", "add", "--name", "support", "--app", "Contoso", "--email", &f.mailbox,
            ],
            None,
        );
        f
    }

    pub fn add_app(&self, name: &str, flow: &str) {
        self.env.ok(
            &[
                "app",
                "add",
                "--kind",
                "microsoft",
                "--name",
                name,
                "--tenant",
                mailgate_testkit::idp::DEFAULT_TENANT_ID,
                "--client-id",
                &self.client_id,
                "--client-secret-stdin",
                "--authority",
                self.idp.base_url(),
                "--flow",
                flow,
            ],
            Some(CLIENT_SECRET),
        );
    }

    /// `mailgate authorize --no-wait`: the sign-in URL.
    pub fn authorize_url(&self, account: &str) -> String {
        self.env
            .ok(&["authorize", account, "--no-wait"], None)
            .trim()
            .to_owned()
    }

    /// The whole browser part: sign in at the emulator, then follow the redirect to
    /// mailgate's callback. Returns the callback's status and page.
    pub async fn sign_in_and_callback(&self, url: &str, email: &str) -> (u16, String) {
        let callback = sign_in(&self.http, url, email, PASSWORD).await.unwrap();
        assert!(
            callback
                .as_str()
                .starts_with(&format!("{}/oauth/callback?", self.server.base)),
            "{callback}"
        );
        let resp = self.http.get(callback.as_str()).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }

    pub async fn authorize(&self) {
        self.authorize_as("support", &self.mailbox).await;
    }

    pub async fn authorize_as(&self, account: &str, email: &str) {
        let url = self.authorize_url(account);
        let (status, page) = self.sign_in_and_callback(&url, email).await;
        assert_eq!(status, 200, "{page}");
    }

    pub fn state(&self, account: &str) -> serde_json::Value {
        self.env.json(&["account", "show", account, "--json"])
    }

    pub async fn counter(&self, key: &str) -> u64 {
        self.idp
            .counters(Some(&self.client_id))
            .await
            .unwrap()
            .get(key)
            .copied()
            .unwrap_or(0)
    }

    /// Makes mailgate's stored access token expired, as if an hour had passed.
    pub async fn expire_stored_token(&self) {
        self.sql("UPDATE grants SET access_expires_at = 1000, access_issued_at = 0")
            .await;
    }

    pub async fn sql(&self, statement: &str) {
        sqlx::any::install_default_drivers();
        let url = format!("sqlite://{}", self.env.db_path().display());
        let mut conn = <sqlx::AnyConnection as sqlx::Connection>::connect(&url)
            .await
            .unwrap();
        sqlx::raw_sql(statement).execute(&mut conn).await.unwrap();
    }

    pub fn token(&self) -> std::process::Output {
        self.env.run(&["token", "support"], None)
    }
}

/// An API token made with `mailgate api-token create` (`accounts`: its restriction).
pub fn create_token(f: &Fixture, name: &str, scopes: &[&str], accounts: &[&str]) -> String {
    let mut args = vec!["api-token", "create", "--name", name];
    for s in scopes {
        args.extend(["--scope", s]);
    }
    for a in accounts {
        args.extend(["--account", a]);
    }
    let out = f.env.run(&args, None);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let token = text(&out.stdout).trim().to_owned();
    assert!(token.starts_with("mgt_") && token.len() > 40, "{token}");
    token
}

/// The admin UI over HTTP: a running server and a client that does not follow redirects;
/// `admin` is the session cookie (`mg_session=…`) of the first administrator, `admin`, once
/// [`AdminUi::with_admin`] (or the test itself) has run the setup link.
pub struct AdminUi {
    pub env: TestEnv,
    pub server: Server,
    pub http: reqwest::Client,
    pub admin: String,
}

impl AdminUi {
    /// A server (with `vars`) and nobody signed up yet.
    pub fn start_with(vars: &[(&str, &str)]) -> AdminUi {
        let env = TestEnv::new();
        for (k, v) in vars {
            env.set_var(k, v);
        }
        let server = Server::start(&env);
        AdminUi {
            env,
            server,
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            admin: String::new(),
        }
    }

    /// A server whose first administrator `admin` (with `password`) came from the setup
    /// link, signed in.
    pub async fn with_admin(password: &str) -> AdminUi {
        let mut ui = Self::start_with(&[]);
        ui.admin = ui.setup_admin_with(password).await;
        ui
    }

    /// Runs the setup link for `admin`; returns the session cookie (`mg_session=…`).
    pub async fn setup_admin_with(&self, password: &str) -> String {
        let link = self.server.setup_link();
        let token = link.split("token=").nth(1).unwrap().to_owned();
        let resp = self
            .http
            .post(self.url("/setup"))
            .form(&[
                ("token", token.as_str()),
                ("username", "admin"),
                ("password", password),
                ("confirm", password),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), StatusCode::SEE_OTHER);
        session_cookie(&resp, "mg_session")
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.base)
    }

    pub fn browser(&self) -> Browser<'_> {
        Browser {
            http: &self.http,
            base: &self.server.base,
        }
    }

    pub async fn get(&self, path: &str, cookie: &str) -> (StatusCode, String) {
        self.browser().get(path, cookie).await
    }

    pub async fn post(&self, path: &str, cookie: &str, form: &[(&str, &str)]) -> reqwest::Response {
        self.browser().post(path, cookie, form).await
    }

    pub async fn csrf(&self, cookie: &str) -> String {
        self.browser().csrf(cookie).await
    }

    pub async fn login(&self, user: &str, password: &str) -> reqwest::Response {
        self.browser().login(user, password).await
    }

    pub async fn sign_in(&self, user: &str, password: &str) -> String {
        self.browser().sign_in(user, password).await
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.env.dir.path().join("serve.log")).unwrap()
    }
}
