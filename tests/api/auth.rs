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
    crate::helpers::listing(api, "/v1/claims", 2).await;
    let list = api.get("/v1/claims", INSTITUTION).await;
    let ids: Vec<_> = list.body["claims"].as_array().unwrap().iter().map(|c| c["claim_id"].clone()).collect();
    assert_eq!(ids, vec![json!("I-1")]);
}

/// An organisation's claim is the organisation's own: an institution key
/// that names itself beside another organisation cannot spend that
/// organisation's cap or awards; as the organisation it submits its claims.
#[tokio::test]
async fn an_institution_submits_an_organisations_claim_only_as_that_organisation() {
    let api = spawn_app().await.api();
    let demo = json!({"credit_code": INSTITUTION_CODE, "name": "演示培训学校"});
    let investment = |id: &str, organization: serde_json::Value| {
        json!({
            "claim_id": id, "county": "changxing", "kind": "institution_investment", "event_date": "2020-11-11",
            "organization": organization, "institution": demo,
            "details": {"category": "equipment", "investment_amount": "60000.00", "invoice_reference": id}
        })
    };
    let other = json!({"credit_code": "91330522MA0EXMP035", "name": "长兴技师学院"});
    let refused = api.post("/v1/claims", INSTITUTION, &investment("O-1", other.clone())).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.body["code"], "FORBIDDEN");
    let batch = api.post("/v1/claims/batch", INSTITUTION, &json!({"claims": [investment("O-2", other.clone())]})).await;
    assert_eq!(batch.body["results"][0]["error"]["status"], 403, "{}", batch.body);
    assert_eq!(api.post("/v1/claims", PLATFORM, &investment("O-3", other)).await.status, 201, "the platform may");
    let own = api.post("/v1/claims", INSTITUTION, &investment("O-4", demo.clone())).await;
    assert_eq!(own.status, 201, "{}", own.body);
}

/// `v` without its `held_by`s.
fn without_holders(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(m) => {
            m.remove("held_by");
            m.values_mut().for_each(without_holders);
        }
        serde_json::Value::Array(a) => a.iter_mut().for_each(without_holders),
        _ => {}
    }
}

/// Every `held_by` in an answer's reasons.
fn holders(body: &serde_json::Value) -> Vec<String> {
    let text = body.to_string();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(h) = m.get("held_by").and_then(|h| h.as_str()) {
                    out.push(h.to_string());
                }
                m.values().for_each(|x| walk(x, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|x| walk(x, out)),
            _ => {}
        }
    }
    walk(&v, &mut out);
    out
}

/// An institution reads only its own claims, and is not told the id of
/// another party's claim that holds a key either: the duplicate's reason
/// stays, its `held_by` is left out of every answer that carries the
/// decision (the claim, a replay, the submission, a listing, an evaluation,
/// a batch), which is otherwise the platform's. The holder's id stays when
/// the holder is its own claim, and the platform always sees it.
#[tokio::test]
async fn an_institution_is_not_told_the_ids_of_claims_it_may_not_read() {
    let app = spawn_app().await;
    let api = app.api();
    let ours = |claim_id: &str, person: &str, cert: &str| {
        let mut c = wy_qualification(claim_id, person, "6-31-01-03", "junior", cert, "2020-06-16");
        c["institution"] = json!({"credit_code": INSTITUTION_CODE, "name": "演示培训学校"});
        c
    };
    // The platform's claim holds the person's (occupation, level).
    let person = id_number("33072319900101005");
    let theirs = wy_qualification("H-1", &person, "6-31-01-03", "junior", "H-C1", "2020-06-15");
    assert_eq!(api.post("/v1/claims", PLATFORM, &theirs).await.status, 201);
    let dup = ours("H-2", &person, "H-C2");
    let a = api.post("/v1/claims", INSTITUTION, &dup).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["status"], "rejected", "{}", a.body);
    assert!(holders(&a.body).is_empty(), "{}", a.body);
    assert_eq!(a.body["reasons"][0]["code"], "DUPLICATE_OCCUPATION_LEVEL", "the reason stays: {}", a.body);
    let replay = api.post("/v1/claims", INSTITUTION, &dup).await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.headers.get("idempotent-replayed").unwrap(), "true");
    assert!(replay.headers.get("x-request-id").is_some());
    assert_eq!(replay.body, a.body, "a replay is answered alike");
    for path in ["/v1/claims/H-2", "/v1/claims/H-2/submission", "/v1/claims"] {
        let of_h2 = |body: serde_json::Value| match body["claims"].as_array() {
            Some(listed) => listed.iter().find(|c| c["claim_id"] == "H-2").cloned().unwrap_or_default(),
            None => body,
        };
        let mut seen = of_h2(api.get(path, PLATFORM).await.body);
        assert_eq!(holders(&seen), ["H-1"], "{path}");
        let b = api.get(path, INSTITUTION).await;
        assert_eq!(b.status, 200, "{path}: {}", b.body);
        assert!(holders(&b.body).is_empty(), "{path}: {}", b.body);
        // Otherwise the platform's answer, exactly.
        without_holders(&mut seen);
        assert_eq!(of_h2(b.body), seen, "{path}");
    }
    let e = api.post("/v1/evaluations", INSTITUTION, &ours("H-9", &person, "H-C9")).await;
    assert_eq!(e.status, 200, "{}", e.body);
    assert!(holders(&e.body).is_empty(), "{}", e.body);
    assert_eq!(holders(&api.post("/v1/evaluations", PLATFORM, &ours("H-9", &person, "H-C9")).await.body), ["H-1"]);
    // A claim of its own holding the key is named to it.
    let other = id_number("33072319900101006");
    assert_eq!(api.post("/v1/claims", INSTITUTION, &ours("H-3", &other, "H-C3")).await.status, 201);
    let batch = json!({"claims": [ours("H-4", &other, "H-C4"), ours("H-5", &person, "H-C5")]});
    let b = api.post("/v1/claims/batch", INSTITUTION, &batch).await;
    assert_eq!(b.status, 200, "{}", b.body);
    assert_eq!(holders(&b.body), ["H-3"], "{}", b.body);
}
