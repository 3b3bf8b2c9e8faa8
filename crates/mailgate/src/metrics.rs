//! `serve`'s side of `/metrics`: the HTTP request counter around the router, and the
//! outbox's and webhook deliverer's outcomes in the words of the metrics. The counters
//! themselves are `mailgate_core::metrics`; `web` renders them.

use mailgate_core::metrics;
use mailgate_store::{DeliveryStatus, OutboxStatus};
use std::time::Duration;

/// Counts every request the router answers by route *template* (`/api/v1/accounts/{id}`),
/// method and status, and times it. `Router::layer` wraps each route, so the matched
/// template is known here; what matched no route is "unmatched", never the raw path (ids,
/// setup tokens and typos must not become labels).
pub fn count_http_requests(router: axum::Router) -> axum::Router {
    router.layer(axum::middleware::from_fn(count_request))
}

async fn count_request(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    // Only the standard methods as labels; anything else a client invents is "other".
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS") => m.to_owned(),
        _ => "other".to_owned(),
    };
    let started = std::time::Instant::now();
    let resp = next.run(req).await;
    metrics::http_request(&route, &method, resp.status().as_u16(), started.elapsed());
    resp
}

/// An outbox attempt's outcome as the worker records it.
pub fn send_recorded(status: OutboxStatus) {
    metrics::send_attempt(match status {
        OutboxStatus::Sent => "sent",
        // Back in the queue for another attempt.
        OutboxStatus::Queued | OutboxStatus::Sending => "retry",
        OutboxStatus::Failed => "failed",
    });
}

/// A webhook attempt's outcome as the store recorded it (an attempt whose outcome could
/// not be written is not counted: it will be made again).
pub fn webhook_recorded<E>(recorded: &Result<DeliveryStatus, E>, took: Duration) {
    let outcome = match recorded {
        Ok(DeliveryStatus::Delivered) => "delivered",
        Ok(DeliveryStatus::Failed) => "failed",
        Ok(DeliveryStatus::Pending | DeliveryStatus::Delivering) => "retry",
        Err(_) => return,
    };
    metrics::webhook_attempt(outcome, took);
}
