//! Authentication and the role table, over HTTP.

use serde_json::json;

use crate::helpers::{
    answer, id_number, spawn_app, wy_qualification, Client, ADMIN, AUDITOR, INSTITUTION, INSTITUTION_CODE, PLATFORM,
};

#[tokio::test]
async fn no_key_or_a_wrong_key_is_401_with_www_authenticate() {
    let app = spawn_app().await;
    let a = answer(app.client.post(app.api().url("/v1/claims")).json(&json!({}))).await;
    assert_eq!(a.status, 401);
    assert_eq!(a.body["code"], "UNAUTHENTICATED");
    assert_eq!(a.headers.get("www-authenticate").unwrap(), "Bearer");
    let b = app.api().post_claim_as("not-a-key").await;
    assert_eq!(b.status, 401);
}

impl crate::helpers::Client {
    async fn post_claim_as(&self, key: &str) -> crate::helpers::Answer {
        self.post("/v1/claims", key, &json!({})).await
    }
}

#[tokio::test]
async fn each_role_may_do_exactly_what_the_table_allows() {
    let app = spawn_app().await;
    let api = app.api();
    let dir = "/v1/directories/wuyi/trade-friction-enterprises";
    // Directory: auditors read, admins write.
    assert_eq!(api.put(dir, AUDITOR, &json!({"enterprises": []})).await.status, 403);
    assert_eq!(api.put(dir, PLATFORM, &json!({"enterprises": []})).await.status, 403);
    assert_eq!(api.put(dir, ADMIN, &json!({"enterprises": []})).await.status, 200);
    assert_eq!(api.get(dir, AUDITOR).await.status, 200);
    assert_eq!(api.get(dir, PLATFORM).await.status, 403);
    // Claims: auditors and admins cannot submit.
    let claim = wy_qualification("A-1", &id_number("33072319900101002"), "6-31-01-03", "junior", "A-C1", "2020-06-15");
    assert_eq!(api.post("/v1/claims", AUDITOR, &claim).await.status, 403);
    assert_eq!(api.post("/v1/claims", ADMIN, &claim).await.status, 403);
    // A refusal says which roles may.
    let refused = api.put(dir, AUDITOR, &json!({"enterprises": []})).await;
    assert_eq!(refused.body["code"], "FORBIDDEN");
    let detail = refused.body["detail"].as_str().unwrap();
    assert!(detail.contains("role auditor") && detail.contains("role admin"), "{detail}");
    assert_eq!(api.post("/v1/claims", PLATFORM, &claim).await.status, 201);
    // Reports: auditors and admins only.
    assert_eq!(api.get("/v1/reports/wuyi/2020", PLATFORM).await.status, 403);
    assert_eq!(api.get("/v1/reports/wuyi/2020", AUDITOR).await.status, 200);
    assert_eq!(api.get("/v1/reports/wuyi/2020", ADMIN).await.status, 200);
    // Revocation: platform only.
    assert_eq!(api.post("/v1/claims/A-1/revocation", AUDITOR, &json!({"reason": "x"})).await.status, 403);
    // Usage: platform and auditor.
    let q = json!({"county": "wuyi", "id_number": id_number("33072319900101002"), "year": 2020});
    assert_eq!(api.post("/v1/usage/query", INSTITUTION, &q).await.status, 403);
    assert_eq!(api.post("/v1/usage/query", AUDITOR, &q).await.status, 200);
    // Evaluations: everyone authenticated.
    for key in [PLATFORM, INSTITUTION, AUDITOR, ADMIN] {
        assert_eq!(api.post("/v1/evaluations", key, &claim).await.status, 200);
    }
    // Public documents need no key.
    assert_eq!(api.get("/v1/policies", "").await.status, 200);
    assert_eq!(api.get("/v1/reason-codes", "").await.status, 200);
}

#[tokio::test]
async fn an_institution_submits_and_reads_only_its_own_claims() {
    institution_reads_only_its_own_claims(&spawn_app().await.api()).await;
}

/// An institution records claims naming it only, and reads and lists only
/// those (either backend).
pub async fn institution_reads_only_its_own_claims(api: &Client) {
    let mut own =
        wy_qualification("I-1", &id_number("33072319900101003"), "6-31-01-03", "junior", "I-C1", "2020-06-15");
    own["institution"] = json!({"credit_code": INSTITUTION_CODE, "name": "演示培训学校"});
    let other = wy_qualification("I-2", &id_number("33072319900101004"), "6-31-01-03", "junior", "I-C2", "2020-06-15");
    assert_eq!(api.post("/v1/claims", INSTITUTION, &own).await.status, 201);
    assert_eq!(api.post("/v1/claims", INSTITUTION, &other).await.status, 403);
    assert_eq!(api.post("/v1/claims", PLATFORM, &other).await.status, 201);
    assert_eq!(api.get("/v1/claims/I-1", INSTITUTION).await.status, 200);
    let hidden = api.get("/v1/claims/I-2", INSTITUTION).await;
    assert_eq!(hidden.status, 404, "another institution's claim must look absent");
    assert_eq!(api.get("/v1/claims/I-2/events", INSTITUTION).await.status, 404);
    // Both claims listed to an auditor (on PostgreSQL a claim is listed once
    // every older transaction has ended), only its own to the institution.
    for _ in 0..100 {
        if api.get("/v1/claims", AUDITOR).await.body["claims"].as_array().is_some_and(|c| c.len() == 2) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let list = api.get("/v1/claims", INSTITUTION).await;
    let ids: Vec<_> = list.body["claims"].as_array().unwrap().iter().map(|c| c["claim_id"].clone()).collect();
    assert_eq!(ids, vec![json!("I-1")]);
}
