//! `mailgate serve`.

use crate::config::Config;
use crate::{CmdResult, Failure};
use mailgate_core::{Clock, SystemClock};
use std::sync::Arc;
use std::time::Duration;

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
    let proxy_listeners = crate::proxy::bind(&config).await?;
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
        trusted_proxies: Arc::new(config.trusted_proxies.clone()),
        setup_link_secs: config.setup_link_secs as i64,
        send_slots: Arc::new(tokio::sync::Semaphore::new(config.http_send_concurrency)),
        send_slot_wait: Duration::from_secs(config.http_send_wait_secs),
        proxy_listeners: Arc::new(
            proxy_listeners
                .iter()
                .map(crate::proxy::ProxyListener::describe)
                .collect(),
        ),
        metrics_token: config.metrics_token.clone(),
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
        mailgate_oauth::random::token(6)?
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
        concurrency: config.outbox_concurrency,
        per_account_concurrency: config.outbox_per_account_concurrency,
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
        leases: Default::default(),
        lease_secs: config.watch_lease_secs as i64,
        share: Default::default(),
    };
    let watchers = tokio::spawn(watchers.run(stop_rx.clone()));
    let proxy_addrs: Vec<_> = proxy_listeners
        .iter()
        .filter_map(|l| {
            l.listener
                .local_addr()
                .ok()
                .map(|addr| (l.protocol, addr, l.tls.is_some()))
        })
        .collect();
    let proxy_ctx = Arc::new(crate::proxy::ProxyContext {
        store: store.clone(),
        engine: engine.clone(),
        tls: state.tls.clone(),
        live: Default::default(),
        failures: Default::default(),
        login_timeout: Duration::from_secs(config.proxy_login_timeout_secs),
        idle_timeout: Duration::from_secs(config.proxy_idle_timeout_secs),
        max_sessions_per_account: config.proxy_max_sessions_per_account,
    });
    let mut proxies: Vec<_> = proxy_listeners
        .into_iter()
        .map(|bound| tokio::spawn(crate::proxy::run(bound, proxy_ctx.clone(), stop_rx.clone())))
        .collect();
    if !proxies.is_empty() {
        proxies.push(tokio::spawn(
            proxy_ctx.clone().end_revoked_sessions(stop_rx.clone()),
        ));
    }
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
    for (protocol, addr, tls) in &proxy_addrs {
        let security = if *tls { " (TLS)" } else { "" };
        out!("{} proxy listening on {addr}{security}", protocol.name());
        tracing::info!(%addr, protocol = protocol.name(), "proxy listening");
    }
    tracing::info!(%bound, %public_url, data_dir = %config.data_dir.display(), database = %mailgate_store::redact_url(&config.database_url), "serving");
    announce_setup_link(&store, &public_url, config.setup_link_secs).await?;
    let limits = HttpLimits {
        header_timeout: Duration::from_secs(config.http_header_timeout_secs),
        idle_timeout: Duration::from_secs(config.http_idle_timeout_secs),
        max_connections: connection_cap(config.http_max_connections),
    };
    serve_http(
        listener,
        crate::metrics::count_http_requests(mailgate_web::router(state)),
        limits,
        shutdown_signal(),
    )
    .await;
    let _ = stop_tx.send(true);
    let _ = scheduler.await;
    let _ = outbox.await;
    let _ = deliverer.await;
    let _ = watchers.await;
    for proxy in proxies {
        let _ = proxy.await;
    }
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
/// It expires after `lifetime_secs`; a restart prints a fresh one.
async fn announce_setup_link(
    store: &mailgate_store::Store,
    public_url: &mailgate_core::HttpUrl,
    lifetime_secs: u64,
) -> CmdResult {
    if store.user_count().await? > 0 {
        return Ok(());
    }
    let token = mailgate_oauth::random::token(24)?;
    store
        .set_setup_token(
            &mailgate_oauth::random::sha256_hex(&token),
            SystemClock.now(),
        )
        .await?;
    // On stdout only, never in the log: it is a credential until used.
    out!(
        "No administrator yet. Create one at: {}?token={token}",
        public_url.join_path("/setup")
    );
    let hours = lifetime_secs / 3600;
    let lifetime = if hours > 0 && hours * 3600 == lifetime_secs {
        format!("{hours} h")
    } else {
        format!("{lifetime_secs} s")
    };
    out!(
        "The link is valid for {lifetime} (setup_link_secs); restart mailgate serve for a new one."
    );
    Ok(())
}

/// The HTTP server's limits (`http_*` settings).
#[derive(Debug, Clone, Copy)]
struct HttpLimits {
    header_timeout: Duration,
    idle_timeout: Duration,
    max_connections: usize,
}

/// File descriptors kept free beside the HTTP connections: the database, outgoing
/// connections to identity providers, mail servers and webhooks, the key file.
const FDS_FOR_EVERYTHING_ELSE: u64 = 256;

/// Raises the open-files limit to its hard maximum (the default soft limit, often 1024, is
/// what 20,000 idle sockets ran into), then keeps the connection cap below it so that
/// accepting never fails for want of a descriptor.
fn connection_cap(configured: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => limit = getrlimit(Resource::Nofile),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-files limit"),
        }
    }
    let Some(soft) = limit.current else {
        return configured; // unlimited
    };
    let room = soft.saturating_sub(FDS_FOR_EVERYTHING_ELSE).max(1);
    if (configured as u64) > room {
        tracing::warn!(
            http_max_connections = configured,
            open_files_limit = soft,
            using = room,
            "http_max_connections is above what the open-files limit allows; using less"
        );
        room as usize
    } else {
        configured
    }
}

/// Serves HTTP/1.1 until `shutdown`, then lets requests in flight finish.
///
/// axum::serve has no header-read timeout, no idle timeout and no connection cap, and on
/// running out of file descriptors it stops answering everyone (`/healthz` included). Here:
/// at `max_connections` open connections the loop stops accepting (newcomers wait in the
/// kernel's backlog) until one closes; hyper closes a connection whose request head has not
/// arrived within `header_timeout` of the connection opening or going idle; and a
/// connection on which no byte moves for `idle_timeout` is closed. So idle or slow clients
/// hold a slot for a bounded time, and the cap stays below the descriptor limit.
async fn serve_http(
    listener: tokio::net::TcpListener,
    app: axum::Router,
    limits: HttpLimits,
    shutdown: impl std::future::Future<Output = ()>,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(limits.max_connections));
    let (closing_tx, closing_rx) = tokio::sync::watch::channel(false);
    let mut connections = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        // Reap finished connection tasks so the set does not grow with every connection.
        while connections.try_join_next().is_some() {}
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break, // the semaphore is never closed
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            // EMFILE and friends: the cap should prevent them.
            accepted = accept_or_pause(&listener, "a connection") => match accepted {
                Some(accepted) => accepted,
                None => continue,
            },
            () = &mut shutdown => break,
        };
        let app = app.clone();
        let mut closing = closing_rx.clone();
        connections.spawn(async move {
            let _slot = slot; // held until the connection ends
            let io = hyper_util::rt::TokioIo::new(IdleWatchdog::new(stream, limits.idle_timeout));
            let service = hyper::service::service_fn(
                move |mut request: hyper::Request<hyper::body::Incoming>| {
                    request
                        .extensions_mut()
                        .insert(axum::extract::ConnectInfo(peer));
                    tower::ServiceExt::oneshot(app.clone(), request)
                },
            );
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(limits.header_timeout);
            let connection = builder.serve_connection(io, service);
            tokio::pin!(connection);
            let finished = tokio::select! {
                finished = connection.as_mut() => Some(finished),
                _ = closing.wait_for(|closing| *closing) => None,
            };
            let finished = match finished {
                Some(finished) => finished,
                None => {
                    // Shutting down: finish the request in flight, close when idle.
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(e) = finished {
                tracing::debug!(error = %e, %peer, "connection ended");
            }
        });
    }
    // New connections are refused from here on; open ones finish their request and close.
    // The wait is bounded: a connection without a request is closed by the header timeout,
    // a stuck one by the idle timeout.
    drop(listener);
    let _ = closing_tx.send(true);
    while connections.join_next().await.is_some() {}
}

/// The next connection on `listener`; `None` after a failed accept (EMFILE and friends),
/// logged and followed by a short pause so that an accept loop never spins.
pub(crate) async fn accept_or_pause(
    listener: &tokio::net::TcpListener,
    what: &str,
) -> Option<(tokio::net::TcpStream, std::net::SocketAddr)> {
    match listener.accept().await {
        Ok(accepted) => Some(accepted),
        Err(e) => {
            tracing::warn!(error = %e, "accepting {what} failed");
            tokio::time::sleep(Duration::from_millis(100)).await;
            None
        }
    }
}

/// A connection's stream that fails with `TimedOut` once it has been waiting, reading or
/// writing, for `idle` without moving a byte.
struct IdleWatchdog {
    stream: tokio::net::TcpStream,
    idle: Duration,
    deadline: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl IdleWatchdog {
    fn new(stream: tokio::net::TcpStream, idle: Duration) -> Self {
        IdleWatchdog {
            stream,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }

    fn moved(&mut self) {
        let next = tokio::time::Instant::now() + self.idle;
        self.deadline.as_mut().reset(next);
    }

    /// On a pending read or write: an error once the deadline has passed, else pending
    /// (the deadline's timer wakes the task when it passes).
    fn check<T>(&mut self, cx: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<T>> {
        match self.deadline.as_mut().poll(cx) {
            std::task::Poll::Ready(()) => std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "no bytes moved within http_idle_timeout_secs",
            ))),
            std::task::Poll::Pending => std::task::Poll::Pending,
        }
    }
}

impl tokio::io::AsyncRead for IdleWatchdog {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        match std::pin::Pin::new(&mut self.stream).poll_read(cx, buf) {
            std::task::Poll::Ready(result) => {
                if buf.filled().len() > before {
                    self.moved();
                }
                std::task::Poll::Ready(result)
            }
            std::task::Poll::Pending => self.check(cx),
        }
    }
}

impl tokio::io::AsyncWrite for IdleWatchdog {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        match std::pin::Pin::new(&mut self.stream).poll_write(cx, data) {
            std::task::Poll::Ready(result) => {
                if matches!(result, Ok(n) if n > 0) {
                    self.moved();
                }
                std::task::Poll::Ready(result)
            }
            std::task::Poll::Pending => self.check(cx),
        }
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        match std::pin::Pin::new(&mut self.stream).poll_flush(cx) {
            std::task::Poll::Pending => self.check(cx),
            ready => ready,
        }
    }

    fn poll_shutdown(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::pin::Pin::new(&mut self.stream).poll_shutdown(cx)
    }
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
