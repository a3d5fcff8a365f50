//! `check`, `export` and `import` on a real store.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::helpers::{id_number, wy_qualification, BinaryApp, PLATFORM};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_subsidy-service"))
}

#[tokio::test]
async fn check_export_and_import_round_trip_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let app = BinaryApp::start(&store).await;
    let api = crate::helpers::base(&app.address);
    let p = id_number("33072319930101001");
    for (i, occ) in ["6-31-01-03", "6-18-02-04", "4-03-02-01", "4-07-05-01"].iter().enumerate() {
        api.post_claim(&wy_qualification(&format!("X-{i}"), &p, occ, "junior", &format!("X-C{i}"), "2020-05-01")).await;
    }
    api.revoke("X-1").await;
    api.put_directory(
        "wuyi",
        &json!([{"credit_code": "91330723MA00000156", "name": "x", "listed_from": "2019-06-01"}]),
    )
    .await;
    let before = api.get("/v1/claims/X-2", PLATFORM).await.body;
    let history = api.get("/v1/claims/X-1/events", PLATFORM).await.body;
    assert_eq!(history.as_array().map(Vec::len), Some(2), "decided and revoked: {history}");
    app.stop();

    let ok = bin().args(["check", "--store"]).arg(&store).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));

    let export = bin().args(["export", "--store"]).arg(&store).output().unwrap();
    assert!(export.status.success());
    let lines = String::from_utf8(export.stdout).unwrap();
    // Four claims (each carrying its `decided` event), the revocation, two directories.
    assert_eq!(lines.lines().count(), 4 + 1 + 2);

    let restored = dir.path().join("restored");
    let mut import = bin().args(["import", "--store"]).arg(&restored).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(import.stdin.as_mut().unwrap(), lines.as_bytes()).unwrap();
    drop(import.stdin.take());
    assert!(import.wait().unwrap().success());
    let check = bin().args(["check", "--store"]).arg(&restored).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let again = bin().args(["export", "--store"]).arg(&restored).output().unwrap();
    let sorted = |s: &str| {
        let mut v: Vec<_> = s.lines().map(str::to_string).collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&lines), sorted(&String::from_utf8(again.stdout).unwrap()), "export ∘ import is the identity");

    let app = BinaryApp::start(&restored).await;
    let api = crate::helpers::base(&app.address);
    assert_eq!(api.get("/v1/claims/X-2", PLATFORM).await.body, before);
    assert_eq!(api.get("/v1/claims/X-1/events", PLATFORM).await.body, history);
    // Three granted, one revoked; the fourth was refused at the limit.
    assert_eq!(api.usage("wuyi", &p, 2020).await.body["used"], 2);
    app.stop();
}

#[tokio::test]
async fn check_reports_drift_and_exits_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let app = BinaryApp::start(&store).await;
    let api = crate::helpers::base(&app.address);
    api.post_claim(&wy_qualification(
        "D-1",
        &id_number("33072319930101002"),
        "6-31-01-03",
        "junior",
        "D-C1",
        "2020-05-01",
    ))
    .await;
    app.stop();
    {
        // Tamper with a counter behind the ledger's back.
        let db = sled::Config::new().path(&store).open().unwrap();
        let tree = db.open_tree("ledger").unwrap();
        let k = tree.scan_prefix(b"u\0usage:").next().unwrap().unwrap().0;
        tree.insert(k, b"D-1\nD-X".to_vec()).unwrap();
        // And a sequence counter set back: new claims would reuse numbers.
        tree.insert(b"m\0claim_seq", b"0".to_vec()).unwrap();
        db.flush().unwrap();
    }
    let out = bin().args(["check", "--store"]).arg(&store).output().unwrap();
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("drift"), "{report}");
    assert!(report.contains("usage record"), "{report}");
    assert!(report.contains("sequence counter claim_seq: stored 0"), "{report}");
}
