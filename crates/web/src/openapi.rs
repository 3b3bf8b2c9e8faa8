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
        "/api/v1/messages",
        "messages:send",
        "The outbox, newest first (?status=failed, ?account_id=, ?before=, ?limit=); messages:read also works",
    ),
    (
        "post",
        "/api/v1/messages/{id}/retry",
        "messages:send",
        "Queue a failed message again, attempts counted afresh (409 unless failed)",
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
        "patch",
        "/api/v1/webhooks/{id}",
        "webhooks:write",
        "Change a subscription's url, events or description, or pause it (enabled: false)",
    ),
    (
        "post",
        "/api/v1/webhooks/{id}/rotate-secret",
        "webhooks:write",
        "A new signing secret, in this answer only",
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
    (
        "get",
        "/api/v1/events",
        "accounts:read",
        "The event log with who made each change (actor, source), newest first; ?actor=, ?since=, ?account_id=, ?limit=",
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
        ("delete", "/api/v1/apps/{id}" | "/api/v1/accounts/{id}") => {
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
            ("get", "/api/v1/events") => {
                push_params(
                    &mut op,
                    &[
                        json!({ "name": "actor", "in": "query", "required": false, "schema": { "type": "string" }, "description": "A user name, api-token:NAME or cli:USER exactly, or cli / api-token for every actor of that kind" }),
                        json!({ "name": "since", "in": "query", "required": false, "schema": { "type": "string" }, "description": "YYYY-MM-DD (UTC) or an RFC 3339 time" }),
                        json!({ "name": "account_id", "in": "query", "required": false, "schema": { "type": "integer" }, "description": "Required for a token limited to some accounts" }),
                        json!({ "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 1000, "default": 50 } }),
                    ],
                );
                op["responses"]["200"] = json!({ "description": "OK", "content": { "application/json": { "schema": { "type": "object", "properties": {
                    "events": { "type": "array", "items": { "type": "object", "properties": {
                        "id": { "type": "integer" }, "at": { "type": "integer", "description": "Unix seconds" },
                        "kind": { "type": "string" }, "app_id": { "type": ["integer", "null"] }, "account_id": { "type": ["integer", "null"] },
                        "message": { "type": "string" },
                        "actor": { "type": "string", "description": "Absent for what mailgate did by itself" },
                        "source": { "type": "string", "description": "The client address of a change over HTTP" } } } } } } } } });
                op["responses"]["422"] =
                    problem_response("A query parameter is invalid (see `field`)");
            }
            ("get", "/api/v1/messages") => {
                push_params(
                    &mut op,
                    &[
                        json!({ "name": "status", "in": "query", "required": false, "schema": { "type": "string", "enum": ["queued", "sending", "sent", "failed"] } }),
                        json!({ "name": "account_id", "in": "query", "required": false, "schema": { "type": "integer" } }),
                        json!({ "name": "before", "in": "query", "required": false, "schema": { "type": "integer" }, "description": "Only messages with a smaller id (the previous page's next_before)" }),
                        json!({ "name": "limit", "in": "query", "required": false, "schema": { "type": "integer", "minimum": 1, "maximum": 500, "default": 50 } }),
                    ],
                );
                op["responses"]["200"] = json!({ "description": "OK", "content": { "application/json": { "schema": { "type": "object", "properties": {
                    "messages": { "type": "array", "items": { "$ref": "#/components/schemas/OutboxItem" } },
                    "next_before": { "type": ["integer", "null"] } } } } } });
            }
            ("get", "/api/v1/accounts/{id}/token") => {
                push_params(
                    &mut op,
                    &[
                        json!({ "name": "force_refresh", "in": "query", "required": false, "schema": { "type": "boolean", "default": false }, "description": "Refresh even though the stored token has not expired (a mail server refused it); at most once a minute per account" }),
                    ],
                );
                op["responses"]["409"] = problem_response(
                    "The account cannot give out tokens (not authorized, or reauth_required)",
                );
                op["responses"]["429"] = problem_response(
                    "force_refresh was used for this account less than a minute ago (see Retry-After)",
                );
                op["responses"]["503"] =
                    problem_response("The provider failed transiently (the grant is kept)");
            }
            ("post", "/api/v1/messages/{id}/retry") => {
                op["responses"]["202"] = ok_schema("#/components/schemas/OutboxItem");
                op["responses"]["409"] =
                    problem_response("The message is not failed (queued, sending or sent)");
            }
            ("patch", "/api/v1/webhooks/{id}") => {
                op["requestBody"] = json!({ "required": true, "content": { "application/json": { "schema": {
                    "type": "object", "additionalProperties": false,
                    "properties": {
                        "url": { "type": "string", "format": "uri" },
                        "events": { "type": "array", "minItems": 1, "items": { "type": "string" } },
                        "description": { "type": "string", "maxLength": 500 },
                        "enabled": { "type": "boolean" } } } } } });
                op["responses"]["200"] = ok_schema("#/components/schemas/Webhook");
                op["responses"]["422"] = problem_response("A field is invalid (see `field`)");
            }
            ("post", "/api/v1/webhooks/{id}/rotate-secret") => {
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
                params.push(json!({ "name": "Idempotency-Key", "in": "header", "required": false, "schema": { "type": "string", "maxLength": 200 }, "description": "The same key with the same request (method, path, Content-Type, body) returns the first message; with a different request it is refused with 422" }));
            }
            let retry_after = json!({ "Retry-After": { "description": "Seconds to wait before sending again", "schema": { "type": "integer" } } });
            op["responses"]["202"] = json!({ "description": "Queued", "headers": { "Location": { "description": "The message: /api/v1/messages/{id}", "schema": { "type": "string" } } }, "content": { "application/json": { "schema": { "$ref": "#/components/schemas/OutboxItem" } } } });
            op["responses"]["429"] = problem_response(
                "The account's outbox quota is full (queued and sending bytes); retry after Retry-After",
            );
            op["responses"]["429"]["headers"] = retry_after.clone();
            op["responses"]["507"] =
                problem_response("The whole outbox quota is full; retry after Retry-After");
            op["responses"]["507"]["headers"] = retry_after;
            op["responses"]["413"] =
                problem_response("The attachments or the whole request are too large");
            op["responses"]["415"] =
                problem_response("Neither application/json nor message/rfc822");
            op["responses"]["422"] = problem_response(
                "A field is invalid (see `field`: too many recipients, a From that is not the account's, an Idempotency-Key reused with another request)",
            );
            op["responses"]["503"] = problem_response(
                "Not queued: the database cannot store it now; send again after Retry-After",
            );
            op["responses"]["507"] = problem_response(
                "Not queued: the server's disk is full; send again after Retry-After",
            );
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
        "client_secret": { "type": "string", "writeOnly": true, "description": if creating { "The secret's Value (not its ID); answered only as a hint" } else { "The secret's Value (not its ID); answered only as a hint. Required with any change of where it is sent (authority, tenant, an endpoint or the issuer), which also drops the app's grants" } },
        "secret_expires": { "type": "string", "format": "date" },
        "flow": { "type": "string", "enum": ["authorization_code", "device_code", "client_credentials", "service_account"] },
        "service_account_key": { "type": ["object", "string"], "writeOnly": true, "description": "Google service-account JSON key (the object or its text)" },
        "authority": url, "authorize_url": url, "token_url": url, "device_url": url,
        "jwks_url": url, "userinfo_url": url, "revoke_url": url,
        "issuer": { "type": "string", "description": "Expected id_token issuer. Generic apps: endpoints not given are read from <issuer>/.well-known/openid-configuration, whose issuer must be exactly this" },
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
            "on_received": { "type": "string", "description": "none, webhook, mark_seen, delete or move:FOLDER" },
            "delegate": { "type": "string", "format": "email", "description": "For a shared mailbox: the user with FullAccess (and SendAs) on it who signs in" },
            "send_on_behalf": { "type": "boolean", "description": "With a delegate: From the mailbox and Sender the delegate (SendOnBehalf) instead of SendAs" },
            "clear_delegate": { "type": "boolean", "description": "Remove the delegate: the mailbox signs in itself again" }
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

#[cfg(test)]
mod tests {
    use super::API_ROUTES;

    /// (method, path) of every `/api/v1` route the router in `lib.rs` registers, read from
    /// its source: each `.route("/api/v1/…", …)` and the method functions in its handler.
    fn routed() -> Vec<(String, String)> {
        let src = include_str!("lib.rs");
        let mut out = Vec::new();
        let mut rest = src;
        while let Some(at) = rest.find(".route(") {
            rest = &rest[at + ".route(".len()..];
            // The arguments: up to the parenthesis that closes `.route(`.
            let mut depth = 1;
            let end = rest
                .char_indices()
                .find(|&(_, c)| {
                    match c {
                        '(' => depth += 1,
                        ')' => depth -= 1,
                        _ => {}
                    }
                    depth == 0
                })
                .map(|(i, _)| i)
                .unwrap();
            let args = &rest[..end];
            let path = args.split('"').nth(1).unwrap().to_owned();
            if !path.starts_with("/api/v1/") || path == "/api/v1/openapi.json" {
                continue;
            }
            let handler = &args[args.find(',').unwrap()..];
            for method in ["get", "post", "patch", "put", "delete"] {
                let called = handler
                    .match_indices(&format!("{method}("))
                    .any(|(i, _)| i == 0 || !handler.as_bytes()[i - 1].is_ascii_alphanumeric());
                if called {
                    out.push((method.to_owned(), path.clone()));
                }
            }
        }
        out
    }

    #[test]
    fn every_routed_api_path_is_documented_and_nothing_else() {
        let mut routed = routed();
        assert!(routed.len() > 10, "the router source was read: {routed:?}");
        let mut listed: Vec<(String, String)> = API_ROUTES
            .iter()
            .map(|(m, p, _, _)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        routed.sort();
        listed.sort();
        assert_eq!(
            routed, listed,
            "API_ROUTES must list exactly the routed API"
        );
    }
}
