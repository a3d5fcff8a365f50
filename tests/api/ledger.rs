//! The ledger over HTTP: idempotency, batches, revocation, restarts, evaluations.

use serde_json::{json, Value};

use crate::helpers::{answer, id_number, spawn_app, wy_qualification, BinaryApp, Client, AUDITOR, PLATFORM};

#[tokio::test]
async fn the_same_claim_id_with_another_body_is_409() {
    let app = spawn_app().await;
    let api = app.api();
    let p = id_number("33072319870101001");
    let a = wy_qualification("IDEM-1", &p, "6-31-01-03", "junior", "IDEM-C", "2020-05-01");
    assert_eq!(api.post_claim(&a).await.status, 201);
    let mut b = a.clone();
    b["details"]["level"] = json!("senior");
    let r = api.post_claim(&b).await;
    assert_eq!(r.status, 409);
    assert_eq!(r.body["code"], "CLAIM_ID_CONFLICT");
    // Key order and spacing do not make another body.
    let reordered: serde_json::Value = serde_json::from_str(&serde_json::to_string_pretty(&a).unwrap()).unwrap();
    assert_eq!(api.post_claim(&reordered).await.status, 200);
}

/// A claim is answered with its decision's text as stored (the writer
/// checks, in this debug build, that the text it gives is the answered
/// decision's): the `201`'s body is byte for byte what reading the claim
/// back returns.
#[tokio::test]
async fn a_new_claims_answer_is_the_stored_decision_text() {
    let app = spawn_app().await;
    let api = app.api();
    let p = id_number("33072319870101011");
    let claim = wy_qualification("TEXT-1", &p, "6-31-01-03", "junior", "TEXT-C", "2020-05-01");
    let text = |r: reqwest::Response| async move {
        let status = r.status().as_u16();
        let ct = r.headers().get("content-type").and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
        (status, ct, r.bytes().await.expect("a body"))
    };
    let send = api.client.post(api.url("/v1/claims")).bearer_auth(PLATFORM).json(&claim);
    let (status, ct, created) = text(send.send().await.expect("answered")).await;
    assert_eq!((status, ct.as_str()), (201, "application/json"));
    let read = api.client.get(api.url("/v1/claims/TEXT-1")).bearer_auth(PLATFORM);
    let (status, _, stored) = text(read.send().await.expect("answered")).await;
    assert_eq!(status, 200);
    assert_eq!(created, stored, "the 201's body is the stored decision's text");
    let decision: Value = serde_json::from_slice(&created).expect("JSON");
    assert_eq!((decision["status"].as_str(), decision["recorded"].as_bool()), (Some("approved"), Some(true)));
    // A replay answers the same decision; a revocation changes what is stored.
    let replay = api.post_claim(&claim).await;
    assert_eq!((replay.status, &replay.body), (200, &decision));
    assert_eq!(api.revoke("TEXT-1").await.status, 200);
    assert_eq!(api.get("/v1/claims/TEXT-1", PLATFORM).await.body["status"], "revoked");
}

#[tokio::test]
async fn a_batch_is_decided_in_order_and_one_bad_item_does_not_fail_the_rest() {
    let app = spawn_app().await;
    let api = app.api();
    let p = id_number("33072319870101002");
    let occ = ["6-31-01-03", "6-18-02-04", "4-03-02-01", "4-07-05-01"];
    let mut claims: Vec<_> = (0..4)
        .map(|i| wy_qualification(&format!("B-{i}"), &p, occ[i], "junior", &format!("B-C{i}"), "2020-05-01"))
        .collect();
    claims.insert(2, json!({"claim_id": "B-bad", "county": "wuyi"}));
    let r = api.post("/v1/claims/batch", PLATFORM, &json!({"claims": claims})).await;
    assert_eq!(r.status, 200, "{}", r.body);
    let results = r.body["results"].as_array().unwrap();
    assert_eq!(results.len(), 5);
    let statuses: Vec<_> = results.iter().map(|x| x["decision"]["status"].clone()).collect();
    assert_eq!(statuses, vec![json!("approved"), json!("approved"), json!(null), json!("approved"), json!("rejected")]);
    assert_eq!(results[2]["claim_id"], "B-bad");
    assert_eq!(results[2]["error"]["code"], "VALIDATION_FAILED");
    assert!(results[4]["decision"]["reasons"].as_array().unwrap().iter().any(|x| x["code"] == "ANNUAL_LIMIT_REACHED"));
    // Each recorded decision is readable afterwards.
    assert_eq!(api.get("/v1/claims/B-3", PLATFORM).await.body["status"], "rejected");
}

/// A batch's new decisions are answered with their stored texts (encoded
/// on two threads for a batch this size): each is byte for byte what reading
/// the claim back returns; a replay within the batch and a bad item keep
/// their answers.
#[tokio::test]
async fn a_batchs_new_decisions_are_answered_with_their_stored_texts() {
    let app = spawn_app().await;
    new_decisions_are_answered_with_their_stored_texts(&app.api(), 300, "330723198701").await;
}

/// A claim sent alone, then a batch of `n` new claims (people numbered
/// from `id_digits`, 12 digits) with a replay of one of them and a bad
/// item: every new decision's answer is byte for byte what reading the
/// claim back returns (the backends check, in debug builds, that each text
/// given is the answered decision's).
pub async fn new_decisions_are_answered_with_their_stored_texts(api: &Client, n: usize, id_digits: &str) {
    let occ = ["6-31-01-03", "6-18-02-04", "4-03-02-01"];
    let person = |i: usize| id_number(&format!("{id_digits}{:05}", 20000 + i));
    let claim = |i: usize| {
        wy_qualification(&format!("BT-{i}"), &person(i), occ[i % 3], "junior", &format!("BT-C{i}"), "2020-05-01")
    };
    let stored = |i: usize| async move {
        let read = api.client.get(api.url(&format!("/v1/claims/BT-{i}"))).bearer_auth(PLATFORM);
        read.send().await.expect("answered").text().await.expect("a body")
    };
    let alone = api.client.post(api.url("/v1/claims")).bearer_auth(PLATFORM).json(&claim(n));
    let created = alone.send().await.expect("answered");
    assert_eq!(created.status(), 201);
    assert_eq!(created.text().await.expect("a body"), stored(n).await, "the 201's body is the stored text");
    let mut claims: Vec<Value> = (0..n).map(claim).collect();
    claims.push(claims[5].clone());
    claims.push(json!({"claim_id": "BT-bad", "county": "wuyi"}));
    let send = api.client.post(api.url("/v1/claims/batch")).bearer_auth(PLATFORM).json(&json!({"claims": claims}));
    let r = send.send().await.expect("answered");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers().get("content-type").and_then(|v| v.to_str().ok()), Some("application/json"));
    let body = r.bytes().await.expect("a body");
    let answer: Value = serde_json::from_slice(&body).expect("JSON");
    let results = answer["results"].as_array().expect("results");
    assert_eq!(results.len(), n + 2);
    let text = String::from_utf8(body.to_vec()).expect("UTF-8");
    for i in [0, 1, 5, n / 2 - 1, n / 2, n / 2 + 1, n - 1] {
        let item = format!(r#"{{"claim_id":"BT-{i}","decision":{}}}"#, stored(i).await);
        assert!(text.contains(&item), "item {i} is the stored decision's text");
        assert_eq!(results[i]["decision"]["status"], "approved");
    }
    assert_eq!((results[n]["replayed"].as_bool(), &results[n]["decision"]), (Some(true), &results[5]["decision"]));
    assert_eq!(results[n + 1]["error"]["code"], "VALIDATION_FAILED");
}

#[tokio::test]
async fn a_batch_over_the_limit_or_empty_is_422() {
    let app = spawn_app().await;
    let api = app.api();
    assert_eq!(api.post("/v1/claims/batch", PLATFORM, &json!({"claims": []})).await.status, 422);
    let many: Vec<_> = (0..1001).map(|i| json!({"claim_id": format!("X{i}")})).collect();
    assert_eq!(api.post("/v1/claims/batch", PLATFORM, &json!({"claims": many})).await.status, 422);
}

#[tokio::test]
async fn revocation_frees_the_limit_and_the_certificate_and_repeating_it_is_harmless() {
    let app = spawn_app().await;
    let api = app.api();
    let p = id_number("33072319870101003");
    let q = id_number("33072319870101004");
    let first = wy_qualification("R-1", &p, "6-31-01-03", "junior", "R-CERT", "2020-05-01");
    assert_eq!(api.post_claim(&first).await.body["status"], "approved");
    let stolen = wy_qualification("R-2", &q, "6-31-01-03", "junior", "R-CERT", "2020-05-02");
    assert!(api.post_claim(&stolen).await.codes().contains(&"CERTIFICATE_ALREADY_USED".into()));
    let rev = api.revoke("R-1").await;
    assert_eq!(rev.status, 200);
    assert_eq!(rev.body["status"], "revoked");
    assert_eq!(api.revoke("R-1").await.body["status"], "revoked");
    assert_eq!(api.usage("wuyi", &p, 2020).await.body["used"], 0);
    let again = wy_qualification("R-3", &q, "6-31-01-03", "junior", "R-CERT", "2020-05-03");
    assert_eq!(api.post_claim(&again).await.body["status"], "approved", "the certificate is free again");
    assert_eq!(api.get("/v1/claims/R-1", AUDITOR).await.body["status"], "revoked");
    // A rejected claim cannot be revoked; an unknown one is not found.
    assert_eq!(api.revoke("R-2").await.body["code"], "CLAIM_NOT_REVOCABLE");
    assert_eq!(api.revoke("R-nope").await.status, 404);
    let events = api.get("/v1/claims/R-1/events", AUDITOR).await;
    let kinds: Vec<_> = events.body.as_array().unwrap().iter().map(|e| e["event"].clone()).collect();
    assert_eq!(kinds, vec![json!("decided"), json!("revoked")]);
    assert_eq!(events.body[1]["key_id"], "local-platform");
}

/// R-CERT's refusal cites the county's clause, the one its policy document shows.
#[tokio::test]
async fn a_used_certificate_is_refused_citing_the_county_clause_its_policy_shows() {
    let app = spawn_app().await;
    let api = app.api();
    let example = |name: &str| {
        subsidy_service::openapi::claim_examples().into_iter().find(|(n, _)| *n == name).expect("an example").1
    };
    for (county, name, prefix, clause) in [
        ("wuyi", "wy_qualification_training", "33072319870102", "R-CERT, WY §5"),
        ("changxing", "cx_skill_upgrade", "33052219870102", "R-CERT, CX §5(3)"),
    ] {
        let shown = api.get(&format!("/v1/policies/{county}"), PLATFORM).await;
        assert_eq!(shown.body["certificate_once"]["clause"], clause, "{}", shown.body["certificate_once"]);
        let mut claim = example(name);
        for n in 1..=2 {
            claim["claim_id"] = json!(format!("RC-{county}-{n}"));
            claim["applicant"]["id_number"] = json!(id_number(&format!("{prefix}00{n}")));
            let a = api.post_claim(&claim).await;
            if n == 1 {
                assert_eq!(a.body["status"], "approved", "{}", a.body);
                continue;
            }
            let reasons = a.body["reasons"].as_array().expect("reasons");
            let used = reasons.iter().find(|r| r["code"] == "CERTIFICATE_ALREADY_USED").expect("refused for it");
            assert_eq!(used["clause"], clause, "{}", a.body);
        }
    }
}

#[tokio::test]
async fn an_evaluation_records_nothing_and_changes_nothing() {
    let app = spawn_app().await;
    let api = app.api();
    let p = id_number("33072319870101005");
    let c = wy_qualification("EV-1", &p, "6-31-01-03", "senior", "EV-CERT", "2020-05-01");
    for _ in 0..5 {
        let e = api.evaluate(&c).await;
        assert_eq!(e.body["recorded"], false);
        assert_eq!(e.body["status"], "approved");
    }
    assert_eq!(api.get("/v1/claims/EV-1", PLATFORM).await.status, 404);
    assert_eq!(api.usage("wuyi", &p, 2020).await.body["used"], 0);
    let s = api.post_claim(&c).await;
    assert_eq!(s.status, 201);
    assert_eq!(s.body["usage"]["used"], 1);
    assert_eq!(s.body["recorded"], true);
}

/// An evaluation reads its body as it was sent; a recorded claim sent
/// again in another member order and spacing (the same body) is still set
/// aside as its own, and a repeated member is read as its last value, as
/// when it was recorded.
#[tokio::test]
async fn an_evaluation_knows_its_recorded_claim_in_any_member_order() {
    let app = spawn_app().await;
    let api = app.api();
    let p = id_number("33072319870101007");
    let c = wy_qualification("EV-2", &p, "6-31-01-03", "senior", "EV-CERT-2", "2020-05-01");
    assert_eq!(api.post_claim(&c).await.status, 201);
    let evaluate = |text: String| {
        api.client
            .post(api.url("/v1/evaluations"))
            .bearer_auth(PLATFORM)
            .header("content-type", "application/json")
            .body(text)
    };
    // serde_json's own text of a `Value` has its members sorted: reversed
    // and spaced, it is another text of the same body.
    let mut members: Vec<(String, Value)> = c.as_object().unwrap().clone().into_iter().collect();
    members.reverse();
    let reordered =
        format!("{{ {} }}", members.iter().map(|(k, v)| format!("{k:?} : {v}")).collect::<Vec<_>>().join(" ,\n "));
    let own = answer(evaluate(reordered)).await;
    assert_eq!(own.status, 200, "{}", own.body);
    assert_eq!(own.body["status"], "approved", "{}", own.body);
    assert_eq!(own.body["usage"]["used"], 1, "its own record counted once: {}", own.body);
    // A repeated member: the last value is the one read, as it is of a
    // claim recorded; the earlier `claim_id` is not read, and the body is
    // the recorded one, set aside as its own.
    let text = c.to_string().replacen('{', r#"{"claim_id":"EV-other","#, 1);
    let again = answer(evaluate(text)).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body["claim_id"], "EV-2", "{}", again.body);
    assert_eq!(again.body["usage"]["used"], 1, "{}", again.body);
}

#[tokio::test]
async fn a_restart_on_the_same_store_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let p = id_number("33072319870101006");
    let first = BinaryApp::start(&store).await;
    let api = crate::helpers::base(&first.address);
    let occ = ["6-31-01-03", "6-18-02-04", "4-03-02-01"];
    let mut decisions = Vec::new();
    for (i, o) in occ.iter().enumerate() {
        let c = wy_qualification(&format!("RS-{i}"), &p, o, "junior", &format!("RS-C{i}"), "2020-05-01");
        let a = api.post_claim(&c).await;
        assert_eq!(a.status, 201);
        decisions.push(a.body);
    }
    assert_eq!(
        api.put_directory(
            "wuyi",
            &json!([{"credit_code": "91330723MA00000156", "name": "x", "listed_from": "2019-06-01"}])
        )
        .await
        .status,
        200
    );
    first.stop();
    let second = BinaryApp::start(&store).await;
    let api = crate::helpers::base(&second.address);
    for (i, d) in decisions.iter().enumerate() {
        assert_eq!(&api.get(&format!("/v1/claims/RS-{i}"), PLATFORM).await.body, d);
    }
    assert_eq!(api.usage("wuyi", &p, 2020).await.body["used"], 3);
    let fourth = wy_qualification("RS-3", &p, "4-07-05-01", "junior", "RS-C3", "2020-06-01");
    // Evaluations see the reopened ledger (its key filter is rebuilt from the store).
    assert!(api.evaluate(&fourth).await.codes().contains(&"ANNUAL_LIMIT_REACHED".into()));
    let again = wy_qualification("RS-0b", &p, occ[0], "junior", "RS-C0", "2020-05-01");
    let e = api.evaluate(&again).await;
    assert_eq!(e.body["status"], "rejected");
    let held: Vec<_> = e.body["reasons"].as_array().unwrap().iter().filter_map(|r| r["held_by"].as_str()).collect();
    assert!(held.contains(&"RS-0"), "{}", e.body);
    assert!(api.post_claim(&fourth).await.codes().contains(&"ANNUAL_LIMIT_REACHED".into()));
    let dir_after = api.get("/v1/directories/wuyi/trade-friction-enterprises", AUDITOR).await;
    assert_eq!(dir_after.body["enterprises"].as_array().unwrap().len(), 1);
    second.stop();
}

/// Every acknowledged group was synced to the device first: claims answered
/// one at a time are at least as many `fdatasync`s.
#[tokio::test]
async fn every_acknowledged_claim_was_fsynced_first() {
    let app = crate::helpers::spawn_app().await;
    let api = app.api();
    let fsyncs = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("subsidy_ledger_fsyncs ")?.trim().parse::<u64>().ok())
            .expect("the fsync gauge")
    };
    let before = fsyncs(api.get("/metrics", crate::helpers::PLATFORM).await.body.as_str().unwrap());
    for i in 0..10 {
        let p = crate::helpers::id_number(&format!("3307231992010{:02}01", i + 10));
        let c = crate::helpers::wy_qualification(
            &format!("FS-{i}"),
            &p,
            "6-31-01-03",
            "junior",
            &format!("FS-C{i}"),
            "2020-05-01",
        );
        assert_eq!(api.post_claim(&c).await.status, 201);
    }
    let after = fsyncs(api.get("/metrics", crate::helpers::PLATFORM).await.body.as_str().unwrap());
    assert!(after >= before + 10, "10 claims acknowledged one at a time, {} fsyncs", after - before);
}

/// A revocation shows in a claim's decision only once durable: whoever
/// reads the claim revoked then finds the revocation in the claim's history,
/// which shows only durable events. (A revocation rewrites its record in the
/// store before the group's sync; read from the store alone, it showed as
/// revoked while its event was not durable yet.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_is_shown_only_once_durable() {
    let app = spawn_app().await;
    let api = app.api();
    let n = 60;
    let claims: Vec<Value> = (0..n)
        .map(|i| {
            let person = id_number(&format!("33072319800101{i:03}"));
            wy_qualification(&format!("RD-{i}"), &person, "6-31-01-03", "junior", &format!("RD-C{i}"), "2020-06-15")
        })
        .collect();
    let batch = api.post("/v1/claims/batch", PLATFORM, &json!({ "claims": claims })).await;
    assert_eq!(batch.status, 200, "{}", batch.body);
    for i in 0..n {
        let id = format!("RD-{i}");
        let revoke = {
            let (api, id) = (api.clone(), id.clone());
            tokio::spawn(async move {
                api.post(&format!("/v1/claims/{id}/revocation"), PLATFORM, &json!({"reason": "objection"})).await
            })
        };
        loop {
            // Answered before this read was sent: revoked (or failed) by now.
            let answered = revoke.is_finished();
            let decision = api.get(&format!("/v1/claims/{id}"), PLATFORM).await;
            assert_eq!(decision.status, 200, "{}", decision.body);
            assert!(
                !answered || decision.body["status"] == "revoked",
                "{id} after its revocation's answer: {}",
                decision.body
            );
            if decision.body["status"] == "revoked" {
                let events = api.get(&format!("/v1/claims/{id}/events"), PLATFORM).await;
                let kinds: Vec<&str> =
                    events.body.as_array().unwrap().iter().filter_map(|e| e["event"].as_str()).collect();
                assert!(
                    kinds.contains(&"revoked"),
                    "{id} read as revoked before its revocation was durable: {kinds:?}"
                );
                break;
            }
        }
        assert_eq!(revoke.await.unwrap().status, 200);
    }
}

/// A claim recorded before a refusal of new claims (here: its department
/// taken out of the county's plan by a change of the policy data) still
/// replays when it is sent again, alone or in a batch, as idempotency
/// promises; another body under its id, or a new claim, gets the refusal;
/// nothing new is recorded from a refused body.
#[tokio::test]
async fn a_claim_recorded_before_a_new_refusal_still_replays() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let store = store.to_str().unwrap();
    let p = id_number("33072319870101007");
    let with_department = |id: &str, occupation: &str, cert: &str| {
        let mut c = wy_qualification(id, &p, occupation, "junior", cert, "2020-05-01");
        c["department"] = json!("propaganda");
        c
    };
    let (alone, in_batch) =
        (with_department("RR-1", "6-31-01-03", "RR-C1"), with_department("RR-2", "6-18-02-04", "RR-C2"));
    let first =
        BinaryApp::start_with_env(&[("SUBSIDY__STORE__PATH", store)], None, env!("CARGO_MANIFEST_DIR").as_ref()).await;
    let api = crate::helpers::base(&first.address);
    let recorded = api.post_claim(&alone).await;
    assert_eq!(recorded.status, 201, "{}", recorded.body);
    let batch = api.post("/v1/claims/batch", PLATFORM, &json!({"claims": [in_batch]})).await;
    assert!(batch.body["results"][0]["decision"]["status"] == "approved", "{}", batch.body);
    first.stop();

    // The same policy data with Wuyi's `propaganda` department renamed.
    let policies = dir.path().join("policies");
    let copied = std::process::Command::new("cp").arg("-r").arg("config/policies").arg(&policies).status().unwrap();
    assert!(copied.success());
    let reference = policies.join("wuyi/reference.toml");
    let text = std::fs::read_to_string(&reference).unwrap();
    assert!(text.contains("code = \"propaganda\""));
    std::fs::write(&reference, text.replace("code = \"propaganda\"", "code = \"propaganda_renamed\"")).unwrap();
    let env = [("SUBSIDY__STORE__PATH", store), ("SUBSIDY__POLICY__DIR", policies.to_str().unwrap())];
    let second = BinaryApp::start_with_env(&env, None, env!("CARGO_MANIFEST_DIR").as_ref()).await;
    let api = crate::helpers::base(&second.address);

    let again = api.post_claim(&alone).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.headers.get("idempotent-replayed").unwrap(), "true");
    assert_eq!(again.body, recorded.body);
    let refused_department = |a: &crate::helpers::Answer, field: &str| {
        assert_eq!(a.status, 422, "{}", a.body);
        assert_eq!(a.error_fields(), [field], "{}", a.body);
    };
    // Another body under the recorded id, and a new claim: the refusal.
    let mut other = alone.clone();
    other["details"]["level"] = json!("senior");
    refused_department(&api.post_claim(&other).await, "/department");
    let new = with_department("RR-3", "4-03-02-01", "RR-C3");
    refused_department(&api.post_claim(&new).await, "/department");
    assert_eq!(api.get("/v1/claims/RR-3", PLATFORM).await.status, 404);
    // In a batch: the recorded claim replays beside the refused ones.
    let mut other_in_batch = in_batch.clone();
    other_in_batch["details"]["level"] = json!("senior");
    // Another body under a recorded id that is not refused: the conflict.
    let mut conflicting = alone.clone();
    conflicting.as_object_mut().unwrap().remove("department");
    let claims = json!({"claims": [in_batch, new, other_in_batch, conflicting]});
    let b = api.post("/v1/claims/batch", PLATFORM, &claims).await;
    assert_eq!(b.status, 200, "{}", b.body);
    let r = &b.body["results"];
    assert_eq!(r[0]["replayed"], true, "{}", b.body);
    assert_eq!(r[0]["decision"], batch.body["results"][0]["decision"]);
    assert_eq!(r[1]["error"]["errors"][0]["field"], "/claims/1/department", "{}", b.body);
    assert_eq!(r[2]["error"]["errors"][0]["field"], "/claims/2/department", "{}", b.body);
    assert_eq!(r[3]["error"]["code"], "CLAIM_ID_CONFLICT", "{}", b.body);
    assert_eq!(api.get("/v1/claims/RR-3", PLATFORM).await.status, 404);
    // The replays are in the claims' histories; the refusals are not.
    let events = api.get("/v1/claims/RR-1/events", PLATFORM).await;
    let kinds: Vec<_> = events.body.as_array().unwrap().iter().map(|e| e["event"].clone()).collect();
    assert_eq!(kinds, [json!("decided"), json!("replayed")], "{}", events.body);
    second.stop();
}
