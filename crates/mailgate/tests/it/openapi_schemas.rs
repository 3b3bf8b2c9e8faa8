//! The OpenAPI document's schemas against the JSON the server really sends: for the app and
//! the account, every object in the answer has exactly the fields its schema names, nested
//! objects included. The schemas are derived from the view types (`AppView`,
//! `AccountView`); this catches a view serialised differently from what its schema says.

use crate::fixtures::{Fixture, create_token};
use serde_json::{Map, Value};
use std::collections::BTreeSet;

async fn get_json(f: &Fixture, token: Option<&str>, path: &str) -> Value {
    let mut req = f.http.get(format!("{}{path}", f.server.base));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    assert_eq!(resp.status(), 200, "GET {path}");
    resp.json().await.unwrap()
}

/// The named properties of an object schema, through `$ref`, `allOf` (their union) and a
/// `oneOf` of null and one schema. `None` for anything else (a string, a map).
fn properties(doc: &Value, schema: &Value) -> Option<Map<String, Value>> {
    if let Some(pointer) = schema["$ref"].as_str() {
        let target = doc
            .pointer(pointer.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("{pointer} is in the document"));
        return properties(doc, target);
    }
    if let Some(parts) = schema["allOf"].as_array() {
        let mut all = Map::new();
        for part in parts {
            all.extend(properties(doc, part)?);
        }
        return Some(all);
    }
    if let Some(parts) = schema["oneOf"].as_array() {
        let not_null: Vec<&Value> = parts.iter().filter(|p| p["type"] != "null").collect();
        return match not_null[..] {
            [one] => properties(doc, one),
            _ => None,
        };
    }
    schema["properties"].as_object().cloned()
}

/// Every object in `value` has exactly the fields `schema` names; `at` says where.
fn assert_same_fields(doc: &Value, schema: &Value, value: &Value, at: &str) {
    match value {
        Value::Object(fields) => {
            let Some(props) = properties(doc, schema) else {
                return;
            };
            let sent: BTreeSet<&str> = fields.keys().map(String::as_str).collect();
            let described: BTreeSet<&str> = props.keys().map(String::as_str).collect();
            assert_eq!(
                sent, described,
                "{at}: the fields sent (left) and the fields of its schema (right)"
            );
            for (name, field) in fields {
                assert_same_fields(doc, &props[name], field, &format!("{at}.{name}"));
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                assert_same_fields(doc, &schema["items"], item, &format!("{at}[{i}]"));
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn openapi_app_and_account_schemas_have_the_fields_the_api_sends() {
    let f = Fixture::start().await;
    // Every optional part filled, so that nested objects are in the answer.
    crate::usecases::add_app_and_account_with_every_field(&f);
    let token = create_token(&f, "reader", &["accounts:read"], &[]);
    let doc = get_json(&f, None, "/api/v1/openapi.json").await;
    let schema_of = |path: &str| {
        doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
            .clone()
    };

    let app = f.env.json(&["app", "show", "Fabrikam", "--json"]);
    let id = app["id"].as_i64().unwrap();
    let app = get_json(&f, Some(&token), &format!("/api/v1/apps/{id}")).await;
    assert!(
        app["endpoints"].is_object() && app["client_secret"].is_string(),
        "{app}"
    );
    assert_eq!(
        schema_of("/api/v1/apps/{id}")["$ref"],
        "#/components/schemas/App"
    );
    assert_same_fields(&doc, &schema_of("/api/v1/apps/{id}"), &app, "app");
    let apps = get_json(&f, Some(&token), "/api/v1/apps").await;
    assert_same_fields(&doc, &schema_of("/api/v1/apps"), &apps, "apps");

    let account = f.env.json(&["account", "show", "sales", "--json"]);
    let id = account["id"].as_i64().unwrap();
    let account = get_json(&f, Some(&token), &format!("/api/v1/accounts/{id}")).await;
    assert!(
        account["inbound"].is_object()
            && account["outbound"].is_object()
            && account["app"].is_object(),
        "{account}"
    );
    assert_eq!(
        schema_of("/api/v1/accounts/{id}")["$ref"],
        "#/components/schemas/Account"
    );
    assert_same_fields(
        &doc,
        &schema_of("/api/v1/accounts/{id}"),
        &account,
        "account",
    );
    let accounts = get_json(&f, Some(&token), "/api/v1/accounts").await;
    assert_same_fields(&doc, &schema_of("/api/v1/accounts"), &accounts, "accounts");
}

/// The query parameters the document lists are checked as it says: a `limit` out of its
/// range is a 422 naming `limit` and the range, an unknown parameter a 400 that names the
/// ones expected. Nothing is read from a mail server or the store before.
#[tokio::test]
async fn list_routes_refuse_a_bad_limit_or_query_naming_it() {
    let f = Fixture::start().await;
    let token = create_token(
        &f,
        "lists",
        &[
            "accounts:read",
            "messages:send",
            "messages:read",
            "tokens:read",
            "webhooks:write",
        ],
        &[],
    );
    let ask = |path: String| {
        let req = f
            .http
            .get(format!("{}{path}", f.server.base))
            .bearer_auth(&token);
        async move {
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap();
            (status, body)
        }
    };
    for (path, max) in [
        ("/api/v1/accounts/1/messages", 200),
        ("/api/v1/messages", 500),
        ("/api/v1/events", 1000),
        ("/api/v1/webhooks/1/deliveries", 500),
    ] {
        for bad in ["0".to_owned(), (max + 1).to_string(), "many".to_owned()] {
            let (status, body) = ask(format!("{path}?limit={bad}")).await;
            assert_eq!(status, 422, "{path}?limit={bad}: {body}");
            assert_eq!(body["field"], "limit", "{path}?limit={bad}: {body}");
            assert_eq!(
                body["detail"],
                format!("limit must be a number from 1 to {max}"),
                "{path}?limit={bad}"
            );
        }
        let (status, body) = ask(format!("{path}?limt=5")).await;
        assert_eq!(status, 400, "{path}?limt=5: {body}");
        assert_eq!(body["type"], "urn:mailgate:problem:invalid_query", "{body}");
        assert!(
            body["detail"].as_str().unwrap().contains("expected"),
            "{path}: {body}"
        );
    }
    for path in [
        "/api/v1/accounts/1/token?force=true",
        "/api/v1/accounts/1/messages/7?rawest=true",
    ] {
        let (status, body) = ask(path.to_owned()).await;
        assert_eq!(status, 400, "{path}: {body}");
        assert_eq!(body["type"], "urn:mailgate:problem:invalid_query", "{body}");
    }
}
