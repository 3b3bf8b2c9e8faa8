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
];

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
        if path.contains("{id}") {
            op["parameters"] = json!([{ "name": "id", "in": "path", "required": true, "schema": { "type": "integer" } }]);
        }
        if *path == "/api/v1/accounts/{id}/messages" {
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
