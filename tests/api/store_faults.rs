//! A store that cannot be written: claims get 503, readiness fails, nothing is
//! half-written, and a restart on the repaired store has every acknowledged decision.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::helpers::{free_port, id_number, wy_qualification, BinaryApp, Client, AUDITOR, PLATFORM};

/// The service on `store` under a file-size limit, which makes the store's
/// writes fail like a full disk (EFBIG; SIGXFSZ is ignored so that the write
/// fails instead of killing the process), with `env` set besides; its
/// process and client, once it answers.
async fn start_on_a_small_disk(store: &std::path::Path, env: &[(&str, &str)]) -> (std::process::Child, Client) {
    let port = free_port();
    let child = Command::new("bash")
        .arg("-c")
        .arg(format!("trap '' XFSZ; ulimit -f 640; exec '{}'", env!("CARGO_BIN_EXE_subsidy-service")))
        .env("SUBSIDY__STORE__PATH", store)
        .env("SUBSIDY__SERVER__PORT", port.to_string())
        .env("SUBSIDY__TELEMETRY__LEVEL", "error")
        .envs(env.iter().copied())
        .env_remove("SUBSIDY_ENV")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let api = crate::helpers::base(&format!("http://127.0.0.1:{port}"));
    let mut up = false;
    for _ in 0..200 {
        if api.client.get(api.url("/healthz")).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(up, "the service started under the file-size limit");
    (child, api)
}

/// The `i`th of the large claims that fill a small disk.
fn filler(prefix: &str, i: usize) -> serde_json::Value {
    let mut c = wy_qualification(
        &format!("{prefix}-{i}"),
        &id_number(&format!("3307231990{:02}{:02}{:03}", i % 12 + 1, i % 28 + 1, i % 1000)),
        "6-31-01-03",
        "junior",
        &format!("{prefix}-C{i}-{}", "x".repeat(120)),
        "2020-06-15",
    );
    c["applicant"]["name"] = serde_json::json!("名".repeat(60));
    c
}

#[tokio::test]
async fn a_full_disk_gives_503_and_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (mut child, api) = start_on_a_small_disk(&store, &[]).await;
    let mut acknowledged = Vec::new();
    let mut refused = Vec::new();
    for i in 0..600 {
        let c = filler("FULL", i);
        // Once the store fails the service stops: a refused connection ends the load.
        let Ok(resp) = api.client.post(api.url("/v1/claims")).bearer_auth(PLATFORM).json(&c).send().await else {
            break;
        };
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap_or_default();
        match status {
            201 => acknowledged.push((format!("FULL-{i}"), body)),
            503 => {
                assert_eq!(body["code"], "STORE_UNAVAILABLE");
                refused.push(format!("FULL-{i}"));
            }
            s => panic!("unexpected status {s}: {body}"),
        }
    }
    assert!(!acknowledged.is_empty(), "some claims were recorded before the disk filled");
    assert!(!refused.is_empty(), "the store ran out of room");
    let ready = api.client.get(api.url("/readyz")).send().await;
    assert!(ready.is_err() || ready.is_ok_and(|r| r.status() == 503), "not ready while the store cannot be written");
    // The service stops by itself so that its supervisor restarts it.
    let mut exited = None;
    for _ in 0..100 {
        if let Some(status) = child.try_wait().unwrap() {
            exited = Some(status);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    let status = exited.expect("the service stopped after the store failed");
    assert!(!status.success(), "a stop for a failed store exits non-zero");

    // The disk is repaired: a restart has every acknowledged decision, none of the refused, and no drift.
    let app = BinaryApp::start(&store).await;
    let api = crate::helpers::base(&app.address);
    for (id, decision) in &acknowledged {
        assert_eq!(&api.get(&format!("/v1/claims/{id}"), PLATFORM).await.body, decision, "{id}");
    }
    for id in &refused {
        assert_eq!(api.get(&format!("/v1/claims/{id}"), PLATFORM).await.status, 404, "{id} was answered 503");
    }
    app.stop();
    let check = check_store(&store);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
}

/// A revocation refused by a store that cannot be written (and a service
/// told not to stop, `store.stop_on_failure = false`) is answered `503`, and
/// the claim reads as it durably is, granted, everywhere: its decision, its
/// history, the listing and the person's usage. A restart agrees.
#[tokio::test]
async fn a_revocation_the_store_could_not_keep_is_not_shown() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let (mut child, api) = start_on_a_small_disk(&store, &[("SUBSIDY__STORE__STOP_ON_FAILURE", "false")]).await;
    let person = id_number("33072319880101012");
    let granted = wy_qualification("KEEP-1", &person, "6-31-01-03", "junior", "KEEP-C1", "2020-06-15");
    let first = api.post_claim(&granted).await;
    assert_eq!((first.status, &first.body["status"]), (201, &serde_json::json!("approved")), "{}", first.body);
    // Fill the store until it refuses a write.
    let mut full = false;
    for i in 0..600 {
        if api.post_claim(&filler("FILL", i)).await.status == 503 {
            full = true;
            break;
        }
    }
    assert!(full, "the store ran out of room");
    let revoked = api.post("/v1/claims/KEEP-1/revocation", PLATFORM, &serde_json::json!({"reason": "test"})).await;
    assert_eq!(revoked.status, 503, "{}", revoked.body);
    let decision = api.get("/v1/claims/KEEP-1", PLATFORM).await;
    assert_eq!(decision.body, first.body, "the decision as recorded");
    let events = api.get("/v1/claims/KEEP-1/events", PLATFORM).await;
    assert_eq!(events.body.as_array().map(Vec::len), Some(1), "decided only: {}", events.body);
    let listed = api.get("/v1/claims?status=revoked", AUDITOR).await;
    assert_eq!(listed.body["claims"], serde_json::json!([]), "nothing durably revoked");
    let listed = api.get("/v1/claims?status=approved&limit=1", AUDITOR).await;
    assert_eq!(listed.body["claims"][0]["decision"], first.body);
    let usage = api.usage("wuyi", &person, 2020).await;
    assert_eq!(usage.body["used"], 1, "{}", usage.body);
    assert_eq!(usage.body["claims"][0]["status"], "approved", "{}", usage.body);
    let _ = child.kill();
    let _ = child.wait();
    let app = BinaryApp::start(&store).await;
    let api = crate::helpers::base(&app.address);
    assert_eq!(api.get("/v1/claims/KEEP-1", PLATFORM).await.body, first.body, "after a restart too");
    app.stop();
}

/// A record that cannot be read is an error (503), never a missing claim:
/// not a 404, not a fresh decision as if the claim were new.
#[tokio::test]
async fn an_unreadable_record_is_503_never_absent() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let claim =
        wy_qualification("BAD-1", &id_number("33072319930101009"), "6-31-01-03", "junior", "BAD-C1", "2020-05-01");
    // Keep the record's header (start-up reads only that), spoil its body.
    record_then_change_bodies(&store, &claim, |tree, key, _| {
        tree.insert(key, b"\x02\x05\x00\x00\x00garbage".to_vec()).unwrap();
    })
    .await;
    let app = BinaryApp::start(&store).await;
    let api = crate::helpers::base(&app.address);
    for answer in [
        api.get("/v1/claims/BAD-1", PLATFORM).await,
        api.evaluate(&claim).await,
        api.post_claim(&claim).await,
        api.get("/v1/claims/BAD-1/events", PLATFORM).await,
    ] {
        assert_eq!(answer.status, 503, "{}", answer.body);
        assert_eq!(answer.body["code"], "STORE_UNAVAILABLE");
    }
    // The store itself is fine: other claims are decided and recorded.
    let other =
        wy_qualification("OK-1", &id_number("33072319930101010"), "6-31-01-03", "junior", "OK-C1", "2020-05-01");
    assert_eq!(api.post_claim(&other).await.status, 201);
    assert_eq!(api.get("/readyz", PLATFORM).await.status, 200);
    app.stop();
}

#[tokio::test]
async fn a_group_cut_between_its_bodies_and_its_headers_is_no_record_and_is_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let first =
        wy_qualification("CUT-1", &id_number("33072319930101011"), "6-31-01-03", "junior", "CUT-C1", "2020-05-01");
    // What a crash between a group's two inserts leaves: the page of bodies
    // of record 2 on, without its headers (a copy of record 1's).
    record_then_change_bodies(&store, &first, |tree, _, bodies| {
        tree.insert(bodies_key(2), bodies).unwrap();
    })
    .await;
    let check = check_store(&store);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    let app = BinaryApp::start(&store).await;
    let api = crate::helpers::base(&app.address);
    assert_eq!(api.get("/v1/claims/CUT-1", PLATFORM).await.status, 200);
    let second =
        wy_qualification("CUT-2", &id_number("33072319930101012"), "6-31-01-03", "junior", "CUT-C2", "2020-05-01");
    assert_eq!(api.post_claim(&second).await.status, 201);
    let listed = api.get("/v1/claims?limit=10", AUDITOR).await;
    let ids = listed.claim_ids();
    assert_eq!(ids, ["CUT-1", "CUT-2"], "{}", listed.body);
    app.stop();
    let check = check_store(&store);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
    // Bodies without headers anywhere else are not a cut write: reported.
    change_bodies(&store, |tree, _, bodies| {
        tree.insert(bodies_key(9), bodies).unwrap();
    });
    let check = check_store(&store);
    assert!(!check.status.success());
    let out = String::from_utf8_lossy(&check.stdout).to_string() + &String::from_utf8_lossy(&check.stderr);
    assert!(out.contains("record 9: a page of bodies without its headers"), "{out}");
}

/// What a power loss before a group's sync can leave when sled wrote the
/// group's bodies to a blob file that never reached the device: the headers
/// without their bodies. Never acknowledged, so removed at start.
#[tokio::test]
async fn a_last_page_of_headers_without_its_bodies_is_removed_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let claim =
        wy_qualification("LOST-1", &id_number("33072319930101013"), "6-31-01-03", "junior", "LOST-C1", "2020-05-01");
    record_then_change_bodies(&store, &claim, |tree, key, _| {
        tree.remove(key).unwrap();
    })
    .await;
    let app = BinaryApp::start(&store).await;
    let api = crate::helpers::base(&app.address);
    assert_eq!(api.get("/v1/claims/LOST-1", PLATFORM).await.status, 404);
    let again = api.post_claim(&claim).await;
    assert_eq!(again.status, 201, "{}", again.body);
    assert_eq!(api.get("/v1/claims/LOST-1", PLATFORM).await.status, 200);
    app.stop();
    let check = check_store(&store);
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stderr));
}

/// Records `claim` on a fresh store, stops the server, and lets `change`
/// alter the stopped store given its first page of bodies (key and value).
async fn record_then_change_bodies(
    store: &std::path::Path,
    claim: &serde_json::Value,
    change: impl FnOnce(&sled::Tree, sled::IVec, sled::IVec),
) {
    let app = BinaryApp::start(store).await;
    let api = crate::helpers::base(&app.address);
    assert_eq!(api.post_claim(claim).await.status, 201);
    app.stop();
    change_bodies(store, change);
}

/// Lets `change` alter a stopped store given its first page of bodies (key
/// and value).
fn change_bodies(store: &std::path::Path, change: impl FnOnce(&sled::Tree, sled::IVec, sled::IVec)) {
    let db = sled::Config::new().path(store).open().unwrap();
    let tree = db.open_tree("ledger-v2").unwrap();
    let (key, bodies) = tree.scan_prefix(b"R").next().unwrap().unwrap();
    change(&tree, key, bodies);
    db.flush().unwrap();
}

/// The key of the page of bodies whose first record is `first`.
fn bodies_key(first: u64) -> Vec<u8> {
    [&b"R"[..], &first.to_be_bytes()].concat()
}

/// `subsidy-service check --store`, run on a stopped store.
fn check_store(store: &std::path::Path) -> std::process::Output {
    crate::maintenance::bin().args(["check", "--store"]).arg(store).output().unwrap()
}
