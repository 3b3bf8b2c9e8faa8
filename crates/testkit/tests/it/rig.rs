//! The mail rig with the identity-provider emulator: real Dovecot and Postfix accept tokens
//! obtained through the real authorization-code flow, and refuse bad ones in the words a
//! client must understand — including the `+ <base64 JSON>` error challenge, which must be
//! answered before the final `NO` / `-ERR` / `535`.
//!
//! With `MAILGATE_RIG` set (scripts/test) every test uses that shared rig and its emulator,
//! registering its own client and users so tests do not see each other. Without it each test
//! starts its own emulator and rig. Under `CI=true` a rig that cannot start fails the test.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use mailgate_proto::sasl::{self, Mechanism, SaslErrorChallenge};
use mailgate_testkit::idp::{ClientSpec, Idp, IdpAdmin, IdpConfig, UserSpec, sign_in};
use mailgate_testkit::raw::{RawClient, SmtpReply, imap_status_is};
use mailgate_testkit::rig::{MailRig, RigOptions, TokenScopes};
use ring::rand::SecureRandom as _;

const MICROSOFT_MAIL_SCOPES: &str = "openid offline_access \
    https://outlook.office.com/IMAP.AccessAsUser.All \
    https://outlook.office.com/POP.AccessAsUser.All \
    https://outlook.office.com/SMTP.Send";
/// Never contacted: `sign_in` stops at the redirect to it.
const REDIRECT_URI: &str = "http://127.0.0.1:9/oauth/callback";
const PASSWORD: &str = "correct horse battery staple";
/// Long enough for Postfix to hand a message to Dovecot over LMTP on a loaded machine.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);

// --- the tests ------------------------------------------------------------------------

/// The whole path a mailgate account takes, against the real servers: authorize in the
/// browser flow, IMAP with XOAUTH2 (STARTTLS), submission with XOAUTH2 (STARTTLS) to another
/// user, and that user's POP3 (implicit TLS) with OAUTHBEARER in Exchange's two-line form.
#[tokio::test]
async fn authorized_tokens_open_imap_submission_and_pop3() -> anyhow::Result<()> {
    let world = World::new(RigOptions::default()).await?;
    let rig = &world.rig;
    let tls = rig.tls_config()?;
    let alice = world.user("alice").await?;
    let bob = world.user("bob").await?;
    let alice_token = world.authorize(&alice, MICROSOFT_MAIL_SCOPES).await?;
    let bob_token = world.authorize(&bob, MICROSOFT_MAIL_SCOPES).await?;

    // IMAP, STARTTLS, XOAUTH2 with SASL-IR; APPEND to alice's own INBOX.
    let mut imap = RawClient::connect(rig.host(), rig.imap_port()).await?;
    let greeting = imap.read_line().await?;
    ensure!(greeting.starts_with("* OK"), "IMAP greeting: {greeting}");
    let caps = imap.imap_command("a1", "CAPABILITY").await?.join("\n");
    ensure!(caps.contains("STARTTLS"), "no STARTTLS before TLS: {caps}");
    imap.imap_starttls("a2", tls.clone()).await?;
    let caps = imap.imap_command("a3", "CAPABILITY").await?.join("\n");
    for wanted in ["AUTH=XOAUTH2", "AUTH=OAUTHBEARER", "SASL-IR"] {
        ensure!(
            caps.contains(wanted),
            "{wanted} not offered after STARTTLS: {caps}"
        );
    }
    let ir = sasl::xoauth2_initial_response(&alice.email, &alice_token);
    let done = last(
        imap.imap_command("a4", &format!("AUTHENTICATE XOAUTH2 {ir}"))
            .await?,
    );
    ensure!(imap_status_is(&done, "a4", "OK"), "XOAUTH2 refused: {done}");
    let draft = message(&alice.email, &alice.email, "a draft kept by IMAP APPEND");
    // LITERAL+ (`{n+}`): the literal follows without waiting for a continuation.
    let mut append = format!("a5 APPEND INBOX {{{}+}}\r\n", draft.len()).into_bytes();
    append.extend_from_slice(&draft);
    append.extend_from_slice(b"\r\n"); // ends the command line the literal is part of
    imap.send_raw(&append).await?;
    let appended = imap.read_until_tagged("a5").await?;
    ensure!(
        imap_status_is(&last(appended.clone()), "a5", "OK"),
        "APPEND refused: {appended:?}"
    );
    let select = imap.imap_command("a6", "SELECT INBOX").await?;
    ensure!(
        select.iter().any(|l| l == "* 1 EXISTS"),
        "alice's INBOX should hold the appended draft: {select:?}"
    );
    imap.imap_command("a7", "LOGOUT").await?;

    // Bob waits in IMAP IDLE, so the delivery below is awaited, not polled.
    let mut bob_imap = RawClient::connect_tls(rig.host(), rig.imaps_port(), tls.clone()).await?;
    bob_imap.read_line().await?;
    let ir = sasl::xoauth2_initial_response(&bob.email, &bob_token);
    let done = last(
        bob_imap
            .imap_command("b1", &format!("AUTHENTICATE XOAUTH2 {ir}"))
            .await?,
    );
    ensure!(
        imap_status_is(&done, "b1", "OK"),
        "bob's XOAUTH2 refused: {done}"
    );
    let select = bob_imap.imap_command("b2", "SELECT INBOX").await?;
    ensure!(
        select.iter().any(|l| l == "* 0 EXISTS"),
        "bob's INBOX is not empty: {select:?}"
    );
    let idling = last(bob_imap.imap_command("b3", "IDLE").await?);
    ensure!(idling.starts_with('+'), "IDLE refused: {idling}");

    // Submission, STARTTLS, XOAUTH2, a message from alice to bob.
    let subject = format!("rig test {}", random_id());
    let mut smtp = RawClient::connect(rig.host(), rig.submission_port()).await?;
    expect_code(smtp.read_smtp_reply().await?, 220, "submission greeting")?;
    let ehlo = expect_code(
        smtp.smtp_command("EHLO client.example.test").await?,
        250,
        "EHLO",
    )?;
    ensure!(
        ehlo.lines.iter().any(|l| l == "STARTTLS"),
        "no STARTTLS: {ehlo}"
    );
    smtp.smtp_starttls(tls.clone()).await?;
    let ehlo = expect_code(
        smtp.smtp_command("EHLO client.example.test").await?,
        250,
        "EHLO",
    )?;
    ensure!(
        ehlo.lines
            .iter()
            .any(|l| l.starts_with("AUTH ") && l.contains("XOAUTH2")),
        "XOAUTH2 not offered after STARTTLS: {ehlo}"
    );
    let ir = sasl::xoauth2_initial_response(&alice.email, &alice_token);
    expect_code(
        smtp_auth(&mut smtp, Mechanism::XOAuth2, &ir).await?,
        235,
        "AUTH",
    )?;
    expect_code(
        smtp.smtp_command(&format!("MAIL FROM:<{}>", alice.email))
            .await?,
        250,
        "MAIL FROM",
    )?;
    expect_code(
        smtp.smtp_command(&format!("RCPT TO:<{}>", bob.email))
            .await?,
        250,
        "RCPT TO",
    )?;
    expect_code(smtp.smtp_command("DATA").await?, 354, "DATA")?;
    smtp.send_raw(&message(&alice.email, &bob.email, &subject))
        .await?;
    expect_code(smtp.smtp_command(".").await?, 250, "end of DATA")?;
    expect_code(smtp.smtp_command("QUIT").await?, 221, "QUIT")?;

    // Postfix hands the message to Dovecot over LMTP; IDLE reports it.
    bob_imap.set_timeout(DELIVERY_TIMEOUT);
    loop {
        let line = bob_imap
            .read_line()
            .await
            .context("waiting in IDLE for the delivery to bob")?;
        if line == "* 1 EXISTS" {
            break;
        }
    }
    bob_imap.send_line("DONE").await?;
    bob_imap.read_until_tagged("b3").await?;
    bob_imap.imap_command("b4", "LOGOUT").await?;

    // POP3 over implicit TLS, OAUTHBEARER in the two-line form Exchange requires.
    let mut pop = RawClient::connect_tls(rig.host(), rig.pop3s_port(), tls).await?;
    let greeting = pop.read_line().await?;
    ensure!(greeting.starts_with("+OK"), "POP3 greeting: {greeting}");
    pop.send_line("AUTH OAUTHBEARER").await?;
    let go_ahead = pop.read_line().await?;
    ensure!(
        go_ahead.trim_end() == "+",
        "expected an empty continuation: {go_ahead}"
    );
    let ir =
        sasl::oauthbearer_initial_response(&bob.email, rig.host(), rig.pop3s_port(), &bob_token);
    pop.send_line(&ir).await?;
    let authed = pop.read_line().await?;
    ensure!(authed.starts_with("+OK"), "OAUTHBEARER refused: {authed}");
    pop.send_line("STAT").await?;
    let stat = pop.read_line().await?;
    ensure!(stat.starts_with("+OK 1 "), "bob's maildrop: {stat}");
    pop.send_line("RETR 1").await?;
    let retr = pop.read_line().await?;
    ensure!(retr.starts_with("+OK"), "RETR: {retr}");
    let body = pop.read_pop3_multiline().await?;
    ensure!(
        body.iter().any(|l| *l == format!("Subject: {subject}")),
        "bob received another message: {body:?}"
    );
    ensure!(
        body.iter().any(|l| l == ".a line that starts with a dot"),
        "dot-stuffing was not undone: {body:?}"
    );
    pop.send_line("QUIT").await?;
    ensure!(pop.read_line().await?.starts_with("+OK"));
    Ok(())
}

/// An access token the provider has expired is refused by IMAP: the XOAUTH2 error challenge
/// (status 401), answered with an empty line, then `NO`.
#[tokio::test]
async fn expired_token_is_refused_by_imap_after_a_401_challenge() -> anyhow::Result<()> {
    let world = World::new(RigOptions::default()).await?;
    let alice = world.user("alice").await?;
    let token = world.authorize(&alice, MICROSOFT_MAIL_SCOPES).await?;
    world.admin.expire_tokens(&alice.email).await?;

    let mut imap = world.imaps().await?;
    let ir = sasl::xoauth2_initial_response(&alice.email, &token);
    let refusal = imap_refusal(&mut imap, Mechanism::XOAuth2, &ir).await?;
    assert_eq!(refusal.challenge.status, "401", "{:?}", refusal.challenge);
    assert_eq!(refusal.challenge.schemes.as_deref(), Some("bearer"));
    assert!(
        refusal.final_line.starts_with("t1 NO "),
        "expected a tagged NO: {}",
        refusal.final_line
    );
    assert!(
        refusal.final_line.contains("AUTHENTICATIONFAILED"),
        "{}",
        refusal.final_line
    );
    Ok(())
}

/// After the user's grant is revoked its access token is refused by POP3 (STLS): the
/// OAUTHBEARER challenge (`invalid_token`) begins with `+` like `+OK` — a naive client takes
/// it for success — and after `AQ==` the server says `-ERR`.
#[tokio::test]
async fn revoked_grant_is_refused_by_pop3_after_an_invalid_token_challenge() -> anyhow::Result<()> {
    let world = World::new(RigOptions::default()).await?;
    let rig = &world.rig;
    let alice = world.user("alice").await?;
    let token = world.authorize(&alice, MICROSOFT_MAIL_SCOPES).await?;
    world.admin.revoke_user(&alice.email).await?;

    let mut pop = RawClient::connect(rig.host(), rig.pop3_port()).await?;
    ensure!(pop.read_line().await?.starts_with("+OK"));
    pop.pop3_stls(rig.tls_config()?).await?;
    let ir = sasl::oauthbearer_initial_response(&alice.email, rig.host(), rig.pop3_port(), &token);
    pop.send_line(&format!("AUTH OAUTHBEARER {ir}")).await?;
    let challenge_line = pop.read_line().await?;
    assert!(
        challenge_line.starts_with("+ ") && !challenge_line.starts_with("+OK"),
        "expected an error challenge, not {challenge_line}"
    );
    let challenge = decode_challenge(&challenge_line, "+ ")?;
    assert_eq!(challenge.status, "invalid_token", "{challenge:?}");
    pop.send_line(Mechanism::OAuthBearer.error_challenge_answer())
        .await?;
    let final_line = pop.read_line().await?;
    assert!(
        final_line.starts_with("-ERR"),
        "expected -ERR: {final_line}"
    );
    assert!(final_line.contains("Authentication failed"), "{final_line}");
    Ok(())
}

/// Alice's valid token presented as bob is refused by submission: XOAUTH2 challenge
/// (`334`, status 401), empty answer, `535`.
#[tokio::test]
async fn alices_token_presented_as_bob_is_refused_by_submission() -> anyhow::Result<()> {
    let world = World::new(RigOptions::default()).await?;
    let rig = &world.rig;
    let alice = world.user("alice").await?;
    let bob = world.user("bob").await?;
    let token = world.authorize(&alice, MICROSOFT_MAIL_SCOPES).await?;

    let mut smtp = RawClient::connect(rig.host(), rig.submission_port()).await?;
    expect_code(smtp.read_smtp_reply().await?, 220, "greeting")?;
    expect_code(
        smtp.smtp_command("EHLO client.example.test").await?,
        250,
        "EHLO",
    )?;
    smtp.smtp_starttls(rig.tls_config()?).await?;
    expect_code(
        smtp.smtp_command("EHLO client.example.test").await?,
        250,
        "EHLO",
    )?;
    let ir = sasl::xoauth2_initial_response(&bob.email, &token);
    let challenge = smtp_auth(&mut smtp, Mechanism::XOAuth2, &ir).await?;
    assert_eq!(
        challenge.code, 334,
        "expected an error challenge: {challenge}"
    );
    let challenge = sasl::decode_error_challenge(&challenge.text())?;
    assert_eq!(challenge.status, "401", "{challenge:?}");
    let refusal = smtp
        .smtp_command(Mechanism::XOAuth2.error_challenge_answer())
        .await?;
    assert_eq!(refusal.code, 535, "expected 535: {refusal}");
    // The session goes on: the client may try again or quit.
    expect_code(smtp.smtp_command("QUIT").await?, 221, "QUIT")?;
    Ok(())
}

/// A token the user granted without any mail scope (here: Microsoft Graph) opens nothing:
/// IMAP refuses it after an OAUTHBEARER challenge, POP3 and submission after XOAUTH2's.
#[tokio::test]
async fn token_without_the_mail_scope_is_refused_everywhere() -> anyhow::Result<()> {
    let world = World::new(RigOptions::default()).await?;
    let rig = &world.rig;
    let alice = world.user("alice").await?;
    let token = world
        .authorize(
            &alice,
            "openid offline_access https://graph.microsoft.com/User.Read",
        )
        .await?;

    let mut imap = world.imaps().await?;
    let ir = sasl::oauthbearer_initial_response(&alice.email, rig.host(), rig.imaps_port(), &token);
    let refusal = imap_refusal(&mut imap, Mechanism::OAuthBearer, &ir).await?;
    assert_eq!(
        refusal.challenge.status, "invalid_token",
        "{:?}",
        refusal.challenge
    );
    assert!(
        refusal.final_line.starts_with("t1 NO "),
        "{}",
        refusal.final_line
    );

    let mut pop = RawClient::connect_tls(rig.host(), rig.pop3s_port(), rig.tls_config()?).await?;
    pop.read_line().await?;
    let ir = sasl::xoauth2_initial_response(&alice.email, &token);
    pop.send_line(&format!("AUTH XOAUTH2 {ir}")).await?;
    let challenge = decode_challenge(&pop.read_line().await?, "+ ")?;
    assert_eq!(challenge.status, "401", "{challenge:?}");
    pop.send_line(Mechanism::XOAuth2.error_challenge_answer())
        .await?;
    let final_line = pop.read_line().await?;
    assert!(final_line.starts_with("-ERR"), "{final_line}");
    Ok(())
}

/// A Google-shaped grant (`https://mail.google.com/`) opens the same rig: the shared rig
/// leaves the scope check to the emulator, so it serves both providers' tokens.
#[tokio::test]
async fn google_shaped_token_opens_imap_and_pop3() -> anyhow::Result<()> {
    let world = World::new(RigOptions::default()).await?;
    let rig = &world.rig;
    let alice = world.user("alice").await?;
    let token = world
        .authorize_at(
            Provider::Google,
            &alice,
            "openid email https://mail.google.com/",
        )
        .await?;

    let mut imap = world.imaps().await?;
    let ir = sasl::xoauth2_initial_response(&alice.email, &token);
    let done = last(
        imap.imap_command("g1", &format!("AUTHENTICATE XOAUTH2 {ir}"))
            .await?,
    );
    assert!(imap_status_is(&done, "g1", "OK"), "{done}");

    let mut pop = RawClient::connect(rig.host(), rig.pop3_port()).await?;
    pop.read_line().await?;
    pop.pop3_stls(rig.tls_config()?).await?;
    let ir = sasl::oauthbearer_initial_response(&alice.email, rig.host(), rig.pop3_port(), &token);
    pop.send_line(&format!("AUTH OAUTHBEARER {ir}")).await?;
    let authed = pop.read_line().await?;
    assert!(authed.starts_with("+OK"), "{authed}");
    Ok(())
}

/// With `--token-scopes microsoft` Dovecot demands each protocol's own scope, as Exchange
/// does: a token for SMTP.Send alone sends mail but opens no mailbox.
#[tokio::test]
async fn microsoft_scope_check_demands_each_protocols_own_scope() -> anyhow::Result<()> {
    let options = RigOptions {
        token_scopes: TokenScopes::Microsoft,
        ..RigOptions::default()
    };
    // Always a rig of its own: the shared one leaves scopes to the emulator.
    let world = World::new_own(options).await?;
    let rig = &world.rig;
    let alice = world.user("alice").await?;
    let token = world
        .authorize(
            &alice,
            "openid offline_access https://outlook.office.com/SMTP.Send",
        )
        .await?;

    let mut smtp = RawClient::connect(rig.host(), rig.submission_port()).await?;
    expect_code(smtp.read_smtp_reply().await?, 220, "greeting")?;
    expect_code(
        smtp.smtp_command("EHLO client.example.test").await?,
        250,
        "EHLO",
    )?;
    smtp.smtp_starttls(rig.tls_config()?).await?;
    expect_code(
        smtp.smtp_command("EHLO client.example.test").await?,
        250,
        "EHLO",
    )?;
    let ir = sasl::xoauth2_initial_response(&alice.email, &token);
    expect_code(
        smtp_auth(&mut smtp, Mechanism::XOAuth2, &ir).await?,
        235,
        "AUTH",
    )?;

    let mut imap = world.imaps().await?;
    let ir = sasl::xoauth2_initial_response(&alice.email, &token);
    let refusal = imap_refusal(&mut imap, Mechanism::XOAuth2, &ir).await?;
    assert_eq!(refusal.challenge.status, "401");
    assert!(
        refusal.final_line.starts_with("t1 NO "),
        "{}",
        refusal.final_line
    );
    Ok(())
}

/// Dovecot's submission refuses an `AUTH` command line longer than about 1 KiB
/// (`500 5.5.2 Line too long`), and a Microsoft access token (a JWT) makes the XOAUTH2
/// initial response longer than that; sent as the answer to an empty `334` it is accepted
/// (up to 8 KiB). An SMTP client must therefore send long initial responses on their own line.
#[tokio::test]
async fn submission_takes_a_long_initial_response_only_on_its_own_line() -> anyhow::Result<()> {
    let world = World::new(RigOptions::default()).await?;
    let rig = &world.rig;
    let alice = world.user("alice").await?;
    let token = world.authorize(&alice, MICROSOFT_MAIL_SCOPES).await?;
    let ir = sasl::xoauth2_initial_response(&alice.email, &token);
    assert!(
        ir.len() > 1100,
        "the token is shorter than a real one: {}",
        ir.len()
    );

    let mut smtp = RawClient::connect(rig.host(), rig.submission_port()).await?;
    expect_code(smtp.read_smtp_reply().await?, 220, "greeting")?;
    expect_code(
        smtp.smtp_command("EHLO client.example.test").await?,
        250,
        "EHLO",
    )?;
    smtp.smtp_starttls(rig.tls_config()?).await?;
    expect_code(
        smtp.smtp_command("EHLO client.example.test").await?,
        250,
        "EHLO",
    )?;
    let inline = smtp.smtp_command(&format!("AUTH XOAUTH2 {ir}")).await?;
    assert_eq!(inline.code, 500, "{inline}");
    assert!(inline.text().contains("Line too long"), "{inline}");
    expect_code(
        smtp_auth(&mut smtp, Mechanism::XOAuth2, &ir).await?,
        235,
        "AUTH",
    )?;
    Ok(())
}

/// A `--no-oauth` rig (running beside the OAuth one) offers PLAIN but neither XOAUTH2 nor
/// OAUTHBEARER: the server mailgate's "server doesn't support OAuth" diagnostic meets.
#[tokio::test]
async fn no_oauth_rig_offers_plain_but_no_oauth_mechanism() -> anyhow::Result<()> {
    let rig = match MailRig::start_temp("http://127.0.0.1:9/introspect", no_oauth()).await {
        Ok(rig) => rig,
        Err(e) => return Err(rig_did_not_start(e)),
    };
    let (user, password) = rig
        .plain_credentials()
        .context("no plain user in rig.json")?;
    let mut imap = RawClient::connect(rig.host(), rig.imap_port()).await?;
    imap.read_line().await?;
    imap.imap_starttls("n1", rig.tls_config()?).await?;
    let caps = imap.imap_command("n2", "CAPABILITY").await?.join("\n");
    assert!(caps.contains("AUTH=PLAIN"), "{caps}");
    assert!(
        !caps.contains("XOAUTH2") && !caps.contains("OAUTHBEARER"),
        "{caps}"
    );
    let refused = last(imap.imap_command("n3", "AUTHENTICATE XOAUTH2 AAAA").await?);
    assert!(imap_status_is(&refused, "n3", "NO"), "{refused}");
    let done = last(
        imap.imap_command("n4", &format!("LOGIN {user} \"{password}\""))
            .await?,
    );
    assert!(imap_status_is(&done, "n4", "OK"), "{done}");
    Ok(())
}

// --- the world a test runs in ---------------------------------------------------------

/// A rig, the emulator it introspects tokens at, and an OAuth client registered there.
struct World {
    rig: MailRig,
    admin: IdpAdmin,
    base_url: String,
    client_id: String,
    client_secret: String,
    http: reqwest::Client,
    /// The emulator of this test, when there is no shared one. Dropped after the rig.
    _idp: Option<Idp>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Provider {
    Microsoft,
    Google,
}

struct TestUser {
    email: String,
}

impl World {
    /// The shared rig and emulator when `MAILGATE_RIG` names them, else ones of this test.
    async fn new(options: RigOptions) -> anyhow::Result<Self> {
        match MailRig::from_env()? {
            Some(rig) => {
                let base_url = rig
                    .idp_base_url()
                    .context("the shared rig has no introspect_url")?
                    .to_owned();
                let admin = IdpAdmin::new(base_url.clone());
                Self::with(rig, admin, base_url, None).await
            }
            None => Self::new_own(options).await,
        }
    }

    /// An emulator and a rig of this test's own, whatever the environment says.
    async fn new_own(options: RigOptions) -> anyhow::Result<Self> {
        let idp = Idp::start(IdpConfig::default())?;
        let base_url = idp.base_url();
        let rig = match MailRig::start_temp(&format!("{base_url}/introspect"), options).await {
            Ok(rig) => rig,
            Err(e) => return Err(rig_did_not_start(e)),
        };
        let admin = idp.admin();
        Self::with(rig, admin, base_url, Some(idp)).await
    }

    async fn with(
        rig: MailRig,
        admin: IdpAdmin,
        base_url: String,
        idp: Option<Idp>,
    ) -> anyhow::Result<Self> {
        let client_id = format!("rig-test-{}", random_id());
        let client_secret = random_id();
        admin
            .add_client(ClientSpec::confidential(
                &client_id,
                &client_secret,
                REDIRECT_URI,
            ))
            .await?;
        let http = reqwest::Client::builder()
            .no_proxy()
            .cookie_store(true)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(Self {
            rig,
            admin,
            base_url,
            client_id,
            client_secret,
            http,
            _idp: idp,
        })
    }

    /// A user no other test knows (`alice-3f9c…@example.test`).
    async fn user(&self, name: &str) -> anyhow::Result<TestUser> {
        let email = format!("{name}-{}@{}", random_id(), self.rig.domain());
        self.admin.add_user(UserSpec::new(&email, PASSWORD)).await?;
        Ok(TestUser { email })
    }

    /// An access token for `user` through the authorization-code flow with PKCE, as a
    /// browser and mailgate would get it: authorize URL, sign-in form, consent, redirect
    /// with `code` and `state`, code exchange.
    async fn authorize(&self, user: &TestUser, scope: &str) -> anyhow::Result<String> {
        self.authorize_at(Provider::Microsoft, user, scope).await
    }

    async fn authorize_at(
        &self,
        provider: Provider,
        user: &TestUser,
        scope: &str,
    ) -> anyhow::Result<String> {
        let (authorize_path, token_path) = match provider {
            Provider::Microsoft => ("common/oauth2/v2.0/authorize", "common/oauth2/v2.0/token"),
            Provider::Google => ("o/oauth2/v2/auth", "token"),
        };
        let verifier = random_urlsafe(32);
        let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
            &ring::digest::SHA256,
            verifier.as_bytes(),
        ));
        let state = random_urlsafe(16);
        let mut authorize = url::Url::parse(&format!("{}/{authorize_path}", self.base_url))?;
        let mut query = authorize.query_pairs_mut();
        if provider == Provider::Google {
            // Google returns a refresh token only with these two.
            query
                .append_pair("access_type", "offline")
                .append_pair("prompt", "consent");
        } else {
            query.append_pair("prompt", "select_account");
        }
        query
            .append_pair("client_id", &self.client_id)
            .append_pair("response_type", "code")
            .append_pair("redirect_uri", REDIRECT_URI)
            .append_pair("response_mode", "query")
            .append_pair("scope", scope)
            .append_pair("state", &state)
            .append_pair("code_challenge", &challenge)
            .append_pair("code_challenge_method", "S256")
            .append_pair("login_hint", &user.email);
        drop(query);
        let redirect = sign_in(&self.http, authorize.as_str(), &user.email, PASSWORD).await?;
        ensure!(
            redirect.as_str().starts_with(REDIRECT_URI),
            "redirected elsewhere: {redirect}"
        );
        let params: HashMap<String, String> = redirect.query_pairs().into_owned().collect();
        ensure!(
            !params.contains_key("error"),
            "authorization refused: {redirect}"
        );
        ensure!(
            params.get("state") == Some(&state),
            "state changed: {redirect}"
        );
        let code = params.get("code").context("no code in the redirect")?;

        let response = self
            .http
            .post(format!("{}/{token_path}", self.base_url))
            .form(&[
                ("grant_type", "authorization_code"),
                ("client_id", self.client_id.as_str()),
                ("client_secret", self.client_secret.as_str()),
                ("code", code.as_str()),
                ("redirect_uri", REDIRECT_URI),
                ("code_verifier", verifier.as_str()),
                ("scope", scope),
            ])
            .send()
            .await?;
        let status = response.status();
        let body: serde_json::Value = response.json().await?;
        ensure!(
            status.is_success(),
            "code exchange answered {status}: {body}"
        );
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .with_context(|| format!("no access_token in {body}"))
    }

    /// IMAP over implicit TLS, greeting read.
    async fn imaps(&self) -> anyhow::Result<RawClient> {
        let rig = &self.rig;
        let mut imap =
            RawClient::connect_tls(rig.host(), rig.imaps_port(), rig.tls_config()?).await?;
        let greeting = imap.read_line().await?;
        ensure!(greeting.starts_with("* OK"), "IMAP greeting: {greeting}");
        Ok(imap)
    }
}

/// What a server said when it refused a token.
struct Refusal {
    challenge: SaslErrorChallenge,
    final_line: String,
}

/// `t1 AUTHENTICATE <mechanism> <initial response>`, which must be refused: reads the error
/// challenge, answers it as the mechanism requires, and returns the final tagged line.
async fn imap_refusal(
    imap: &mut RawClient,
    mechanism: Mechanism,
    initial_response: &str,
) -> anyhow::Result<Refusal> {
    let lines = imap
        .imap_command(
            "t1",
            &format!("AUTHENTICATE {} {initial_response}", mechanism.name()),
        )
        .await?;
    let challenge_line = last(lines);
    let challenge = decode_challenge(&challenge_line, "+ ")?;
    imap.send_line(mechanism.error_challenge_answer()).await?;
    let final_line = last(imap.read_until_tagged("t1").await?);
    Ok(Refusal {
        challenge,
        final_line,
    })
}

/// SMTP `AUTH <mechanism>`, then the initial response on its own line after the empty
/// `334`: Dovecot's submission refuses command lines over about 1 KiB, which a JWT exceeds.
async fn smtp_auth(
    smtp: &mut RawClient,
    mechanism: Mechanism,
    initial_response: &str,
) -> anyhow::Result<SmtpReply> {
    let go_ahead = smtp
        .smtp_command(&format!("AUTH {}", mechanism.name()))
        .await?;
    expect_code(go_ahead, 334, "AUTH without an initial response")?;
    smtp.smtp_command(initial_response).await
}

fn decode_challenge(line: &str, prefix: &str) -> anyhow::Result<SaslErrorChallenge> {
    let payload = line
        .strip_prefix(prefix)
        .with_context(|| format!("expected an error challenge ({prefix}…): {line}"))?;
    Ok(sasl::decode_error_challenge(payload)?)
}

fn expect_code(reply: SmtpReply, code: u16, what: &str) -> anyhow::Result<SmtpReply> {
    if reply.code != code {
        bail!("{what}: expected {code}, got {reply}");
    }
    Ok(reply)
}

fn last(lines: Vec<String>) -> String {
    lines.into_iter().last().unwrap_or_default()
}

/// An RFC 5322 message with CRLF line ends, including a line that needs dot-stuffing.
fn message(from: &str, to: &str, subject: &str) -> Vec<u8> {
    format!(
        "From: <{from}>\r\nTo: <{to}>\r\nSubject: {subject}\r\n\
         Message-ID: <{}@rig.example.test>\r\n\r\nHello from the rig test.\r\n\
         ..a line that starts with a dot\r\n",
        random_id()
    )
    .into_bytes()
}

fn no_oauth() -> RigOptions {
    RigOptions {
        no_oauth: true,
        ..RigOptions::default()
    }
}

/// A rig that cannot start fails the test, in CI and everywhere else: `scripts/mail-rig`
/// installs what it needs, so a failure here is a real problem.
fn rig_did_not_start(error: anyhow::Error) -> anyhow::Error {
    error.context("the mail rig did not start (see docs/testing.md)")
}

#[allow(clippy::disallowed_methods)] // test-only: a failure here fails the test, as it should
fn random_bytes<const N: usize>() -> [u8; N] {
    let mut bytes = [0u8; N];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .expect("the system's random source works");
    bytes
}

fn random_id() -> String {
    random_bytes::<8>()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn random_urlsafe(len: usize) -> String {
    let bytes: Vec<u8> = random_bytes::<64>().into_iter().take(len).collect();
    URL_SAFE_NO_PAD.encode(bytes)
}
