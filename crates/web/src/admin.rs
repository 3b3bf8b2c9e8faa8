//! The admin screens that list things: dashboard, apps, accounts, events, and removing an
//! app. The forms are in `forms.rs`; the page kit in `html.rs`.

use crate::auth::{AdminForm, NoFields, OperatorSession};
use crate::html::{Frame, Nav, PageError, render, state_badge};
use crate::{AppState, redirect_uri};
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailgate_core::AccountState;
use mailgate_core::event::{Event, EventKind};

/// The seeds' "base URL must match the redirect" pitfall, caught where the administrator
/// looks: a warning when the public URL is plain http on a non-loopback host, or differs
/// from the address the browser used.
pub(crate) struct PublicUrlWarnings {
    /// The public URL, when it is plain http on a non-local host.
    pub insecure: Option<String>,
    /// (the address the browser used, the public URL) when they differ.
    pub mismatch: Option<(String, String)>,
}

pub(crate) fn public_url_warnings(
    state: &AppState,
    headers: &axum::http::HeaderMap,
) -> PublicUrlWarnings {
    let url = state.public_url.url();
    let host = url.host_str().unwrap_or_default();
    let loopback = host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    let insecure = (url.scheme() == "http" && !loopback).then(|| state.public_url.to_string());
    let seen = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or_default();
    let expected = match url.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_owned(),
    };
    let mismatch = (!seen.is_empty() && !seen.eq_ignore_ascii_case(&expected))
        .then(|| (seen.to_owned(), state.public_url.to_string()));
    PublicUrlWarnings { insecure, mismatch }
}

/// One line of the dashboard's "Needs attention".
pub(crate) struct Attention {
    pub badge_class: &'static str,
    pub badge: String,
    /// The account's page, when the line is about an account.
    pub link: Option<String>,
    pub subject: String,
    pub detail: String,
    /// The remediation code, linked to its help entry.
    pub code: Option<String>,
}

/// An at-a-glance number of the dashboard.
pub(crate) struct Card {
    /// The element id (`card-…`), for links and tests.
    pub id: &'static str,
    pub label: &'static str,
    pub value: usize,
    pub class: &'static str,
    pub href: &'static str,
}

#[derive(Template)]
#[template(path = "dashboard.html")]
struct DashboardPage {
    frame: Frame,
    title: &'static str,
    warnings: PublicUrlWarnings,
    public_url: String,
    redirect_uri: String,
    proxy_listeners: Vec<String>,
    cards: Vec<Card>,
    chart: crate::chart::Chart,
    next_steps: Vec<(&'static str, &'static str, bool)>,
    attention: Vec<Attention>,
    recent: Vec<Event>,
}

pub async fn dashboard(
    State(state): State<AppState>,
    OperatorSession(session): OperatorSession,
    headers: axum::http::HeaderMap,
) -> Result<Response, PageError> {
    let accounts = state.store.list_accounts().await?;
    let apps = state.store.list_apps().await?;
    let recent = state.store.events(None, 20).await?;
    let now = state.clock.now();
    let today = now.date();
    let test_outcomes = state
        .store
        .events_of_kinds(&[EventKind::TestPassed, EventKind::TestFailed], 500)
        .await?;
    let mut attention = Vec::new();
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
        let (badge_class, badge) = state_badge(a.state, a.last_problem.as_ref());
        attention.push(Attention {
            badge_class,
            badge,
            link: Some(format!("/admin/accounts/{}", a.id)),
            subject: a.spec.name.to_string(),
            detail: match &a.last_problem {
                Some(p) => format!("({}) {}", a.spec.mailbox, p.remediation),
                None => format!("({})", a.spec.mailbox),
            },
            code: a.last_problem.as_ref().map(|p| p.code.clone()),
        });
    }
    // Accounts whose last test failed or whose inbound watch is failing, as the accounts
    // list shows them.
    let failing = recent_failures(&state).await?;
    for a in &accounts {
        if let Some(why) = failing.get(&a.id) {
            attention.push(Attention {
                badge_class: "bad",
                badge: "failing".into(),
                link: Some(format!("/admin/accounts/{}", a.id)),
                subject: a.spec.name.to_string(),
                detail: why.words().to_owned(),
                code: None,
            });
        }
    }
    let mut expiring = 0;
    for app in &apps {
        if let (Some(exp), Some(today)) = (app.spec.secret_expires, today) {
            let days = (exp - today).whole_days();
            if days <= 30 {
                expiring += 1;
                let expired = days < 0;
                attention.push(Attention {
                    badge_class: if expired { "bad" } else { "warn" },
                    badge: if expired {
                        "secret expired"
                    } else {
                        "secret expiring"
                    }
                    .into(),
                    link: None,
                    subject: format!("app {}", app.spec.name),
                    detail: format!(
                        ": the client secret {} on {exp}",
                        if expired { "expired" } else { "expires" }
                    ),
                    code: None,
                });
            }
        }
    }
    let count =
        |f: &dyn Fn(&mailgate_core::MailAccount) -> bool| accounts.iter().filter(|a| f(a)).count();
    let metric = state.store.metric_counts().await?;
    let metric_of = |m: &str, key: &str| {
        metric
            .iter()
            .filter(|(mm, k, _)| *mm == m && k == key)
            .map(|(_, _, n)| *n as usize)
            .sum::<usize>()
    };
    let cards = vec![
        Card {
            id: "card-accounts-active",
            label: "accounts active",
            value: count(&|a| {
                a.state == AccountState::Active
                    && a.last_problem.is_none()
                    && !failing.contains_key(&a.id)
            }),
            class: "ok",
            href: "/admin/accounts",
        },
        Card {
            id: "card-accounts-attention",
            label: "accounts needing attention",
            value: count(&|a| {
                a.state != AccountState::Active
                    || a.last_problem.is_some()
                    || failing.contains_key(&a.id)
            }),
            class: "bad",
            href: "/admin/accounts",
        },
        Card {
            id: "card-secrets-expiring",
            label: "client secrets expiring",
            value: expiring,
            class: "warn",
            href: "/admin/apps",
        },
        Card {
            id: "card-outbox-queued",
            label: "outbox queued",
            value: metric_of("outbox", "queued"),
            class: "",
            href: "/admin/events",
        },
        Card {
            id: "card-outbox-failed",
            label: "outbox failed",
            value: metric_of("outbox", "failed"),
            class: "bad",
            href: "/admin/events",
        },
        Card {
            id: "card-webhooks-failed",
            label: "webhook deliveries failed",
            value: metric_of("webhook_deliveries", "failed"),
            class: "bad",
            href: "/admin/webhooks",
        },
    ];
    let day_events = state.store.events(None, 5000).await?;
    let chart = crate::chart::Chart::last_24h(&day_events, now);
    // The guided first run: what comes next, done steps ticked.
    let authorized = accounts
        .iter()
        .any(|a| matches!(a.state, AccountState::Active | AccountState::Refreshing));
    let tested = test_outcomes
        .iter()
        .any(|e| e.kind == EventKind::TestPassed);
    let next_steps = if tested && authorized {
        Vec::new()
    } else {
        vec![
            ("Add an OAuth app", "/admin/apps", !apps.is_empty()),
            (
                "Add a mail account",
                "/admin/accounts",
                !accounts.is_empty(),
            ),
            ("Authorize the account", "/admin/accounts", authorized),
            ("Test its configuration", "/admin/accounts", tested),
        ]
    };
    Ok(render(
        StatusCode::OK,
        &DashboardPage {
            frame: session.frame(Nav::Dashboard),
            title: "Dashboard",
            warnings: public_url_warnings(&state, &headers),
            public_url: state.public_url.to_string(),
            redirect_uri: redirect_uri(&state.public_url),
            proxy_listeners: state.proxy_listeners.to_vec(),
            cards,
            chart,
            next_steps,
            attention,
            recent,
        },
    ))
}

/// One row of the apps list.
struct AppRow {
    id: i64,
    name: String,
    kind: String,
    client_id: String,
    secret: String,
    expires: String,
    /// "expired" when the secret's date has passed: the list says so in red.
    expired: bool,
}

#[derive(Template)]
#[template(path = "apps.html")]
struct AppsPage {
    frame: Frame,
    title: &'static str,
    redirect_uri: String,
    is_admin: bool,
    csrf: String,
    rows: Vec<AppRow>,
}

pub async fn apps(
    State(state): State<AppState>,
    OperatorSession(session): OperatorSession,
) -> Result<Response, PageError> {
    let apps = state.store.list_apps().await?;
    let today = state.clock.now().date();
    let rows = apps
        .iter()
        .map(|app| {
            let s = &app.spec;
            AppRow {
                id: app.id.0,
                name: s.name.to_string(),
                kind: s.kind.to_string(),
                client_id: s.client_id.to_string(),
                secret: s
                    .client_secret
                    .as_ref()
                    .map(|x| x.hint())
                    .unwrap_or_else(|| "not set".into()),
                expires: s.secret_expires.map(|d| d.to_string()).unwrap_or_default(),
                expired: matches!((s.secret_expires, today), (Some(e), Some(t)) if e < t),
            }
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &AppsPage {
            frame: session.frame(Nav::Apps),
            title: "OAuth apps",
            redirect_uri: redirect_uri(&state.public_url),
            is_admin: session.is_admin(),
            csrf: session.csrf.clone(),
            rows,
        },
    ))
}

/// One row of the accounts list.
struct AccountRow {
    id: i64,
    name: String,
    badge_class: &'static str,
    badge: String,
    mailbox: String,
    token_until: String,
    problem: Option<mailgate_core::account::Problem>,
    /// The newest "Test configuration" failed, or the inbound watcher's newest news is a
    /// failure: what it said. Shown as the last problem when the account has no other.
    recent_failure: Option<String>,
}

/// Why an account whose grant works is "failing".
pub(crate) enum Failing {
    /// The last stored test failed (the account page shows it as its last test).
    LastTest(String),
    /// The inbound watch's newest news is a failure.
    Inbound(String),
}

impl Failing {
    pub(crate) fn words(&self) -> &str {
        match self {
            Failing::LastTest(words) | Failing::Inbound(words) => words,
        }
    }
}

/// Per account, what makes it "failing" though its grant works: the last stored test
/// failed (first), or the inbound watch's newest news is a failure. The accounts list, the
/// account page and the dashboard all show it, so they agree.
pub(crate) async fn recent_failures(
    state: &AppState,
) -> Result<std::collections::HashMap<mailgate_core::AccountId, Failing>, PageError> {
    let mut failing: std::collections::HashMap<_, _> = inbound_failures(
        &state
            .store
            .events_of_kinds(
                &[EventKind::InboundWatching, EventKind::InboundFailed],
                1000,
            )
            .await?,
    )
    .into_iter()
    .map(|(id, words)| (id, Failing::Inbound(words)))
    .collect();
    for (id, t) in state.store.test_results().await? {
        if !t.passed {
            let code = t.code.as_deref().map(|c| format!(" [{c}]"));
            failing.insert(
                id,
                Failing::LastTest(format!(
                    "last test failed at \"{}\"{}",
                    t.failed_step.as_deref().unwrap_or("?"),
                    code.unwrap_or_default()
                )),
            );
        }
    }
    Ok(failing)
}

/// An account's badge: its state, and "failing" rather than a green "active" when a
/// problem is recorded or it is failing otherwise ([`recent_failures`]).
pub(crate) fn account_badge(
    account: &mailgate_core::MailAccount,
    failing: Option<&Failing>,
) -> (&'static str, String) {
    let (class, words) = state_badge(account.state, account.last_problem.as_ref());
    match failing {
        Some(_) if class == "ok" => ("bad", "failing".into()),
        _ => (class, words),
    }
}

/// Per account, the newest inbound-watch failure that no later "watching" has cleared
/// (events are newest first).
fn inbound_failures(
    events: &[Event],
) -> std::collections::HashMap<mailgate_core::AccountId, String> {
    let mut seen = std::collections::HashSet::new();
    let mut out = std::collections::HashMap::new();
    for e in events {
        let Some(id) = e.account_id else { continue };
        let failed = match e.kind {
            EventKind::InboundWatching => false,
            EventKind::InboundFailed => true,
            _ => continue,
        };
        if seen.insert(id) && failed {
            out.insert(id, format!("inbound failed: {}", e.message));
        }
    }
    out
}

#[derive(Template)]
#[template(path = "accounts.html")]
struct AccountsPage {
    frame: Frame,
    title: &'static str,
    is_admin: bool,
    rows: Vec<AccountRow>,
    removed: bool,
}

pub async fn accounts(
    State(state): State<AppState>,
    OperatorSession(session): OperatorSession,
    axum::extract::Query(done): axum::extract::Query<crate::forms::Done>,
) -> Result<Response, PageError> {
    let accounts = state.store.list_accounts().await?;
    let expiries = state.store.token_expiries().await?;
    let mut failing = recent_failures(&state).await?;
    let rows = accounts
        .into_iter()
        .map(|a| {
            let recent_failure = failing.remove(&a.id);
            let (badge_class, badge) = account_badge(&a, recent_failure.as_ref());
            AccountRow {
                recent_failure: recent_failure.map(|f| f.words().to_owned()),
                id: a.id.0,
                name: a.spec.name.to_string(),
                badge_class,
                badge,
                mailbox: a.spec.mailbox.to_string(),
                token_until: expiries
                    .get(&a.id)
                    .copied()
                    .flatten()
                    .map(|t| t.to_string())
                    .unwrap_or_else(|| "—".into()),
                problem: a.last_problem,
            }
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &AccountsPage {
            frame: session.frame(Nav::Accounts),
            title: "Mail accounts",
            is_admin: session.is_admin(),
            rows,
            removed: done.is("removed"),
        },
    ))
}

#[derive(Template)]
#[template(path = "events.html")]
struct EventsPage {
    frame: Frame,
    title: &'static str,
    events: Vec<Event>,
    /// The filter as given, shown back in its form.
    actor: String,
    since: String,
    /// What is wrong with `since`, if anything.
    since_error: Option<String>,
}

/// The events page's filter (the audit trail): `?actor=` (a user name, `api-token:NAME`,
/// `cli:USER`, or `cli` / `api-token` for every one of that kind) and `?since=`.
#[derive(serde::Deserialize)]
pub struct EventsFilter {
    actor: Option<String>,
    since: Option<String>,
}

pub async fn events(
    State(state): State<AppState>,
    OperatorSession(session): OperatorSession,
    axum::extract::Query(q): axum::extract::Query<EventsFilter>,
) -> Result<Response, PageError> {
    let actor = q.actor.filter(|a| !a.trim().is_empty());
    let since_text = q.since.filter(|s| !s.trim().is_empty());
    let mut page = EventsPage {
        frame: session.frame(Nav::Events),
        title: "Events",
        events: Vec::new(),
        actor: actor.clone().unwrap_or_default(),
        since: since_text.clone().unwrap_or_default(),
        since_error: None,
    };
    let since = match since_text
        .as_deref()
        .map(mailgate_core::event::parse_since)
        .transpose()
    {
        Ok(s) => s,
        Err(e) => {
            page.since_error = Some(e);
            return Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &page));
        }
    };
    let filter = mailgate_store::EventFilter {
        actor,
        since,
        account: None,
        limit: 200,
    };
    page.events = state.store.audit_events(&filter).await?;
    Ok(render(StatusCode::OK, &page))
}

#[derive(serde::Deserialize)]
pub struct RemoveAccountForm {
    /// The box "Yes, remove it" ticked: the removal asks first even without the script.
    confirm: Option<String>,
}

/// Removes an account and its grant (administrators only), once confirmed.
pub async fn remove_account(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    AdminForm(session, f): AdminForm<RemoveAccountForm>,
) -> Result<Response, PageError> {
    let account = state.store.account(mailgate_core::AccountId(id)).await?;
    if f.confirm.as_deref() != Some("yes") {
        return Err(PageError::Other {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            title: "Not removed".into(),
            message: format!(
                "Tick \"Yes, remove {}\" to confirm. Nothing was changed.",
                account.spec.name
            ),
        });
    }
    mailgate_usecase::changes::remove_account(&state.store, account.id, state.clock.now()).await?;
    // A watcher may be running for it.
    state.watchers.notify_one();
    tracing::info!(account = %account.spec.name.as_str(), user = %session.user.username, "account removed");
    Ok(Redirect::to("/admin/accounts?done=removed").into_response())
}

/// Removes an app (administrators only; refused while accounts use it).
pub async fn remove_app(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    AdminForm(_session, NoFields {}): AdminForm<NoFields>,
) -> Result<Response, PageError> {
    use mailgate_usecase::{ChangeError, changes};
    match changes::remove_app(&state.store, mailgate_core::AppId(id), state.clock.now()).await {
        Ok(()) => Ok(Redirect::to("/admin/apps").into_response()),
        Err(ChangeError::Store(
            e
            @ (mailgate_store::StoreError::InUse(_) | mailgate_store::StoreError::NotFound { .. }),
        )) => Err(PageError::Conflict {
            title: "Cannot remove the app".into(),
            message: e.to_string(),
        }),
        Err(ChangeError::Store(e)) => Err(e.into()),
        Err(other) => Err(PageError::Conflict {
            title: "Cannot remove the app".into(),
            message: other.to_string(),
        }),
    }
}
