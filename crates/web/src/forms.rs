//! The app and account forms, the account page with Authorize and Test configuration.
//!
//! Every field is parsed into its core type; every failure comes back beside its field with
//! all values kept, and nothing is saved unless the whole form is valid. The pages are the
//! templates `app_form.html`, `account_form.html`, `account.html` and `test_steps.html`;
//! a field is drawn by the `field` macro of `macros.html` from a [`Field`].

use crate::auth::{AdminForm, AdminSession, OperatorForm, OperatorSession, Session};
use crate::html::{Frame, Nav, PageError, render};
use crate::{AppState, redirect_uri};
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailgate_core::app::{AppKind, FieldError, OAuthFlow};
use mailgate_core::input::{
    AccountChanges, AccountSettingsInput, AppChanges, EndpointInput, InboundChoice, NewAccount,
    NewApp,
};
use mailgate_core::{
    AccountId, AppId, ClientId, EmailAddress, Host, HttpUrl, Name, Port, Scopes, TenantId, TlsMode,
    account::InboundProtocol, account::OnReceived,
};
use mailgate_usecase::{ChangeError, changes};
use std::collections::HashMap;

pub(crate) type Fields = HashMap<String, String>;

/// Field errors of one submission, by field name.
#[derive(Default)]
pub(crate) struct Errors(Vec<(String, String)>);

impl Errors {
    pub(crate) fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push((field.to_owned(), message.into()));
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// The messages for one field.
    pub(crate) fn messages(&self, field: &str) -> Vec<String> {
        self.0
            .iter()
            .filter(|(f, _)| f == field)
            .map(|(_, m)| m.clone())
            .collect()
    }
    /// Every error, with the field's name in words, for the summary above a form.
    pub(crate) fn all(&self) -> Vec<(String, String)> {
        self.0
            .iter()
            .map(|(f, m)| (f.replace('_', " "), m.clone()))
            .collect()
    }
    /// 422 when a form comes back with errors, so scripts and tests can tell.
    pub(crate) fn status(&self) -> StatusCode {
        if self.is_empty() {
            StatusCode::OK
        } else {
            StatusCode::UNPROCESSABLE_ENTITY
        }
    }
}

/// One form field as the `field` macro draws it: label, control, errors beside it, help
/// text under it.
pub(crate) struct Field {
    pub name: &'static str,
    pub label: &'static str,
    /// `text`, `email`, `url`, `date`, `number`, `password`, `select` or `textarea`.
    pub kind: &'static str,
    pub value: String,
    pub options: Vec<(String, String)>,
    pub errors: Vec<String>,
    pub help: String,
    /// CSS classes of the field's paragraph (`only-microsoft`, …).
    pub class: &'static str,
}

impl Field {
    pub(crate) fn is_selected(&self, value: &str) -> bool {
        self.value == value
    }
}

fn get<'a>(f: &'a Fields, k: &str) -> &'a str {
    f.get(k).map(|s| s.trim()).unwrap_or("")
}

/// Builds the fields of one form from the submitted (or stored) values and the errors.
pub(crate) struct FormView<'a> {
    pub values: &'a Fields,
    pub errs: &'a Errors,
}

impl FormView<'_> {
    pub(crate) fn field(
        &self,
        name: &'static str,
        label: &'static str,
        kind: &'static str,
        help: &str,
    ) -> Field {
        Field {
            name,
            label,
            kind,
            // A secret never goes back into the page.
            value: if kind == "password" {
                String::new()
            } else if kind == "textarea" {
                self.values.get(name).cloned().unwrap_or_default()
            } else {
                get(self.values, name).to_owned()
            },
            options: Vec::new(),
            errors: self.errs.messages(name),
            help: help.to_owned(),
            class: "",
        }
    }

    pub(crate) fn select(
        &self,
        name: &'static str,
        label: &'static str,
        options: &[(&str, &str)],
        help: &str,
    ) -> Field {
        let mut f = self.field(name, label, "select", help);
        f.options = options
            .iter()
            .map(|(v, t)| ((*v).to_owned(), (*t).to_owned()))
            .collect();
        f
    }

    pub(crate) fn checked(&self, name: &str) -> bool {
        get(self.values, name) == "on"
    }
}

fn with_class(mut f: Field, class: &'static str) -> Field {
    f.class = class;
    f
}

/// Parses an optional field: empty is None; a bad value is recorded.
fn opt<T, E: std::fmt::Display>(
    f: &Fields,
    errs: &mut Errors,
    k: &str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Option<T> {
    let v = get(f, k);
    if v.is_empty() {
        return None;
    }
    match parse(v) {
        Ok(x) => Some(x),
        Err(e) => {
            errs.add(k, e.to_string());
            None
        }
    }
}

fn req<T, E: std::fmt::Display>(
    f: &Fields,
    errs: &mut Errors,
    k: &str,
    parse: impl Fn(&str) -> Result<T, E>,
) -> Option<T> {
    if get(f, k).is_empty() {
        errs.add(k, "required");
        return None;
    }
    opt(f, errs, k, parse)
}

fn parse_date(s: &str) -> Result<time::Date, String> {
    const F: &[time::format_description::FormatItem<'static>] =
        time::macros::format_description!("[year]-[month]-[day]");
    time::Date::parse(s, F).map_err(|_| format!("{s:?} is not a date; expected YYYY-MM-DD"))
}

fn field_error(errs: &mut Errors, e: FieldError) {
    errs.add(e.field, e.message);
}

/// A secret's expiry date: a date already passed is refused, unless the administrator
/// ticked "save it anyway" (the apps list then shows it as expired).
fn secret_expiry(state: &AppState, f: &Fields, errs: &mut Errors) -> Option<time::Date> {
    let date = opt(f, errs, "secret_expires", parse_date)?;
    let today = state.clock.now().date()?;
    if date < today && get(f, "expired_ok") != "on" {
        errs.add(
            "secret_expires",
            format!(
                "{date} has passed: this secret has expired and sign-ins with it will fail. Create a new secret at the provider, or tick \"Save it anyway\" to record it as expired"
            ),
        );
    }
    Some(date)
}

// ----- apps -------------------------------------------------------------------------------

/// What is in effect for a stored app: the endpoints and scopes mailgate uses.
pub(crate) struct Effective {
    pub authorize: String,
    pub token: String,
    pub jwks: String,
    pub issuer: String,
    pub scopes: String,
    pub sign_out: Option<(String, &'static str)>,
}

#[derive(Template)]
#[template(path = "app_form.html")]
struct AppFormPage {
    frame: Frame,
    title: String,
    action: String,
    csrf: String,
    redirect_uri: String,
    /// The fixed kind when editing; the kind chooser when creating.
    fixed_kind: Option<String>,
    errors: Vec<(String, String)>,
    kind: Field,
    name: Field,
    tenant: Field,
    client_id: Field,
    client_secret: Field,
    stored_secret: Option<String>,
    secret_expires: Field,
    expired_ok: bool,
    flow: Field,
    advanced: Vec<Field>,
    effective: Option<Effective>,
    saved: bool,
}

fn effective(app: &mailgate_core::OAuthApp) -> Effective {
    let e = &app.spec.endpoints;
    let or_none = |u: Option<&HttpUrl>| u.map(|u| u.to_string()).unwrap_or_else(|| "—".into());
    Effective {
        authorize: or_none(e.authorize.as_ref()),
        token: e.token.to_string(),
        jwks: or_none(e.jwks.as_ref()),
        issuer: e.issuer.clone().unwrap_or_else(|| "—".into()),
        scopes: app.spec.scopes.to_string(),
        sign_out: crate::callback::sign_out_link(app),
    }
}

/// `editing`: the stored app, whose secret is shown only as its hint.
fn app_form(
    state: &AppState,
    session: &Session,
    action: &str,
    f: &Fields,
    errs: &Errors,
    editing: Option<&mailgate_core::OAuthApp>,
    saved: bool,
) -> Response {
    let v = FormView { values: f, errs };
    let kind_help = "Choose the provider first: the form shows its steps.";
    let page = AppFormPage {
        frame: session.frame(Nav::Apps),
        title: match editing {
            Some(app) => format!("Edit OAuth app {}", app.spec.name),
            None => "New OAuth app".into(),
        },
        action: action.to_owned(),
        csrf: session.csrf.clone(),
        redirect_uri: redirect_uri(&state.public_url),
        fixed_kind: editing.map(|a| a.spec.kind.as_str().to_owned()),
        errors: errs.all(),
        kind: v.select(
            "kind",
            "Provider",
            &[
                ("microsoft", "Microsoft 365 / Outlook.com"),
                ("google", "Google Workspace / Gmail"),
                ("generic", "Other OAuth2 provider"),
            ],
            kind_help,
        ),
        name: v.field("name", "Name", "text", "How mailgate lists it, e.g. Contoso."),
        tenant: with_class(
            v.field(
                "tenant",
                "Tenant (Microsoft)",
                "text",
                "Directory (tenant) ID, a verified domain, or common / organizations / consumers.",
            ),
            "only-microsoft",
        ),
        client_id: v.field(
            "client_id",
            "Client ID",
            "text",
            "Microsoft: Application (client) ID. Google: the OAuth client ID. Other: the client id the provider gave you.",
        ),
        client_secret: v.field(
            "client_secret",
            "Client secret",
            "password",
            match editing {
                Some(_) => "Write-only: leave empty to keep it.",
                None => "Microsoft: the secret's Value, not its Secret ID.",
            },
        ),
        stored_secret: editing.map(|app| {
            app.spec
                .client_secret
                .as_ref()
                .map(|s| s.hint())
                .unwrap_or_else(|| "not set".into())
        }),
        secret_expires: v.field(
            "secret_expires",
            "Secret expires",
            "date",
            "mailgate warns 30, 14, 7 and 1 day(s) before.",
        ),
        expired_ok: v.checked("expired_ok"),
        flow: v.select(
            "flow",
            "Flow",
            &[
                ("authorization_code", "Browser sign-in (recommended)"),
                ("device_code", "Device code"),
                (
                    "client_credentials",
                    "Microsoft app-only (client credentials)",
                ),
            ],
            "Browser sign-in: someone signs in as each mailbox once. Device code: the same from \
             a machine without a browser (mailgate authorize --device). App-only: no sign-in; \
             the app reaches the mailboxes Exchange grants it (the permissions above).",
        ),
        advanced: vec![
            v.field(
                "authority",
                "Sign-in host (authority)",
                "url",
                "Only for sovereign clouds or a test identity provider, e.g. https://login.microsoftonline.us. Empty: the provider's own.",
            ),
            with_class(
                v.field(
                    "authorize_url",
                    "Authorize URL",
                    "url",
                    "Other OAuth2 providers: from their documentation. Empty: the preset.",
                ),
                "only-generic",
            ),
            with_class(
                v.field(
                    "token_url",
                    "Token URL",
                    "url",
                    "Other OAuth2 providers: from their documentation. Empty: the preset.",
                ),
                "only-generic",
            ),
            with_class(
                v.field(
                    "issuer",
                    "Issuer",
                    "url",
                    "Other OpenID Connect providers: the issuer alone is enough; mailgate reads the other endpoints from its discovery document.",
                ),
                "only-generic",
            ),
            with_class(
                v.field(
                    "jwks_url",
                    "JWKS URL",
                    "url",
                    "Other providers without discovery: the signing keys that vouch for who signed in.",
                ),
                "only-generic",
            ),
            with_class(
                v.field(
                    "userinfo_url",
                    "Userinfo URL",
                    "url",
                    "Other providers without discovery: used when no id_token comes back.",
                ),
                "only-generic",
            ),
            v.field(
                "scopes",
                "Scopes",
                "text",
                "Leave empty for the provider's preset.",
            ),
        ],
        effective: editing.map(effective),
        saved,
    };
    render(errs.status(), &page)
}

fn endpoint_input(f: &Fields, errs: &mut Errors) -> EndpointInput {
    EndpointInput {
        authority: opt(f, errs, "authority", HttpUrl::parse),
        authorize_url: opt(f, errs, "authorize_url", HttpUrl::parse),
        token_url: opt(f, errs, "token_url", HttpUrl::parse),
        jwks_url: opt(f, errs, "jwks_url", HttpUrl::parse),
        userinfo_url: opt(f, errs, "userinfo_url", HttpUrl::parse),
        issuer: opt(f, errs, "issuer", |s| {
            HttpUrl::parse(s).map(|_| s.to_owned())
        }),
        scopes: opt(f, errs, "scopes", Scopes::parse),
        ..Default::default()
    }
}

/// A use-case's refusal shown on its form: beside the field at fault, or beside the name
/// when it is taken; a store failure is the error page.
fn change_refused(errs: &mut Errors, e: ChangeError, taken: &str) -> Option<PageError> {
    match e {
        ChangeError::Field(e) => field_error(errs, e),
        ChangeError::Store(mailgate_store::StoreError::Duplicate { .. }) => errs.add("name", taken),
        ChangeError::Store(e) => return Some(e.into()),
        // The forms act for an administrator, who may move an account (`may_move`).
        ChangeError::MovesDestinations(_) => {}
    }
    None
}

pub async fn new_app_form(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
) -> Response {
    let mut f = Fields::new();
    f.insert("kind".into(), "microsoft".into());
    f.insert("tenant".into(), "organizations".into());
    app_form(
        &state,
        &session,
        "/admin/apps/new",
        &f,
        &Errors::default(),
        None,
        false,
    )
}

pub async fn create_app(
    State(state): State<AppState>,
    AdminForm(session, f): AdminForm<Fields>,
) -> Result<Response, PageError> {
    let mut errs = Errors::default();
    let kind = req(&f, &mut errs, "kind", AppKind::parse);
    let name = req(&f, &mut errs, "name", Name::parse);
    let tenant =
        opt(&f, &mut errs, "tenant", TenantId::parse).filter(|_| kind == Some(AppKind::Microsoft));
    let client_id = req(&f, &mut errs, "client_id", ClientId::parse);
    let secret = opt(
        &f,
        &mut errs,
        "client_secret",
        mailgate_core::input::client_secret,
    );
    let expires = secret_expiry(&state, &f, &mut errs);
    let flow = opt(&f, &mut errs, "flow", OAuthFlow::parse).unwrap_or(OAuthFlow::AuthorizationCode);
    let endpoints = endpoint_input(&f, &mut errs);
    if let (true, Some(kind), Some(name), Some(client_id)) =
        (errs.is_empty(), kind, name, client_id)
    {
        let new = NewApp {
            name,
            kind,
            tenant,
            client_id,
            client_secret: secret,
            secret_expires: expires,
            flow,
            service_account_key: None,
            endpoints,
        };
        let saved = changes::create_app(&state.engine, new, state.clock.now()).await;
        return app_saved_or_form(&state, &session, "/admin/apps/new", &f, errs, None, saved);
    }
    Ok(app_form(
        &state,
        &session,
        "/admin/apps/new",
        &f,
        &errs,
        None,
        false,
    ))
}

/// The end of a valid app form: the app's page, which confirms the save, or the form again
/// with the use case's refusal beside its field.
fn app_saved_or_form(
    state: &AppState,
    session: &Session,
    action: &str,
    f: &Fields,
    mut errs: Errors,
    editing: Option<&mailgate_core::OAuthApp>,
    saved: Result<mailgate_core::OAuthApp, ChangeError>,
) -> Result<Response, PageError> {
    match saved {
        Ok(app) => Ok(Redirect::to(&format!("/admin/apps/{}?done=saved", app.id)).into_response()),
        Err(e) => {
            if let Some(p) = change_refused(&mut errs, e, "an app with this name already exists") {
                return Err(p);
            }
            Ok(app_form(state, session, action, f, &errs, editing, false))
        }
    }
}

fn app_fields(app: &mailgate_core::OAuthApp) -> Fields {
    let s = &app.spec;
    let mut f = Fields::new();
    f.insert("kind".into(), s.kind.as_str().into());
    f.insert("name".into(), s.name.to_string());
    f.insert(
        "tenant".into(),
        s.tenant.as_ref().map(|t| t.to_string()).unwrap_or_default(),
    );
    f.insert("client_id".into(), s.client_id.to_string());
    f.insert(
        "secret_expires".into(),
        s.secret_expires.map(|d| d.to_string()).unwrap_or_default(),
    );
    f.insert("flow".into(), s.flow.as_str().into());
    f.insert("scopes".into(), s.scopes.to_string());
    // The stored sign-in host, so the form shows what is in effect (Microsoft: the
    // authorize URL before `/{tenant}/oauth2/…`; Google: the authorize URL's origin).
    if let Some(authorize) = &s.endpoints.authorize {
        let url = authorize.url();
        let origin = match (url.host_str(), url.port()) {
            (Some(h), Some(p)) => Some(format!("{}://{h}:{p}", url.scheme())),
            (Some(h), None) => Some(format!("{}://{h}", url.scheme())),
            _ => None,
        };
        if let (Some(origin), AppKind::Microsoft | AppKind::Google) = (origin, s.kind) {
            f.insert("authority".into(), origin);
        }
    }
    if s.secret_expires.is_some() {
        // A stored date was accepted once; saving other changes must not trip over it.
        f.insert("expired_ok".into(), "on".into());
    }
    f
}

/// `?done=…`: what the page confirms it just did (only fixed words are shown).
#[derive(serde::Deserialize, Default)]
pub struct Done {
    done: Option<String>,
}

impl Done {
    pub(crate) fn is(&self, what: &str) -> bool {
        self.done.as_deref() == Some(what)
    }
}

pub async fn edit_app_form(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<i64>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let app = state.store.app(AppId(id)).await?;
    Ok(app_form(
        &state,
        &session,
        &format!("/admin/apps/{id}"),
        &app_fields(&app),
        &Errors::default(),
        Some(&app),
        done.done.as_deref() == Some("saved"),
    ))
}

pub async fn update_app(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    AdminForm(session, f): AdminForm<Fields>,
) -> Result<Response, PageError> {
    let current = state.store.app(AppId(id)).await?;
    let mut errs = Errors::default();
    let mut endpoints = endpoint_input(&f, &mut errs);
    // The authority shown is the stored one: unchanged, it changes nothing.
    if endpoints.authority.as_ref().map(|a| a.to_string())
        == app_fields(&current)
            .get("authority")
            .and_then(|a| HttpUrl::parse(a).ok())
            .map(|a| a.to_string())
    {
        endpoints.authority = None;
    }
    let secret_expires = if get(&f, "secret_expires")
        == current
            .spec
            .secret_expires
            .map(|d| d.to_string())
            .unwrap_or_default()
    {
        // Unchanged: accepted when it was saved.
        opt(&f, &mut errs, "secret_expires", parse_date)
    } else {
        secret_expiry(&state, &f, &mut errs)
    };
    let changes = AppChanges {
        name: req(&f, &mut errs, "name", Name::parse),
        tenant: opt(&f, &mut errs, "tenant", TenantId::parse)
            .filter(|_| current.spec.kind == AppKind::Microsoft),
        client_id: req(&f, &mut errs, "client_id", ClientId::parse),
        client_secret: opt(
            &f,
            &mut errs,
            "client_secret",
            mailgate_core::input::client_secret,
        ),
        secret_expires,
        flow: opt(&f, &mut errs, "flow", OAuthFlow::parse),
        endpoints,
        ..Default::default()
    };
    let action = format!("/admin/apps/{id}");
    if errs.is_empty() {
        let saved =
            changes::update_app(&state.engine, current.clone(), changes, state.clock.now()).await;
        return app_saved_or_form(&state, &session, &action, &f, errs, Some(&current), saved);
    }
    Ok(app_form(
        &state,
        &session,
        &action,
        &f,
        &errs,
        Some(&current),
        false,
    ))
}

// ----- accounts ---------------------------------------------------------------------------

#[derive(Template)]
#[template(path = "account_form.html")]
struct AccountFormPage {
    frame: Frame,
    title: String,
    action: String,
    csrf: String,
    errors: Vec<(String, String)>,
    no_apps: bool,
    name: Field,
    app: Field,
    email: Field,
    delegate: Field,
    send_on_behalf: bool,
    enabled: bool,
    inbound: Vec<Field>,
    outbound: Vec<Field>,
    from_name: Field,
    reply_to: Field,
    signature: Field,
    on_received: Field,
    move_folder: Field,
}

async fn account_form(
    state: &AppState,
    session: &Session,
    action: &str,
    f: &Fields,
    errs: &Errors,
    editing: bool,
) -> Result<Response, PageError> {
    let apps = state.store.list_apps().await?;
    let app_options: Vec<(String, String)> = apps
        .iter()
        .map(|a| {
            (
                a.id.to_string(),
                format!("{} ({})", a.spec.name, a.spec.kind),
            )
        })
        .collect();
    let app_refs: Vec<(&str, &str)> = app_options
        .iter()
        .map(|(a, b)| (a.as_str(), b.as_str()))
        .collect();
    let v = FormView { values: f, errs };
    let tls = [
        ("", "preset"),
        ("implicit", "implicit TLS"),
        ("starttls", "STARTTLS"),
    ];
    // "On email received" is a choice; `move:FOLDER` takes its folder from a field of its own.
    let on_received_value = get(f, "on_received");
    let (choice, folder) = match on_received_value.strip_prefix("move:") {
        Some(folder) => ("move", folder.to_owned()),
        None => (on_received_value, get(f, "move_folder").to_owned()),
    };
    let mut on_received = v.select(
        "on_received",
        "On email received",
        &[
            ("none", "Do nothing (leave it in the inbox)"),
            ("webhook", "Send it to the webhooks only"),
            ("mark_seen", "Mark it as read"),
            ("delete", "Delete it"),
            ("move", "Move it to a folder"),
        ],
        "What mailgate does with a message once the webhooks have it.",
    );
    on_received.value = if choice.is_empty() {
        "none".into()
    } else {
        choice.to_owned()
    };
    let mut move_folder = v.field(
        "move_folder",
        "Folder to move it to",
        "text",
        "Only for \"Move it to a folder\", e.g. Archive.",
    );
    move_folder.value = folder;
    let page = AccountFormPage {
        frame: session.frame(Nav::Accounts),
        title: if editing {
            format!("Edit mail account {}", get(f, "name"))
        } else {
            "New mail account".into()
        },
        action: action.to_owned(),
        csrf: session.csrf.clone(),
        errors: errs.all(),
        no_apps: apps.is_empty(),
        name: v.field(
            "name",
            "Name",
            "text",
            "How mailgate and the API name it, e.g. support.",
        ),
        app: v.select(
            "app",
            "OAuth app",
            &app_refs,
            "The app whose sign-in this account uses.",
        ),
        email: v.field(
            "email",
            "Mailbox address",
            "email",
            "The user who authorizes must sign in as this address, unless a delegate is named.",
        ),
        delegate: v.field(
            "delegate",
            "Delegate",
            "email",
            "For a shared mailbox: the user with FullAccess and SendAs on it who signs in.",
        ),
        send_on_behalf: v.checked("send_on_behalf"),
        enabled: v.checked("enabled") || (!editing && !f.contains_key("enabled")),
        inbound: vec![
            v.select(
                "inbound",
                "Protocol",
                &[("imap", "IMAP"), ("pop3", "POP3"), ("none", "none")],
                "How mailgate reads the mailbox; none for an account that only sends.",
            ),
            v.field(
                "inbound_host",
                "Host",
                "text",
                "Empty: the provider's preset.",
            ),
            v.field(
                "inbound_port",
                "Port",
                "number",
                "Empty: the usual one (IMAP 993 or 143, POP3 995 or 110, by TLS).",
            ),
            v.select(
                "inbound_tls",
                "TLS",
                &tls,
                "Implicit TLS on 993 and 995; STARTTLS on 143 and 110.",
            ),
        ],
        outbound: vec![
            v.select(
                "outbound",
                "Protocol",
                &[("smtp", "SMTP"), ("none", "none")],
                "How mailgate sends; none for an account that only reads.",
            ),
            v.field("smtp_host", "Host", "text", "Empty: the provider's preset."),
            v.field(
                "smtp_port",
                "Port",
                "number",
                "Empty: the usual one (587 with STARTTLS, 465 with implicit TLS).",
            ),
            v.select(
                "smtp_tls",
                "TLS",
                &tls,
                "STARTTLS on 587; implicit TLS on 465.",
            ),
        ],
        from_name: v.field(
            "from_name",
            "From name",
            "text",
            "The name recipients see beside the address, e.g. Support Desk.",
        ),
        reply_to: v.field(
            "reply_to",
            "Reply-To",
            "email",
            "Where replies go, when not to the mailbox itself.",
        ),
        signature: v.field(
            "signature",
            "Signature",
            "textarea",
            "Added below every message sent through the outbox.",
        ),
        on_received,
        move_folder,
    };
    Ok(render(errs.status(), &page))
}

fn settings_input(f: &Fields, errs: &mut Errors) -> AccountSettingsInput {
    let inbound = opt(f, errs, "inbound", |s| {
        if s == "none" {
            Ok(InboundChoice::None)
        } else {
            InboundProtocol::parse(s)
                .map(InboundChoice::Proto)
                .map_err(|e| e.to_string())
        }
    });
    // The choice and its folder make the stored keyword (`move:Archive`).
    let on_received = match get(f, "on_received") {
        "move" if get(f, "move_folder").is_empty() => {
            errs.add("move_folder", "required: the folder to move messages to");
            None
        }
        "move" => opt(
            &HashMap::from([(
                "on_received".to_owned(),
                format!("move:{}", get(f, "move_folder")),
            )]),
            errs,
            "on_received",
            OnReceived::parse,
        ),
        _ => opt(f, errs, "on_received", OnReceived::parse),
    };
    AccountSettingsInput {
        description: None,
        shared_mailbox: None,
        aliases: Vec::new(),
        inbound,
        inbound_host: opt(f, errs, "inbound_host", Host::parse),
        inbound_port: opt(f, errs, "inbound_port", Port::parse),
        inbound_tls: opt(f, errs, "inbound_tls", TlsMode::parse),
        outbound: opt(f, errs, "outbound", |s| match s {
            "smtp" => Ok(true),
            "none" => Ok(false),
            other => Err(format!("{other:?}: expected smtp or none")),
        }),
        smtp_host: opt(f, errs, "smtp_host", Host::parse),
        smtp_port: opt(f, errs, "smtp_port", Port::parse),
        smtp_tls: opt(f, errs, "smtp_tls", TlsMode::parse),
        from_name: Some(get(f, "from_name").to_owned()),
        reply_to: opt(f, errs, "reply_to", EmailAddress::parse),
        signature: Some(f.get("signature").cloned().unwrap_or_default()),
        on_received,
        delegate: opt(f, errs, "delegate", EmailAddress::parse),
        send_on_behalf: Some(get(f, "send_on_behalf") == "on"),
        // The edit form shows the current delegate: a field left empty means none.
        clear_delegate: get(f, "delegate").is_empty(),
    }
}

/// Accounts are created, changed and removed by administrators only (README: operators
/// authorize and test): an account's app and hosts decide where its tokens are sent.
pub async fn new_account_form(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
) -> Result<Response, PageError> {
    let mut f = Fields::new();
    f.insert("inbound".into(), "imap".into());
    f.insert("outbound".into(), "smtp".into());
    f.insert("on_received".into(), "none".into());
    account_form(
        &state,
        &session,
        "/admin/accounts/new",
        &f,
        &Errors::default(),
        false,
    )
    .await
}

pub async fn create_account(
    State(state): State<AppState>,
    AdminForm(session, f): AdminForm<Fields>,
) -> Result<Response, PageError> {
    let mut errs = Errors::default();
    let name = req(&f, &mut errs, "name", Name::parse);
    let email = req(&f, &mut errs, "email", EmailAddress::parse);
    let app_id = req(&f, &mut errs, "app", |s| {
        s.parse::<i64>().map_err(|_| "choose an app".to_owned())
    });
    let settings = settings_input(&f, &mut errs);
    if let (true, Some(name), Some(email), Some(app_id)) = (errs.is_empty(), name, email, app_id) {
        let app = match state.store.app(AppId(app_id)).await {
            Ok(a) => Some(a),
            Err(mailgate_store::StoreError::NotFound { .. }) => {
                errs.add("app", "no such app");
                None
            }
            Err(e) => return Err(e.into()),
        };
        if let Some(app) = app {
            let new = NewAccount {
                name,
                email,
                enabled: get(&f, "enabled") == "on",
                settings,
            };
            match changes::create_account(&state.store, new, &app, state.clock.now()).await {
                Ok(acc) => {
                    return Ok(
                        Redirect::to(&format!("/admin/accounts/{}?done=created", acc.id))
                            .into_response(),
                    );
                }
                Err(e) => {
                    if let Some(p) =
                        change_refused(&mut errs, e, "an account with this name already exists")
                    {
                        return Err(p);
                    }
                }
            }
        }
    }
    account_form(&state, &session, "/admin/accounts/new", &f, &errs, false).await
}

fn account_fields(a: &mailgate_core::MailAccount) -> Fields {
    let s = &a.spec;
    let mut f = Fields::new();
    f.insert("name".into(), s.name.to_string());
    f.insert("app".into(), s.app_id.to_string());
    f.insert("email".into(), s.mailbox.to_string());
    if s.enabled {
        f.insert("enabled".into(), "on".into());
    }
    match &s.inbound {
        Some(i) => {
            f.insert("inbound".into(), i.protocol.as_str().into());
            f.insert("inbound_host".into(), i.server.host.to_string());
            f.insert("inbound_port".into(), i.server.port.to_string());
            f.insert("inbound_tls".into(), i.server.tls.as_str().into());
        }
        None => {
            f.insert("inbound".into(), "none".into());
        }
    }
    match &s.outbound {
        Some(o) => {
            f.insert("outbound".into(), "smtp".into());
            f.insert("smtp_host".into(), o.server.host.to_string());
            f.insert("smtp_port".into(), o.server.port.to_string());
            f.insert("smtp_tls".into(), o.server.tls.as_str().into());
        }
        None => {
            f.insert("outbound".into(), "none".into());
        }
    }
    f.insert("from_name".into(), s.from_name.clone().unwrap_or_default());
    f.insert(
        "reply_to".into(),
        s.reply_to
            .as_ref()
            .map(|r| r.to_string())
            .unwrap_or_default(),
    );
    f.insert("signature".into(), s.signature.clone().unwrap_or_default());
    f.insert("on_received".into(), s.on_received.to_string());
    if let Some(d) = &s.delegate {
        f.insert("delegate".into(), d.to_string());
    }
    if s.send_on_behalf {
        f.insert("send_on_behalf".into(), "on".into());
    }
    f
}

pub async fn edit_account_form(
    State(state): State<AppState>,
    AdminSession(session): AdminSession,
    Path(id): Path<i64>,
) -> Result<Response, PageError> {
    let a = state.store.account(AccountId(id)).await?;
    account_form(
        &state,
        &session,
        &format!("/admin/accounts/{id}/edit"),
        &account_fields(&a),
        &Errors::default(),
        true,
    )
    .await
}

pub async fn update_account(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    AdminForm(session, f): AdminForm<Fields>,
) -> Result<Response, PageError> {
    let current = state.store.account(AccountId(id)).await?;
    let mut errs = Errors::default();
    let name = req(&f, &mut errs, "name", Name::parse);
    let email = req(&f, &mut errs, "email", EmailAddress::parse);
    let app_id = req(&f, &mut errs, "app", |s| {
        s.parse::<i64>().map_err(|_| "choose an app".to_owned())
    });
    let settings = settings_input(&f, &mut errs);
    if let (true, Some(app_id)) = (errs.is_empty(), app_id) {
        match state.store.app(AppId(app_id)).await {
            Ok(app) => {
                let changes = AccountChanges {
                    name,
                    email,
                    enabled: Some(get(&f, "enabled") == "on"),
                    settings,
                };
                let now = state.clock.now();
                match changes::update_account(&state.store, &current, changes, &app, true, now)
                    .await
                {
                    Ok(_) => {
                        return Ok(Redirect::to(&format!("/admin/accounts/{id}?done=saved"))
                            .into_response());
                    }
                    Err(e) => {
                        if let Some(p) =
                            change_refused(&mut errs, e, "an account with this name already exists")
                        {
                            return Err(p);
                        }
                    }
                }
            }
            Err(_) => errs.add("app", "no such app"),
        }
    }
    account_form(
        &state,
        &session,
        &format!("/admin/accounts/{id}/edit"),
        &f,
        &errs,
        true,
    )
    .await
}

/// The outcome of one run of "Test configuration", as the account page and the live step
/// list draw it.
pub(crate) struct StepsView {
    pub run: Option<String>,
    pub verdict: Option<bool>,
    pub steps: Vec<mailgate_mail::check::Step>,
}

impl StepsView {
    fn of(run_id: &str, run: &crate::test_runs::TestRun) -> StepsView {
        StepsView {
            run: Some(run_id.to_owned()),
            verdict: run.finished(),
            steps: run.steps.clone(),
        }
    }

    pub(crate) fn status_of(step: &mailgate_mail::check::Step) -> (&'static str, &'static str) {
        use mailgate_mail::check::StepStatus;
        match step.status {
            StepStatus::Ok => ("ok", "ok"),
            StepStatus::Failed => ("bad", "failed"),
            StepStatus::Skipped => ("", "skipped"),
            StepStatus::Warning => ("warn", "warning"),
        }
    }
}

#[derive(Template)]
#[template(path = "test_steps.html")]
struct StepsFragment<'a> {
    steps: &'a StepsView,
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    frame: Frame,
    title: String,
    csrf: String,
    is_admin: bool,
    id: i64,
    name: String,
    state: String,
    badge_class: &'static str,
    badge: String,
    authorized: bool,
    problem: Option<mailgate_core::account::Problem>,
    access: String,
    sign_in: String,
    inbound: String,
    outbound: String,
    mailbox: String,
    authorize_label: &'static str,
    /// What the page says it just did ("Saved.", "Authorized.").
    done: Option<&'static str>,
    /// A refusal to show above the actions (authorization could not start).
    alert: Option<String>,
    alert_code: Option<String>,
    /// A run in progress or just finished.
    test: Option<StepsView>,
    test_gone: bool,
    /// The account's last test, as stored (migration 0014).
    last_test: Option<mailgate_store::test_results::TestResult>,
    /// The inbound watch's newest news, when it is a failure.
    inbound_failure: Option<String>,
}

pub async fn account_page(
    State(state): State<AppState>,
    OperatorSession(session): OperatorSession,
    Path(id): Path<i64>,
    Query(done): Query<Done>,
) -> Result<Response, PageError> {
    let mut page = account_page_with(&state, &session, id).await?;
    page.done = match done.done.as_deref() {
        Some("saved") => Some("Saved."),
        Some("created") => Some("Account created. Next: authorize it, then test it."),
        Some("authorized") => Some(
            "Authorized: mailgate keeps its tokens fresh from here on. Next: test the configuration.",
        ),
        _ => None,
    };
    Ok(render(StatusCode::OK, &page))
}

async fn account_page_with(
    state: &AppState,
    session: &Session,
    id: i64,
) -> Result<AccountPage, PageError> {
    let acc = state.store.account(AccountId(id)).await?;
    let s = &acc.spec;
    let failing = crate::admin::recent_failures(state).await?.remove(&acc.id);
    let (badge_class, badge) = crate::admin::account_badge(&acc, failing.as_ref());
    let last_test = state.store.test_results().await?.remove(&acc.id);
    Ok(AccountPage {
        frame: session.frame(Nav::Accounts),
        title: format!("Mail account {}", s.name),
        csrf: session.csrf.clone(),
        is_admin: session.is_admin(),
        id,
        name: s.name.to_string(),
        state: acc.state.to_string(),
        badge_class,
        badge,
        authorized: matches!(
            acc.state,
            mailgate_core::AccountState::Active | mailgate_core::AccountState::Refreshing
        ),
        problem: acc.last_problem.clone(),
        access: s.access_summary(),
        sign_in: s.sign_in_user().to_string(),
        inbound: s
            .inbound
            .as_ref()
            .map(|i| format!("{} {}", i.protocol, i.server))
            .unwrap_or_else(|| "none".into()),
        outbound: s
            .outbound
            .as_ref()
            .map(|o| format!("smtp {}", o.server))
            .unwrap_or_else(|| "none".into()),
        mailbox: s.mailbox.to_string(),
        authorize_label: if acc.state == mailgate_core::AccountState::Unauthorized {
            "Authorize"
        } else {
            "Re-authorize"
        },
        done: None,
        alert: None,
        alert_code: None,
        test: None,
        test_gone: false,
        last_test,
        // A failed test is shown as the last test; an inbound failure needs its own line.
        inbound_failure: match failing {
            Some(crate::admin::Failing::Inbound(words)) => Some(words),
            _ => None,
        },
    })
}

/// Starts the browser authorization, bound to this session, and sends the browser to the
/// provider.
pub async fn authorize(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    OperatorForm(session, _): OperatorForm<Fields>,
) -> Result<Response, PageError> {
    let redirect = redirect_uri(&state.public_url);
    match state
        .engine
        .start_authorization(AccountId(id), &session.initiator(), &redirect)
        .await
    {
        Ok(started) => Ok(Redirect::to(started.url.as_str()).into_response()),
        Err(e) => {
            let mut page = account_page_with(&state, &session, id).await?;
            page.alert = Some(format!("Cannot start the authorization: {e}"));
            page.alert_code = Some(e.code().to_owned());
            Ok(render(StatusCode::OK, &page))
        }
    }
}

/// Starts "Test configuration" in the background and shows its page, which fills in step
/// by step. An account that was never authorized is told to authorize first, rather than
/// failing at a later step.
pub async fn test_account(
    State(state): State<AppState>,
    Path(id): Path<i64>,
    OperatorForm(session, f): OperatorForm<Fields>,
) -> Result<Response, PageError> {
    let acc = state.store.account(AccountId(id)).await?;
    if acc.state == mailgate_core::AccountState::Unauthorized {
        let mut page = account_page_with(&state, &session, id).await?;
        page.alert = Some(
            "Authorize first: this account has no token yet, so the test cannot sign in. Use Authorize above, then test again."
                .into(),
        );
        page.alert_code = Some("token_unavailable".into());
        return Ok(render(StatusCode::CONFLICT, &page));
    }
    let mut opts = mailgate_mail::check::CheckOptions::default();
    match get(&f, "to") {
        "" => {}
        to => match EmailAddress::parse(to) {
            Ok(to) => opts.to = Some(to.to_string()),
            Err(e) => {
                let mut page = account_page_with(&state, &session, id).await?;
                page.alert = Some(format!("Send the test message to: {e}"));
                return Ok(render(StatusCode::UNPROCESSABLE_ENTITY, &page));
            }
        },
    }
    let run = crate::test_runs::start(&state, acc, opts).await?;
    // `#test-steps`: the browser scrolls to the steps as they fill in.
    Ok(Redirect::to(&format!("/admin/accounts/{id}/tests/{run}#test-steps")).into_response())
}

/// The account page with the run's steps, refreshed in place until it finishes.
pub async fn test_page(
    State(state): State<AppState>,
    OperatorSession(session): OperatorSession,
    Path((id, run)): Path<(i64, String)>,
) -> Result<Response, PageError> {
    let mut page = account_page_with(&state, &session, id).await?;
    match crate::test_runs::get(&state, &run)
        .await
        .filter(|r| r.account_id == id)
    {
        Some(r) => page.test = Some(StepsView::of(&run, &r)),
        None => page.test_gone = true,
    }
    Ok(render(StatusCode::OK, &page))
}

/// The steps so far, as an HTML fragment for the polling page.
pub async fn test_steps(
    State(state): State<AppState>,
    OperatorSession(_session): OperatorSession,
    Path(run): Path<String>,
) -> Response {
    match crate::test_runs::get(&state, &run).await {
        Some(r) => render(
            StatusCode::OK,
            &StepsFragment {
                steps: &StepsView::of(&run, &r),
            },
        ),
        None => (StatusCode::NOT_FOUND, "no such test run").into_response(),
    }
}
