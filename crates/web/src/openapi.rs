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
        "post",
        "/api/v1/apps",
        "accounts:write",
        "Create an OAuth app (secrets write-only; unrestricted tokens only)",
    ),
    (
        "get",
        "/api/v1/apps/{id}",
        "accounts:read",
        "One OAuth app (secrets only as hints)",
    ),
    (
        "patch",
        "/api/v1/apps/{id}",
        "accounts:write",
        "Change an OAuth app; fields not given keep their value",
    ),
    (
        "post",
        "/api/v1/accounts",
        "accounts:write",
        "Create a mail account (unrestricted tokens only)",
    ),
    (
        "patch",
        "/api/v1/accounts/{id}",
        "accounts:write",
        "Change a mail account; fields not given keep their value",
    ),
    (
        "post",
        "/api/v1/accounts/{id}/tests",
        "accounts:write",
        "Start Test configuration in the background; poll the run at its Location",
    ),
    (
        "get",
        "/api/v1/tests/{run}",
        "accounts:read",
        "A Test configuration run: the steps so far and its status",
    ),
    (
        "delete",
        "/api/v1/apps/{id}",
        "accounts:write",
        "Remove an OAuth app no account uses",
    ),
    (
        "delete",
        "/api/v1/accounts/{id}",
        "accounts:write",
        "Remove a mail account and its grant",
    ),
];

fn json_body(schema: &str) -> Value {
    json!({ "required": true, "content": { "application/json": { "schema": { "$ref": format!("#/components/schemas/{schema}") } } } })
}

fn json_response(description: &str, schema: &Value) -> Value {
    json!({ "description": description, "content": { "application/json": { "schema": schema } } })
}

/// What the create, change, remove and test routes add to the common answers.
fn admin_operation(method: &str, path: &str, op: &mut Value) {
    let app = json!({ "$ref": "#/components/schemas/App" });
    let run = json!({ "$ref": "#/components/schemas/TestRun" });
    let bad_input = || {
        (
            problem_response("The body is not JSON or not a JSON object"),
            problem_response("The body is not application/json"),
            problem_response("A field is invalid or unknown (see `field`); nothing was stored"),
        )
    };
    let body = match (method, path) {
        ("post", "/api/v1/apps") => Some((
            "AppInput",
            "201",
            json_response("Created (Location: the app)", &app),
        )),
        ("patch", "/api/v1/apps/{id}") => {
            Some(("AppChanges", "200", json_response("Changed", &app)))
        }
        ("post", "/api/v1/accounts") => Some((
            "AccountInput",
            "201",
            json_response("Created (Location: the account)", &json!({})),
        )),
        ("patch", "/api/v1/accounts/{id}") => Some((
            "AccountChanges",
            "200",
            json_response("Changed", &json!({})),
        )),
        _ => None,
    };
    if let Some((schema, code, answer)) = body {
        op["requestBody"] = json_body(schema);
        if code != "200"
            && let Some(r) = op["responses"].as_object_mut()
        {
            r.remove("200");
        }
        op["responses"][code] = answer;
        let (r400, r415, r422) = bad_input();
        op["responses"]["400"] = r400;
        op["responses"]["415"] = r415;
        op["responses"]["422"] = r422;
        op["responses"]["409"] = problem_response("The name is taken");
    }
    match (method, path) {
        ("get", "/api/v1/apps") => {
            op["responses"]["200"] = json_response("OK", &json!({ "type": "array", "items": app }));
        }
        ("get", "/api/v1/apps/{id}") => {
            op["responses"]["200"] = json_response("OK", &app);
        }
        ("delete", _) => {
            if let Some(r) = op["responses"].as_object_mut() {
                r.remove("200");
            }
            op["responses"]["204"] = json!({ "description": "Removed" });
            if path == "/api/v1/apps/{id}" {
                op["responses"]["409"] = problem_response("Accounts still use the app");
            }
        }
        ("post", "/api/v1/accounts/{id}/tests") => {
            let mut b = json_body("TestRequest");
            b["required"] = false.into();
            op["requestBody"] = b;
            if let Some(r) = op["responses"].as_object_mut() {
                r.remove("200");
            }
            op["responses"]["202"] = json_response("Started (Location: the run)", &run);
            let (r400, r415, r422) = bad_input();
            op["responses"]["400"] = r400;
            op["responses"]["415"] = r415;
            op["responses"]["422"] = r422;
        }
        ("get", "/api/v1/tests/{run}") => {
            op["parameters"] = json!([{ "name": "run", "in": "path", "required": true, "schema": { "type": "string" } }]);
            op["responses"]["200"] = json_response("OK", &run);
        }
        _ => {}
    }
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
        admin_operation(method, path, &mut op);
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
                "AppInput": app_input(true),
                "AppChanges": app_input(false),
                "AccountInput": account_input(true),
                "AccountChanges": account_input(false),
                "App": app_schema(),
                "TestRequest": test_request_schema(),
                "TestRun": test_run_schema(),
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

/// The body of `POST /api/v1/apps` (`creating`) or `PATCH /api/v1/apps/{id}`: the CLI's
/// option names; secrets are write-only.
fn app_input(creating: bool) -> Value {
    let text = json!({ "type": "string" });
    let url = json!({ "type": "string", "format": "uri" });
    let mut props = json!({
        "kind": { "type": "string", "enum": ["microsoft", "google", "generic"], "description": if creating { "The provider; decides the presets" } else { "Cannot be changed; only the current kind is accepted" } },
        "name": text,
        "tenant": { "type": "string", "description": "Microsoft: Directory (tenant) ID, a verified domain, or common / organizations / consumers" },
        "client_id": text,
        "client_secret": { "type": "string", "writeOnly": true, "description": "The secret's Value (not its ID); answered only as a hint" },
        "secret_expires": { "type": "string", "format": "date" },
        "flow": { "type": "string", "enum": ["authorization_code", "device_code", "client_credentials", "service_account"] },
        "service_account_key": { "type": ["object", "string"], "writeOnly": true, "description": "Google service-account JSON key (the object or its text)" },
        "authority": url, "authorize_url": url, "token_url": url, "device_url": url,
        "jwks_url": url, "userinfo_url": url, "revoke_url": url, "issuer": text,
        "scopes": { "type": ["string", "array"], "items": { "type": "string" }, "description": "Space- or comma-separated, or a list; replaces the preset" },
        "extra_params": { "type": "object", "additionalProperties": { "type": "string" }, "description": "Extra authorize parameters, e.g. {\"domain_hint\": \"contoso.com\"}" }
    });
    if !creating {
        props["clear_secret"] = json!({ "type": "boolean", "description": "Remove the stored client secret (public client)" });
        props["reset_endpoints"] = json!({ "type": "boolean", "description": "Recompute endpoints and scopes from the kind's preset" });
    }
    let mut schema =
        json!({ "type": "object", "additionalProperties": false, "properties": props });
    if creating {
        schema["required"] = json!(["kind", "name", "client_id"]);
    }
    schema
}

/// The body of `POST /api/v1/accounts` (`creating`) or `PATCH /api/v1/accounts/{id}`.
fn account_input(creating: bool) -> Value {
    let text = json!({ "type": "string" });
    let email = json!({ "type": "string", "format": "email" });
    let port = json!({ "type": "integer", "minimum": 1, "maximum": 65535 });
    let tls = json!({ "type": "string", "enum": ["implicit", "starttls"] });
    let mut schema = json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "name": text,
            "app": { "type": ["integer", "string"], "description": "The OAuth app's id or name" },
            "email": { "type": "string", "format": "email", "description": "The mailbox; the user who authorizes signs in as this address" },
            "enabled": { "type": "boolean" },
            "description": text,
            "shared_mailbox": email,
            "aliases": { "type": "array", "items": email, "description": "Replaces the aliases when not empty" },
            "inbound": { "type": "string", "enum": ["imap", "pop3", "none"] },
            "inbound_host": text, "inbound_port": port, "inbound_tls": tls,
            "outbound": { "type": "string", "enum": ["smtp", "none"] },
            "smtp_host": text, "smtp_port": port, "smtp_tls": tls,
            "from_name": text, "reply_to": email, "signature": text,
            "on_received": { "type": "string", "description": "none, webhook, mark_seen, delete or move:FOLDER" }
        }
    });
    if creating {
        schema["required"] = json!(["name", "app", "email"]);
    }
    schema
}

fn app_schema() -> Value {
    json!({
        "type": "object",
        "description": "An OAuth app; client_secret and service_account_key only as hints (\"set (…4f2a)\") or null",
        "properties": {
            "id": { "type": "integer" },
            "name": { "type": "string" },
            "kind": { "type": "string", "enum": ["microsoft", "google", "generic"] },
            "tenant": { "type": ["string", "null"] },
            "client_id": { "type": "string" },
            "client_secret": { "type": ["string", "null"] },
            "service_account_key": { "type": ["string", "null"] },
            "secret_expires": { "type": ["string", "null"], "format": "date" },
            "secret_expires_in_days": { "type": ["integer", "null"] },
            "flow": { "type": "string" },
            "redirect_uri": { "type": "string" },
            "endpoints": { "type": "object" },
            "scopes": { "type": "array", "items": { "type": "string" } },
            "extra_params": { "type": "object", "additionalProperties": { "type": "string" } },
            "created_at": { "type": "string" },
            "updated_at": { "type": "string" }
        }
    })
}

fn test_request_schema() -> Value {
    json!({
        "type": "object",
        "additionalProperties": false,
        "properties": {
            "to": { "type": "string", "format": "email", "description": "Send the test message here instead of to the mailbox (it is then not looked for)" },
            "step_timeout": { "type": "integer", "minimum": 1, "maximum": 300, "description": "Seconds for every network operation (default 15)" },
            "find_within": { "type": "integer", "minimum": 1, "maximum": 600, "description": "Seconds to look for the test message (default 30)" }
        }
    })
}

fn test_run_schema() -> Value {
    json!({
        "type": "object",
        "description": "The JSON of `mailgate test --json` (docs/test-configuration.md) with the run's id, account_id and status; while running, ok, duration_ms and message_id are null",
        "properties": {
            "id": { "type": "string" },
            "account_id": { "type": "integer" },
            "account": { "type": "string" },
            "status": { "type": "string", "enum": ["running", "passed", "failed"] },
            "ok": { "type": ["boolean", "null"] },
            "started_at": { "type": "string" },
            "duration_ms": { "type": ["integer", "null"] },
            "message_id": { "type": ["string", "null"] },
            "steps": { "type": "array", "items": {
                "type": "object",
                "properties": {
                    "name": { "type": "string" },
                    "status": { "type": "string", "enum": ["ok", "failed", "skipped", "warning"] },
                    "duration_ms": { "type": "integer" },
                    "detail": { "type": "string" },
                    "server_says": { "type": ["string", "null"] },
                    "remediation": { "type": ["object", "null"], "properties": { "code": { "type": "string" }, "text": { "type": "string" } } }
                }
            } }
        }
    })
}

pub async fn serve() -> axum::Json<Value> {
    axum::Json(document())
}
