//! The JSON views of apps and accounts. Built field by field from the domain types so that
//! a secret can only appear as its hint ("set (…4f2a)"): nothing here serialises a `Secret`.

use mailgate_core::account::{Problem, ServerEndpoint};
use mailgate_core::{
    AccountId, AccountState, AppId, AppKind, ClientId, EmailAddress, Endpoints, HttpUrl,
    MailAccount, Name, OAuthApp, OAuthFlow, Secret, TenantId,
};
use serde::Serialize;
use utoipa::ToSchema;

/// Where the provider sends the browser back after a sign-in: the one redirect URI to
/// register at the provider.
pub fn redirect_uri(public_url: &HttpUrl) -> String {
    public_url.join_path("/oauth/callback").to_string()
}

/// An OAuth app as `mailgate app show --json` and `GET /api/v1/apps/{id}` show it; its
/// OpenAPI schema (`App`) is derived from this type.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = App)]
pub struct AppView {
    pub id: AppId,
    pub name: Name,
    pub kind: AppKind,
    pub tenant: Option<TenantId>,
    pub client_id: ClientId,
    /// The secret's hint, never the secret.
    pub client_secret: Option<String>,
    /// The service-account key's hint, never the key.
    pub service_account_key: Option<String>,
    /// `YYYY-MM-DD`.
    pub secret_expires: Option<String>,
    /// Whole days from today (UTC) to `secret_expires`; negative once it has expired.
    pub secret_expires_in_days: Option<i64>,
    pub flow: OAuthFlow,
    pub redirect_uri: String,
    pub endpoints: Endpoints,
    pub scopes: Vec<String>,
    /// Extra authorize parameters, e.g. `{"domain_hint": "contoso.com"}`.
    #[schema(value_type = std::collections::BTreeMap<String, String>)]
    pub extra_params: serde_json::Map<String, serde_json::Value>,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

impl AppView {
    /// `today` is the caller's clock's date (`Clock::now().date()`), so "days until the
    /// secret expires" is counted one way everywhere.
    pub fn new(app: &OAuthApp, public_url: &HttpUrl, today: Option<time::Date>) -> AppView {
        let s = &app.spec;
        AppView {
            id: app.id,
            name: s.name.clone(),
            kind: s.kind,
            tenant: s.tenant.clone(),
            client_id: s.client_id.clone(),
            client_secret: s.client_secret.as_ref().map(Secret::hint),
            service_account_key: s.service_account_key.as_ref().map(Secret::hint),
            secret_expires: s.secret_expires.map(|d| d.to_string()),
            secret_expires_in_days: s
                .secret_expires
                .zip(today)
                .map(|(d, t)| (d - t).whole_days()),
            flow: s.flow,
            redirect_uri: redirect_uri(public_url),
            endpoints: s.endpoints.clone(),
            scopes: s.scopes.iter().map(str::to_owned).collect(),
            extra_params: s
                .extra_params
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone())))
                .collect(),
            created_at: app.created_at.rfc3339(),
            updated_at: app.updated_at.rfc3339(),
        }
    }
}

/// A mail server as the account view shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Server)]
pub struct ServerView {
    /// `imap` or `pop3` inbound, `smtp` outbound.
    pub protocol: String,
    #[serde(flatten)]
    pub server: ServerEndpoint,
}

/// The app an account uses, by id and name.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct AppRef {
    pub id: AppId,
    pub name: String,
}

/// A mail account as `mailgate account show --json` and `GET /api/v1/accounts/{id}` show
/// it; its OpenAPI schema (`Account`) is derived from this type. Accounts hold no secrets.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[schema(as = Account)]
pub struct AccountView {
    pub id: AccountId,
    pub name: Name,
    pub description: String,
    pub enabled: bool,
    pub state: AccountState,
    pub mailbox: EmailAddress,
    pub shared_mailbox: Option<EmailAddress>,
    pub aliases: Vec<EmailAddress>,
    /// The same as `app.id`; the API's request bodies name the app by `app` (id or name).
    pub app_id: AppId,
    pub app: AppRef,
    pub inbound: Option<ServerView>,
    pub outbound: Option<ServerView>,
    pub from_name: Option<String>,
    pub reply_to: Option<EmailAddress>,
    pub signature: Option<String>,
    /// As the CLI and the API take it: `none`, `webhook`, `mark_seen`, `delete`, `move:FOLDER`.
    pub on_received: String,
    pub delegate: Option<EmailAddress>,
    pub send_on_behalf: bool,
    /// The mailbox, and whose sign-in opens it.
    pub access: String,
    pub last_problem: Option<Problem>,
    /// RFC 3339.
    pub created_at: String,
    pub updated_at: String,
}

impl AccountView {
    /// `app_name` is the name of the app `account` uses (the caller has it or looks it up).
    pub fn new(account: &MailAccount, app_name: &str) -> AccountView {
        let s = &account.spec;
        AccountView {
            id: account.id,
            name: s.name.clone(),
            description: s.description.clone(),
            enabled: s.enabled,
            state: account.state,
            mailbox: s.mailbox.clone(),
            shared_mailbox: s.shared_mailbox.clone(),
            aliases: s.aliases.clone(),
            app_id: s.app_id,
            app: AppRef {
                id: s.app_id,
                name: app_name.to_owned(),
            },
            inbound: s.inbound.as_ref().map(|i| ServerView {
                protocol: i.protocol.to_string(),
                server: i.server.clone(),
            }),
            outbound: s.outbound.as_ref().map(|o| ServerView {
                protocol: "smtp".to_owned(),
                server: o.server.clone(),
            }),
            from_name: s.from_name.clone(),
            reply_to: s.reply_to.clone(),
            signature: s.signature.clone(),
            on_received: s.on_received.to_string(),
            delegate: s.delegate.clone(),
            send_on_behalf: s.send_on_behalf,
            access: s.access_summary(),
            last_problem: account.last_problem.clone(),
            created_at: account.created_at.rfc3339(),
            updated_at: account.updated_at.rfc3339(),
        }
    }
}
