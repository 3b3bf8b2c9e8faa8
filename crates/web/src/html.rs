//! The page kit of the admin UI: the frame every page shares ([`Frame`], rendered by
//! `templates/base.html`), [`render`] for a page template, the one error type of the pages
//! ([`PageError`]), and the static files the pages load (stylesheet, script, favicon).
//!
//! Pages are askama templates under `crates/web/templates/`, so every value is escaped by
//! construction: no handler builds HTML with `format!`.

use askama::Template;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use mailgate_core::user::Role;

/// The navigation entries; the current one is marked with `aria-current="page"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Dashboard,
    Apps,
    Accounts,
    Events,
    Webhooks,
    ApiTokens,
    Users,
    Help,
    /// A page outside the navigation (sign-in, setup, errors).
    None,
}

/// One link of the navigation, as the base template draws it.
pub struct NavLink {
    pub href: &'static str,
    pub label: &'static str,
    pub current: bool,
}

/// Who is signed in, for the navigation and the sign-out form.
pub struct FrameUser {
    pub username: String,
    pub role: Role,
    pub csrf: String,
}

/// What the frame around a page needs: the signed-in user (no navigation without one) and
/// which navigation entry the page belongs to.
pub struct Frame {
    pub user: Option<FrameUser>,
    pub current: Nav,
}

impl Frame {
    /// The frame of a page seen before signing in (login, setup, the callback without a
    /// session): no navigation.
    pub fn public() -> Frame {
        Frame {
            user: None,
            current: Nav::None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.user.as_ref().is_some_and(|u| u.role == Role::Admin)
    }

    pub fn nav_links(&self) -> Vec<NavLink> {
        let mut links = vec![
            ("/admin", "Dashboard", Nav::Dashboard),
            ("/admin/apps", "OAuth apps", Nav::Apps),
            ("/admin/accounts", "Mail accounts", Nav::Accounts),
            ("/admin/events", "Events", Nav::Events),
            ("/admin/webhooks", "Webhooks", Nav::Webhooks),
        ];
        // Only administrators may manage API tokens and users; operators are not shown the
        // way there.
        if self.is_admin() {
            links.push(("/admin/api-tokens", "API tokens", Nav::ApiTokens));
            links.push(("/admin/users", "Users", Nav::Users));
        }
        links.push(("/admin/help", "Help", Nav::Help));
        links
            .into_iter()
            .map(|(href, label, nav)| NavLink {
                href,
                label,
                current: nav == self.current,
            })
            .collect()
    }
}

/// Renders a page template with the headers every admin page carries: never cached (pages
/// show tokens once, and state that changes), and no Referer leaving it.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => (
            status,
            [
                (header::CACHE_CONTROL, "no-store"),
                (header::REFERRER_POLICY, "no-referrer"),
            ],
            Html(html),
        )
            .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "admin page: template failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// The error page: a heading, what happened, and the way back.
#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    frame: Frame,
    title: &'a str,
    heading: &'a str,
    message: &'a str,
    /// Extra guidance with links (the setup page's), already known HTML-free text is not
    /// enough there; see [`PageError::SetupLink`].
    setup: Option<SetupProblem>,
    back: Option<(&'a str, &'a str)>,
}

/// Why a setup link does not open the setup page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetupProblem {
    Used,
    Expired,
}

/// Why a page could not be shown or a form not accepted. Every page handler returns
/// `Result<_, PageError>` and uses `?`; the page drawn here says what happened and that
/// nothing was changed, and a store error goes to the log, not the page (it may name a file
/// or a query).
#[derive(Debug)]
pub enum PageError {
    /// No signed-in session: the browser goes to the sign-in page.
    SignIn,
    /// The form's CSRF token is missing or wrong.
    FormExpired,
    /// An operator asked for an administrator's page or form.
    AdminsOnly,
    /// Nothing with that id (`what`: "account", "app", …).
    NotFound(&'static str),
    /// No such page under `/admin`.
    NoSuchPage,
    /// The request conflicts with what is stored (an app still in use).
    Conflict { title: String, message: String },
    /// The database did not answer; nothing was changed.
    Unavailable,
    /// The operating system's random generator failed; nothing was done.
    RandomFailed,
    /// A setup link that is used up or expired.
    SetupLink(SetupProblem),
    /// A page of its own status, title and message (text, escaped when drawn).
    Other {
        status: StatusCode,
        title: String,
        message: String,
    },
}

impl From<mailgate_store::StoreError> for PageError {
    fn from(e: mailgate_store::StoreError) -> Self {
        use mailgate_store::StoreError;
        match e {
            StoreError::NotFound { what, .. } => PageError::NotFound(what),
            e @ (StoreError::InUse(_) | StoreError::Duplicate { .. }) => PageError::Conflict {
                title: "Cannot do that".into(),
                message: e.to_string(),
            },
            e => {
                tracing::error!(error = %e, "admin page: store error");
                PageError::Unavailable
            }
        }
    }
}

/// A use case's refusal on a page without a form to show it beside (a removal): the
/// store's refusals as usual, anything else as a page with the reason.
impl From<mailgate_usecase::ChangeError> for PageError {
    fn from(e: mailgate_usecase::ChangeError) -> Self {
        match e {
            mailgate_usecase::ChangeError::Store(e) => e.into(),
            other => PageError::Other {
                status: StatusCode::UNPROCESSABLE_ENTITY,
                title: "Not changed".into(),
                message: other.to_string(),
            },
        }
    }
}

impl From<mailgate_core::random::RandomFailed> for PageError {
    fn from(e: mailgate_core::random::RandomFailed) -> Self {
        tracing::error!(error = %e, "admin page: no randomness");
        PageError::RandomFailed
    }
}

impl From<mailgate_core::app::FieldError> for PageError {
    fn from(e: mailgate_core::app::FieldError) -> Self {
        PageError::Other {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            title: "Not accepted".into(),
            message: format!(
                "{}: {}. Nothing was saved.",
                e.field.replace('_', " "),
                e.message
            ),
        }
    }
}

impl From<mailgate_grants::EngineError> for PageError {
    fn from(e: mailgate_grants::EngineError) -> Self {
        tracing::warn!(code = e.code(), error = %e, "admin page: engine error");
        PageError::Other {
            status: StatusCode::BAD_GATEWAY,
            title: "Not done".into(),
            message: format!("{e} ({})", e.code()),
        }
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        self.render_in(Frame::public())
    }
}

impl PageError {
    /// The error page inside `frame`: a signed-in user's navigation where the handler knows
    /// the session (the 404 under `/admin`), none otherwise.
    pub fn render_in(self, frame: Frame) -> Response {
        let (status, title, heading, message, back): (StatusCode, &str, String, String, _) =
            match &self {
                PageError::SignIn => return Redirect::to("/login").into_response(),
                PageError::FormExpired => (
                    StatusCode::FORBIDDEN,
                    "Form expired",
                    "This form cannot be accepted".into(),
                    "It expired or came from another site (the CSRF check failed). Go back, reload the page and try again.".into(),
                    Some(("/admin", "Back to the dashboard")),
                ),
                PageError::AdminsOnly => (
                    StatusCode::FORBIDDEN,
                    "Administrators only",
                    "Administrators only".into(),
                    "Operators may authorize and test accounts, but only an administrator can change OAuth apps, mail accounts, users and API tokens.".into(),
                    Some(("/admin", "Back to the dashboard")),
                ),
                PageError::NotFound(what) => (
                    StatusCode::NOT_FOUND,
                    "Not found",
                    format!("No such {what}"),
                    "It does not exist, or it was removed.".into(),
                    Some(("/admin", "Back to the dashboard")),
                ),
                PageError::NoSuchPage => (
                    StatusCode::NOT_FOUND,
                    "Not found",
                    "No such page".into(),
                    "The address does not lead to a page of mailgate.".into(),
                    Some(("/admin", "Back to the dashboard")),
                ),
                PageError::Conflict { title, message } => (
                    StatusCode::CONFLICT,
                    "Cannot do that",
                    title.clone(),
                    message.clone(),
                    Some(("/admin", "Back to the dashboard")),
                ),
                PageError::Unavailable => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    "The database is unavailable".into(),
                    "Nothing was changed. Try again shortly.".into(),
                    Some(("/admin", "Back to the dashboard")),
                ),
                PageError::RandomFailed => (
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Unavailable",
                    "The server's random number generator failed".into(),
                    "Nothing was changed. Try again shortly.".into(),
                    Some(("/admin", "Back to the dashboard")),
                ),
                PageError::SetupLink(problem) => {
                    let page = ErrorPage {
                        frame: Frame::public(),
                        title: "Setup",
                        heading: match problem {
                            SetupProblem::Used => "This setup link is not valid",
                            SetupProblem::Expired => "This setup link has expired",
                        },
                        message: "",
                        setup: Some(*problem),
                        back: None,
                    };
                    let status = match problem {
                        SetupProblem::Used => StatusCode::NOT_FOUND,
                        SetupProblem::Expired => StatusCode::GONE,
                    };
                    return render(status, &page);
                }
                PageError::Other {
                    status,
                    title,
                    message,
                } => (
                    *status,
                    "Not done",
                    title.clone(),
                    message.clone(),
                    Some(("/admin", "Back to the dashboard")),
                ),
            };
        render(
            status,
            &ErrorPage {
                frame,
                title,
                heading: &heading,
                message: &message,
                setup: None,
                back,
            },
        )
    }
}

/// The styled 404 of every unknown address under `/admin`, with the navigation when
/// someone is signed in, so that a mistyped address is not a dead end.
pub async fn admin_not_found(
    axum::extract::State(state): axum::extract::State<crate::AppState>,
    mut parts: axum::http::request::Parts,
) -> Response {
    use axum::extract::OptionalFromRequestParts;
    let session =
        <crate::auth::Session as OptionalFromRequestParts<crate::AppState>>::from_request_parts(
            &mut parts, &state,
        )
        .await
        .ok()
        .flatten();
    let frame = match session {
        Some(s) => s.frame(Nav::None),
        None => Frame::public(),
    };
    PageError::NoSuchPage.render_in(frame)
}

/// The one stylesheet, the small script (copy buttons, confirmations, the live test steps)
/// and the favicon: compiled into the binary, so the pages need no CDN and no files beside
/// the binary. Cached for an hour; a new version is a new binary and a restart.
pub async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../static/mailgate.css"),
    )
}

pub async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../static/mailgate.js"),
    )
}

pub async fn favicon() -> Response {
    asset("image/svg+xml", include_str!("../static/favicon.svg"))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// State badges: the CSS class and the words of an account's state, with a recorded problem
/// overriding a green "active" (the account works, but something needs a look).
pub fn state_badge(
    state: mailgate_core::AccountState,
    problem: Option<&mailgate_core::account::Problem>,
) -> (&'static str, String) {
    use mailgate_core::AccountState;
    match (state, problem) {
        (AccountState::ReauthRequired, _) => ("bad", "needs re-authorization".into()),
        (AccountState::Active | AccountState::Refreshing, Some(_)) => ("bad", "failing".into()),
        (AccountState::Active | AccountState::Refreshing, None) => {
            ("ok", state.as_str().replace('_', " "))
        }
        (AccountState::Unauthorized | AccountState::Disabled, _) => {
            ("warn", state.as_str().replace('_', " "))
        }
    }
}
