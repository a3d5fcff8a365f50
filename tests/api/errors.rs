//! Every error class answers application/problem+json with its stable code.

use serde_json::json;

use crate::helpers::{answer, id_number, spawn_app, wy_qualification, AUDITOR, PLATFORM};

fn assert_problem(a: &crate::helpers::Answer, status: u16, code: &str) {
    assert_eq!(a.status, status, "{}", a.body);
    assert!(a.content_type().starts_with("application/problem+json"), "content type {}", a.content_type());
    assert_eq!(a.body["code"], code, "{}", a.body);
    assert_eq!(a.body["status"], status);
    assert!(a.body["type"].is_string() && a.body["title"].is_string() && a.body["detail"].is_string());
}

/// `body` sent to `POST /v1/claims` as JSON, as it is (not encoded here).
async fn post_raw_claim(app: &crate::helpers::TestApp, body: impl Into<reqwest::Body>) -> crate::helpers::Answer {
    answer(
        app.client
            .post(app.api().url("/v1/claims"))
            .bearer_auth(PLATFORM)
            .header("content-type", "application/json")
            .body(body),
    )
    .await
}

#[tokio::test]
async fn a_body_that_is_not_json_is_400_malformed_json() {
    let app = spawn_app().await;
    let a = post_raw_claim(&app, "{").await;
    assert_problem(&a, 400, "MALFORMED_JSON");
}

#[tokio::test]
async fn a_body_that_is_not_utf8_is_400_malformed_json_naming_where() {
    let app = spawn_app().await;
    // A Latin-1 é inside a string, on the second line.
    let a = post_raw_claim(&app, b"{\n\"claim_id\": \"caf\xe9\"}".to_vec()).await;
    assert_problem(&a, 400, "MALFORMED_JSON");
    let detail = a.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("line 2"), "serde_json's line and column: {detail}");
}

#[tokio::test]
async fn a_body_that_is_not_application_json_is_415() {
    let app = spawn_app().await;
    let a = answer(
        app.client
            .post(app.api().url("/v1/claims"))
            .bearer_auth(PLATFORM)
            .header("content-type", "text/plain")
            .body("{}"),
    )
    .await;
    assert_problem(&a, 415, "UNSUPPORTED_MEDIA_TYPE");
}

#[tokio::test]
async fn a_body_over_the_limit_is_413() {
    let app = spawn_app().await;
    let big = format!("{{\"pad\": \"{}\"}}", "x".repeat(6 * 1024 * 1024));
    let a = answer(
        app.client
            .post(app.api().url("/v1/claims"))
            .bearer_auth(PLATFORM)
            .header("content-type", "application/json")
            .body(big),
    )
    .await;
    assert_problem(&a, 413, "PAYLOAD_TOO_LARGE");
}

#[tokio::test]
async fn an_unknown_path_is_404_and_a_wrong_method_is_405() {
    let app = spawn_app().await;
    let a = app.api().get("/v1/nope", PLATFORM).await;
    assert_problem(&a, 404, "NOT_FOUND");
    let b = answer(app.client.delete(app.api().url("/v1/claims")).bearer_auth(PLATFORM)).await;
    assert_problem(&b, 405, "METHOD_NOT_ALLOWED");
    assert_eq!(b.headers.get("allow").unwrap(), "GET, POST");
}

#[tokio::test]
async fn bad_path_and_query_parameters_are_problems() {
    let app = spawn_app().await;
    let api = app.api();
    assert_problem(&api.get("/v1/policies/hangzhou", PLATFORM).await, 404, "NOT_FOUND");
    assert_problem(&api.get("/v1/reports/wuyi/twenty", AUDITOR).await, 404, "NOT_FOUND");
    assert_problem(&api.get("/v1/claims?status=maybe", AUDITOR).await, 422, "VALIDATION_FAILED");
    assert_problem(&api.get("/v1/claims?limit=0", AUDITOR).await, 422, "VALIDATION_FAILED");
    // Every bad or unknown parameter is named at once, by its pointer.
    let a = api.get("/v1/claims?bogus=1&status=nope&limit=0&from=2020-13-01&cursor=x&kind=a%2Fb&kind=c", AUDITOR).await;
    assert_problem(&a, 422, "VALIDATION_FAILED");
    let mut fields = a.error_fields();
    fields.sort();
    assert_eq!(fields, ["/bogus", "/cursor", "/from", "/kind", "/kind", "/limit", "/status"], "{}", a.body);
    let ok = api.get("/v1/claims?county=wuyi&kind=qualification_training&status=approved&from=2020-01-01&to=2021-12-31&department=human_resources&limit=5", AUDITOR).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
}

#[tokio::test]
async fn every_bad_field_of_a_claim_is_listed_with_its_pointer() {
    let app = spawn_app().await;
    let mut claim = wy_qualification("E-1", "330723199005061130", "6-31-01-03", "master", "C-1", "2020-02-30");
    claim["details"]["fee"] = json!("10.00");
    claim["surprise"] = json!(true);
    let a = app.api().post_claim(&claim).await;
    assert_problem(&a, 422, "VALIDATION_FAILED");
    let fields = a.error_fields();
    for f in ["/applicant/id_number", "/event_date", "/details/level", "/details/fee", "/surprise"] {
        assert!(fields.contains(&f.to_string()), "{f} missing from {fields:?}");
    }
    // With no kind to read `details` by, the parties' own bad fields are still named.
    let mut claim = wy_qualification("E-2", "330723199005061130", "6-31-01-03", "junior", "C-2", "2020-02-01");
    claim["kind"] = json!("foo");
    claim["organization"] = json!({"credit_code": "91330723MA00000157", "name": "企业"});
    let a = app.api().post_claim(&claim).await;
    assert_problem(&a, 422, "VALIDATION_FAILED");
    let mut fields = a.error_fields();
    fields.sort();
    assert_eq!(fields, ["/applicant/id_number", "/kind", "/organization/credit_code"], "{}", a.body);
}

#[tokio::test]
async fn invalid_input_shapes_are_refused_with_the_right_code() {
    let app = spawn_app().await;
    let api = app.api();
    let ok = wy_qualification("E-2", &id_number("33072319900506003"), "6-31-01-03", "junior", "C-2", "2020-06-15");
    let rows: Vec<(&str, serde_json::Value, &str, &str)> = vec![
        (
            "birth date 19900230",
            json!({"applicant": {"id_number": id_number("33072319900230003")}}),
            "/applicant/id_number",
            "invalid_date",
        ),
        (
            "money as a number",
            json!({"county": "changxing", "kind": "entrepreneurship_training", "details": {"training_reference": "R", "fee": 100}}),
            "/details/fee",
            "invalid_type",
        ),
        (
            "three decimal places",
            json!({"county": "changxing", "kind": "entrepreneurship_training", "details": {"training_reference": "R", "fee": "1.005"}}),
            "/details/fee",
            "invalid_format",
        ),
        (
            "bad occupation code",
            json!({"details": {"occupation_code": "63-10-10-3"}}),
            "/details/occupation_code",
            "invalid_format",
        ),
        // Nothing outside a field's documented pattern is taken: a client
        // validating against the OpenAPI document agrees with the service.
        (
            "money with a space",
            json!({"county": "changxing", "kind": "entrepreneurship_training", "details": {"training_reference": "R", "fee": " 100.00"}}),
            "/details/fee",
            "invalid_format",
        ),
        (
            "money with ten digits before the point",
            json!({"county": "changxing", "kind": "entrepreneurship_training", "details": {"training_reference": "R", "fee": "1000000000"}}),
            "/details/fee",
            "out_of_range",
        ),
        (
            "ID number with a space",
            json!({"applicant": {"id_number": format!("{} ", id_number("33072319900506003"))}}),
            "/applicant/id_number",
            "invalid_format",
        ),
        ("claim id with a slash", json!({"claim_id": "a/b"}), "/claim_id", "invalid_format"),
        ("unknown county", json!({"county": "hangzhou"}), "/county", "invalid_value"),
        ("unknown department", json!({"department": "ministry_of_magic"}), "/department", "invalid_value"),
        (
            "bad employer credit code",
            json!({"applicant": {"employer": {"credit_code": "91330723MA00000157", "name": "x"}}}),
            "/applicant/employer/credit_code",
            "invalid_checksum",
        ),
    ];
    for (what, patch, field, code) in rows {
        let mut c = ok.clone();
        merge(&mut c, &patch);
        let a = api.post_claim(&c).await;
        assert_eq!(a.status, 422, "{what}: {}", a.body);
        let hit = a.body["errors"].as_array().unwrap().iter().any(|e| e["field"] == field && e["code"] == code);
        assert!(hit, "{what}: want {field} {code}, got {}", a.body["errors"]);
    }
}

fn merge(a: &mut serde_json::Value, b: &serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) => *a = b.clone(),
    }
}

#[tokio::test]
async fn a_directory_names_its_duplicates_beside_every_other_bad_field() {
    let app = spawn_app().await;
    let e = |code: &str, from: &str| json!({"credit_code": code, "name": "企业", "listed_from": from});
    let list = json!([
        e("91330723MA00000156", "2019-06-01"),
        e("91330723MA00000156", "2019-07-01"),
        e("91330723MA00000157", "2019-02-30")
    ]);
    let a = app.api().put_directory("wuyi", &list).await;
    assert_problem(&a, 422, "VALIDATION_FAILED");
    let mut fields = a.error_fields();
    fields.sort();
    assert_eq!(
        fields,
        ["/enterprises/1/credit_code", "/enterprises/2/credit_code", "/enterprises/2/listed_from"],
        "{}",
        a.body
    );
    // Compared as read: a code in lower case, with a space, is the same code.
    let list = json!([
        e("91330723MA00000156", "2019-06-01"),
        e(" 91330723ma00000156", "2019-07-01"),
        e("91330723MA00000169", "2019-02-30")
    ]);
    let a = app.api().put_directory("wuyi", &list).await;
    assert_problem(&a, 422, "VALIDATION_FAILED");
    let mut fields = a.error_fields();
    fields.sort();
    assert_eq!(fields, ["/enterprises/1/credit_code", "/enterprises/2/listed_from"], "{}", a.body);
    let a = app
        .api()
        .put_directory("wuyi", &json!([e("91330723MA00000156", "2019-06-01"), e("91330723MA00000156", "2019-07-01")]))
        .await;
    assert_problem(&a, 422, "VALIDATION_FAILED");
    assert_eq!(a.error_fields(), ["/enterprises/1/credit_code"], "{}", a.body);
    assert_eq!(app.api().put_directory("wuyi", &json!([e("91330723MA00000156", "2019-06-01")])).await.status, 200);
}

/// A field that one needs beside another (a platform purchase's invoice, a
/// veteran's one code) is named beside the other bad fields of `details`.
#[tokio::test]
async fn a_field_needed_beside_another_is_named_beside_other_bad_fields() {
    let app = spawn_app().await;
    let example = |name: &str| {
        subsidy_service::openapi::claim_examples().into_iter().find(|(n, _)| *n == name).expect("an example").1
    };
    let mut online = example("wy_online_training");
    online["details"]["mode"] = json!("platform_purchase");
    online["details"].as_object_mut().unwrap().remove("invoice_amount");
    online["details"]["trainees"] = json!("x");
    let a = app.api().post_claim(&online).await;
    assert_problem(&a, 422, "VALIDATION_FAILED");
    let mut fields = a.error_fields();
    fields.sort();
    assert_eq!(fields, ["/details/invoice_amount", "/details/trainees"], "{}", a.body);

    let mut veteran = example("cx_veteran_training");
    let details = veteran["details"].as_object_mut().unwrap();
    details.remove("occupation_code");
    details.remove("project_code");
    veteran["details"]["fee"] = json!("-5.00");
    let a = app.api().post_claim(&veteran).await;
    assert_problem(&a, 422, "VALIDATION_FAILED");
    let mut fields = a.error_fields();
    fields.sort();
    assert_eq!(fields, ["/details/fee", "/details/occupation_code"], "{}", a.body);

    // Both codes, one of them malformed: each field named once.
    let both = [
        (json!("6-31"), json!("P-1"), "invalid_format", "invalid_value"),
        (json!("6-31-01-03"), json!(" "), "", "required"),
    ];
    for (occupation, project, occupation_error, project_error) in both {
        let mut veteran = example("cx_veteran_training");
        veteran["details"]["occupation_code"] = occupation;
        veteran["details"]["project_code"] = project;
        let a = app.api().post_claim(&veteran).await;
        assert_problem(&a, 422, "VALIDATION_FAILED");
        let mut errors: Vec<(String, String)> = a.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| (e["field"].as_str().unwrap().to_string(), e["code"].as_str().unwrap().to_string()))
            .collect();
        errors.sort();
        let mut want = vec![("/details/project_code".to_string(), project_error.to_string())];
        if !occupation_error.is_empty() {
            want.insert(0, ("/details/occupation_code".to_string(), occupation_error.to_string()));
        }
        assert_eq!(errors, want, "{}", a.body);
    }
}
