//! The OpenAPI document: served, checked in, in sync; Swagger UI served; the
//! reason codes agree everywhere; every example is approved on a fresh server.

use serde_json::Value;

use crate::helpers::{answer, spawn_app};

#[tokio::test]
async fn the_served_document_is_openapi_3_1_and_equals_the_checked_in_copy() {
    let app = spawn_app().await;
    let served = app.api().get("/openapi.json", "").await;
    assert_eq!(served.status, 200);
    assert!(served.body["openapi"].as_str().unwrap_or("").starts_with("3.1"));
    let file = std::fs::read_to_string("openapi/openapi.json").expect("openapi/openapi.json is checked in");
    let checked_in: Value = serde_json::from_str(&file).expect("openapi/openapi.json is JSON");
    assert!(
        served.body == checked_in,
        "openapi/openapi.json is out of date; regenerate it with:\n    cargo run --quiet -- openapi > openapi/openapi.json\n"
    );
}

#[tokio::test]
async fn swagger_ui_is_served_and_the_bare_path_redirects() {
    let app = spawn_app().await;
    let page = answer(app.client.get(app.api().url("/swagger-ui/"))).await;
    assert_eq!(page.status, 200);
    assert!(page.content_type().starts_with("text/html"));
    let html = page.body.as_str().unwrap_or_default();
    assert!(html.contains("swagger"), "{html}");
    let no_redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = no_redirect.get(app.api().url("/swagger-ui")).send().await.unwrap();
    assert!(r.status().is_redirection());
    assert_eq!(r.headers().get("location").unwrap(), "/swagger-ui/");
    let init = answer(app.client.get(app.api().url("/swagger-ui/swagger-initializer.js"))).await;
    assert_eq!(init.status, 200);
    assert!(init.body.as_str().unwrap_or_default().contains("/openapi.json"));
}

#[tokio::test]
async fn reason_codes_agree_between_the_service_the_document_and_the_spec() {
    let app = spawn_app().await;
    let served = app.api().get("/v1/reason-codes", "").await;
    let served: Vec<String> =
        served.body.as_array().unwrap().iter().map(|r| r["code"].as_str().unwrap().to_string()).collect();
    let code_enum: Vec<String> =
        subsidy_service::rules::ReasonCode::ALL.iter().map(|c| c.as_str().to_string()).collect();
    assert_eq!(served, code_enum);
    let doc = subsidy_service::openapi::document();
    let doc = serde_json::to_value(&doc).unwrap();
    let in_doc: Vec<String> = doc["components"]["schemas"]["ReasonCode"]["enum"]
        .as_array()
        .expect("ReasonCode enum in the document")
        .iter()
        .map(|v| v.as_str().unwrap().to_string())
        .collect();
    assert_eq!(in_doc, code_enum);
    let spec = std::fs::read_to_string("../shared/spec/RULES.md").ok();
    if let Some(spec) = spec {
        let section = spec.split("## 5. Reason codes").nth(1).unwrap().split("## 6.").next().unwrap();
        for word in section.split(|c: char| !(c.is_ascii_uppercase() || c == '_')) {
            if word.len() > 6 && word.contains('_') {
                assert!(code_enum.contains(&word.to_string()), "RULES.md §5 names {word}, which the service lacks");
            }
        }
    }
}

#[tokio::test]
async fn every_example_claim_of_the_document_is_approved_on_a_fresh_server() {
    let app = spawn_app().await;
    let api = app.api();
    let examples = subsidy_service::openapi::claim_examples();
    let kinds: std::collections::BTreeSet<_> =
        examples.iter().map(|(_, v)| v["kind"].as_str().unwrap().to_string()).collect();
    assert_eq!(kinds.len(), subsidy_service::domain::Kind::ALL.len(), "one example per kind");
    for (name, claim) in examples {
        let a = api.post_claim(&claim).await;
        assert_eq!(a.status, 201, "{name}: {}", a.body);
        assert_eq!(a.body["status"], "approved", "{name}: {}", a.body);
        if name == "wy_qualification_training" {
            // The documented decision is this one, under the same policy
            // and directory versions, but for when it was made.
            let mut served = a.body.clone();
            let mut documented = subsidy_service::openapi::decision_example();
            for d in [&mut served, &mut documented] {
                d["decided_at"] = Value::Null;
            }
            assert_eq!(served, documented);
        }
    }
}

/// Every error code has its example problem, made by the code that answers
/// it, under every documented response of its status.
#[test]
fn every_error_code_has_its_problem_example() {
    use subsidy_service::problem::ErrorCode;
    let doc = serde_json::to_value(subsidy_service::openapi::document()).unwrap();
    for code in ErrorCode::ALL {
        let example = subsidy_service::openapi::problem_example(*code);
        assert_eq!(example["code"], code.as_str());
        assert_eq!(example["status"], code.status().as_u16());
        assert!(!example["detail"].as_str().unwrap_or_default().is_empty());
    }
    let mut documented = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for (status, response) in op["responses"].as_object().into_iter().flatten() {
                let Some(examples) = response["content"]["application/problem+json"]["examples"].as_object() else {
                    continue;
                };
                assert!(!examples.is_empty(), "{method} {path} {status}");
                for example in examples.values() {
                    assert_eq!(example["value"]["status"].to_string(), *status, "{method} {path}");
                    documented += 1;
                }
            }
        }
    }
    assert!(documented > 50, "only {documented} problem examples");
}

/// Every `429` the document lists declares the `Retry-After` header the
/// service sends with it (the key's rate limit, a county's running simulation).
#[test]
fn every_429_declares_retry_after() {
    let doc = serde_json::to_value(subsidy_service::openapi::document()).unwrap();
    let mut listed = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if let Some(limited) = op["responses"].get("429") {
                assert!(limited["headers"].get("Retry-After").is_some(), "{method} {path}: {limited}");
                listed += 1;
            }
        }
    }
    assert!(listed > 10, "only {listed} operations list a 429");
}

/// Every `$ref` of the document names a component schema, and every
/// component schema is reached from an operation (directly or through other
/// schemas): no dangling reference, no schema listed for nothing.
#[test]
fn every_schema_reference_resolves_and_every_component_schema_is_used() {
    fn refs(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                if let Some(r) = map.get("$ref").and_then(Value::as_str) {
                    out.push(r.strip_prefix("#/components/schemas/").expect("a schema reference").to_string());
                }
                map.values().for_each(|x| refs(x, out));
            }
            Value::Array(items) => items.iter().for_each(|x| refs(x, out)),
            _ => {}
        }
    }
    let doc = serde_json::to_value(subsidy_service::openapi::document()).unwrap();
    let schemas = doc["components"]["schemas"].as_object().expect("component schemas");
    let mut queue = Vec::new();
    refs(&doc["paths"], &mut queue);
    let mut reached = std::collections::BTreeSet::new();
    while let Some(name) = queue.pop() {
        let schema = schemas.get(&name).unwrap_or_else(|| panic!("#/components/schemas/{name} does not exist"));
        if reached.insert(name) {
            refs(schema, &mut queue);
        }
    }
    let unused: Vec<&String> = schemas.keys().filter(|k| !reached.contains(*k)).collect();
    assert!(unused.is_empty(), "component schemas no operation reaches: {unused:?}");
    assert!(reached.contains("ReasonCode") && reached.contains("Decision"), "{reached:?}");
}
