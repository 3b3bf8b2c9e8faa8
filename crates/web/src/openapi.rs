//! The OpenAPI 3.1 document of `/api/v1`, served at `/api/v1/openapi.json`.
//!
//! Written out here rather than derived by a macro crate (one less proc-macro to build).
//! [`API_ROUTES`] lists every API route; a test requests each one and checks that the
//! document describes exactly these.

use serde_json::{Value, json};

/// (method, path, required scope, summary) of every `/api/v1` route.
pub const API_ROUTES: &[(&str, &str, &str, &str)] = &[
    (
        "get",
        "/api/v1/apps",
        "accounts:read",
        "List OAuth apps (secrets only as hints)",
    ),
    (
        "get",
        "/api/v1/accounts",
        "accounts:read",
        "List mail accounts the token may touch",
    ),
    (
        "get",
        "/api/v1/accounts/{id}",
        "accounts:read",
        "One mail account",
    ),
    (
        "get",
        "/api/v1/accounts/{id}/events",
        "accounts:read",
        "Recent events of an account",
    ),
    (
        "get",
        "/api/v1/accounts/{id}/token",
        "tokens:read",
        "A fresh access token (refreshed if needed)",
    ),
    (
        "post",
        "/api/v1/accounts/{id}/authorize",
        "accounts:write",
        "Start a browser authorization; returns the sign-in URL",
    ),
    (
        "post",
        "/api/v1/accounts/{id}/messages",
        "messages:send",
        "Queue a message in the durable outbox",
    ),
    (
        "get",
        "/api/v1/messages/{id}",
        "messages:send",
        "Status of a queued message",
    ),
    (
        "get",
        "/api/v1/accounts/{id}/messages",
        "messages:read",
        "The newest messages of the inbox (envelope, flags, size), newest first",
    ),
    (
        "get",
        "/api/v1/accounts/{id}/messages/{uid}",
        "messages:read",
        "One received message: headers, text, HTML, attachment metadata; raw with ?raw=true",
    ),
    (
        "get",
        "/api/v1/webhooks",
        "webhooks:write",
        "Webhook subscriptions the token may see",
    ),
    (
        "post",
        "/api/v1/webhooks",
        "webhooks:write",
        "Subscribe a URL to events; the signing secret is in this answer only",
    ),
    (
        "get",
        "/api/v1/webhooks/{id}",
        "webhooks:write",
        "One webhook subscription",
    ),
    (
        "delete",
        "/api/v1/webhooks/{id}",
        "webhooks:write",
        "Remove a webhook subscription and its delivery log",
    ),
    (
        "get",
        "/api/v1/webhooks/{id}/deliveries",
        "webhooks:write",
        "The delivery log: each delivery with every attempt's status code",
    ),
    (
        "post",
        "/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver",
        "webhooks:write",
        "Send a delivery again (same delivery id and body)",
    ),
];

/// The `{name}` parameters of a route path, in order.
pub fn path_params(path: &str) -> Vec<&str> {
    path.split('{')
        .skip(1)
        .filter_map(|rest| rest.split_once('}').map(|(name, _)| name))
        .collect()
}

fn push_params(op: &mut Value, extra: &[Value]) {
    match op["parameters"].as_array_mut() {
        Some(list) => list.extend(extra.iter().cloned()),
        None => op["parameters"] = Value::Array(extra.to_vec()),
    }
}

fn ok_schema(schema: &str) -> Value {
    json!({ "description": "OK", "content": { "application/json": { "schema": { "$ref": schema } } } })
}

fn problem_response(description: &str) -> Value {
    json!({
        "description": description,
        "content": { "application/problem+json": { "schema": { "$ref": "#/components/schemas/Problem" } } }
    })
}

pub fn document() -> Value {
    let mut paths = serde_json::Map::new();
    for (method, path, scope, summary) in API_ROUTES {
        let mut op = json!({
            "summary": summary,
            "operationId": format!("{method}_{}", path.trim_start_matches("/api/v1/").replace(['/', '{', '}'], "_")),
            "security": [{ "bearer": [] }],
            "x-required-scope": scope,
            "responses": {
                "200": { "description": "OK", "content": { "application/json": { "schema": {} } } },
                "401": problem_response("No or unknown API token"),
                "403": problem_response(&format!("The token lacks the scope {scope} or is limited to other accounts")),
                "404": problem_response("No such resource"),
            }
        });
        let params: Vec<Value> = path_params(path)
            .into_iter()
            .map(|name| {
                let schema = if name == "uid" {
                    json!({ "type": "string", "description": "IMAP UID or POP3 UIDL" })
                } else {
                    json!({ "type": "integer" })
                };
                json!({ "name": name, "in": "path", "required": true, "schema": schema })
            })
            .collect();
        if !params.is_empty() {
            op["parameters"] = Value::Array(params);
        }
        match (*method, *path) {
            ("get", "/api/v1/accounts/{id}/messages") => {
                push_params(
                    &mut op,
                    &[
                        json!({ "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 200, "default": 50 } }),
                        json!({ "name": "before", "in": "query", "required": false, "schema": { "type": "string" }, "description": "Only messages older than this uid (the previous page's next_before)" }),
                    ],
                );
                op["responses"]["200"] = ok_schema("#/components/schemas/MessageList");
                op["responses"]["502"] = problem_response(
                    "The mail server failed (the problem names the step and remediation)",
                );
            }
            ("get", "/api/v1/accounts/{id}/messages/{uid}") => {
                push_params(
                    &mut op,
                    &[
                        json!({ "name": "raw", "in": "query", "required": false, "schema": { "type": "boolean" }, "description": "The message as message/rfc822 (also with Accept: message/rfc822)" }),
                    ],
                );
                op["responses"]["200"] = json!({ "description": "OK", "content": {
                    "application/json": { "schema": { "$ref": "#/components/schemas/ReceivedMessage" } },
                    "message/rfc822": { "schema": { "type": "string" } } } });
                op["responses"]["502"] = problem_response("The mail server failed");
            }
            ("post", "/api/v1/webhooks") => {
                op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/NewWebhook" } } } });
                op["responses"]["201"] = ok_schema("#/components/schemas/Webhook");
                op["responses"]["422"] = problem_response("A field is invalid (see `field`)");
            }
            ("get", "/api/v1/webhooks" | "/api/v1/webhooks/{id}") => {
                op["responses"]["200"] = ok_schema("#/components/schemas/Webhook");
            }
            ("delete", _) => {
                op["responses"]["204"] = json!({ "description": "Removed" });
            }
            ("get", "/api/v1/webhooks/{id}/deliveries") => {
                push_params(
                    &mut op,
                    &[
                        json!({ "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 500, "default": 50 } }),
                    ],
                );
                op["responses"]["200"] = ok_schema("#/components/schemas/DeliveryLog");
            }
            ("post", "/api/v1/webhooks/{id}/deliveries/{delivery}/redeliver") => {
                op["responses"]["202"] = ok_schema("#/components/schemas/Delivery");
                op["responses"]["409"] = problem_response("The delivery is being sent right now");
            }
            _ => {}
        }
        if *path == "/api/v1/accounts/{id}/messages" && *method == "post" {
            op["requestBody"] = json!({
                "required": true,
                "content": { "application/json": { "schema": { "$ref": "#/components/schemas/SendRequest" } }, "message/rfc822": { "schema": { "type": "string", "description": "A ready RFC 5322 message; the envelope comes from To, Cc and Bcc, and Bcc is removed" } } }
            });
            if let Some(params) = op["parameters"].as_array_mut() {
                params.push(json!({ "name": "Idempotency-Key", "in": "header", "required": false, "schema": { "type": "string", "maxLength": 200 } }));
            }
            op["responses"]["202"] = json!({ "description": "Queued", "content": { "application/json": { "schema": { "$ref": "#/components/schemas/OutboxItem" } } } });
            op["responses"]["413"] =
                problem_response("The attachments or the whole request are too large");
            op["responses"]["415"] =
                problem_response("Neither application/json nor message/rfc822");
            op["responses"]["422"] = problem_response("A field is invalid (see `field`)");
        }
        if *path == "/api/v1/accounts/{id}/authorize" {
            op["responses"]["201"] = json!({ "description": "Started", "content": { "application/json": { "schema": { "type": "object", "properties": { "url": { "type": "string" }, "expires_at": { "type": "string" }, "sign_in_as": { "type": "string" } } } } } });
        }
        let entry = paths.entry(path.to_string()).or_insert_with(|| json!({}));
        entry[*method] = op;
    }
    json!({
        "openapi": "3.1.0",
        "info": { "title": "mailgate API", "version": env!("CARGO_PKG_VERSION"), "description": "Mail over OAuth2 for applications: accounts, fresh tokens and sending through a durable outbox." },
        "paths": paths,
        "components": {
            "securitySchemes": { "bearer": { "type": "http", "scheme": "bearer", "description": "An API token from `mailgate api-token create`" } },
            "schemas": {
                "Problem": {
                    "type": "object",
                    "description": "RFC 9457 problem details",
                    "properties": {
                        "type": { "type": "string", "description": "urn:mailgate:problem:<code>" },
                        "title": { "type": "string" },
                        "status": { "type": "integer" },
                        "detail": { "type": "string" },
                        "field": { "type": "string" }
                    },
                    "required": ["type", "title", "status", "detail"]
                },
                "SendRequest": {
                    "type": "object",
                    "description": "A message built by mailgate: From is the account's mailbox with its from name; the account's reply-to and signature are applied. At least one recipient (to, cc or bcc) and at least one of text and html. Errors name the field at fault, e.g. `attachments[2].content_base64`.",
                    "additionalProperties": false,
                    "properties": {
                        "to": { "type": "array", "items": { "type": "string", "format": "email" } },
                        "cc": { "type": "array", "items": { "type": "string", "format": "email" } },
                        "bcc": { "type": "array", "items": { "type": "string", "format": "email" }, "description": "Delivered to, never named in the headers" },
                        "subject": { "type": "string", "maxLength": 998, "description": "One line" },
                        "text": { "type": "string", "description": "text/plain; the signature follows after `-- `" },
                        "html": { "type": "string", "description": "text/html; with text, the two are multipart/alternative; the signature is appended in a <div>" },
                        "reply_to": { "type": "string", "format": "email", "description": "Replaces the account's reply-to" },
                        "attachments": { "type": "array", "items": { "$ref": "#/components/schemas/Attachment" }, "description": "At most 10 MiB decoded in all (413 beyond)" }
                    },
                    "required": ["subject"],
                    "anyOf": [{ "required": ["text"] }, { "required": ["html"] }]
                },
                "Attachment": {
                    "type": "object",
                    "additionalProperties": false,
                    "properties": {
                        "filename": { "type": "string", "minLength": 1, "maxLength": 255, "description": "No control characters, / or \\" },
                        "content_type": { "type": "string", "description": "type/subtype without parameters, e.g. application/pdf; not multipart/* or message/*" },
                        "content_base64": { "type": "string", "contentEncoding": "base64", "description": "The file, standard base64 (line breaks allowed)" },
                        "content_id": { "type": "string", "description": "Makes the part inline (multipart/related) so the html can show it as cid:<content_id>" }
                    },
                    "required": ["filename", "content_type", "content_base64"]
                },
                "Mailbox": {
                    "type": "object",
                    "properties": { "name": { "type": "string" }, "address": { "type": "string" } },
                    "required": ["address"]
                },
                "Envelope": {
                    "type": "object",
                    "properties": {
                        "message_id": { "type": ["string", "null"] },
                        "subject": { "type": ["string", "null"] },
                        "from": { "type": "array", "items": { "$ref": "#/components/schemas/Mailbox" } },
                        "to": { "type": "array", "items": { "$ref": "#/components/schemas/Mailbox" } },
                        "cc": { "type": "array", "items": { "$ref": "#/components/schemas/Mailbox" } },
                        "reply_to": { "type": "array", "items": { "$ref": "#/components/schemas/Mailbox" } },
                        "date": { "type": ["string", "null"], "description": "RFC 3339" }
                    }
                },
                "MessageList": {
                    "type": "object",
                    "properties": {
                        "messages": { "type": "array", "items": { "allOf": [
                            { "$ref": "#/components/schemas/Envelope" },
                            { "type": "object", "properties": { "uid": { "type": "string" }, "size": { "type": ["integer", "null"] }, "flags": { "type": "array", "items": { "type": "string" } } } }
                        ] } },
                        "next_before": { "type": ["string", "null"], "description": "Pass as before= for the next page" }
                    }
                },
                "ReceivedMessage": {
                    "allOf": [
                        { "$ref": "#/components/schemas/Envelope" },
                        { "type": "object", "properties": {
                            "uid": { "type": "string" },
                            "size": { "type": "integer" },
                            "headers": { "type": "array", "items": { "type": "object", "properties": { "name": { "type": "string" }, "value": { "type": "string" } } } },
                            "text": { "type": ["string", "null"] },
                            "html": { "type": ["string", "null"] },
                            "truncated": { "type": "boolean", "description": "text or html was cut; fetch raw for everything" },
                            "attachments": { "type": "array", "items": { "type": "object", "properties": {
                                "filename": { "type": ["string", "null"] }, "content_type": { "type": "string" }, "size": { "type": "integer" },
                                "content_id": { "type": "string" }, "inline": { "type": "boolean" } } } }
                        } }
                    ]
                },
                "NewWebhook": {
                    "type": "object",
                    "properties": {
                        "url": { "type": "string", "format": "uri", "description": "http(s) URL; loopback and private addresses only when the operator allows them" },
                        "events": { "type": "array", "minItems": 1, "items": { "type": "string", "enum": ["message.received", "message.sent", "message.failed", "account.reauth_required", "app.secret_expiring"] } },
                        "account_id": { "type": ["integer", "null"], "description": "One account; omitted: every account (unrestricted tokens only)" },
                        "description": { "type": "string", "maxLength": 500 }
                    },
                    "required": ["url", "events"],
                    "additionalProperties": false
                },
                "Webhook": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "integer" },
                        "account_id": { "type": ["integer", "null"] },
                        "url": { "type": "string" },
                        "events": { "type": "array", "items": { "type": "string" } },
                        "description": { "type": "string" },
                        "enabled": { "type": "boolean" },
                        "created_at": { "type": "string" },
                        "secret": { "type": "string", "description": "Only in the answer to POST: the HMAC-SHA256 key for X-Mailgate-Signature" }
                    }
                },
                "Delivery": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "integer" },
                        "delivery_id": { "type": "string", "description": "X-Mailgate-Delivery; the same on every attempt" },
                        "webhook_id": { "type": "integer" },
                        "event": { "type": "string" },
                        "event_id": { "type": "string" },
                        "status": { "type": "string", "enum": ["pending", "delivering", "delivered", "failed"] },
                        "attempts": { "type": "integer" },
                        "last_status": { "type": ["integer", "null"] },
                        "last_error": { "type": ["string", "null"] }
                    }
                },
                "DeliveryLog": {
                    "type": "object",
                    "properties": { "deliveries": { "type": "array", "items": { "allOf": [
                        { "$ref": "#/components/schemas/Delivery" },
                        { "type": "object", "properties": { "attempt_log": { "type": "array", "items": { "type": "object", "properties": {
                            "at": { "type": "string" }, "status_code": { "type": ["integer", "null"] }, "error": { "type": ["string", "null"] }, "duration_ms": { "type": "integer" } } } } } }
                    ] } } }
                },
                "OutboxItem": {
                    "type": "object",
                    "properties": {
                        "id": { "type": "integer" },
                        "account_id": { "type": "integer" },
                        "status": { "type": "string", "enum": ["queued", "sending", "sent", "failed"] },
                        "attempts": { "type": "integer" },
                        "message_id": { "type": "string" },
                        "last_error": { "type": ["string", "null"] },
                        "server_reply": { "type": ["string", "null"] }
                    }
                }
            }
        }
    })
}

pub async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}
