#![allow(clippy::unwrap_used, clippy::expect_used)]

mod commit_marker;
mod export;
mod login_throttle;

use mailgate_core::account::{AccountSpec, InboundProtocol, OnReceived};
use mailgate_core::app::{AppKind, AppSpec, OAuthFlow};
use mailgate_core::{
    AccountId, AccountState, ClientId, EmailAddress, Grant, Identity, Name, Scopes, Secret,
    TenantId, Timestamp, preset,
};
use mailgate_store::crypto::{KeySource, MasterKey, load_or_create_key_file};
use mailgate_store::{Store, StoreError};
use mailgate_testkit::postgres::PgCluster;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

mod outbox_index;
mod refresh_in_doubt;
mod sealed_binding;
mod test_results;
mod watch_leases;

const NOW: Timestamp = Timestamp(1_790_000_000);
const CANARY_SECRET: &str = "CANARY-client-secret-7f3a9c";
const CANARY_REFRESH: &str = "CANARY-refresh-token-51d0e2";

/// Over one connection, as the CLI opens it: every test here then also shows that no
/// method needs a second connection while it holds one (it would wait for the pool's
/// acquire timeout and fail).
///
/// SQLite in `dir`, unless the test runs as the PostgreSQL half of
/// [`on_both_databases!`]: then a database of that test's cluster, one per `dir`, so that
/// opening the same `dir` twice opens the same database (as two processes would).
async fn open(dir: &Path) -> (Store, Db) {
    let key = dir.join("master.key");
    let ring = load_or_create_key_file(&key).unwrap();
    let db = match POSTGRES.try_with(Arc::clone) {
        Ok(pg) => {
            let name = pg.database_for(dir);
            Db::Postgres { pg, name }
        }
        Err(_) => Db::Sqlite(dir.join("mailgate.db")),
    };
    let store = Store::open_single_connection(&db.url(), ring, KeySource::File(key))
        .await
        .unwrap();
    (store, db)
}

tokio::task_local! {
    /// The cluster of a test running on PostgreSQL (see [`on_both_databases!`]).
    static POSTGRES: Arc<PgTarget>;
}

struct PgTarget {
    cluster: PgCluster,
    /// The database made for each directory a test opened.
    databases: Mutex<HashMap<PathBuf, String>>,
}

impl PgTarget {
    fn database_for(&self, dir: &Path) -> String {
        let mut databases = self.databases.lock().unwrap();
        let next = databases.len();
        databases
            .entry(dir.to_owned())
            .or_insert_with(|| {
                let name = format!("store_test_{next}");
                self.cluster.create_database(&name).unwrap();
                name
            })
            .clone()
    }
}

/// Runs a store test on a throwaway PostgreSQL cluster of its own.
async fn on_postgres(test: impl std::future::Future<Output = ()>) {
    let cluster = tokio::task::spawn_blocking(PgCluster::start)
        .await
        .unwrap()
        .expect("PostgreSQL is needed for the store tests (scripts/test installs it)");
    let target = Arc::new(PgTarget {
        cluster,
        databases: Mutex::new(HashMap::new()),
    });
    POSTGRES.scope(target, test).await;
}

/// Runs each named test twice, as `on_sqlite::NAME` and `on_postgres::NAME`: the store
/// suite holds for both databases. Two worker threads, so that tests of concurrent callers
/// run them in parallel.
macro_rules! on_both_databases {
    ($($test:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() { super::$test().await }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $test() { crate::on_postgres(super::$test()).await }
            )*
        }
    };
}
pub(crate) use on_both_databases;

/// The database a test opened, to look into it the way an attacker with a copy would.
enum Db {
    Sqlite(PathBuf),
    Postgres { pg: Arc<PgTarget>, name: String },
}

impl Db {
    fn url(&self) -> String {
        match self {
            Db::Sqlite(path) => format!("sqlite://{}", path.display()),
            Db::Postgres { pg, name } => pg.cluster.url(name),
        }
    }

    /// Whether `needle` appears anywhere in the stored data: the SQLite file with its WAL,
    /// or every row of the PostgreSQL database.
    fn contains(&self, needle: &str) -> bool {
        match self {
            Db::Sqlite(path) => file_contains(path, needle),
            Db::Postgres { pg, name } => pg.cluster.dump(name).unwrap().contains(needle),
        }
    }
}

fn ms_app(name: &str) -> AppSpec {
    let tenant = TenantId::parse("contoso.onmicrosoft.com").unwrap();
    AppSpec {
        name: Name::parse(name).unwrap(),
        kind: AppKind::Microsoft,
        endpoints: preset::endpoints(AppKind::Microsoft, Some(&tenant), None)
            .unwrap()
            .unwrap(),
        tenant: Some(tenant),
        client_id: ClientId::parse("00000000-0000-0000-0000-00000000a001").unwrap(),
        client_secret: Some(Secret::new(CANARY_SECRET)),
        secret_expires: Some(time::macros::date!(2027 - 05 - 01)),
        service_account_key: None,
        scopes: preset::scopes(AppKind::Microsoft, OAuthFlow::AuthorizationCode).unwrap(),
        extra_params: vec![("domain_hint".into(), "contoso.com".into())],
        flow: OAuthFlow::AuthorizationCode,
    }
}

fn account(name: &str, app: &mailgate_core::OAuthApp) -> AccountSpec {
    AccountSpec {
        name: Name::parse(name).unwrap(),
        description: "support inbox".into(),
        enabled: true,
        mailbox: EmailAddress::parse("support@contoso.com").unwrap(),
        shared_mailbox: None,
        aliases: vec![],
        app_id: app.id,
        inbound: preset::inbound(AppKind::Microsoft, InboundProtocol::Imap),
        outbound: preset::outbound(AppKind::Microsoft, None),
        from_name: Some("Support".into()),
        reply_to: None,
        signature: Some("-- \nContoso".into()),
        on_received: OnReceived::MoveTo("Processed".into()),
        delegate: None,
        send_on_behalf: false,
    }
}

fn grant(id: AccountId) -> Grant {
    Grant {
        account_id: id,
        access_token: Some(Secret::new("CANARY-access-token-90ab")),
        access_expires_at: Some(NOW.plus_secs(3600)),
        refresh_token: Some(Secret::new(CANARY_REFRESH)),
        scopes: Scopes::parse("openid offline_access").unwrap(),
        identity: Identity {
            username: Some("support@contoso.com".into()),
            ..Default::default()
        },
        authorized_at: NOW,
        authorized_by: "cli".into(),
    }
}

fn file_contains(path: &Path, needle: &str) -> bool {
    let mut all = std::fs::read(path).unwrap();
    for ext in ["db-wal", "db-shm"] {
        if let Ok(b) = std::fs::read(path.with_extension(ext)) {
            all.extend(b);
        }
    }
    all.windows(needle.len()).any(|w| w == needle.as_bytes())
}

async fn apps_round_trip_with_sealed_secret() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    assert_eq!(app.spec, ms_app("Contoso"));
    assert_eq!(store.find_app("Contoso").await.unwrap().id, app.id);
    assert_eq!(
        store
            .find_app(&app.id.to_string())
            .await
            .unwrap()
            .spec
            .name
            .as_str(),
        "Contoso"
    );
    assert!(
        !db.contains(CANARY_SECRET),
        "client secret stored in plaintext"
    );

    let err = store.create_app(&ms_app("Contoso"), NOW).await.unwrap_err();
    assert!(matches!(err, StoreError::Duplicate { .. }), "{err}");

    let mut changed = ms_app("Contoso 2");
    changed.client_secret = None;
    let updated = store
        .update_app(app.id, &changed, false, NOW.plus_secs(5))
        .await
        .unwrap();
    assert_eq!(
        updated.spec.client_secret.unwrap().expose(),
        CANARY_SECRET,
        "secret kept when not given"
    );
    let cleared = store.update_app(app.id, &changed, true, NOW).await.unwrap();
    assert!(cleared.spec.client_secret.is_none());
    store.remove_app(app.id, NOW).await.unwrap();
    assert!(matches!(
        store.find_app("Contoso 2").await,
        Err(StoreError::NotFound { .. })
    ));
    assert!(store.events(None, 10).await.unwrap().len() >= 4);
}

async fn accounts_and_grants() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let acc = store
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    assert_eq!(acc.state, AccountState::Unauthorized);
    assert_eq!(acc.spec, account("support", &app));
    let err = store.remove_app(app.id, NOW).await.unwrap_err();
    assert!(err.to_string().contains("support"), "{err}");

    store.put_grant(&grant(acc.id), Some(NOW)).await.unwrap();
    assert_eq!(store.grant(acc.id).await.unwrap().unwrap(), grant(acc.id));
    assert!(!db.contains(CANARY_REFRESH));

    let mut off = account("support", &app);
    off.enabled = false;
    assert_eq!(
        store.update_account(acc.id, &off, NOW).await.unwrap().state,
        AccountState::Disabled
    );
    let on = account("support", &app);
    assert_eq!(
        store.update_account(acc.id, &on, NOW).await.unwrap().state,
        AccountState::Active,
        "enabled with a grant"
    );

    store.remove_account(acc.id, NOW).await.unwrap();
    assert!(store.grant(acc.id).await.unwrap().is_none());
    store.remove_app(app.id, NOW).await.unwrap();
}

async fn rotation_keeps_every_secret_readable_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let key_path = dir.path().join("master.key");
    let (store, _) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let acc = store
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    store.put_grant(&grant(acc.id), None).await.unwrap();
    let old_id = load_or_create_key_file(&key_path)
        .unwrap()
        .primary_id()
        .to_owned();

    let rotation = store
        .rotate_keys(MasterKey::generate().unwrap(), NOW)
        .await
        .unwrap();
    assert_eq!(
        rotation.reencrypted, 3,
        "client secret, access token, refresh token"
    );
    assert_eq!(rotation.old_key_ids, vec![old_id.clone()]);
    assert_eq!(
        store.key_ids_in_use().await.unwrap(),
        vec![rotation.new_key_id.clone()]
    );
    assert_eq!(store.prune_keys().await.unwrap(), vec![old_id]);
    store.close().await;

    // A fresh process with only the new key file reads everything.
    let ring = load_or_create_key_file(&key_path).unwrap();
    assert_eq!(ring.key_ids(), vec![rotation.new_key_id.as_str()]);
    let (store, _) = open(dir.path()).await;
    assert_eq!(
        store
            .find_app("Contoso")
            .await
            .unwrap()
            .spec
            .client_secret
            .unwrap()
            .expose(),
        CANARY_SECRET
    );
    assert_eq!(store.grant(acc.id).await.unwrap().unwrap(), grant(acc.id));
}

async fn a_running_store_follows_a_rotation_done_by_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let (server, _) = open(dir.path()).await;
    let (cli, _) = open(dir.path()).await;
    let app = server.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let rotation = cli
        .rotate_keys(MasterKey::generate().unwrap(), NOW)
        .await
        .unwrap();
    // The server writes after the rotation: the new value must use the new key.
    let acc = server
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    server.put_grant(&grant(acc.id), None).await.unwrap();
    assert_eq!(
        server.key_ids_in_use().await.unwrap(),
        vec![rotation.new_key_id]
    );
    assert_eq!(
        server
            .find_app("Contoso")
            .await
            .unwrap()
            .spec
            .client_secret
            .unwrap()
            .expose(),
        CANARY_SECRET
    );
}

async fn a_wrong_key_is_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    store.close().await;
    std::fs::remove_file(dir.path().join("master.key")).unwrap();
    let (store, _) = open(dir.path()).await; // creates a different key
    let err = store.find_app("Contoso").await.unwrap_err();
    assert!(err.to_string().contains("not in the keyring"), "{err}");
}

async fn concurrent_openers_migrate_once() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_owned();
    let (a, b) = tokio::join!(open(&d), open(&d));
    assert_eq!(
        a.0.schema_version().await.unwrap(),
        mailgate_store::SCHEMA_VERSION
    );
    assert_eq!(
        b.0.schema_version().await.unwrap(),
        mailgate_store::SCHEMA_VERSION
    );
}

async fn oauth_state_is_one_time_and_sealed() {
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let acc = store
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    let pending = mailgate_store::PendingAuthorization {
        account_id: acc.id,
        initiator: "cli".into(),
        verifier: Secret::new("CANARY-pkce-verifier-abcdef"),
        nonce: "n-1".into(),
        redirect_uri: "http://127.0.0.1:8080/oauth/callback".into(),
        created_at: NOW,
        expires_at: NOW.plus_secs(600),
    };
    store.put_oauth_state("hash-1", &pending).await.unwrap();
    assert!(!db.contains("CANARY-pkce-verifier"));
    assert_eq!(store.pending_authorizations(acc.id, NOW).await.unwrap(), 1);
    let taken = store.take_oauth_state("hash-1").await.unwrap().unwrap();
    assert_eq!(taken.verifier.expose(), "CANARY-pkce-verifier-abcdef");
    assert_eq!(taken.account_id, acc.id);
    assert!(
        store.take_oauth_state("hash-1").await.unwrap().is_none(),
        "a state is good for one callback only"
    );
}

async fn authorization_refresh_versions_and_leases() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let acc = store
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    let state = store
        .complete_authorization(&grant(acc.id), NOW, NOW)
        .await
        .unwrap();
    assert_eq!(state, AccountState::Active);
    let stored = store.versioned_grant(acc.id).await.unwrap().unwrap();
    assert_eq!((stored.version, stored.issued_at), (1, Some(NOW)));

    // A refresh that read version 1 wins once; a second writer with the same version loses.
    let rotated = Secret::new("CANARY-refresh-token-rotated");
    assert!(
        store
            .store_refreshed(
                acc.id,
                1,
                &Secret::new("at-2"),
                Some(NOW.plus_secs(7200)),
                NOW,
                Some(&rotated),
                None
            )
            .await
            .unwrap()
    );
    assert!(
        !store
            .store_refreshed(acc.id, 1, &Secret::new("at-x"), None, NOW, None, None)
            .await
            .unwrap()
    );
    let g = store.grant(acc.id).await.unwrap().unwrap();
    assert_eq!(g.access_token.unwrap().expose(), "at-2");
    assert_eq!(g.refresh_token.unwrap(), rotated);
    // No new refresh token in a response: the stored one is kept.
    assert!(
        store
            .store_refreshed(acc.id, 2, &Secret::new("at-3"), None, NOW, None, None)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .grant(acc.id)
            .await
            .unwrap()
            .unwrap()
            .refresh_token
            .unwrap(),
        rotated
    );

    assert!(store.try_lease("refresh:1", "a", 30, NOW).await.unwrap());
    assert!(
        !store.try_lease("refresh:1", "b", 30, NOW).await.unwrap(),
        "held by a"
    );
    assert!(
        store.try_lease("refresh:1", "a", 30, NOW).await.unwrap(),
        "re-entrant for its holder"
    );
    assert!(
        store
            .try_lease("refresh:1", "b", 30, NOW.plus_secs(31))
            .await
            .unwrap(),
        "expired leases are taken over"
    );
    store.release_lease("refresh:1", "a").await.unwrap();
    assert!(
        store
            .lease_held("refresh:1", NOW.plus_secs(31))
            .await
            .unwrap(),
        "only the holder releases"
    );
    store.release_lease("refresh:1", "b").await.unwrap();
    assert!(
        !store
            .lease_held("refresh:1", NOW.plus_secs(31))
            .await
            .unwrap()
    );

    let problem = mailgate_core::account::Problem {
        code: "secret_expired".into(),
        remediation: "new secret".into(),
        detail: None,
        at: NOW,
    };
    assert_eq!(
        store
            .reject_all_grants_of_app(app.id, &problem, NOW)
            .await
            .unwrap(),
        vec![acc.id]
    );
    let acc = store.account(acc.id).await.unwrap();
    assert_eq!(acc.state, AccountState::ReauthRequired);
    assert_eq!(acc.last_problem.unwrap().code, "secret_expired");
    assert!(
        store.grant(acc.id).await.unwrap().is_some(),
        "a rejected grant is kept, not deleted"
    );
}

async fn each_secret_expiry_warning_is_raised_once() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    assert!(
        store
            .mark_secret_warning(app.id, 14, "expires in 10 days", NOW)
            .await
            .unwrap()
    );
    assert!(
        !store
            .mark_secret_warning(app.id, 14, "expires in 10 days", NOW)
            .await
            .unwrap(),
        "same step again"
    );
    assert!(
        !store
            .mark_secret_warning(app.id, 30, "farther step", NOW)
            .await
            .unwrap(),
        "a farther step after a closer one"
    );
    assert!(
        store
            .mark_secret_warning(app.id, 7, "expires in 5 days", NOW)
            .await
            .unwrap(),
        "the next step"
    );
    let warnings = store
        .events(None, 100)
        .await
        .unwrap()
        .into_iter()
        .filter(|e| e.kind == mailgate_core::event::EventKind::SecretExpiring)
        .count();
    assert_eq!(warnings, 2);
    // A new expiry date starts the steps over.
    let mut renewed = ms_app("Contoso");
    renewed.secret_expires = Some(time::macros::date!(2028 - 01 - 01));
    store
        .update_app(app.id, &renewed, false, NOW)
        .await
        .unwrap();
    assert!(
        store
            .mark_secret_warning(app.id, 30, "new secret, 30 days", NOW)
            .await
            .unwrap()
    );
}

async fn an_outbox_claim_is_renewed_only_by_its_holder_and_expires_otherwise() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let acc = store
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    let item = match store
        .enqueue(new_message(acc.id, None, "h", b"x"), ROOMY, NOW)
        .await
        .unwrap()
    {
        mailgate_store::Enqueued::Created(item) => item,
        other => panic!("{other:?}"),
    };
    let claimed = store.claim_outbox("a", 120, NOW).await.unwrap().unwrap();
    assert_eq!(claimed.id, item.id);
    assert!(store.claim_outbox("b", 120, NOW).await.unwrap().is_none());
    // The holder's heartbeat extends the claim past its first expiry; nobody else's does.
    assert!(
        store
            .renew_outbox_lease(item.id, "a", NOW.plus_secs(300))
            .await
            .unwrap()
    );
    assert!(
        !store
            .renew_outbox_lease(item.id, "b", NOW.plus_secs(300))
            .await
            .unwrap()
    );
    assert!(
        store
            .claim_outbox("b", 120, NOW.plus_secs(200))
            .await
            .unwrap()
            .is_none()
    );
    // Without a heartbeat the claim expires and another sender takes the message over.
    let taken = store
        .claim_outbox("b", 120, NOW.plus_secs(301))
        .await
        .unwrap()
        .unwrap();
    assert_eq!((taken.id, taken.attempts), (item.id, 2));
    assert!(
        !store
            .renew_outbox_lease(item.id, "a", NOW.plus_secs(900))
            .await
            .unwrap()
    );
}

async fn webhook_deliveries_fan_out_with_their_event_and_retry_within_a_day() {
    use mailgate_core::event::EventKind;
    use mailgate_core::webhook::WebhookEvent;
    use mailgate_store::{AttemptOutcome, DeliveryStatus};
    let dir = tempfile::tempdir().unwrap();
    let (store, db) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let acc = store
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    let other = store
        .create_account(&account("billing", &app), NOW)
        .await
        .unwrap();
    let url = mailgate_core::HttpUrl::parse("https://hooks.example.test/in").unwrap();
    let secret = Secret::new("whsec_CANARY-webhook-secret".to_owned());
    let hook = store
        .create_webhook(
            Some(acc.id),
            &url,
            &[WebhookEvent::MessageSent],
            "",
            &secret,
            NOW,
        )
        .await
        .unwrap();
    assert!(!db.contains("CANARY-webhook-secret"), "sealed at rest");
    assert_eq!(
        store.webhook_secret(hook.id).await.unwrap().expose(),
        secret.expose()
    );
    // Events of another kind or another account queue nothing; the right one queues one.
    store
        .record_event(NOW, EventKind::MessageFailed, None, Some(acc.id), "x")
        .await
        .unwrap();
    store
        .record_event(NOW, EventKind::MessageSent, None, Some(other.id), "x")
        .await
        .unwrap();
    assert!(store.claim_delivery("w", 60, NOW).await.unwrap().is_none());
    store
        .record_event_with(
            NOW,
            EventKind::MessageSent,
            None,
            Some(acc.id),
            "message 7 sent",
            Some(serde_json::json!({"message": {"id": 7}})),
        )
        .await
        .unwrap();
    let (d, to) = store.claim_delivery("w", 60, NOW).await.unwrap().unwrap();
    assert_eq!(to, url);
    let body: serde_json::Value = serde_json::from_str(&d.payload).unwrap();
    assert_eq!(body["type"], "message.sent");
    assert_eq!(body["account"]["name"], "support");
    assert_eq!(body["data"]["message"]["id"], 7);
    assert_eq!(body["data"]["description"], "message 7 sent");
    // A failed attempt is retried at the time given, within the window; later it fails.
    let failed = |at: Timestamp| AttemptOutcome {
        status_code: Some(500),
        error: Some("HTTP 500".into()),
        duration_ms: 3,
        retry_at: Some(at),
    };
    let st = store
        .finish_delivery(d.id, "w", &failed(NOW.plus_secs(30)), NOW)
        .await
        .unwrap();
    assert_eq!(st, DeliveryStatus::Pending);
    assert!(
        store
            .claim_delivery("w", 60, NOW.plus_secs(29))
            .await
            .unwrap()
            .is_none()
    );
    let (again, _) = store
        .claim_delivery("w", 60, NOW.plus_secs(30))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (again.delivery_id.as_str(), again.attempts),
        (d.delivery_id.as_str(), 2)
    );
    let late = NOW.plus_secs(24 * 3600);
    let st = store
        .finish_delivery(d.id, "w", &failed(late.plus_secs(60)), late)
        .await
        .unwrap();
    assert_eq!(st, DeliveryStatus::Failed, "no retry beyond 24 hours");
    let (logged, attempts) = store.delivery(d.id).await.unwrap();
    assert_eq!(logged.status, DeliveryStatus::Failed);
    assert_eq!(attempts.len(), 2);
    assert!(attempts.iter().all(|a| a.status_code == Some(500)));
    // Redelivery: the same delivery, pending again with a fresh window.
    let redo = store.redeliver(d.id, late).await.unwrap();
    assert_eq!(redo.status, DeliveryStatus::Pending);
    assert_eq!(redo.delivery_id, d.delivery_id);
    assert!(redo.retry_until.0 > late.0);
}

async fn received_messages_advance_the_position_with_their_webhooks() {
    use mailgate_core::webhook::WebhookEvent;
    use mailgate_store::inbound::{ImapPosition, Progress};
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let acc = store
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    assert_eq!(store.imap_position(acc.id).await.unwrap(), None);
    let url = mailgate_core::HttpUrl::parse("https://hooks.example.test/in").unwrap();
    store
        .create_webhook(
            None,
            &url,
            &[WebhookEvent::MessageReceived],
            "",
            &Secret::new("s".to_owned()),
            NOW,
        )
        .await
        .unwrap();
    let pos = ImapPosition {
        uid_validity: 9,
        last_uid: 41,
    };
    store.set_imap_position(acc.id, pos, NOW).await.unwrap();
    let next = ImapPosition {
        last_uid: 42,
        ..pos
    };
    let queued = store
        .record_received(
            acc.id,
            Progress::Imap(next),
            serde_json::json!({"uid": "42"}),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(queued, 1);
    assert_eq!(store.imap_position(acc.id).await.unwrap(), Some(next));
    store
        .record_received(acc.id, Progress::Pop3("u-1"), serde_json::json!({}), NOW)
        .await
        .unwrap();
    store
        .mark_pop3_seen(acc.id, &["u-2".into(), "u-3".into()], NOW)
        .await
        .unwrap();
    let seen = store.pop3_seen(acc.id).await.unwrap();
    assert_eq!(seen.len(), 3);
    assert_eq!(
        store
            .prune_pop3_seen(acc.id, &["u-3".into()])
            .await
            .unwrap(),
        2
    );
    assert_eq!(store.pop3_seen(acc.id).await.unwrap().len(), 1);
}

const ROOMY: mailgate_store::OutboxQuota = mailgate_store::OutboxQuota {
    per_account_bytes: 1 << 30,
    total_bytes: 1 << 30,
};

fn new_message<'a>(
    account: mailgate_core::AccountId,
    key: Option<&'a str>,
    hash: &'a str,
    bytes: &[u8],
) -> mailgate_store::NewOutboxMessage<'a> {
    mailgate_store::NewOutboxMessage {
        account,
        idempotency_key: key,
        request_hash: hash,
        recipients: &[],
        message: bytes.to_vec(),
        message_id: "m@x",
    }
}

/// Quotas count queued and sending bytes per account and in all; an idempotency key stands
/// for the request that first used it; a full quota or a reused key stores nothing.
async fn the_outbox_quota_and_idempotency_hash_are_checked_in_the_insert() {
    use mailgate_store::{Enqueued, OutboxQuota, OutboxStatus};
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let a = store
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    let b = store
        .create_account(&account("billing", &app), NOW)
        .await
        .unwrap();
    let quota = OutboxQuota {
        per_account_bytes: 100,
        total_bytes: 150,
    };
    let enqueue = |acc, key, hash, size: usize| {
        let store = &store;
        async move {
            store
                .enqueue(new_message(acc, key, hash, &vec![b'x'; size]), quota, NOW)
                .await
                .unwrap()
        }
    };
    let first = match enqueue(a.id, Some("k1"), "h1", 60).await {
        Enqueued::Created(i) => i,
        other => panic!("{other:?}"),
    };
    assert!(matches!(
        enqueue(a.id, None, "h2", 41).await,
        Enqueued::AccountQuotaFull {
            used: 60,
            quota: 100
        }
    ));
    // The same key and request: the first message, even with the quota full.
    assert!(
        matches!(enqueue(a.id, Some("k1"), "h1", 60).await, Enqueued::Existing(i) if i.id == first.id)
    );
    assert!(matches!(
        enqueue(a.id, Some("k1"), "other", 60).await,
        Enqueued::KeyReused
    ));
    assert!(matches!(
        enqueue(b.id, None, "h3", 91).await,
        Enqueued::TotalQuotaFull {
            used: 60,
            quota: 150
        }
    ));
    assert!(matches!(
        enqueue(b.id, None, "h3", 90).await,
        Enqueued::Created(_)
    ));
    // Sent messages no longer count.
    let claimed = store.claim_outbox("w", 120, NOW).await.unwrap().unwrap();
    assert_eq!(claimed.id, first.id);
    store
        .finish_outbox(claimed.id, "w", OutboxStatus::Sent, None, None, NOW, NOW)
        .await
        .unwrap();
    assert!(matches!(
        enqueue(a.id, None, "h4", 60).await,
        Enqueued::Created(_)
    ));
    assert_ne!(
        mailgate_store::request_hash(&[b"ab", b"c"]),
        mailgate_store::request_hash(&[b"a", b"bc"])
    );
}

/// A restarted instance releases what its earlier run held (by holder prefix), and only that.
async fn claims_of_an_earlier_run_are_released_by_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let (store, _) = open(dir.path()).await;
    let app = store.create_app(&ms_app("Contoso"), NOW).await.unwrap();
    let acc = store
        .create_account(&account("support", &app), NOW)
        .await
        .unwrap();
    for n in 0..2 {
        store
            .enqueue(new_message(acc.id, None, "h", &[n]), ROOMY, NOW)
            .await
            .unwrap();
    }
    let mine = store
        .claim_outbox("inst-a/run-1", 120, NOW)
        .await
        .unwrap()
        .unwrap();
    let theirs = store
        .claim_outbox("inst-b/run-1", 120, NOW)
        .await
        .unwrap()
        .unwrap();
    assert!(
        store
            .try_lease("watch:1", "inst-a/run-1", 60, NOW)
            .await
            .unwrap()
    );
    assert!(
        store
            .try_lease("watch:2", "inst-b/run-1", 60, NOW)
            .await
            .unwrap()
    );
    assert!(
        store
            .try_lease("refresh:1", "inst-a/run-1", 60, NOW)
            .await
            .unwrap()
    );
    let released = store.release_claims_of("inst-a/").await.unwrap();
    assert_eq!((released.outbox, released.watch_leases), (1, 1));
    let again = store
        .claim_outbox("inst-a/run-2", 120, NOW)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(again.id, mine.id, "released at once");
    assert!(
        store
            .claim_outbox("inst-a/run-2", 120, NOW)
            .await
            .unwrap()
            .is_none(),
        "{theirs:?} is still held"
    );
    assert!(
        store
            .try_lease("watch:1", "inst-a/run-2", 60, NOW)
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_lease("watch:2", "inst-a/run-2", 60, NOW)
            .await
            .unwrap()
    );
    assert!(
        !store
            .try_lease("refresh:1", "inst-a/run-2", 60, NOW)
            .await
            .unwrap(),
        "only watch leases"
    );
}
mod disk_full;

on_both_databases!(
    apps_round_trip_with_sealed_secret,
    accounts_and_grants,
    rotation_keeps_every_secret_readable_and_survives_reopen,
    a_running_store_follows_a_rotation_done_by_another_process,
    a_wrong_key_is_a_clear_error,
    concurrent_openers_migrate_once,
    oauth_state_is_one_time_and_sealed,
    authorization_refresh_versions_and_leases,
    each_secret_expiry_warning_is_raised_once,
    an_outbox_claim_is_renewed_only_by_its_holder_and_expires_otherwise,
    webhook_deliveries_fan_out_with_their_event_and_retry_within_a_day,
    received_messages_advance_the_position_with_their_webhooks,
    the_outbox_quota_and_idempotency_hash_are_checked_in_the_insert,
    claims_of_an_earlier_run_are_released_by_prefix,
);
