//! `/api/v1`: the doors applications use. Bearer API tokens (stored hashed) with scopes and
//! an optional account restriction; errors as RFC 9457 `application/problem+json` with a
//! stable `type`. 401 means "who are you?" (no or unknown token), 403 "not allowed".

use crate::AppState;
use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::{StatusCode, header, request::Parts};
use axum::response::{IntoResponse, Response};
use mailgate_core::AccountId;
use mailgate_core::user::{ApiToken, TokenScope};
use serde_json::{Value, json};

/// An RFC 9457 problem response. `code` becomes the stable `type` URN.
pub fn problem(
    status: StatusCode,
    code: &str,
    detail: impl Into<String>,
    field: Option<&str>,
) -> Response {
    let mut body = json!({
        "type": format!("urn:mailgate:problem:{code}"),
        "title": status.canonical_reason().unwrap_or("error"),
        "status": status.as_u16(),
        "detail": detail.into(),
    });
    if let Some(f) = field {
        body["field"] = f.into();
    }
    let mut resp = (
        status,
        [(header::CONTENT_TYPE, "application/problem+json")],
        body.to_string(),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED
        && let Ok(v) = "Bearer realm=\"mailgate\"".parse()
    {
        resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
    }
    resp
}

pub(crate) fn store_problem(e: mailgate_store::StoreError) -> Response {
    match e {
        mailgate_store::StoreError::NotFound { what, key } => problem(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("no {what} {key}"),
            None,
        ),
        other => {
            tracing::error!(error = %other, "API: store error");
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the database is unavailable; retry later",
                None,
            )
        }
    }
}

/// The application calling, by its API token.
pub struct ApiCaller {
    pub token: ApiToken,
}

impl FromRequestParts<AppState> for ApiCaller {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let value = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let Some(token) = value
            .strip_prefix("Bearer ")
            .map(str::trim)
            .filter(|t| !t.is_empty())
        else {
            return Err(problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "send an API token as Authorization: Bearer <token> (create one with `mailgate api-token create`)",
                None,
            ));
        };
        match state
            .store
            .api_token_by_hash(
                &mailgate_oauth::random::sha256_hex(token),
                state.clock.now(),
            )
            .await
        {
            Ok(Some(token)) => Ok(ApiCaller { token }),
            Ok(None) => Err(problem(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "the API token is unknown or was revoked",
                None,
            )),
            Err(e) => Err(store_problem(e)),
        }
    }
}

impl ApiCaller {
    pub(crate) fn require(&self, scope: TokenScope) -> Result<(), Response> {
        if self.token.scopes.contains(&scope) {
            Ok(())
        } else {
            Err(problem(
                StatusCode::FORBIDDEN,
                "insufficient_scope",
                format!("this API token lacks the scope {scope}"),
                None,
            ))
        }
    }

    pub(crate) fn may_touch(&self, account: AccountId) -> bool {
        self.token.account_ids.is_empty() || self.token.account_ids.contains(&account)
    }

    pub(crate) fn require_account(&self, account: AccountId) -> Result<(), Response> {
        if self.may_touch(account) {
            Ok(())
        } else {
            Err(problem(
                StatusCode::FORBIDDEN,
                "account_not_allowed",
                format!("this API token is limited to other accounts than {account}"),
                None,
            ))
        }
    }
}

pub(crate) fn account_json(a: &mailgate_core::MailAccount) -> Value {
    // Accounts hold no secrets; their serialisation is safe as it is.
    serde_json::to_value(a).unwrap_or(Value::Null)
}

pub async fn list_accounts(State(state): State<AppState>, caller: ApiCaller) -> Response {
    if let Err(r) = caller.require(TokenScope::AccountsRead) {
        return r;
    }
    match state.store.list_accounts().await {
        Ok(accounts) => Json(
            accounts
                .iter()
                .filter(|a| caller.may_touch(a.id))
                .map(account_json)
                .collect::<Vec<_>>(),
        )
        .into_response(),
        Err(e) => store_problem(e),
    }
}

pub async fn get_account(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<i64>,
) -> Response {
    if let Err(r) = caller
        .require(TokenScope::AccountsRead)
        .and_then(|()| caller.require_account(AccountId(id)))
    {
        return r;
    }
    match state.store.account(AccountId(id)).await {
        Ok(a) => Json(account_json(&a)).into_response(),
        Err(e) => store_problem(e),
    }
}

pub async fn account_events(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<i64>,
) -> Response {
    if let Err(r) = caller
        .require(TokenScope::AccountsRead)
        .and_then(|()| caller.require_account(AccountId(id)))
    {
        return r;
    }
    match state.store.events(Some(AccountId(id)), 200).await {
        Ok(e) => Json(e).into_response(),
        Err(e) => store_problem(e),
    }
}

/// A fresh access token, refreshed single-flight if needed, for trusted callers.
pub async fn account_token(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<i64>,
) -> Response {
    if let Err(r) = caller
        .require(TokenScope::TokensRead)
        .and_then(|()| caller.require_account(AccountId(id)))
    {
        return r;
    }
    match state.engine.access_token(AccountId(id)).await {
        Ok(t) => {
            let mut r = Json(json!({
                "access_token": t.access_token.expose(),
                "token_type": "Bearer",
                "expires_at": t.expires_at.map(|e| e.rfc3339()),
                "scopes": t.scopes.iter().collect::<Vec<_>>(),
            }))
            .into_response();
            // A bearer credential: never cached by anything in between.
            r.headers_mut().insert(
                header::CACHE_CONTROL,
                axum::http::HeaderValue::from_static("no-store"),
            );
            r
        }
        Err(mailgate_grants::EngineError::Store(e)) => store_problem(e),
        Err(e @ mailgate_grants::EngineError::NotUsable { .. }) => {
            problem(StatusCode::CONFLICT, "not_authorized", e.to_string(), None)
        }
        Err(e) if matches!(&e, mailgate_grants::EngineError::OAuth(f) if f.is_transient()) => {
            problem(
                StatusCode::SERVICE_UNAVAILABLE,
                e.code(),
                e.to_string(),
                None,
            )
        }
        Err(e) => problem(StatusCode::BAD_GATEWAY, e.code(), e.to_string(), None),
    }
}

/// Starts a browser authorization; the caller sends a person to `url`.
pub async fn start_authorization(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<i64>,
) -> Response {
    if let Err(r) = caller
        .require(TokenScope::AccountsWrite)
        .and_then(|()| caller.require_account(AccountId(id)))
    {
        return r;
    }
    let initiator = format!("api-token:{}", caller.token.name);
    match state.engine.start_authorization(AccountId(id), &initiator, &crate::redirect_uri(&state.public_url)).await {
        Ok(s) => (StatusCode::CREATED, Json(json!({ "url": s.url.as_str(), "expires_at": s.expires_at.rfc3339(), "sign_in_as": s.sign_in_as }))).into_response(),
        Err(mailgate_grants::EngineError::Store(e)) => store_problem(e),
        Err(e) => problem(StatusCode::CONFLICT, e.code(), e.to_string(), None),
    }
}

#[derive(serde::Deserialize)]
pub struct SendRequest {
    to: Vec<String>,
    #[serde(default)]
    cc: Vec<String>,
    #[serde(default)]
    bcc: Vec<String>,
    subject: String,
    text: String,
}

fn parse_addresses(
    field: &'static str,
    list: &[String],
) -> Result<Vec<mailgate_core::EmailAddress>, Response> {
    list.iter()
        .map(|a| {
            mailgate_core::EmailAddress::parse(a).map_err(|e| {
                problem(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_field",
                    e.to_string(),
                    Some(field),
                )
            })
        })
        .collect()
}

/// Queues a message in the durable outbox (202 with its id); the worker sends it. With an
/// `Idempotency-Key`, the same key returns the first result and never sends twice.
pub async fn send_message(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<i64>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    if let Err(r) = caller
        .require(TokenScope::MessagesSend)
        .and_then(|()| caller.require_account(AccountId(id)))
    {
        return r;
    }
    let raw = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|ct| ct.trim().to_ascii_lowercase().starts_with("message/rfc822"));
    if raw {
        return send_raw(&state, id, &headers, &body).await;
    }
    let req: SendRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("the body is not the expected JSON: {e}"),
                None,
            );
        }
    };
    let key = match idempotency_key(&headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let (to, cc, bcc) = match (
        parse_addresses("to", &req.to),
        parse_addresses("cc", &req.cc),
        parse_addresses("bcc", &req.bcc),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        (Err(r), _, _) | (_, Err(r), _) | (_, _, Err(r)) => return r,
    };
    if to.is_empty() && cc.is_empty() && bcc.is_empty() {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "at least one recipient is needed",
            Some("to"),
        );
    }
    if req.subject.chars().any(|c| c == '\r' || c == '\n') || req.subject.len() > 998 {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "the subject must be one line of at most 998 bytes",
            Some("subject"),
        );
    }
    let account = match sending_account(&state, id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let shown: Vec<String> = to.iter().chain(cc.iter()).map(|a| a.to_string()).collect();
    let envelope: Vec<String> = to
        .iter()
        .chain(cc.iter())
        .chain(bcc.iter())
        .map(|a| a.to_string())
        .collect();
    let message_id = mailgate_mail::message::new_message_id(account.spec.mailbox.domain());
    let bytes = match mailgate_mail::message::build(
        &account.spec,
        &mailgate_mail::message::Outgoing {
            to: &shown,
            subject: &req.subject,
            text: &req.text,
            message_id: &message_id,
            date: state.clock.now(),
        },
    ) {
        Ok(b) => b,
        Err(e) => {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!("the message cannot be built: {e}"),
                None,
            );
        }
    };
    enqueue(
        &state,
        account.id,
        key.as_deref(),
        &envelope,
        &bytes,
        &message_id,
    )
    .await
}

pub async fn message_status(
    State(state): State<AppState>,
    caller: ApiCaller,
    Path(id): Path<i64>,
) -> Response {
    if !caller.token.scopes.contains(&TokenScope::MessagesSend)
        && !caller.token.scopes.contains(&TokenScope::MessagesRead)
    {
        return problem(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "this API token lacks the scope messages:send or messages:read",
            None,
        );
    }
    match state.store.outbox_item(id).await {
        Ok(item) if caller.may_touch(item.account_id) => {
            Json(serde_json::to_value(&item).unwrap_or(Value::Null)).into_response()
        }
        Ok(item) => problem(
            StatusCode::FORBIDDEN,
            "account_not_allowed",
            format!(
                "this API token is limited to other accounts than {}",
                item.account_id
            ),
            None,
        ),
        Err(e) => store_problem(e),
    }
}

fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, Response> {
    match headers.get("idempotency-key").map(|v| v.to_str()) {
        None => Ok(None),
        Some(Ok(k)) if !k.trim().is_empty() && k.len() <= 200 => Ok(Some(k.trim().to_owned())),
        Some(_) => Err(problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "Idempotency-Key must be 1 to 200 visible characters",
            Some("Idempotency-Key"),
        )),
    }
}

/// The addresses of an address-list header value: `a@b, "Name, Jr." <c@d>` → [a@b, c@d].
fn header_addresses(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let (mut depth, mut quoted, mut start) = (0i32, false, 0usize);
    let bytes = value.as_bytes();
    for i in 0..=bytes.len() {
        let c = bytes.get(i).copied();
        match c {
            Some(b'"') => quoted = !quoted,
            Some(b'<') if !quoted => depth += 1,
            Some(b'>') if !quoted => depth -= 1,
            Some(b',') | None if !quoted && depth <= 0 => {
                let part = value[start..i].trim();
                let addr = match (part.rfind('<'), part.rfind('>')) {
                    (Some(a), Some(b)) if a < b => &part[a + 1..b],
                    _ => part,
                };
                if !addr.trim().is_empty() {
                    out.push(addr.trim().to_owned());
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    out
}

/// A ready RFC 5322 message (`Content-Type: message/rfc822`): the envelope comes from To,
/// Cc and Bcc; Bcc is removed before sending; a Message-ID is added when missing.
async fn send_raw(
    state: &AppState,
    id: i64,
    headers: &axum::http::HeaderMap,
    body: &[u8],
) -> Response {
    let key = match idempotency_key(headers) {
        Ok(k) => k,
        Err(r) => return r,
    };
    let text = String::from_utf8_lossy(body);
    let Some(split) = text
        .find("\r\n\r\n")
        .map(|i| (i, 4))
        .or_else(|| text.find("\n\n").map(|i| (i, 2)))
    else {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_body",
            "the message has no empty line between headers and body",
            None,
        );
    };
    let (head, rest) = (&text[..split.0], &text[split.0..]);
    // Unfold continuation lines, then read the address headers.
    let mut fields: Vec<(String, String)> = Vec::new();
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if let Some(last) = fields.last_mut() {
                last.1.push(' ');
                last.1.push_str(line.trim());
            }
        } else if let Some((name, value)) = line.split_once(':') {
            fields.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        } else {
            return problem(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_body",
                format!(
                    "not a header line: {:?}",
                    line.chars().take(60).collect::<String>()
                ),
                None,
            );
        }
    }
    let mut envelope = Vec::new();
    for (name, value) in &fields {
        if matches!(name.as_str(), "to" | "cc" | "bcc") {
            for a in header_addresses(value) {
                match mailgate_core::EmailAddress::parse(&a) {
                    Ok(e) => envelope.push(e.to_string()),
                    Err(e) => {
                        return problem(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "invalid_field",
                            e.to_string(),
                            Some(name),
                        );
                    }
                }
            }
        }
    }
    if envelope.is_empty() {
        return problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            "the message has no To, Cc or Bcc recipient",
            Some("to"),
        );
    }
    let account = match sending_account(state, id).await {
        Ok(a) => a,
        Err(r) => return r,
    };
    let mut message_id = fields
        .iter()
        .find(|(n, _)| n == "message-id")
        .map(|(_, v)| v.trim_matches(['<', '>', ' ']).to_owned())
        .unwrap_or_default();
    let mut out = String::new();
    if message_id.is_empty() {
        message_id = mailgate_mail::message::new_message_id(account.spec.mailbox.domain());
        out.push_str(&format!("Message-ID: <{message_id}>\r\n"));
    }
    // Copy the header lines except Bcc (and its continuations).
    let mut in_bcc = false;
    for line in head.lines() {
        if line.starts_with([' ', '\t']) {
            if in_bcc {
                continue;
            }
        } else {
            in_bcc = line.to_ascii_lowercase().starts_with("bcc:");
            if in_bcc {
                continue;
            }
        }
        out.push_str(line);
        out.push_str("\r\n");
    }
    out.push_str("\r\n");
    out.push_str(rest.trim_start_matches(['\r', '\n']));
    enqueue(
        state,
        account.id,
        key.as_deref(),
        &envelope,
        out.as_bytes(),
        &message_id,
    )
    .await
}

/// The account to send from: it must exist and have outbound SMTP.
async fn sending_account(
    state: &AppState,
    id: i64,
) -> Result<mailgate_core::MailAccount, Response> {
    let account = state
        .store
        .account(AccountId(id))
        .await
        .map_err(store_problem)?;
    if account.spec.outbound.is_none() {
        return Err(problem(
            StatusCode::CONFLICT,
            "no_outbound",
            "the account has no outbound SMTP",
            None,
        ));
    }
    Ok(account)
}

/// Writes the message to the outbox (202 with the item) and wakes the worker.
async fn enqueue(
    state: &AppState,
    account: AccountId,
    key: Option<&str>,
    envelope: &[String],
    bytes: &[u8],
    message_id: &str,
) -> Response {
    match state
        .store
        .enqueue(account, key, envelope, bytes, message_id, state.clock.now())
        .await
    {
        Ok((item, created)) => {
            if created {
                state.outbox.notify_one();
            }
            (
                StatusCode::ACCEPTED,
                Json(serde_json::to_value(&item).unwrap_or(Value::Null)),
            )
                .into_response()
        }
        Err(e) => store_problem(e),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn address_lists() {
        assert_eq!(
            super::header_addresses("a@example.test"),
            vec!["a@example.test"]
        );
        assert_eq!(
            super::header_addresses(
                "\"Doe, Jane\" <jane@example.test>, bob@example.test ,<c@example.test>"
            ),
            vec!["jane@example.test", "bob@example.test", "c@example.test"]
        );
        assert!(super::header_addresses("  ").is_empty());
    }
}
