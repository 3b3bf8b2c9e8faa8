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
    let state = mailgate_web::AppState {
        store: store.clone(),
        clock: Arc::new(SystemClock),
        public_url: public_url.clone(),
    };
    // One line on stdout for people and scripts; everything else goes to the log (stderr).
    out!(
        "mailgate {} listening on http://{bound} (public URL {public_url})",
        env!("CARGO_PKG_VERSION")
    );
    tracing::info!(%bound, %public_url, data_dir = %config.data_dir.display(), database = %mailgate_store::redact_url(&config.database_url), "serving");
    axum::serve(listener, mailgate_web::router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await
        .map_err(|e| Failure::Runtime(format!("server error: {e}")))?;
    store.close().await;
    tracing::info!("stopped");
    Ok(())
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
