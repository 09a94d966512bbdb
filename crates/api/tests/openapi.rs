//! The OpenAPI document at `/api/v1/openapi.json` covers the route table exactly: every route
//! of `router.rs` is documented with its method, every documented route is served, and each
//! documents its bodies, headers (Idempotency-Key, Authorization) and error answers.

mod common;

use std::collections::BTreeSet;

use common::{Server, settings};
use seckill_service::Components;
use serde_json::Value;

/// The (method, path) pairs of the route table, read from its source.
fn routes_in_the_table() -> BTreeSet<(String, String)> {
    let src = include_str!("../src/router.rs");
    let mut out = BTreeSet::new();
    let mut rest = src;
    while let Some(i) = rest.find(".route(") {
        rest = &rest[i + ".route(".len()..];
        let open = rest.find('"').unwrap();
        let close = open + 1 + rest[open + 1..].find('"').unwrap();
        let path = rest[open + 1..close].to_owned();
        // The method router: up to the end of this `.route(…)`, e.g. `get(a).post(b)`.
        let end = rest.find(".route(").unwrap_or(rest.len());
        let handlers = &rest[close + 1..end];
        let mut found = false;
        for method in ["get", "post", "put", "delete", "patch"] {
            for prefix in [" ", "\n", "."] {
                if handlers.contains(&format!("{prefix}{method}(")) {
                    out.insert((method.to_owned(), path.clone()));
                    found = true;
                }
            }
        }
        assert!(found, "{path}: no method in {handlers:?}");
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let s = Server::start(settings(), Components::embedded()).await;
    let (st, doc) = s.get("/api/v1/openapi.json").await;
    assert_eq!(st, 200);
    assert_eq!(doc["openapi"], "3.1.0");
    let mut documented = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            documented.insert((method.clone(), path.clone()));
        }
    }
    let table = routes_in_the_table();
    assert!(table.len() >= 18, "{table:?}");
    assert_eq!(documented, table, "the document and the route table differ");

    for (method, path) in &documented {
        let op = &doc["paths"][path][method];
        // Served: not the fallback's 404 40404 nor 405.
        let url = s.url(
            &path
                .replace("{product_id}", "1")
                .replace("{user_id}", "1")
                .replace("{order_id}", "1-1")
                .replace("{request_id}", &"0".repeat(32)),
        );
        let r = match method.as_str() {
            "get" => s.client.get(url),
            _ => s.client.post(url).json(&serde_json::json!({})),
        }
        .send()
        .await
        .unwrap();
        let status = r.status().as_u16();
        let body: Value = r.json().await.unwrap_or(Value::Null);
        assert!(
            status != 405 && !(status == 404 && body["message"] == "no such route"),
            "{method} {path} is documented but not served: {status} {body}"
        );
        // Every JSON route documents its error answers.
        let responses = op["responses"].as_object().unwrap();
        if path != "/health" && path != "/api/v1/openapi.json" {
            for code in ["400", "401", "403", "404", "429", "503"] {
                assert!(responses.contains_key(code), "{method} {path}: no {code}");
            }
        }
    }
    // Headers and auth.
    for path in ["/api/v1/seckill/purchase", "/api/v1/seckill/purchase/async"] {
        let op = &doc["paths"][path]["post"];
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "header")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(params.contains(&"Idempotency-Key"), "{path}: {params:?}");
        assert!(op["requestBody"].is_object(), "{path}");
        assert!(
            op["security"]
                .as_array()
                .unwrap()
                .iter()
                .any(|s| s.get("bearer").is_some()),
            "{path}"
        );
    }
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    // The answers' schemas are the service's own types.
    for schema in [
        "Sale",
        "ProductStats",
        "Order",
        "SystemStats",
        "ErrorEnvelope",
    ] {
        assert!(
            doc["components"]["schemas"].get(schema).is_some(),
            "no schema {schema}"
        );
    }
}
