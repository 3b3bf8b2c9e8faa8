//! Domain types to and from rows. Every value read back is parsed again by the core
//! parsers, so a hand-edited database gives a clear error instead of a broken value.

use crate::{Result, StoreError};
use mailgate_core::account::{
    AccountSpec, Inbound, InboundProtocol, MailAccount, OnReceived, Outbound, Problem,
    ServerEndpoint,
};
use mailgate_core::app::{AppKind, AppSpec, Endpoints, OAuthApp, OAuthFlow};
use mailgate_core::event::{Event, EventKind};
use mailgate_core::{
    AccountId, AccountState, AppId, ClientId, EmailAddress, Grant, Host, HttpUrl, Identity, Name,
    Port, Scopes, TenantId, Timestamp, TlsMode,
};
use sqlx::any::{AnyArguments, AnyRow};
use sqlx::query::Query;
use sqlx::{Any, Row};

pub(crate) type AnyQuery<'a> = Query<'a, Any, AnyArguments<'a>>;

/// Arguments for the small existence checks.
pub(crate) trait BindAll<'a> {
    fn bind_all(self, q: AnyQuery<'a>) -> AnyQuery<'a>;
}

impl<'a> BindAll<'a> for &'a str {
    fn bind_all(self, q: AnyQuery<'a>) -> AnyQuery<'a> {
        q.bind(self)
    }
}

impl<'a> BindAll<'a> for i64 {
    fn bind_all(self, q: AnyQuery<'a>) -> AnyQuery<'a> {
        q.bind(self)
    }
}

impl<'a> BindAll<'a> for (&'a str, i64) {
    fn bind_all(self, q: AnyQuery<'a>) -> AnyQuery<'a> {
        q.bind(self.0).bind(self.1)
    }
}

pub(crate) const APP_COLUMNS: &str = "id, name, kind, tenant, client_id, client_secret, service_account_key, secret_expires, authorize_url, token_url, device_url, jwks_url, userinfo_url, revoke_url, issuer, scopes, extra_params, flow, created_at, updated_at";

pub(crate) const ACCOUNT_COLUMNS: &str = "id, name, description, enabled, mailbox, shared_mailbox, aliases, app_id, inbound_protocol, inbound_host, inbound_port, inbound_tls, outbound_host, outbound_port, outbound_tls, from_name, reply_to, signature, on_received, state, problem_code, problem_remediation, problem_detail, problem_at, created_at, updated_at, delegate, send_on_behalf";

const DATE: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]");

fn url_str(u: &Option<HttpUrl>) -> Option<String> {
    u.as_ref().map(|u| u.to_string())
}

/// Binds $1..$15 in the order of the INSERT/UPDATE statements in lib.rs.
pub(crate) fn bind_app<'a>(q: AnyQuery<'a>, s: &AppSpec) -> AnyQuery<'a> {
    let e = &s.endpoints;
    q.bind(s.name.to_string())
        .bind(s.kind.as_str())
        .bind(s.tenant.as_ref().map(|t| t.to_string()))
        .bind(s.client_id.to_string())
        .bind(s.secret_expires.and_then(|d| d.format(DATE).ok()))
        .bind(url_str(&e.authorize))
        .bind(e.token.to_string())
        .bind(url_str(&e.device))
        .bind(url_str(&e.jwks))
        .bind(url_str(&e.userinfo))
        .bind(url_str(&e.revoke))
        .bind(e.issuer.clone())
        .bind(s.scopes.to_string())
        .bind(serde_json::to_string(&s.extra_params).unwrap_or_else(|_| "[]".into()))
        .bind(s.flow.as_str())
}

/// Binds $1..$18 in the order of the INSERT/UPDATE statements in lib.rs.
pub(crate) fn bind_account<'a>(q: AnyQuery<'a>, s: &AccountSpec) -> AnyQuery<'a> {
    let inb = s.inbound.as_ref();
    let out = s.outbound.as_ref();
    q.bind(s.name.to_string())
        .bind(s.description.clone())
        .bind(i64::from(s.enabled))
        .bind(s.mailbox.to_string())
        .bind(s.shared_mailbox.as_ref().map(|m| m.to_string()))
        .bind(serde_json::to_string(&s.aliases).unwrap_or_else(|_| "[]".into()))
        .bind(s.app_id.0)
        .bind(inb.map(|i| i.protocol.as_str()))
        .bind(inb.map(|i| i.server.host.to_string()))
        .bind(inb.map(|i| i64::from(i.server.port.get())))
        .bind(inb.map(|i| i.server.tls.as_str()))
        .bind(out.map(|o| o.server.host.to_string()))
        .bind(out.map(|o| i64::from(o.server.port.get())))
        .bind(out.map(|o| o.server.tls.as_str()))
        .bind(s.from_name.clone())
        .bind(s.reply_to.as_ref().map(|r| r.to_string()))
        .bind(s.signature.clone())
        .bind(s.on_received.to_string())
}

/// The delegate columns (migration 11), written in the transaction that inserts or updates
/// the account row; kept out of the long INSERT/UPDATE so their placeholders stay as they are.
pub(crate) async fn write_account_delegate(
    tx: &mut sqlx::Transaction<'_, Any>,
    id: mailgate_core::AccountId,
    s: &AccountSpec,
) -> Result<()> {
    sqlx::query("UPDATE accounts SET delegate = $1, send_on_behalf = $2 WHERE id = $3")
        .bind(s.delegate.as_ref().map(|d| d.to_string()))
        .bind(i64::from(s.send_on_behalf))
        .bind(id.0)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

fn corrupt(column: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("{column}: {e}"))
}

fn get<T>(row: &AnyRow, col: &str) -> Result<T>
where
    T: for<'r> sqlx::Decode<'r, Any> + sqlx::Type<Any>,
{
    row.try_get(col).map_err(|e| corrupt(col, e))
}

fn parse<T, E: std::fmt::Display>(
    row: &AnyRow,
    col: &str,
    f: impl Fn(&str) -> Result<T, E>,
) -> Result<T> {
    let s: String = get(row, col)?;
    f(&s).map_err(|e| corrupt(col, e))
}

fn parse_opt<T, E: std::fmt::Display>(
    row: &AnyRow,
    col: &str,
    f: impl Fn(&str) -> Result<T, E>,
) -> Result<Option<T>> {
    let s: Option<String> = get(row, col)?;
    s.map(|s| f(&s).map_err(|e| corrupt(col, e))).transpose()
}

pub(crate) fn app(row: &AnyRow) -> Result<OAuthApp> {
    let extra: String = get(row, "extra_params")?;
    Ok(OAuthApp {
        id: AppId(get(row, "id")?),
        spec: AppSpec {
            name: parse(row, "name", Name::parse)?,
            kind: parse(row, "kind", AppKind::parse)?,
            tenant: parse_opt(row, "tenant", TenantId::parse)?,
            client_id: parse(row, "client_id", ClientId::parse)?,
            client_secret: None,
            service_account_key: None,
            secret_expires: parse_opt(row, "secret_expires", |s| time::Date::parse(s, DATE))?,
            endpoints: Endpoints {
                authorize: parse_opt(row, "authorize_url", HttpUrl::parse)?,
                token: parse(row, "token_url", HttpUrl::parse)?,
                device: parse_opt(row, "device_url", HttpUrl::parse)?,
                jwks: parse_opt(row, "jwks_url", HttpUrl::parse)?,
                userinfo: parse_opt(row, "userinfo_url", HttpUrl::parse)?,
                revoke: parse_opt(row, "revoke_url", HttpUrl::parse)?,
                issuer: get(row, "issuer")?,
            },
            scopes: parse(row, "scopes", Scopes::parse)?,
            extra_params: serde_json::from_str(&extra).map_err(|e| corrupt("extra_params", e))?,
            flow: parse(row, "flow", OAuthFlow::parse)?,
        },
        created_at: Timestamp(get(row, "created_at")?),
        updated_at: Timestamp(get(row, "updated_at")?),
    })
}

fn server(row: &AnyRow, prefix: &str) -> Result<Option<ServerEndpoint>> {
    let host = parse_opt(row, &format!("{prefix}_host"), Host::parse)?;
    let port: Option<i64> = get(row, &format!("{prefix}_port"))?;
    let tls = parse_opt(row, &format!("{prefix}_tls"), TlsMode::parse)?;
    Ok(match (host, port, tls) {
        (Some(host), Some(port), Some(tls)) => Some(ServerEndpoint {
            host,
            port: Port::parse(&port.to_string()).map_err(|e| corrupt(prefix, e))?,
            tls,
        }),
        (None, None, None) => None,
        _ => {
            return Err(corrupt(
                prefix,
                "host, port and TLS mode must be set together",
            ));
        }
    })
}

pub(crate) fn account(row: &AnyRow) -> Result<MailAccount> {
    let aliases: String = get(row, "aliases")?;
    let inbound = match (
        parse_opt(row, "inbound_protocol", InboundProtocol::parse)?,
        server(row, "inbound")?,
    ) {
        (Some(protocol), Some(server)) => Some(Inbound { protocol, server }),
        (None, None) => None,
        _ => {
            return Err(corrupt(
                "inbound_protocol",
                "protocol and server must be set together",
            ));
        }
    };
    let problem = match parse_opt(row, "problem_code", |s| Ok::<_, String>(s.to_owned()))? {
        Some(code) => Some(Problem {
            code,
            remediation: get::<Option<String>>(row, "problem_remediation")?.unwrap_or_default(),
            detail: get(row, "problem_detail")?,
            at: Timestamp(get::<Option<i64>>(row, "problem_at")?.unwrap_or(0)),
        }),
        None => None,
    };
    let enabled: i64 = get(row, "enabled")?;
    Ok(MailAccount {
        id: AccountId(get(row, "id")?),
        spec: AccountSpec {
            name: parse(row, "name", Name::parse)?,
            description: get(row, "description")?,
            enabled: enabled != 0,
            mailbox: parse(row, "mailbox", EmailAddress::parse)?,
            shared_mailbox: parse_opt(row, "shared_mailbox", EmailAddress::parse)?,
            aliases: serde_json::from_str(&aliases).map_err(|e| corrupt("aliases", e))?,
            app_id: AppId(get(row, "app_id")?),
            inbound,
            outbound: server(row, "outbound")?.map(|server| Outbound { server }),
            from_name: get(row, "from_name")?,
            reply_to: parse_opt(row, "reply_to", EmailAddress::parse)?,
            signature: get(row, "signature")?,
            on_received: parse(row, "on_received", OnReceived::parse)?,
            delegate: parse_opt(row, "delegate", EmailAddress::parse)?,
            send_on_behalf: get::<i64>(row, "send_on_behalf")? != 0,
        },
        state: parse(row, "state", |s| {
            AccountState::parse(s).ok_or("unknown state")
        })?,
        last_problem: problem,
        created_at: Timestamp(get(row, "created_at")?),
        updated_at: Timestamp(get(row, "updated_at")?),
    })
}

/// A grant without its (still sealed) tokens.
pub(crate) fn grant(row: &AnyRow) -> Result<Grant> {
    let identity: String = get(row, "identity")?;
    Ok(Grant {
        account_id: AccountId(get(row, "account_id")?),
        access_token: None,
        access_expires_at: get::<Option<i64>>(row, "access_expires_at")?.map(Timestamp),
        refresh_token: None,
        scopes: parse(row, "scopes", |s| {
            if s.trim().is_empty() {
                Ok(Scopes::default())
            } else {
                Scopes::parse(s)
            }
        })?,
        identity: serde_json::from_str::<Identity>(&identity)
            .map_err(|e| corrupt("identity", e))?,
        authorized_at: Timestamp(get(row, "authorized_at")?),
        authorized_by: get(row, "authorized_by")?,
    })
}

pub(crate) fn event(row: &AnyRow) -> Result<Event> {
    Ok(Event {
        id: get(row, "id")?,
        at: Timestamp(get(row, "at")?),
        kind: parse(row, "kind", EventKind::parse)?,
        app_id: get::<Option<i64>>(row, "app_id")?.map(AppId),
        account_id: get::<Option<i64>>(row, "account_id")?.map(AccountId),
        message: get(row, "message")?,
        // Only the audit queries (`audit.rs`) select these two.
        actor: row.try_get::<Option<String>, _>("actor").ok().flatten(),
        source: row.try_get::<Option<String>, _>("source").ok().flatten(),
    })
}

/// (app id, secret expiry date) of a row holding both.
pub(crate) fn secret_expiry(row: &AnyRow) -> Result<(AppId, time::Date)> {
    let date = parse(row, "secret_expires", |s| time::Date::parse(s, DATE))?;
    Ok((AppId(get(row, "id")?), date))
}
