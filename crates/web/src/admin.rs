//! The admin screens (server-rendered). This first slice: dashboard, apps, accounts,
//! events, and removing an app; the forms arrive with the rest of the admin UI.

use crate::auth::Session;
use crate::html::unavailable;
use crate::html::{escape, page, problem_summary};
use crate::{AppState, redirect_uri};
use axum::extract::{Form, Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailgate_core::AccountState;
use serde::Deserialize;

/// The frame every admin page shares: navigation and the sign-out form.
pub(crate) fn layout(session: &Session, title: &str, body: &str) -> Response {
    let nav = format!(
        "<nav><a href=\"/admin\">Dashboard</a> · <a href=\"/admin/apps\">OAuth apps</a> · <a href=\"/admin/accounts\">Mail accounts</a> · <a href=\"/admin/events\">Events</a> · <a href=\"/admin/webhooks\">Webhooks</a>{tokens}\
<form method=\"post\" action=\"/logout\" style=\"display:inline;float:right\">{csrf}<span>{user} ({role})</span> <button type=\"submit\">Sign out</button></form></nav><hr>",
        // Only administrators may manage API tokens and users; operators are not shown the
        // way there.
        tokens = if session.user.role == mailgate_core::user::Role::Admin {
            " · <a href=\"/admin/api-tokens\">API tokens</a> · <a href=\"/admin/users\">Users</a>"
        } else {
            ""
        },
        csrf = session.csrf_field(),
        user = escape(&session.user.username),
        role = session.user.role
    );
    page(StatusCode::OK, title, &format!("{nav}{body}"))
}

fn badge(state: AccountState) -> String {
    let class = match state {
        AccountState::Active | AccountState::Refreshing => "ok",
        AccountState::ReauthRequired => "bad",
        AccountState::Unauthorized | AccountState::Disabled => "warn",
    };
    format!(
        "<span class=\"badge {class}\">{}</span>",
        state.as_str().replace('_', " ")
    )
}

/// The seeds' "base URL must match the redirect" pitfall, caught where the administrator
/// looks: a warning when the public URL is plain http on a non-loopback host, or differs
/// from the address the browser used.
pub(crate) fn public_url_warnings(state: &AppState, headers: &axum::http::HeaderMap) -> String {
    let url = state.public_url.url();
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let mut out = String::new();
    if url.scheme() == "http" && !loopback {
        out.push_str(&format!(
            "<p class=\"warn\" id=\"public-url-warning\">The public URL {} is plain http on a non-local host: providers refuse http redirect URIs except for localhost, and cookies travel unencrypted. Set MAILGATE_PUBLIC_URL to an https URL.</p>",
            escape(state.public_url.as_str())
        ));
    }
    let seen = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let expected = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    if !seen.is_empty() && !seen.eq_ignore_ascii_case(&expected) {
        out.push_str(&format!(
            "<p class=\"warn\" id=\"public-url-mismatch\">You reached mailgate at {} but its public URL is {}. The redirect URI uses the public URL, so the provider will send the browser there; set MAILGATE_PUBLIC_URL to the address people use.</p>",
            escape(seen),
            escape(state.public_url.as_str())
        ));
    }
    out
}

pub async fn dashboard(
    State(state): State<AppState>,
    session: Session,
    headers: axum::http::HeaderMap,
) -> Response {
    let (accounts, apps, events) = match tokio_join(&state).await {
        Ok(x) => x,
        Err(e) => return unavailable(e),
    };
    let today = state.clock.now().date();
    let test_outcomes = match state
        .store
        .events_of_kinds(
            &[
                mailgate_core::event::EventKind::TestPassed,
                mailgate_core::event::EventKind::TestFailed,
            ],
            500,
        )
        .await
    {
        Ok(e) => e,
        Err(e) => return unavailable(e),
    };
    let mut attention = String::new();
    let mut sorted = accounts.clone();
    // Accounts needing attention first: re-authorization, then never authorized, then problems.
    sorted.sort_by_key(|a| match a.state {
        AccountState::ReauthRequired => 0,
        AccountState::Unauthorized => 1,
        _ if a.last_problem.is_some() => 2,
        _ => 3,
    });
    for a in sorted
        .iter()
        .filter(|a| a.state != AccountState::Active || a.last_problem.is_some())
    {
        let problem = problem_summary(a.last_problem.as_ref());
        attention.push_str(&format!(
            "<li>{} <strong>{}</strong> ({}) {problem}</li>",
            badge(a.state),
            escape(a.spec.name.as_str()),
            escape(a.spec.mailbox.as_str())
        ));
    }
    // Accounts whose latest "Test configuration" failed (events are newest first).
    for a in &accounts {
        let last_test = test_outcomes.iter().find(|e| e.account_id == Some(a.id));
        if let Some(e) = last_test.filter(|e| e.kind == mailgate_core::event::EventKind::TestFailed)
        {
            attention.push_str(&format!(
                "<li><span class=\"badge bad\">last test failed</span> <a href=\"/admin/accounts/{}\">{}</a>: {}</li>",
                a.id,
                escape(a.spec.name.as_str()),
                escape(&e.message)
            ));
        }
    }
    for app in &apps {
        if let (Some(exp), Some(today)) = (app.spec.secret_expires, today) {
            let days = (exp - today).whole_days();
            if days <= 30 {
                attention.push_str(&format!(
                    "<li><span class=\"badge {}\">secret {}</span> app <strong>{}</strong>: the client secret {} on {exp}</li>",
                    if days < 0 { "bad" } else { "warn" },
                    if days < 0 { "expired" } else { "expiring" },
                    escape(app.spec.name.as_str()),
                    if days < 0 { "expired" } else { "expires" }
                ));
            }
        }
    }
    if attention.is_empty() {
        attention = "<li>Nothing needs attention.</li>".into();
    }
    let recent: String = events
        .iter()
        .map(|e| {
            format!(
                "<li><code>{}</code> {} {}</li>",
                e.at,
                escape(e.kind.as_str()),
                escape(&e.message)
            )
        })
        .collect();
    layout(
        &session,
        "Dashboard",
        &format!(
            "<h1>Dashboard</h1>{}<p>Public URL: <code>{}</code> — redirect URI <code>{}</code></p>{}<h2>Needs attention</h2><ul>{attention}</ul><h2>Recent events</h2><ul>{recent}</ul>",
            public_url_warnings(&state, &headers),
            escape(state.public_url.as_str()),
            escape(&redirect_uri(&state.public_url)),
            proxy_line(&state)
        ),
    )
}

/// Which legacy-proxy listeners are on, and where (docs/proxy.md).
fn proxy_line(state: &AppState) -> String {
    if state.proxy_listeners.is_empty() {
        return "<p id=\"proxy-listeners\">Legacy proxy: off (no <code>proxy_*_listen</code> set).</p>".into();
    }
    let listeners: Vec<String> = state
        .proxy_listeners
        .iter()
        .map(|l| format!("<code>{}</code>", escape(l)))
        .collect();
    format!(
        "<p id=\"proxy-listeners\">Legacy proxy: {}.</p>",
        listeners.join(", ")
    )
}

async fn tokio_join(
    state: &AppState,
) -> Result<
    (
        Vec<mailgate_core::MailAccount>,
        Vec<mailgate_core::OAuthApp>,
        Vec<mailgate_core::event::Event>,
    ),
    mailgate_store::StoreError,
> {
    Ok((
        state.store.list_accounts().await?,
        state.store.list_apps().await?,
        state.store.events(None, 20).await?,
    ))
}

pub async fn apps(State(state): State<AppState>, session: Session) -> Response {
    let apps = match state.store.list_apps().await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let redirect = redirect_uri(&state.public_url);
    let mut rows = String::new();
    let is_admin = session.user.role == mailgate_core::user::Role::Admin;
    for app in &apps {
        let s = &app.spec;
        // Operators see the apps but change none of them: no edit link, no remove button.
        let name = if is_admin {
            format!(
                "<a href=\"/admin/apps/{}\">{}</a>",
                app.id,
                escape(s.name.as_str())
            )
        } else {
            escape(s.name.as_str())
        };
        let remove = if is_admin {
            format!(
                "<form method=\"post\" action=\"/admin/apps/{}/remove\">{}<button type=\"submit\">Remove</button></form>",
                app.id,
                session.csrf_field()
            )
        } else {
            String::new()
        };
        rows.push_str(&format!(
            "<tr><td>{}</td><td>{name}</td><td>{}</td><td><code>{}</code></td><td>{}</td><td>{}</td><td>{remove}</td></tr>",
            app.id,
            s.kind,
            escape(s.client_id.as_str()),
            s.client_secret.as_ref().map(|x| escape(&x.hint())).unwrap_or_else(|| "not set".into()),
            s.secret_expires.map(|d| d.to_string()).unwrap_or_default(),
        ));
    }
    layout(
        &session,
        "OAuth apps",
        &format!(
            "<h1>OAuth apps</h1><p>Redirect URI to register at the provider (platform \"Web\"): <input id=\"redirect-uri\" readonly size=\"50\" value=\"{r}\"> \
<button type=\"button\" onclick=\"navigator.clipboard.writeText(document.getElementById('redirect-uri').value)\">Copy</button></p>\
{new_app}<table><tr><th>id</th><th>name</th><th>kind</th><th>client id</th><th>client secret</th><th>secret expires</th><th></th></tr>{rows}</table>",
            r = escape(&redirect),
            new_app = if is_admin {
                "<p><a href=\"/admin/apps/new\" id=\"new-app\">New OAuth app</a></p>"
            } else {
                ""
            },
        ),
    )
}

pub async fn accounts(State(state): State<AppState>, session: Session) -> Response {
    let accounts = match state.store.list_accounts().await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let expiries = match state.store.token_expiries().await {
        Ok(e) => e,
        Err(e) => return unavailable(e),
    };
    let new_account = if session.user.role == mailgate_core::user::Role::Admin {
        "<p><a href=\"/admin/accounts/new\" id=\"new-account\">New mail account</a></p>"
    } else {
        ""
    };
    let rows: String = accounts
        .iter()
        .map(|a| {
            format!(
                "<tr><td>{}</td><td><a href=\"/admin/accounts/{}\">{}</a></td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                a.id,
                a.id,
                escape(a.spec.name.as_str()),
                badge(a.state),
                escape(a.spec.mailbox.as_str()),
                expiries.get(&a.id).copied().flatten().map(|t| t.to_string()).unwrap_or_else(|| "—".into()),
                problem_summary(a.last_problem.as_ref())
            )
        })
        .collect();
    layout(
        &session,
        "Mail accounts",
        &format!(
            "<h1>Mail accounts</h1>{new_account}<table><tr><th>id</th><th>name</th><th>state</th><th>mailbox</th><th>token valid until</th><th>last problem</th></tr>{rows}</table>"
        ),
    )
}

/// The events page's filter (the audit trail): `?actor=` (a user name, `api-token:NAME`,
/// `cli:USER`, or `cli` / `api-token` for every one of that kind) and `?since=`.
#[derive(Deserialize)]
pub struct EventsFilter {
    actor: Option<String>,
    since: Option<String>,
}

pub async fn events(
    State(state): State<AppState>,
    session: Session,
    Query(q): Query<EventsFilter>,
) -> Response {
    let actor = q.actor.filter(|a| !a.trim().is_empty());
    let since_text = q.since.filter(|s| !s.trim().is_empty());
    let since = since_text
        .as_deref()
        .map(mailgate_core::event::parse_since)
        .transpose();
    let form = format!(
        "<form method=\"get\" action=\"/admin/events\"><label>Who <input name=\"actor\" value=\"{}\" placeholder=\"admin, api-token, cli\"></label> <label>Since <input name=\"since\" value=\"{}\" placeholder=\"YYYY-MM-DD\"></label> <button>Filter</button></form>",
        escape(actor.as_deref().unwrap_or_default()),
        escape(since_text.as_deref().unwrap_or_default()),
    );
    let since = match since {
        Ok(s) => s,
        Err(e) => {
            let body = format!(
                "<h1>Events</h1>{form}<p class=\"bad\">Since: {}</p>",
                escape(&e)
            );
            return (
                StatusCode::UNPROCESSABLE_ENTITY,
                layout(&session, "Events", &body),
            )
                .into_response();
        }
    };
    let filter = mailgate_store::EventFilter {
        actor,
        since,
        account: None,
        limit: 200,
    };
    let events = match state.store.audit_events(&filter).await {
        Ok(e) => e,
        Err(e) => return unavailable(e),
    };
    let rows: String = events
        .iter()
        .map(|e| {
            let who = match (&e.actor, &e.source) {
                (Some(a), Some(s)) => format!("{a} from {s}"),
                (Some(a), None) => a.clone(),
                _ => String::new(),
            };
            format!(
                "<tr><td><code>{}</code></td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e.at,
                escape(e.kind.as_str()),
                escape(&e.message),
                escape(&who)
            )
        })
        .collect();
    layout(
        &session,
        "Events",
        &format!(
            "<h1>Events</h1>{form}<table><tr><th>when (UTC)</th><th>event</th><th>what</th><th>who</th></tr>{rows}</table>"
        ),
    )
}

#[derive(Deserialize)]
pub struct CsrfOnly {
    csrf: Option<String>,
}

/// Removes an app (administrators only; refused while accounts use it).
pub async fn remove_app(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<CsrfOnly>,
) -> Response {
    if let Err(r) = session.admin_form(f.csrf.as_deref()) {
        return r;
    }
    use mailgate_usecase::{ChangeError, changes};
    let removed = changes::remove_app(&state.store, mailgate_core::AppId(id), state.clock.now());
    match removed.await {
        Ok(()) => Redirect::to("/admin/apps").into_response(),
        Err(ChangeError::Store(
            e
            @ (mailgate_store::StoreError::InUse(_) | mailgate_store::StoreError::NotFound { .. }),
        )) => page(
            StatusCode::CONFLICT,
            "Cannot remove",
            &format!(
                "<h1 class=\"bad\">Cannot remove the app</h1><p>{}</p><p><a href=\"/admin/apps\">Back</a></p>",
                escape(&e.to_string())
            ),
        ),
        Err(e) => unavailable(e),
    }
}
