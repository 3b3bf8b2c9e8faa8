//! The engine's refresh rules with time as a parameter: an `Engine` over a temporary store
//! and a `ManualClock`, refreshing at the identity-provider emulator on loopback (the shared
//! one named by `MAILGATE_IDP`, as under `scripts/test`, else one in process). Time moves by
//! `clock.advance`, never by sleeping, and nothing edits SQL: a grant comes from a real
//! authorization, and a token is "old" because the clock says so.

use mailgate_core::account::{AccountSpec, InboundProtocol, OnReceived};
use mailgate_core::app::{AppKind, AppSpec, OAuthFlow};
use mailgate_core::clock::ManualClock;
use mailgate_core::grant::refresh_margin_secs;
use mailgate_core::{
    AccountId, AccountState, ClientId, Clock, EmailAddress, HttpUrl, Name, Secret, SystemClock,
    TenantId, preset,
};
use mailgate_grants::{
    Engine, EngineError, EngineOptions, FORCED_REFRESH_INTERVAL_SECS, LEASE_TTL_SECS,
};
use mailgate_store::Store;
use mailgate_store::crypto::{KeySource, load_or_create_key_file};
use mailgate_testkit::idp::{
    ClientSpec, Fault, FaultSpec, Idp, IdpAdmin, IdpConfig, LifetimeSpec, UserSpec, sign_in,
};
use std::sync::Arc;
use std::time::Duration;

const PASSWORD: &str = "correct horse battery staple";
const CLIENT_SECRET: &str = "CANARY~engine-clock.client-secret";
/// Never fetched: `sign_in` stops at the redirect to it.
const REDIRECT_URI: &str = "http://127.0.0.1:9/oauth/callback";
/// The emulator's default access-token lifetime.
const LIFETIME: i64 = 3600;

struct Bench {
    engine: Engine,
    clock: Arc<ManualClock>,
    idp: IdpAdmin,
    /// This test's own client at the emulator (a GUID, as Microsoft's are).
    client_id: String,
    account: AccountId,
    _own_idp: Option<Idp>,
    _dir: tempfile::TempDir,
}

/// The shared emulator when `MAILGATE_IDP` names one, else one of this test's own; tests
/// register clients and users of their own, so they never see each other's.
fn emulator() -> (IdpAdmin, String, Option<Idp>) {
    match std::env::var("MAILGATE_IDP") {
        Ok(base) if !base.is_empty() => (IdpAdmin::new(base.clone()), base, None),
        _ => {
            let own = Idp::start(IdpConfig::default()).unwrap();
            (own.admin(), own.base_url(), Some(own))
        }
    }
}

impl Bench {
    /// An authorized account. `access_token_secs`: the emulator's token lifetime for this
    /// client, set before the first token is issued.
    async fn authorized(access_token_secs: Option<u64>) -> Bench {
        let (idp, base_url, own) = emulator();
        let hex: String = mailgate_core::random::bytes::<16>()
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let client_id = format!(
            "{}-{}-4{}-8{}-{}",
            &hex[0..8],
            &hex[8..12],
            &hex[13..16],
            &hex[17..20],
            &hex[20..32]
        );
        let mailbox = format!("support-{}@example.test", &hex[..8]);
        idp.add_client(ClientSpec::confidential(
            &client_id,
            CLIENT_SECRET,
            REDIRECT_URI,
        ))
        .await
        .unwrap();
        idp.add_user(UserSpec::new(&mailbox, PASSWORD))
            .await
            .unwrap();
        if access_token_secs.is_some() {
            idp.set_lifetimes(LifetimeSpec {
                client_id: Some(client_id.clone()),
                access_token_secs,
                ..Default::default()
            })
            .await
            .unwrap();
        }

        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("master.key");
        let store = Store::open(
            &format!("sqlite://{}", dir.path().join("mailgate.db").display()),
            load_or_create_key_file(&key).unwrap(),
            KeySource::File(key),
        )
        .await
        .unwrap();
        // Today, so that the id_token's iat/exp (the emulator's wall clock) check out.
        let clock = Arc::new(ManualClock::at(SystemClock.now().0));
        let tenant = TenantId::parse(mailgate_testkit::idp::DEFAULT_TENANT_ID).unwrap();
        let authority = HttpUrl::parse(&base_url).unwrap();
        let app = store
            .create_app(
                &AppSpec {
                    name: Name::parse("Contoso").unwrap(),
                    kind: AppKind::Microsoft,
                    endpoints: preset::endpoints(
                        AppKind::Microsoft,
                        Some(&tenant),
                        Some(&authority),
                    )
                    .unwrap()
                    .unwrap(),
                    tenant: Some(tenant),
                    client_id: ClientId::parse(&client_id).unwrap(),
                    client_secret: Some(Secret::new(CLIENT_SECRET)),
                    secret_expires: None,
                    service_account_key: None,
                    scopes: preset::scopes(AppKind::Microsoft, OAuthFlow::AuthorizationCode)
                        .unwrap(),
                    extra_params: vec![],
                    flow: OAuthFlow::AuthorizationCode,
                },
                clock.now(),
            )
            .await
            .unwrap();
        let account = store
            .create_account(
                &AccountSpec {
                    name: Name::parse("support").unwrap(),
                    description: String::new(),
                    enabled: true,
                    mailbox: EmailAddress::parse(&mailbox).unwrap(),
                    shared_mailbox: None,
                    aliases: vec![],
                    app_id: app.id,
                    inbound: preset::inbound(AppKind::Microsoft, InboundProtocol::Imap),
                    outbound: preset::outbound(AppKind::Microsoft, None),
                    from_name: None,
                    reply_to: None,
                    signature: None,
                    on_received: OnReceived::None,
                    delegate: None,
                    send_on_behalf: false,
                },
                clock.now(),
            )
            .await
            .unwrap();
        let engine = Engine::new(
            Arc::new(store),
            clock.clone(),
            EngineOptions {
                // One request per call: a retry would wait out a backoff.
                retries: 0,
                // The emulator listens on loopback.
                allow_private_idp: true,
                ..Default::default()
            },
        )
        .unwrap();

        let started = engine
            .start_authorization(account.id, "cli", REDIRECT_URI)
            .await
            .unwrap();
        let http = reqwest::Client::new();
        let callback = sign_in(&http, started.url.as_str(), &mailbox, PASSWORD)
            .await
            .unwrap();
        let query = |name: &str| {
            callback
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
                .unwrap_or_else(|| panic!("no {name} in {callback}"))
        };
        let done = engine
            .complete_authorization(&query("state"), Some(&query("code")), None, None)
            .await
            .unwrap();
        assert_eq!(done.state, AccountState::Active);
        Bench {
            engine,
            clock,
            idp,
            client_id,
            account: account.id,
            _own_idp: own,
            _dir: dir,
        }
    }

    /// Refresh requests the emulator has answered for this client.
    async fn refreshes(&self) -> u64 {
        let counters = self.idp.counters(Some(&self.client_id)).await.unwrap();
        counters.get("token:refresh_token").copied().unwrap_or(0)
    }

    async fn state(&self) -> AccountState {
        self.engine
            .store()
            .account(self.account)
            .await
            .unwrap()
            .state
    }

    async fn stored_refresh_token(&self) -> String {
        let grant = self.engine.store().grant(self.account).await.unwrap();
        grant.unwrap().refresh_token.unwrap().expose().to_owned()
    }

    /// Moves the clock to where the first token has `left` seconds of validity.
    fn until_expiry(&self, issued_at: i64, lifetime: i64, left: i64) {
        let target = issued_at + lifetime - left;
        self.clock.advance(target - self.clock.now().0);
    }
}

/// A one-hour token is handed out until its margin (max(5 min, 10 %) = 360 s) is reached,
/// and refreshed from the moment it is: not a second earlier, not a second later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_is_refreshed_exactly_at_its_refresh_margin() {
    let b = Bench::authorized(None).await;
    let issued = b.clock.now().0;
    let margin = refresh_margin_secs(LIFETIME);
    assert_eq!(margin, 360);

    b.until_expiry(issued, LIFETIME, margin + 1);
    let t = b.engine.access_token(b.account).await.unwrap();
    assert!(!t.refreshed, "{} s left is outside the margin", margin + 1);
    assert_eq!(t.expires_at.map(|e| e.0), Some(issued + LIFETIME));
    assert_eq!(b.refreshes().await, 0);

    b.clock.advance(1);
    let t = b.engine.access_token(b.account).await.unwrap();
    assert!(t.refreshed, "{margin} s left is inside the margin");
    assert_eq!(
        t.expires_at.map(|e| e.0),
        Some(b.clock.now().0 + LIFETIME),
        "the new token's expiry counts from the engine's clock"
    );
    assert_eq!(b.refreshes().await, 1);

    // The new token is good for another hour: the next call does not refresh again.
    let again = b.engine.access_token(b.account).await.unwrap();
    assert!(!again.refreshed);
    assert_eq!(again.access_token.expose(), t.access_token.expose());
    assert_eq!(b.refreshes().await, 1);
}

/// A token living two minutes gets half its lifetime as margin (60 s), not the 5-minute
/// floor, which would make a freshly issued token already due and refresh it on every use.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_token_is_used_for_half_its_lifetime() {
    let lifetime = 120;
    let b = Bench::authorized(Some(lifetime as u64)).await;
    let issued = b.clock.now().0;
    let margin = refresh_margin_secs(lifetime);
    assert_eq!(margin, 60);

    let first = b.engine.access_token(b.account).await.unwrap();
    assert!(!first.refreshed, "a token just issued is not due");
    assert_eq!(first.expires_at.map(|e| e.0), Some(issued + lifetime));

    b.until_expiry(issued, lifetime, margin + 1);
    let t = b.engine.access_token(b.account).await.unwrap();
    assert!(!t.refreshed);
    assert_eq!(t.access_token.expose(), first.access_token.expose());
    assert_eq!(b.refreshes().await, 0);

    b.clock.advance(1);
    let t = b.engine.access_token(b.account).await.unwrap();
    assert!(t.refreshed);
    assert_eq!(t.expires_at.map(|e| e.0), Some(b.clock.now().0 + lifetime));
    assert_eq!(b.refreshes().await, 1);
}

/// A 503 from the token endpoint is transient: the call fails, but the account stays
/// active, the grant is kept, and the next call refreshes. `invalid_grant` is permanent:
/// the account moves to `reauth_required` with the remediation, and no further request is
/// sent for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_failures_keep_the_grant_and_permanent_ones_require_reauthorization() {
    let b = Bench::authorized(None).await;
    let issued = b.clock.now().0;
    let refresh_token = b.stored_refresh_token().await;
    b.until_expiry(issued, LIFETIME, 0);

    let mut unavailable = FaultSpec::token(&b.client_id, Fault::HttpStatus { status: 503 });
    unavailable.grant_type = Some("refresh_token".into());
    b.idp.inject_fault(unavailable).await.unwrap();
    match b.engine.access_token(b.account).await {
        Err(EngineError::OAuth(f)) => assert!(f.is_transient(), "{f}"),
        other => panic!("expected a transient OAuth failure, got {other:?}"),
    }
    assert_eq!(b.refreshes().await, 1);
    assert_eq!(b.state().await, AccountState::Active);
    assert_eq!(b.stored_refresh_token().await, refresh_token, "grant kept");

    // The fault was for one request: the next call refreshes.
    let t = b.engine.access_token(b.account).await.unwrap();
    assert!(t.refreshed);
    assert_eq!(b.refreshes().await, 2);
    assert_eq!(b.state().await, AccountState::Active);

    b.clock.advance(LIFETIME);
    let mut refused = FaultSpec::token(
        &b.client_id,
        Fault::OauthError {
            error: "invalid_grant".into(),
            description: None,
        },
    );
    refused.grant_type = Some("refresh_token".into());
    b.idp.inject_fault(refused).await.unwrap();
    let code = match b.engine.access_token(b.account).await {
        Err(e @ EngineError::OAuth(_)) => {
            let EngineError::OAuth(f) = &e else {
                unreachable!()
            };
            assert!(!f.is_transient(), "{f}");
            e.code()
        }
        other => panic!("expected a permanent OAuth failure, got {other:?}"),
    };
    assert_eq!(b.refreshes().await, 3);
    let account = b.engine.store().account(b.account).await.unwrap();
    assert_eq!(account.state, AccountState::ReauthRequired);
    assert_eq!(account.last_problem.map(|p| p.code).as_deref(), Some(code));

    // Nothing is sent for an account that needs re-authorization.
    assert!(matches!(
        b.engine.access_token(b.account).await,
        Err(EngineError::NotUsable { .. })
    ));
    assert_eq!(b.refreshes().await, 3);
}

/// A refresh whose caller stops waiting (a timeout, a client gone) is seen through: its
/// answer is stored, so the rotated refresh token is not lost and the grant is not left in
/// doubt, and the next caller gets the new token without a request of its own. (Were the
/// refresh dropped with its caller, its request would still have left: in doubt until the
/// backoff, the next caller refused.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_is_seen_through_when_its_caller_stops_waiting() {
    let b = Bench::authorized(None).await;
    let issued = b.clock.now().0;
    let first_refresh_token = b.stored_refresh_token().await;
    b.until_expiry(issued, LIFETIME, 0);
    let mut slow = FaultSpec::token(&b.client_id, Fault::Delay { seconds: 1.0 });
    slow.grant_type = Some("refresh_token".into());
    b.idp.inject_fault(slow).await.unwrap();

    tokio::select! {
        biased;
        _ = b.engine.access_token(b.account) => {}
        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
    }
    // Whichever came first, the refresh was answered and stored.
    let answered = async {
        while b.refreshes().await < 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), answered)
        .await
        .expect("the refresh request reached the emulator");
    assert_ne!(b.stored_refresh_token().await, first_refresh_token);
    let t = b.engine.access_token(b.account).await.unwrap();
    assert!(!t.refreshed, "the stored token was handed out");
    assert_eq!(b.refreshes().await, 1);
}

/// The refresh lease of a process that died mid-refresh is honoured until it expires by the
/// engine's clock (`LEASE_TTL_SECS`), then taken over: one refresh, by this engine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_holders_refresh_lease_is_taken_over_once_it_expires() {
    let b = Bench::authorized(None).await;
    let issued = b.clock.now().0;
    b.until_expiry(issued, LIFETIME, 0);
    let lease = format!("refresh:{}", b.account);
    assert!(
        b.engine
            .store()
            .try_lease(&lease, "a-process-that-died", LEASE_TTL_SECS, b.clock.now())
            .await
            .unwrap()
    );

    // At the last second of the lease the engine still waits for its holder. (Absence
    // cannot be awaited: 300 ms is six of the engine's lease polls, and a refresh at the
    // loopback emulator takes a few milliseconds.)
    b.clock.advance(LEASE_TTL_SECS);
    let waited =
        tokio::time::timeout(Duration::from_millis(300), b.engine.access_token(b.account)).await;
    assert!(waited.is_err(), "refreshed under a live lease: {waited:?}");
    assert_eq!(b.refreshes().await, 0);

    b.clock.advance(1);
    let t = b.engine.access_token(b.account).await.unwrap();
    assert!(t.refreshed);
    assert_eq!(b.refreshes().await, 1);
    // Released after the refresh: another process may take it at once.
    assert!(
        b.engine
            .store()
            .try_lease(&lease, "another-process", LEASE_TTL_SECS, b.clock.now())
            .await
            .unwrap()
    );
}

/// A forced refresh (a mail server refused a token that looked valid) takes a lease of
/// `FORCED_REFRESH_INTERVAL_SECS`: a second one within that time is refused without a
/// request, and one after it expires refreshes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_refreshes_are_limited_by_their_lease_until_it_expires() {
    let b = Bench::authorized(None).await;

    let first = b.engine.force_refresh(b.account, None).await.unwrap();
    assert!(first.refreshed);
    assert_eq!(b.refreshes().await, 1);

    b.clock.advance(FORCED_REFRESH_INTERVAL_SECS);
    match b.engine.force_refresh(b.account, None).await {
        Err(EngineError::ForcedRefreshLimited { .. }) => {}
        other => panic!("expected the limit, got {other:?}"),
    }
    assert_eq!(b.refreshes().await, 1);

    b.clock.advance(1);
    let second = b.engine.force_refresh(b.account, None).await.unwrap();
    assert!(second.refreshed);
    assert_ne!(second.access_token.expose(), first.access_token.expose());
    assert_eq!(b.refreshes().await, 2);
}
