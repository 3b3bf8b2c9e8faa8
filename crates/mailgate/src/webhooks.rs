//! The webhook deliverer in `serve`: claims due deliveries (a lease in the row), POSTs each
//! signed body to its subscription's URL, and logs every attempt. Non-2xx answers and
//! network errors are retried with exponential backoff and jitter for 24 hours; redirects
//! are never followed; loopback and private targets are refused unless the operator allows
//! them.
//!
//! Signature: `X-Mailgate-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">`
//! with the subscription's secret. Receivers recompute it and reject old timestamps.

use crate::retry::{backoff, jitter_roll};
use mailgate_core::{Clock, HttpUrl, SystemClock, Timestamp};
use mailgate_store::{AttemptOutcome, Delivery, DeliveryStatus, Store};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a claim lasts: longer than one request with its timeout.
const LEASE_SECS: i64 = 60;
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
const IDLE_LOOK_SECS: i64 = 5;
/// Deliveries attempted at once.
const IN_FLIGHT: usize = 8;

pub struct Deliverer {
    pub store: Arc<Store>,
    pub wake: Arc<tokio::sync::Notify>,
    /// First retry delay; doubles with each attempt, up to an hour.
    pub retry_base_secs: i64,
    pub allow_private: bool,
    pub holder: String,
}

/// `t=<t>,v1=<hex>` for `body` signed at `t`.
pub fn signature(secret: &[u8], t: i64, body: &[u8]) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut ctx = ring::hmac::Context::with_key(&key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={t},v1={}", hex::encode(ctx.sign().as_ref()))
}

/// Where `url` may be sent to: its addresses, each checked against the private ranges
/// (the rules identity-provider requests follow too). The request is pinned to exactly
/// these addresses, so a DNS answer cannot change between the check and the connection.
async fn target_addresses(url: &HttpUrl, allow_private: bool) -> Result<Vec<SocketAddr>, String> {
    mailgate_oauth::egress::url_addresses(url, allow_private, "MAILGATE_WEBHOOK_ALLOW_PRIVATE")
        .await
}

static CLAIM_LOG: std::sync::LazyLock<mailgate_core::log_limit::LogLimit> =
    std::sync::LazyLock::new(|| mailgate_core::log_limit::LogLimit::new(30));

impl Deliverer {
    /// Delivers until told to stop, up to [`IN_FLIGHT`] at once, so that one slow
    /// receiver does not hold up the others. On stop, attempts in flight are finished.
    pub async fn run(self, mut stop: tokio::sync::watch::Receiver<bool>) {
        let me = Arc::new(self);
        let mut tasks = tokio::task::JoinSet::new();
        loop {
            while tasks.len() < IN_FLIGHT {
                let now = SystemClock.now();
                match me.store.claim_delivery(&me.holder, LEASE_SECS, now).await {
                    Ok(Some((d, url))) => {
                        let me = me.clone();
                        tasks.spawn(async move { me.deliver(d, url).await });
                    }
                    Ok(None) => break,
                    Err(e) => {
                        // A full disk fails every claim: one line per half minute.
                        if let Some(left_out) = CLAIM_LOG.allow("claim", SystemClock.now()) {
                            tracing::warn!(error = %e, left_out, "webhooks: cannot claim work");
                        }
                        break;
                    }
                }
            }
            let now = SystemClock.now();
            // Deliveries are also queued by other processes (the CLI records events too),
            // which cannot wake this one: look at least every few seconds.
            let wait = match me.store.next_delivery_due().await {
                Ok(Some(t)) => {
                    Duration::from_secs(now.secs_until(t).clamp(0, IDLE_LOOK_SECS) as u64)
                }
                _ => Duration::from_secs(IDLE_LOOK_SECS as u64),
            };
            tokio::select! {
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                _ = me.wake.notified() => {}
                _ = tokio::time::sleep(wait.max(Duration::from_millis(200))) => {}
                _ = stop.changed() => {
                    while tasks.join_next().await.is_some() {}
                    return;
                }
            }
        }
    }

    async fn deliver(&self, d: Delivery, url: HttpUrl) {
        let started = Instant::now();
        let result = self.post(&d, &url).await;
        let duration_ms = started.elapsed().as_millis() as i64;
        let now = SystemClock.now();
        let retry = |now: Timestamp| {
            Some(now.plus_secs(backoff(self.retry_base_secs, d.attempts, jitter_roll())))
        };
        let outcome = match result {
            Ok(code) if (200..300).contains(&code) => AttemptOutcome {
                status_code: Some(code),
                error: None,
                duration_ms,
                retry_at: None,
            },
            Ok(code) => AttemptOutcome {
                status_code: Some(code),
                error: Some(if (300..400).contains(&code) {
                    format!("HTTP {code}: redirects are not followed; use the final URL")
                } else {
                    format!("HTTP {code}")
                }),
                duration_ms,
                retry_at: retry(now),
            },
            Err(e) => AttemptOutcome {
                status_code: None,
                error: Some(e),
                duration_ms,
                retry_at: retry(now),
            },
        };
        let recorded = self
            .store
            .finish_delivery(d.id, &self.holder, &outcome, now)
            .await;
        crate::metrics::webhook_recorded(&recorded, started.elapsed());
        match recorded {
            Ok(DeliveryStatus::Delivered) => {
                tracing::info!(delivery = %d.delivery_id, event = %d.event, attempts = d.attempts, "webhook delivered");
            }
            Ok(DeliveryStatus::Failed) => {
                tracing::warn!(delivery = %d.delivery_id, event = %d.event, attempts = d.attempts, error = ?outcome.error, "webhook failed for good after 24 hours of retries");
            }
            Ok(_) => {
                tracing::info!(delivery = %d.delivery_id, attempt = d.attempts, error = ?outcome.error, "webhook attempt failed; will retry");
            }
            Err(e) => tracing::warn!(error = %e, "webhooks: cannot record an attempt"),
        }
    }

    /// One POST; the receiver's status code, or why there was none.
    async fn post(&self, d: &Delivery, url: &HttpUrl) -> Result<u16, String> {
        let addrs = target_addresses(url, self.allow_private).await?;
        let secret = self
            .store
            .webhook_secret(d.webhook_id)
            .await
            .map_err(|e| format!("cannot read the subscription's secret: {e}"))?;
        let host = url.url().host_str().unwrap_or_default().to_owned();
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(REQUEST_TIMEOUT)
            .resolve_to_addrs(&host, &addrs)
            .user_agent(concat!("mailgate/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        let t = SystemClock.now().0;
        let body = d.payload.as_bytes().to_vec();
        let sig = signature(secret.expose().as_bytes(), t, &body);
        let resp = client
            .post(url.as_str())
            .header("content-type", "application/json")
            .header("x-mailgate-event", &d.event)
            .header("x-mailgate-delivery", &d.delivery_id)
            .header("x-mailgate-signature", sig)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    format!("no answer within {} s", REQUEST_TIMEOUT.as_secs())
                } else if e.is_connect() {
                    format!("cannot connect to {host}: {}", root_cause(&e))
                } else {
                    format!("request failed: {}", root_cause(&e))
                }
            })?;
        Ok(resp.status().as_u16())
    }
}

/// The innermost error of a chain: what a failed HTTP request says about the network
/// (refused, timed out, no such host), without reqwest's wrapping. `doctor` words its
/// reachability checks with it too.
pub(crate) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_matches_a_known_hmac() {
        // HMAC-SHA256("key", "1.body"), computed independently with Python's hmac module.
        let sig = signature(b"key", 1, b"body");
        assert_eq!(
            sig,
            "t=1,v1=91b5374b153842ad05b2c4eab9349b8321b14703165bd3fb8b034dfb8be98ae5"
        );
    }

    #[tokio::test]
    async fn names_that_resolve_to_private_addresses_are_refused() {
        // `localhost` resolves through /etc/hosts, so this needs no network.
        let url = HttpUrl::parse("http://localhost:9/hook").unwrap();
        let err = target_addresses(&url, false).await.unwrap_err();
        assert!(err.contains("MAILGATE_WEBHOOK_ALLOW_PRIVATE"), "{err}");
        let allowed = target_addresses(&url, true).await.unwrap();
        assert!(!allowed.is_empty() && allowed.iter().all(|a| a.port() == 9));
    }
}
