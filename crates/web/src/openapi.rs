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
                    "properties": {
                        "to": { "type": "array", "items": { "type": "string", "format": "email" } },
                        "cc": { "type": "array", "items": { "type": "string", "format": "email" } },
                        "bcc": { "type": "array", "items": { "type": "string", "format": "email" } },
                        "subject": { "type": "string", "maxLength": 998 },
                        "text": { "type": "string" }
                    },
                    "required": ["to", "subject", "text"]
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
