//! The app and account forms, the account page with Authorize and Test configuration.
//!
//! Every field is parsed into its core type; every failure comes back beside its field with
//! all values kept, and nothing is saved unless the whole form is valid.

use crate::auth::Session;
use crate::html::unavailable;
use crate::html::{escape, page};
use crate::{AppState, redirect_uri};
use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use mailgate_core::app::{AppKind, FieldError, OAuthFlow};
use mailgate_core::input::{
    AccountChanges, AccountSettingsInput, AppChanges, EndpointInput, InboundChoice, NewAccount,
    NewApp,
};
use mailgate_core::{
    AccountId, AppId, ClientId, EmailAddress, Host, HttpUrl, Name, Port, Scopes, Secret, TenantId,
    TlsMode, account::InboundProtocol, account::OnReceived,
};
use mailgate_usecase::{ChangeError, changes};
use std::collections::HashMap;

type Fields = HashMap<String, String>;

/// Field errors of one submission, by field name.
#[derive(Default)]
pub(crate) struct Errors(Vec<(String, String)>);

impl Errors {
    pub(crate) fn add(&mut self, field: &str, message: impl Into<String>) {
        self.0.push((field.to_owned(), message.into()));
    }
    pub(crate) fn for_field(&self, field: &str) -> String {
        self.0
            .iter()
            .filter(|(f, _)| f == field)
            .map(|(_, m)| {
                format!(
                    "<span class=\"bad field-error\" data-field=\"{}\">{}</span>",
                    escape(field),
                    escape(m)
                )
            })
            .collect()
    }
    pub(crate) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    pub(crate) fn summary(&self) -> String {
        if self.0.is_empty() {
            return String::new();
        }
        let items: String = self
            .0
            .iter()
            .map(|(f, m)| {
                format!(
                    "<li><strong>{}</strong>: {}</li>",
                    escape(&f.replace('_', " ")),
                    escape(m)
                )
            })
            .collect();
        format!(
            "<div class=\"bad\" role=\"alert\"><p>Nothing was saved. Please correct:</p><ul>{items}</ul></div>"
        )
    }
}

fn get<'a>(f: &'a Fields, k: &str) -> &'a str {
    f.get(k).map(|s| s.trim()).unwrap_or("")
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

fn input(f: &Fields, errs: &Errors, name: &str, label: &str, kind: &str, hint: &str) -> String {
    let value = if kind == "password" {
        String::new()
    } else {
        escape(get(f, name))
    };
    let hint = if hint.is_empty() {
        String::new()
    } else {
        format!("<br><small>{hint}</small>")
    };
    format!(
        "<p><label for=\"{name}\">{label}</label><br><input id=\"{name}\" name=\"{name}\" type=\"{kind}\" value=\"{value}\" size=\"50\"> {}{hint}</p>",
        errs.for_field(name)
    )
}

fn select(f: &Fields, errs: &Errors, name: &str, label: &str, options: &[(&str, &str)]) -> String {
    let current = get(f, name);
    let opts: String = options
        .iter()
        .map(|(v, text)| {
            format!(
                "<option value=\"{v}\"{}>{}</option>",
                if *v == current { " selected" } else { "" },
                escape(text)
            )
        })
        .collect();
    format!(
        "<p><label for=\"{name}\">{label}</label><br><select id=\"{name}\" name=\"{name}\">{opts}</select> {}</p>",
        errs.for_field(name)
    )
}

/// A form page: 422 when it comes back with errors, so scripts and tests can tell.
pub(crate) fn form_page(session: &Session, title: &str, body: &str, errs: &Errors) -> Response {
    let mut r = crate::admin::layout(session, title, body);
    if !errs.is_empty() {
        *r.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
    }
    r
}

// ----- apps -------------------------------------------------------------------------------

/// `editing`: the stored app, whose secret is shown only as its hint.
fn app_form(
    state: &AppState,
    session: &Session,
    action: &str,
    f: &Fields,
    errs: &Errors,
    editing: Option<&mailgate_core::OAuthApp>,
) -> Response {
    let redirect = escape(&redirect_uri(&state.public_url));
    let kind = if editing.is_some() {
        format!(
            "<p>Kind: <strong>{}</strong><input type=\"hidden\" name=\"kind\" value=\"{}\"></p>",
            escape(get(f, "kind")),
            escape(get(f, "kind"))
        )
    } else {
        select(
            f,
            errs,
            "kind",
            "Provider",
            &[
                ("microsoft", "Microsoft 365 / Outlook.com"),
                ("google", "Google Workspace / Gmail"),
                ("generic", "Other OAuth2 provider"),
            ],
        )
    };
    let secret_hint = match editing {
        Some(app) => format!(
            "Stored: <strong id=\"secret-state\">{}</strong>. Write-only: leave empty to keep it.",
            escape(
                &app.spec
                    .client_secret
                    .as_ref()
                    .map(|s| s.hint())
                    .unwrap_or_else(|| "not set".into())
            )
        ),
        None => "Microsoft: the secret's <em>Value</em>, not its Secret ID.".to_owned(),
    };
    let body = format!(
        "<h1>{title}</h1>{summary}\
<div class=\"instructions\"><p><strong>Redirect URI</strong> — register exactly this at the provider (Microsoft Entra → App registrations → Authentication → platform <em>Web</em>; Google → Credentials → OAuth client → Authorized redirect URIs):</p>\
<p><input id=\"redirect-uri\" readonly size=\"60\" value=\"{redirect}\"> <button type=\"button\" id=\"copy-redirect\" onclick=\"navigator.clipboard.writeText(document.getElementById('redirect-uri').value).then(()=>this.textContent='Copied')\">Copy</button></p>\
<p><small>Microsoft delegated permissions to add: Office 365 Exchange Online → IMAP.AccessAsUser.All, POP.AccessAsUser.All, SMTP.Send, and offline_access.</small></p></div>\
<form method=\"post\" action=\"{action}\">{csrf}{kind}{name}{tenant}{client_id}{secret}{expires}{flow}<details><summary>Advanced</summary>{authority}{scopes}</details>\
<p><button type=\"submit\" id=\"save\">Save</button></p></form>",
        title = if editing.is_some() {
            "Edit OAuth app"
        } else {
            "New OAuth app"
        },
        summary = errs.summary(),
        csrf = session.csrf_field(),
        name = input(f, errs, "name", "Name", "text", ""),
        tenant = input(
            f,
            errs,
            "tenant",
            "Tenant (Microsoft)",
            "text",
            "Directory (tenant) ID, a verified domain, or common / organizations / consumers."
        ),
        client_id = input(
            f,
            errs,
            "client_id",
            "Client ID",
            "text",
            "Microsoft: Application (client) ID."
        ),
        secret = input(
            f,
            errs,
            "client_secret",
            "Client secret",
            "password",
            &secret_hint
        ),
        expires = input(
            f,
            errs,
            "secret_expires",
            "Secret expires",
            "date",
            "mailgate warns 30, 14, 7 and 1 day(s) before."
        ),
        flow = select(
            f,
            errs,
            "flow",
            "Flow",
            &[
                ("authorization_code", "Browser sign-in (recommended)"),
                ("device_code", "Device code"),
                (
                    "client_credentials",
                    "Microsoft app-only (client credentials)"
                )
            ]
        ),
        authority = input(
            f,
            errs,
            "authority",
            "Sign-in host (authority)",
            "url",
            "Only for sovereign clouds or a test identity provider, e.g. https://login.microsoftonline.us."
        ) + &input(
            f,
            errs,
            "authorize_url",
            "Authorize URL",
            "url",
            "Other OAuth2 providers: from their documentation. Empty: the preset."
        ) + &input(
            f,
            errs,
            "token_url",
            "Token URL",
            "url",
            "Other OAuth2 providers: from their documentation. Empty: the preset."
        ) + &input(
            f,
            errs,
            "issuer",
            "Issuer",
            "url",
            "Other OpenID Connect providers: the issuer alone is enough; mailgate reads the other endpoints from its discovery document."
        ) + &input(
            f,
            errs,
            "jwks_url",
            "JWKS URL",
            "url",
            "Other providers without discovery: the signing keys that vouch for who signed in."
        ) + &input(
            f,
            errs,
            "userinfo_url",
            "Userinfo URL",
            "url",
            "Other providers without discovery: used when no id_token comes back."
        ),
        scopes = input(
            f,
            errs,
            "scopes",
            "Scopes",
            "text",
            "Leave empty for the provider's preset."
        ),
    );
    form_page(session, "OAuth app", &body, errs)
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
/// when it is taken; a store failure is the "unavailable" page.
fn change_refused(errs: &mut Errors, e: ChangeError, taken: &str) -> Option<Response> {
    match e {
        ChangeError::Field(e) => field_error(errs, e),
        ChangeError::Store(mailgate_store::StoreError::Duplicate { .. }) => errs.add("name", taken),
        ChangeError::Store(e) => return Some(unavailable(e)),
        // The forms act for an administrator, who may move an account (`may_move`).
        ChangeError::MovesDestinations(_) => {}
    }
    None
}

pub async fn new_app_form(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = session.require_admin() {
        return r;
    }
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
    )
}

pub async fn create_app(
    State(state): State<AppState>,
    session: Session,
    Form(f): Form<Fields>,
) -> Response {
    if let Err(r) = session.admin_form(f.get("csrf").map(String::as_str)) {
        return r;
    }
    let mut errs = Errors::default();
    let kind = req(&f, &mut errs, "kind", AppKind::parse);
    let name = req(&f, &mut errs, "name", Name::parse);
    let tenant =
        opt(&f, &mut errs, "tenant", TenantId::parse).filter(|_| kind == Some(AppKind::Microsoft));
    let client_id = req(&f, &mut errs, "client_id", ClientId::parse);
    let secret = opt(&f, &mut errs, "client_secret", |s| {
        Secret::parse("client secret", s)
    });
    let expires = opt(&f, &mut errs, "secret_expires", parse_date);
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
        match changes::create_app(&state.engine, new, state.clock.now()).await {
            Ok(app) => return Redirect::to(&format!("/admin/apps/{}", app.id)).into_response(),
            Err(e) => {
                if let Some(r) =
                    change_refused(&mut errs, e, "an app with this name already exists")
                {
                    return r;
                }
            }
        }
    }
    app_form(&state, &session, "/admin/apps/new", &f, &errs, None)
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
    f
}

pub async fn edit_app_form(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> Response {
    if let Err(r) = session.require_admin() {
        return r;
    }
    match state.store.app(AppId(id)).await {
        Ok(app) => app_form(
            &state,
            &session,
            &format!("/admin/apps/{id}"),
            &app_fields(&app),
            &Errors::default(),
            Some(&app),
        ),
        Err(mailgate_store::StoreError::NotFound { .. }) => {
            page(StatusCode::NOT_FOUND, "Not found", "<h1>No such app</h1>")
        }
        Err(e) => unavailable(e),
    }
}

pub async fn update_app(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<Fields>,
) -> Response {
    if let Err(r) = session.admin_form(f.get("csrf").map(String::as_str)) {
        return r;
    }
    let current = match state.store.app(AppId(id)).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let mut errs = Errors::default();
    let endpoints = endpoint_input(&f, &mut errs);
    let changes = AppChanges {
        name: req(&f, &mut errs, "name", Name::parse),
        tenant: opt(&f, &mut errs, "tenant", TenantId::parse)
            .filter(|_| current.spec.kind == AppKind::Microsoft),
        client_id: req(&f, &mut errs, "client_id", ClientId::parse),
        client_secret: opt(&f, &mut errs, "client_secret", |s| {
            Secret::parse("client secret", s)
        }),
        secret_expires: opt(&f, &mut errs, "secret_expires", parse_date),
        flow: opt(&f, &mut errs, "flow", OAuthFlow::parse),
        endpoints,
        ..Default::default()
    };
    if errs.is_empty() {
        match changes::update_app(&state.engine, current.clone(), changes, state.clock.now()).await
        {
            Ok(_) => return Redirect::to("/admin/apps").into_response(),
            Err(e) => {
                if let Some(r) =
                    change_refused(&mut errs, e, "an app with this name already exists")
                {
                    return r;
                }
            }
        }
    }
    app_form(
        &state,
        &session,
        &format!("/admin/apps/{id}"),
        &f,
        &errs,
        Some(&current),
    )
}

// ----- accounts ---------------------------------------------------------------------------

async fn account_form(
    state: &AppState,
    session: &Session,
    action: &str,
    f: &Fields,
    errs: &Errors,
    editing: bool,
) -> Response {
    let apps = match state.store.list_apps().await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
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
    let enabled = if get(f, "enabled") == "on" || (!editing && f.get("enabled").is_none()) {
        " checked"
    } else {
        ""
    };
    let body = format!(
        "<h1>{title}</h1>{summary}<form method=\"post\" action=\"{action}\">{csrf}{name}{app}{email}{delegate}\
<p><label><input type=\"checkbox\" name=\"send_on_behalf\"{on_behalf}> Send on behalf (Sender: the delegate)</label></p>\
<p><label><input type=\"checkbox\" name=\"enabled\"{enabled}> Enabled</label></p>\
<fieldset><legend>Inbound</legend>{inbound}{ihost}{iport}{itls}</fieldset>\
<fieldset><legend>Outbound</legend>{outbound}{shost}{sport}{stls}</fieldset>\
{from}{reply}<p><label for=\"signature\">Signature</label><br><textarea id=\"signature\" name=\"signature\" rows=\"3\" cols=\"50\">{sig}</textarea> {sigerr}</p>{onrecv}\
<p><button type=\"submit\" id=\"save\">Save</button></p></form>",
        title = if editing {
            "Edit mail account"
        } else {
            "New mail account"
        },
        summary = errs.summary(),
        csrf = session.csrf_field(),
        name = input(f, errs, "name", "Name", "text", ""),
        app = select(f, errs, "app", "OAuth app", &app_refs),
        email = input(
            f,
            errs,
            "email",
            "Mailbox address",
            "email",
            "The user who authorizes must sign in as this address, unless a delegate is named."
        ),
        delegate = input(
            f,
            errs,
            "delegate",
            "Delegate",
            "email",
            "For a shared mailbox: the user with FullAccess and SendAs on it who signs in."
        ),
        on_behalf = if get(f, "send_on_behalf") == "on" {
            " checked"
        } else {
            ""
        },
        inbound = select(
            f,
            errs,
            "inbound",
            "Protocol",
            &[("imap", "IMAP"), ("pop3", "POP3"), ("none", "none")]
        ),
        ihost = input(
            f,
            errs,
            "inbound_host",
            "Host",
            "text",
            "Empty: the provider's preset."
        ),
        iport = input(f, errs, "inbound_port", "Port", "number", ""),
        itls = select(
            f,
            errs,
            "inbound_tls",
            "TLS",
            &[
                ("", "preset"),
                ("implicit", "implicit TLS"),
                ("starttls", "STARTTLS")
            ]
        ),
        outbound = select(
            f,
            errs,
            "outbound",
            "Protocol",
            &[("smtp", "SMTP"), ("none", "none")]
        ),
        shost = input(
            f,
            errs,
            "smtp_host",
            "Host",
            "text",
            "Empty: the provider's preset."
        ),
        sport = input(f, errs, "smtp_port", "Port", "number", ""),
        stls = select(
            f,
            errs,
            "smtp_tls",
            "TLS",
            &[
                ("", "preset"),
                ("implicit", "implicit TLS"),
                ("starttls", "STARTTLS")
            ]
        ),
        from = input(f, errs, "from_name", "From name", "text", ""),
        reply = input(f, errs, "reply_to", "Reply-To", "email", ""),
        sig = escape(get(f, "signature")),
        sigerr = errs.for_field("signature"),
        onrecv = input(
            f,
            errs,
            "on_received",
            "On email received",
            "text",
            "none, webhook, mark_seen, delete or move:FOLDER"
        ),
    );
    form_page(session, "Mail account", &body, errs)
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
        on_received: opt(f, errs, "on_received", OnReceived::parse),
        delegate: opt(f, errs, "delegate", EmailAddress::parse),
        send_on_behalf: Some(get(f, "send_on_behalf") == "on"),
        // The edit form shows the current delegate: a field left empty means none.
        clear_delegate: get(f, "delegate").is_empty(),
    }
}

/// Accounts are created, changed and removed by administrators only (README: operators
/// authorize and test): an account's app and hosts decide where its tokens are sent.
pub async fn new_account_form(State(state): State<AppState>, session: Session) -> Response {
    if let Err(r) = session.require_admin() {
        return r;
    }
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
    session: Session,
    Form(f): Form<Fields>,
) -> Response {
    if let Err(r) = session.admin_form(f.get("csrf").map(String::as_str)) {
        return r;
    }
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
            Err(e) => return unavailable(e),
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
                    return Redirect::to(&format!("/admin/accounts/{}", acc.id)).into_response();
                }
                Err(e) => {
                    if let Some(r) =
                        change_refused(&mut errs, e, "an account with this name already exists")
                    {
                        return r;
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
    session: Session,
    Path(id): Path<i64>,
) -> Response {
    if let Err(r) = session.require_admin() {
        return r;
    }
    match state.store.account(AccountId(id)).await {
        Ok(a) => {
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
        Err(mailgate_store::StoreError::NotFound { .. }) => page(
            StatusCode::NOT_FOUND,
            "Not found",
            "<h1>No such account</h1>",
        ),
        Err(e) => unavailable(e),
    }
}

pub async fn update_account(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<Fields>,
) -> Response {
    if let Err(r) = session.admin_form(f.get("csrf").map(String::as_str)) {
        return r;
    }
    let current = match state.store.account(AccountId(id)).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
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
                        return Redirect::to(&format!("/admin/accounts/{id}")).into_response();
                    }
                    Err(e) => {
                        if let Some(r) =
                            change_refused(&mut errs, e, "an account with this name already exists")
                        {
                            return r;
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

pub async fn account_page(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
) -> Response {
    account_page_with(&state, &session, id, "").await
}

async fn account_page_with(state: &AppState, session: &Session, id: i64, extra: &str) -> Response {
    let acc = match state.store.account(AccountId(id)).await {
        Ok(a) => a,
        Err(mailgate_store::StoreError::NotFound { .. }) => {
            return page(
                StatusCode::NOT_FOUND,
                "Not found",
                "<h1>No such account</h1>",
            );
        }
        Err(e) => return unavailable(e),
    };
    let s = &acc.spec;
    let problem = acc
        .last_problem
        .as_ref()
        .map(|p| {
            format!(
                "<p class=\"bad\">Last problem: {}{}</p>",
                crate::html::problem_summary(Some(p)),
                p.detail
                    .as_ref()
                    .map(|d| format!("<br><small>The provider said: {}</small>", escape(d)))
                    .unwrap_or_default()
            )
        })
        .unwrap_or_default();
    let authorize_label = if acc.state == mailgate_core::AccountState::Unauthorized {
        "Authorize"
    } else {
        "Re-authorize"
    };
    let body = format!(
        "<h1>Account {name}</h1><p>State: <strong id=\"account-state\">{state}</strong></p>{problem}\
<p>Mailbox: <span id=\"account-access\">{access}</span></p><p>Inbound: {inbound}</p><p>Outbound: {outbound}</p>\
{edit}\
<form method=\"post\" action=\"/admin/accounts/{id}/authorize\">{csrf}<p>You will be asked to sign in as <strong>{sign_in}</strong>. If your browser is signed in to the provider as someone else, sign out first or use a private window.</p>\
<button type=\"submit\" id=\"authorize\">{authorize_label}</button></form>\
<form method=\"post\" action=\"/admin/accounts/{id}/test\">{csrf}<p><button type=\"submit\" id=\"test-configuration\">Test configuration</button></p></form>{extra}",
        name = escape(s.name.as_str()),
        state = acc.state,
        access = escape(&s.access_summary()),
        sign_in = escape(s.sign_in_user().as_str()),
        inbound = s
            .inbound
            .as_ref()
            .map(|i| format!("{} {}", i.protocol, escape(&i.server.to_string())))
            .unwrap_or_else(|| "none".into()),
        outbound = s
            .outbound
            .as_ref()
            .map(|o| format!("smtp {}", escape(&o.server.to_string())))
            .unwrap_or_else(|| "none".into()),
        csrf = session.csrf_field(),
        edit = if session.user.role == mailgate_core::user::Role::Admin {
            format!(
                "<p><a href=\"/admin/accounts/{id}/edit\">Edit</a></p>\
<form method=\"post\" action=\"/admin/accounts/{id}/proxy-password\">{csrf}<p><button type=\"submit\" id=\"proxy-password\">Generate proxy password</button> for password-only IMAP/POP3/SMTP clients; replaces the current one.</p></form>",
                csrf = session.csrf_field()
            )
        } else {
            String::new()
        },
    );
    crate::admin::layout(session, "Mail account", &body)
}

/// Starts the browser authorization, bound to this session, and sends the browser to the
/// provider.
pub async fn authorize(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<Fields>,
) -> Response {
    if let Err(r) = session.check_csrf(f.get("csrf").map(String::as_str)) {
        return r;
    }
    let redirect = redirect_uri(&state.public_url);
    match state
        .engine
        .start_authorization(AccountId(id), &session.initiator(), &redirect)
        .await
    {
        Ok(started) => Redirect::to(started.url.as_str()).into_response(),
        Err(e) => {
            let note = format!(
                "<p class=\"bad\" role=\"alert\">Cannot start the authorization: {} <code>{}</code></p>",
                escape(&e.to_string()),
                e.code()
            );
            account_page_with(&state, &session, id, &note).await
        }
    }
}

/// Starts "Test configuration" in the background and shows its page, which fills in step
/// by step.
pub async fn test_account(
    State(state): State<AppState>,
    session: Session,
    Path(id): Path<i64>,
    Form(f): Form<Fields>,
) -> Response {
    if let Err(r) = session.check_csrf(f.get("csrf").map(String::as_str)) {
        return r;
    }
    let acc = match state.store.account(AccountId(id)).await {
        Ok(a) => a,
        Err(e) => return unavailable(e),
    };
    let run = match crate::test_runs::start(&state, acc, Default::default()) {
        Ok(run) => run,
        Err(e) => return crate::html::random_failed(e),
    };
    Redirect::to(&format!("/admin/accounts/{id}/tests/{run}")).into_response()
}

fn steps_fragment(run: &crate::test_runs::TestRun) -> String {
    use mailgate_mail::check::StepStatus;
    let rows: String = run
        .steps
        .iter()
        .map(|s| {
            let (class, mark) = match s.status {
                StepStatus::Ok => ("ok", "ok"),
                StepStatus::Failed => ("bad", "failed"),
                StepStatus::Skipped => ("", "skipped"),
                StepStatus::Warning => ("warn", "warning"),
            };
            let says = s.server_says.as_ref().map(|x| format!("<br><small>Server said: <code>{}</code></small>", escape(x))).unwrap_or_default();
            let fix = s.remediation.as_ref().map(|r| format!("<br><strong>What to do</strong> <code>{}</code>: {}", escape(&r.code), escape(&r.text))).unwrap_or_default();
            format!("<tr class=\"step\"><td>{}</td><td class=\"{class}\">{mark}</td><td>{} ms</td><td>{}{says}{fix}</td></tr>", escape(&s.name), s.duration_ms, escape(&s.detail))
        })
        .collect();
    let verdict = match run.finished() {
        Some(true) => "<p class=\"ok\" id=\"test-result\" data-done>All steps passed.</p>",
        Some(false) => "<p class=\"bad\" id=\"test-result\" data-done>The test failed.</p>",
        None => "<p id=\"test-running\">Running…</p>",
    };
    format!(
        "{verdict}<table><tr><th>step</th><th>status</th><th>time</th><th>detail</th></tr>{rows}</table>"
    )
}

/// The account page with the run's steps, refreshed in place until it finishes.
pub async fn test_page(
    State(state): State<AppState>,
    session: Session,
    Path((id, run)): Path<(i64, String)>,
) -> Response {
    let Some(r) = state.tests.get(&run).filter(|r| r.account_id == id) else {
        return account_page_with(
            &state,
            &session,
            id,
            "<p class=\"warn\">That test run is no longer kept; run the test again.</p>",
        )
        .await;
    };
    let poll = if r.finished().is_none() {
        format!(
            "<script>(function poll(){{fetch('/admin/tests/{run}').then(function(r){{return r.text()}}).then(function(h){{var d=document.getElementById('test-steps');d.innerHTML=h;if(!d.querySelector('[data-done]'))setTimeout(poll,400)}})}})();</script>\
<noscript><p><a href=\"/admin/accounts/{id}/tests/{run}\">Refresh</a> to see more steps.</p></noscript>"
        )
    } else {
        String::new()
    };
    let extra = format!(
        "<h2>Test configuration</h2><div id=\"test-steps\">{}</div>{poll}",
        steps_fragment(&r)
    );
    account_page_with(&state, &session, id, &extra).await
}

/// The steps so far, as an HTML fragment for the polling page.
pub async fn test_steps(
    State(state): State<AppState>,
    _session: Session,
    Path(run): Path<String>,
) -> Response {
    match state.tests.get(&run) {
        Some(r) => axum::response::Html(steps_fragment(&r)).into_response(),
        None => (StatusCode::NOT_FOUND, "no such test run").into_response(),
    }
}
