//! What `/metrics` counts while the process runs: token refreshes, sends, webhook deliveries,
//! inbound watcher sessions and HTTP requests. Counters live here, in one process-wide set,
//! because the code that sees the events is spread over several crates (`grants` refreshes,
//! the binary sends and delivers, `web` renders); each records with a one-line call.
//!
//! Labels are closed sets chosen by mailgate (a provider kind, an outcome, a remediation
//! code, a route *template*), never a value a caller sent: no id, address or token becomes
//! a label, so the output holds no secret and its size stays bounded.
//!
//! Gauges read from the database at scrape time (accounts by state, the outbox's oldest
//! message, secrets expiring) come in a [`Snapshot`] and are rendered beside these.

use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::OnceLock;
use std::time::Duration;

/// The Prometheus text format the scrape is answered in (0.0.4, what every scraper reads).
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

type Labels1 = [(&'static str, String); 1];
type Labels2 = [(&'static str, String); 2];
type Labels3 = [(&'static str, String); 3];
type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// Latency buckets in seconds: 5 ms to a minute, which spans an HTTP request served from
/// memory up to a token endpoint or webhook receiver at its timeout.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

/// The process-wide counters (see the module comment).
#[derive(Clone)]
pub struct Metrics {
    token_refreshes: Family<Labels3, Counter>,
    token_refresh_seconds: HistogramFamily<Labels1>,
    sends: Family<Labels1, Counter>,
    webhook_deliveries: Family<Labels1, Counter>,
    webhook_delivery_seconds: Histogram,
    watcher_sessions: Family<Labels1, Gauge>,
    http_requests: Family<Labels3, Counter>,
    http_request_seconds: HistogramFamily<Labels2>,
}

impl Metrics {
    fn new() -> Self {
        Metrics {
            token_refreshes: Family::default(),
            token_refresh_seconds: Family::new_with_constructor(latency_histogram),
            sends: Family::default(),
            webhook_deliveries: Family::default(),
            webhook_delivery_seconds: latency_histogram(),
            watcher_sessions: Family::default(),
            http_requests: Family::default(),
            http_request_seconds: Family::new_with_constructor(latency_histogram),
        }
    }

    /// Adds this process's counters to a registry (they share their values: the registry
    /// holds clones of the same atomics).
    fn register(&self, r: &mut Registry) {
        r.register(
            "mailgate_token_refreshes",
            "Token requests (refresh, or client credentials for app-only accounts) by provider kind, outcome (ok, transient, permanent) and remediation code",
            self.token_refreshes.clone(),
        );
        r.register(
            "mailgate_token_refresh_duration_seconds",
            "Time the identity provider took to answer a token request, by provider kind",
            self.token_refresh_seconds.clone(),
        );
        r.register(
            "mailgate_sends",
            "Outbox send attempts by outcome (sent, retry, failed)",
            self.sends.clone(),
        );
        r.register(
            "mailgate_webhook_delivery_attempts",
            "Webhook delivery attempts by outcome (delivered, retry, failed)",
            self.webhook_deliveries.clone(),
        );
        r.register(
            "mailgate_webhook_delivery_duration_seconds",
            "Time a webhook receiver took to answer (or the attempt to fail)",
            self.webhook_delivery_seconds.clone(),
        );
        r.register(
            "mailgate_watcher_sessions",
            "Inbound watchers by state (connected, retrying, standby: another instance holds the mailbox)",
            self.watcher_sessions.clone(),
        );
        r.register(
            "mailgate_http_requests",
            "HTTP requests by route template, method and status",
            self.http_requests.clone(),
        );
        r.register(
            "mailgate_http_request_duration_seconds",
            "Time to the response head, by route template and method",
            self.http_request_seconds.clone(),
        );
    }
}

/// The process's counters.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(Metrics::new)
}

/// How a token request ended, for [`token_request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenOutcome<'a> {
    Ok,
    /// Will be retried; the grant is kept. With the remediation code.
    Transient(&'a str),
    /// The account needs re-authorization (or the app a new secret). With the code.
    Permanent(&'a str),
}

/// One token request to a provider of `provider_kind` ("microsoft", "google", "generic").
pub fn token_request(provider_kind: &str, outcome: TokenOutcome<'_>, took: Duration) {
    let (outcome, code) = match outcome {
        TokenOutcome::Ok => ("ok", ""),
        TokenOutcome::Transient(code) => ("transient", code),
        TokenOutcome::Permanent(code) => ("permanent", code),
    };
    let m = global();
    m.token_refreshes
        .get_or_create(&[
            ("provider", provider_kind.to_owned()),
            ("outcome", outcome.to_owned()),
            ("code", code.to_owned()),
        ])
        .inc();
    m.token_refresh_seconds
        .get_or_create(&[("provider", provider_kind.to_owned())])
        .observe(took.as_secs_f64());
}

/// One outbox attempt ended: "sent", "retry" (queued again) or "failed" (for good).
pub fn send_attempt(outcome: &'static str) {
    global()
        .sends
        .get_or_create(&[("outcome", outcome.to_owned())])
        .inc();
}

/// One webhook POST ended: "delivered", "retry" or "failed" (for good).
pub fn webhook_attempt(outcome: &'static str, took: Duration) {
    let m = global();
    m.webhook_deliveries
        .get_or_create(&[("outcome", outcome.to_owned())])
        .inc();
    m.webhook_delivery_seconds.observe(took.as_secs_f64());
}

/// One HTTP request answered. `route` is the router's template (`/api/v1/accounts/{id}`)
/// or "unmatched", never the path the client sent.
pub fn http_request(route: &str, method: &str, status: u16, took: Duration) {
    let m = global();
    m.http_requests
        .get_or_create(&[
            ("route", route.to_owned()),
            ("method", method.to_owned()),
            ("status", status.to_string()),
        ])
        .inc();
    m.http_request_seconds
        .get_or_create(&[("route", route.to_owned()), ("method", method.to_owned())])
        .observe(took.as_secs_f64());
}

/// What an inbound watcher is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatcherState {
    /// A session with the mail server is open (IDLE, polling or between rounds).
    Connected,
    /// The last session failed; waiting before the next try.
    Retrying,
    /// Another mailgate instance holds this mailbox's lease.
    Standby,
}

impl WatcherState {
    fn label(self) -> &'static str {
        match self {
            WatcherState::Connected => "connected",
            WatcherState::Retrying => "retrying",
            WatcherState::Standby => "standby",
        }
    }
}

/// One watcher's place in `mailgate_watcher_sessions`: counted in one state at a time, and
/// in none once dropped (the watcher ended).
#[derive(Debug, Default)]
pub struct WatcherGauge {
    state: Option<WatcherState>,
}

impl WatcherGauge {
    pub fn set(&mut self, state: WatcherState) {
        if self.state == Some(state) {
            return;
        }
        let family = &global().watcher_sessions;
        if let Some(old) = self.state.replace(state) {
            family
                .get_or_create(&[("state", old.label().to_owned())])
                .dec();
        }
        family
            .get_or_create(&[("state", state.label().to_owned())])
            .inc();
    }
}

impl Drop for WatcherGauge {
    fn drop(&mut self) {
        if let Some(old) = self.state.take() {
            global()
                .watcher_sessions
                .get_or_create(&[("state", old.label().to_owned())])
                .dec();
        }
    }
}

/// Gauges read from the database when `/metrics` is scraped.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// (metric, label value, count) as `Store::metric_counts` gives them: `accounts` by
    /// state, `outbox` and `webhook_deliveries` by status.
    pub counts: Vec<(&'static str, String, i64)>,
    /// argon2 hashes and verifications run since start.
    pub password_hashes: u64,
    /// Seconds since the oldest message still waiting in the outbox (queued or being sent)
    /// was accepted; 0 when none waits.
    pub oldest_queued_secs: i64,
    /// (app id, seconds until its client secret expires; negative once expired), for the
    /// apps whose secret has an expiry date.
    pub secret_expiry: Vec<(i64, i64)>,
}

/// The whole `/metrics` body: the snapshot's gauges, then this process's counters, in the
/// Prometheus text format ([`CONTENT_TYPE`]).
pub fn render(snapshot: &Snapshot) -> String {
    let mut r = Registry::default();
    for (metric, label, help) in [
        ("accounts", "state", "Mail accounts by state"),
        ("outbox", "status", "Messages in the outbox by status"),
        (
            "webhook_deliveries",
            "status",
            "Webhook deliveries by status",
        ),
    ] {
        let family = Family::<Labels1, Gauge>::default();
        for (_, key, n) in snapshot.counts.iter().filter(|(m, _, _)| *m == metric) {
            family.get_or_create(&[(label, key.clone())]).set(*n);
        }
        r.register(format!("mailgate_{metric}"), help, family);
    }
    // A counter, not a gauge: a sign-in refused by the lock-out, or a setup POST with a bad
    // token, must not move it (argon2 is the expensive part an attacker wants us to run).
    let hashes = Counter::<u64>::default();
    hashes.inc_by(snapshot.password_hashes);
    r.register(
        "mailgate_password_hashes",
        "argon2 hashes and verifications run since start",
        hashes,
    );
    let oldest = Gauge::<i64>::default();
    oldest.set(snapshot.oldest_queued_secs);
    r.register(
        "mailgate_outbox_oldest_queued_seconds",
        "Age of the oldest message still waiting to be sent (0 when none waits)",
        oldest,
    );
    let expiry = Family::<Labels1, Gauge>::default();
    for (app, secs) in &snapshot.secret_expiry {
        expiry.get_or_create(&[("app", app.to_string())]).set(*secs);
    }
    r.register(
        "mailgate_app_secret_expiry_seconds",
        "Seconds until each app's client secret expires (negative once expired), by app id",
        expiry,
    );
    global().register(&mut r);
    let mut text = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_text::encode(&mut text, &r);
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watcher_gauge_counts_each_watcher_once_and_forgets_it_when_dropped() {
        let count = |s: WatcherState| {
            global()
                .watcher_sessions
                .get_or_create(&[("state", s.label().to_owned())])
                .get()
        };
        let (c0, r0) = (
            count(WatcherState::Connected),
            count(WatcherState::Retrying),
        );
        let mut g = WatcherGauge::default();
        g.set(WatcherState::Connected);
        g.set(WatcherState::Connected);
        assert_eq!(count(WatcherState::Connected), c0 + 1);
        g.set(WatcherState::Retrying);
        assert_eq!(count(WatcherState::Connected), c0);
        assert_eq!(count(WatcherState::Retrying), r0 + 1);
        drop(g);
        assert_eq!(count(WatcherState::Retrying), r0);
    }

    #[test]
    fn render_names_every_family_in_the_prometheus_text_format() {
        let text = render(&Snapshot {
            counts: vec![("accounts", "reauth_required".into(), 2)],
            password_hashes: 3,
            oldest_queued_secs: 7,
            secret_expiry: vec![(4, -5)],
        });
        for line in [
            "# TYPE mailgate_accounts gauge",
            "mailgate_accounts{state=\"reauth_required\"} 2",
            "mailgate_password_hashes_total 3",
            "mailgate_outbox_oldest_queued_seconds 7",
            "mailgate_app_secret_expiry_seconds{app=\"4\"} -5",
            "# TYPE mailgate_password_hashes_total counter",
        ] {
            assert!(text.lines().any(|l| l == line), "{line} in:\n{text}");
        }
    }
}
