//! `mailgate serve`.

use crate::config::Config;
use crate::{CmdResult, Failure};
use mailgate_core::SystemClock;
use std::sync::Arc;

pub async fn serve(config: Config) -> CmdResult {
    let store = Arc::new(crate::open_store(&config).await?);
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| {
            Failure::Runtime(format!(
                "cannot listen on {} (MAILGATE_LISTEN): {e}",
                config.listen
            ))
        })?;
    let bound = listener
        .local_addr()
        .map_err(|e| Failure::Runtime(e.to_string()))?;
    let public_url = config.public_url_for(bound);
    let engine = Arc::new(crate::new_engine(&store, &config)?);
    let state = mailgate_web::AppState {
        store: store.clone(),
        engine: engine.clone(),
        clock: Arc::new(SystemClock),
        public_url: public_url.clone(),
        tls: mailgate_mail::TlsSettings::new(config.extra_ca_file.as_deref())
            .map_err(|e| Failure::BadInput(format!("MAILGATE_EXTRA_CA_FILE: {e}")))?,
        tests: Default::default(),
        outbox: Arc::new(tokio::sync::Notify::new()),
        deliveries: Arc::new(tokio::sync::Notify::new()),
        watchers: Arc::new(tokio::sync::Notify::new()),
        webhook_allow_private: config.webhook_allow_private,
        send_limits: mailgate_web::api::SendLimits {
            quota: mailgate_store::OutboxQuota {
                per_account_bytes: i64::try_from(config.outbox_account_quota_bytes)
                    .unwrap_or(i64::MAX),
                total_bytes: i64::try_from(config.outbox_total_quota_bytes).unwrap_or(i64::MAX),
            },
            max_recipients: usize::try_from(config.max_recipients).unwrap_or(usize::MAX),
        },
    };
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    // One name for this process in every lease it takes: the instance id, then this run.
    let instance = crate::instance::instance_id(&config.data_dir).map_err(|e| {
        Failure::Runtime(format!(
            "cannot read or create the instance id in {}: {e}",
            config.data_dir.display()
        ))
    })?;
    let holder = format!(
        "{instance}/{}-{}",
        std::process::id(),
        mailgate_oauth::random::token(6)
    );
    // Held until the process exits; the claims of an earlier run are released only when no
    // other serve of this data directory runs.
    let _serve_lock = release_earlier_claims(&store, &config.data_dir, &instance).await;
    let worker = crate::outbox::Worker {
        store: store.clone(),
        engine: engine.clone(),
        tls: state.tls.clone(),
        wake: state.outbox.clone(),
        deliveries: state.deliveries.clone(),
        retry_base_secs: config.outbox_retry_secs as i64,
        holder: holder.clone(),
    };
    let outbox = tokio::spawn(worker.run(stop_rx.clone()));
    let deliverer = crate::webhooks::Deliverer {
        store: store.clone(),
        wake: state.deliveries.clone(),
        retry_base_secs: config.webhook_retry_secs as i64,
        allow_private: config.webhook_allow_private,
        holder: holder.clone(),
    };
    let deliverer = tokio::spawn(deliverer.run(stop_rx.clone()));
    let watchers = crate::watch::Watchers {
        store: store.clone(),
        engine: engine.clone(),
        tls: state.tls.clone(),
        holder,
        poll_secs: config.poll_interval_secs,
        idle_secs: config.idle_secs,
        wake: state.watchers.clone(),
        deliveries: state.deliveries.clone(),
    };
    let watchers = tokio::spawn(watchers.run(stop_rx.clone()));
    let scheduler = tokio::spawn(refresh_scheduler(
        engine,
        config.refresh_interval_secs,
        stop_rx,
    ));
    // One line on stdout for people and scripts; everything else goes to the log (stderr).
    out!(
        "mailgate {} listening on http://{bound} (public URL {public_url})",
        env!("CARGO_PKG_VERSION")
    );
    tracing::info!(%bound, %public_url, data_dir = %config.data_dir.display(), database = %mailgate_store::redact_url(&config.database_url), "serving");
    announce_setup_link(&store, &public_url).await?;
    axum::serve(
        listener,
        mailgate_web::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown_signal())
    .await
    .map_err(|e| Failure::Runtime(format!("server error: {e}")))?;
    let _ = stop_tx.send(true);
    let _ = scheduler.await;
    let _ = outbox.await;
    let _ = deliverer.await;
    let _ = watchers.await;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// After a crash (`kill -9`, power loss) this instance's outbox claims, webhook claims and
/// watcher leases would block their work until they expire (up to two minutes); they are
/// released now, before the workers start. Returns the serve lock to hold.
async fn release_earlier_claims(
    store: &mailgate_store::Store,
    data_dir: &std::path::Path,
    instance: &str,
) -> Option<std::fs::File> {
    let lock = match crate::instance::exclusive_serve(data_dir) {
        Ok(Some(lock)) => lock,
        Ok(None) => {
            tracing::warn!(
                "another serve uses this data directory; claims of earlier runs are left to expire"
            );
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot take the serve lock; claims of earlier runs are left to expire");
            return None;
        }
    };
    match store.release_claims_of(&format!("{instance}/")).await {
        Ok(released) => tracing::info!(
            instance,
            outbox = released.outbox,
            deliveries = released.deliveries,
            watchers = released.watch_leases,
            "started; released the claims of an earlier run"
        ),
        Err(e) => tracing::warn!(error = %e, "cannot release the claims of an earlier run"),
    }
    Some(lock)
}

/// With no administrator yet, prints a one-time link that creates the first one. A new
/// link replaces the old one at every start, so a leaked old link is useless.
async fn announce_setup_link(
    store: &mailgate_store::Store,
    public_url: &mailgate_core::HttpUrl,
) -> CmdResult {
    if store.user_count().await? > 0 {
        return Ok(());
    }
    let token = mailgate_oauth::random::token(24);
    store
        .set_setup_token(&mailgate_oauth::random::sha256_hex(&token))
        .await?;
    // On stdout only, never in the log: it is a credential until used.
    out!(
        "No administrator yet. Create one at: {}?token={token}",
        public_url.join_path("/setup")
    );
    Ok(())
}

/// Refreshes tokens before they expire and raises client-secret expiry warnings, every
/// `interval_secs`, until told to stop. One failing round never stops the next.
async fn refresh_scheduler(
    engine: Arc<mailgate_grants::Engine>,
    interval_secs: u64,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(std::time::Duration::from_secs(interval_secs));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        // Look one interval ahead so nothing expires between two rounds.
        match engine.refresh_due(interval_secs as i64).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(refreshed = n, "proactive refresh round"),
            Err(e) => tracing::warn!(error = %e, "proactive refresh round failed"),
        }
        if let Err(e) = engine.check_secret_expiry().await {
            tracing::warn!(error = %e, "secret expiry check failed");
        }
    }
}

/// Ctrl-C or SIGTERM: stop accepting, finish requests in flight, close the database.
async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}
