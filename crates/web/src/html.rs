//! The admin pages' shared pieces, written as HTML strings: the page frame, the store-error
//! page (`unavailable`) and the problem summary; every value goes through `escape`.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};

pub use mailgate_core::html::escape;

/// An account's last problem: the remediation and its code, escaped; empty for none.
pub fn problem_summary(problem: Option<&mailgate_core::account::Problem>) -> String {
    problem
        .map(|p| {
            format!(
                "{} <code>{}</code>",
                escape(&p.remediation),
                escape(&p.code)
            )
        })
        .unwrap_or_default()
}

/// The one answer of the admin pages when the store fails: the error goes to the log, not
/// to the page (it may name a file or a query), and nothing was changed.
pub fn unavailable(e: impl std::fmt::Display) -> Response {
    tracing::error!(error = %e, "admin page: store error");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        "<h1 class=\"bad\">The database is unavailable</h1><p>Nothing was changed. Try again shortly.</p>",
    )
}

/// The answer when the operating system's random generator fails: nothing was done,
/// because every secret, id and session value needs it.
pub fn random_failed(e: mailgate_core::random::RandomFailed) -> Response {
    tracing::error!(error = %e, "admin page: no randomness");
    page(
        StatusCode::SERVICE_UNAVAILABLE,
        "Unavailable",
        "<h1 class=\"bad\">The server's random number generator failed</h1><p>Nothing was changed. Try again shortly.</p>",
    )
}

/// A page whose `body` is already-escaped HTML.
pub fn page(status: StatusCode, title: &str, body: &str) -> Response {
    let html = format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\"><title>{t} — mailgate</title>\
<style>body{{font:16px/1.5 system-ui,sans-serif;max-width:64rem;margin:3rem auto;padding:0 1rem;color:#222}}h1{{font-size:1.4rem}}.ok{{color:#176b2c}}.bad{{color:#a3231f}}.warn{{color:#8a5a00}}.badge{{border:1px solid;border-radius:.6rem;padding:0 .4rem;font-size:.85rem}}table{{border-collapse:collapse}}td,th{{border-bottom:1px solid #ddd;padding:.2rem .5rem;text-align:left}}nav form button{{font-size:.85rem}}code{{background:#f3f3f3;padding:0 .2rem}}</style>\
</head><body>{body}</body></html>",
        t = escape(title)
    );
    (
        status,
        [
            ("cache-control", "no-store"),
            ("referrer-policy", "no-referrer"),
        ],
        Html(html),
    )
        .into_response()
}
