//! `check`, `export` and `import` on a real store.

use std::process::{Command, Stdio};

use serde_json::json;

use crate::helpers::{id_number, wy_qualification, BinaryApp, Client, PLATFORM};

pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_subsidy-service"))
}

/// What a sample ledger shows, to compare after a move.
pub struct Sample {
    pub person: String,
    /// `GET /v1/claims/X-2`.
    pub claim: serde_json::Value,
    /// `GET /v1/claims/X-1/events`.
    pub history: serde_json::Value,
}

/// Records a sample ledger: four claims of one person (the fourth over the
/// limit), a revocation, a directory.
pub async fn record_sample(api: &Client) -> Sample {
    let person = id_number("33072319930101001");
    for (i, occ) in ["6-31-01-03", "6-18-02-04", "4-03-02-01", "4-07-05-01"].iter().enumerate() {
        api.post_claim(&wy_qualification(&format!("X-{i}"), &person, occ, "junior", &format!("X-C{i}"), "2020-05-01"))
            .await;
    }
    api.revoke("X-1").await;
    api.put_directory(
        "wuyi",
        &json!([{"credit_code": "91330723MA00000156", "name": "x", "listed_from": "2019-06-01"}]),
    )
    .await;
    let claim = api.get("/v1/claims/X-2", PLATFORM).await.body;
    let history = api.get("/v1/claims/X-1/events", PLATFORM).await.body;
    assert_eq!(history.as_array().map(Vec::len), Some(2), "decided and revoked: {history}");
    Sample { person, claim, history }
}

/// The sample reads the same through `api`.
pub async fn sample_reads_the_same(api: &Client, sample: &Sample) {
    assert_eq!(api.get("/v1/claims/X-2", PLATFORM).await.body, sample.claim);
    assert_eq!(api.get("/v1/claims/X-1/events", PLATFORM).await.body, sample.history);
    // Three granted, one revoked; the fourth was refused at the limit.
    assert_eq!(api.usage("wuyi", &sample.person, 2020).await.body["used"], 2);
}

/// An export's lines, sorted (an export lists directories by county, claims
/// and events in order; sorting compares content alone).
pub fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<_> = s.lines().map(str::to_string).collect();
    v.sort();
    v
}

/// Pipes `input` into `subsidy-service import ARGS`; whether it succeeded.
pub fn import_into(args: &[&std::ffi::OsStr], input: &str) -> bool {
    let mut import = bin().arg("import").args(args).stdin(Stdio::piped()).spawn().unwrap();
    std::io::Write::write_all(import.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    drop(import.stdin.take());
    import.wait().unwrap().success()
}

#[tokio::test]
async fn check_export_and_import_round_trip_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let app = BinaryApp::start(&store).await;
    let sample = record_sample(&crate::helpers::base(&app.address)).await;
    app.stop();

    let ok = bin().args(["check", "--store"]).arg(&store).output().unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stdout));

    let export = bin().args(["export", "--store"]).arg(&store).output().unwrap();
    assert!(export.status.success());
    let lines = String::from_utf8(export.stdout).unwrap();
    // Four claims (each carrying its `decided` event), the revocation, two directories.
    assert_eq!(lines.lines().count(), 4 + 1 + 2);

    let restored = dir.path().join("restored");
    assert!(import_into(&["--store".as_ref(), restored.as_os_str()], &lines));
    let check = bin().args(["check", "--store"]).arg(&restored).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let again = bin().args(["export", "--store"]).arg(&restored).output().unwrap();
    assert_eq!(
        sorted_lines(&lines),
        sorted_lines(&String::from_utf8(again.stdout).unwrap()),
        "export ∘ import is the identity"
    );

    let app = BinaryApp::start(&restored).await;
    sample_reads_the_same(&crate::helpers::base(&app.address), &sample).await;
    app.stop();
}

/// A copy of a store's first claim record, written behind the ledger's back
/// under a later number: a gap, a claim recorded twice, keys held twice.
fn duplicate_first_record(store: &std::path::Path) {
    let db = sled::Config::new().path(store).open().unwrap();
    let tree = db.open_tree("ledger-v2").unwrap();
    for prefix in [b'H', b'R'] {
        let (_, first) = tree.scan_prefix([prefix]).next().unwrap().unwrap();
        let mut k = vec![prefix];
        k.extend_from_slice(&9u64.to_be_bytes());
        tree.insert(k, first).unwrap();
    }
    db.flush().unwrap();
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
    duplicate_first_record(&store);
    let out = bin().args(["check", "--store"]).arg(&store).output().unwrap();
    assert!(!out.status.success());
    let report = String::from_utf8_lossy(&out.stdout);
    assert!(report.contains("drift"), "{report}");
    assert!(report.contains("record 9 follows record 1"), "{report}");
    assert!(report.contains("claim D-1 recorded twice"), "{report}");
    assert!(report.contains("held by two granted claims"), "{report}");
}

#[tokio::test]
async fn a_store_with_a_gap_does_not_start() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let app = BinaryApp::start(&store).await;
    let api = crate::helpers::base(&app.address);
    let p = id_number("33072319930101003");
    api.post_claim(&wy_qualification("G-1", &p, "6-31-01-03", "junior", "G-C1", "2020-05-01")).await;
    app.stop();
    duplicate_first_record(&store);
    let (started, err) = crate::startup::run_with(&[("SUBSIDY__STORE__PATH", store.to_str().unwrap())]);
    assert!(!started);
    assert!(err.contains("record 9 follows record 1: the store has a gap"), "{err}");
}

/// A store written by layout v1 (tests/fixtures: the public golden claims, a
/// revocation and a directory, made by the release before v2) moves to v2
/// with every decision, event, count and directory as it was.
#[tokio::test]
async fn a_layout_v1_store_moves_to_v2_with_every_decision() {
    let dir = tempfile::tempdir().unwrap();
    let fixtures = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let untar = Command::new("tar")
        .arg("-xzf")
        .arg(fixtures.join("v1-store.tar.gz"))
        .arg("-C")
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(untar.success());
    let old = dir.path().join("store");
    let v1: Vec<serde_json::Value> = std::fs::read_to_string(fixtures.join("v1-store.export.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();

    // The service refuses to start on a v1 store and names the command.
    let (started, msg) = crate::startup::run_with(&[("SUBSIDY__STORE__PATH", old.to_str().unwrap())]);
    assert!(!started);
    assert!(msg.contains("layout v1") && msg.contains("subsidy-service import --store NEW_PATH --from"), "{msg}");

    let new = dir.path().join("v2");
    let import = bin().args(["import", "--store"]).arg(&new).arg("--from").arg(&old).output().unwrap();
    assert!(import.status.success(), "{}", String::from_utf8_lossy(&import.stderr));
    let check = bin().args(["check", "--store"]).arg(&new).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));

    let app = BinaryApp::start(&new).await;
    let api = crate::helpers::base(&app.address);
    let claims: Vec<&serde_json::Value> = v1.iter().filter(|l| l["type"] == "claim").collect();
    assert!(claims.len() >= 60, "the fixture holds the golden claims");
    for c in &claims {
        let id = c["decision"]["claim_id"].as_str().unwrap();
        let got = api.get(&format!("/v1/claims/{id}"), PLATFORM).await;
        assert_eq!(got.status, 200, "{id}");
        assert_eq!(got.body, c["decision"], "{id}: the decision is kept exactly");
        // v1 kept no claim as submitted.
        let sub = api.get(&format!("/v1/claims/{id}/submission"), PLATFORM).await;
        assert_eq!(sub.body["claim"], serde_json::Value::Null, "{id}");
    }
    // A retry of a v1 claim with the same body replays (v1 stored a plain body
    // hash, v2 a keyed one: both are recognised); another body conflicts.
    let golden: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/golden/public.json"))
            .unwrap(),
    )
    .unwrap();
    let original = golden["cases"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|c| c["steps"].as_array().unwrap())
        .find_map(|s| s.get("submit").filter(|c| c["claim_id"] == "T-5c301412-1"))
        .unwrap()
        .clone();
    let replay = api.post_claim(&original).await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.headers.get("idempotent-replayed").unwrap(), "true");
    let mut changed = original.clone();
    changed["event_date"] = serde_json::json!("2020-06-16");
    assert_eq!(api.post_claim(&changed).await.status, 409);
    // The revoked claim's history and its released count.
    let history = api.get("/v1/claims/T-5c301412-1/events", PLATFORM).await.body;
    let kinds: Vec<&str> = history.as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["decided", "revoked", "replayed"]);
    assert_eq!(api.usage("wuyi", "330723199005060038", 2020).await.body["used"], 0);
    // The directory came along.
    let d = api.get("/v1/directories/wuyi/trade-friction-enterprises", crate::helpers::AUDITOR).await;
    assert_eq!(d.body["enterprises"][0]["credit_code"], "91330723MA00000156", "{}", d.body);
    let mut report_years = 0;
    for y in [2020, 2021] {
        let r = api.get(&format!("/v1/reports/wuyi/{y}"), crate::helpers::AUDITOR).await;
        assert_eq!(r.status, 200);
        report_years += r.body["granted"].as_u64().unwrap();
    }
    let granted_wuyi =
        claims.iter().filter(|c| c["county"] == "wuyi" && c["decision"]["status"] == "approved").count() as u64;
    assert_eq!(report_years, granted_wuyi, "report totals recounted from the records");
    app.stop();
}

#[tokio::test]
async fn the_offline_simulation_answers_as_the_service_does() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let app = BinaryApp::start(&store).await;
    let api = crate::helpers::base(&app.address);
    let p = id_number("33072319940101001");
    for (i, (occ, level)) in [
        ("6-31-01-03", "intermediate"),
        ("6-18-02-04", "junior"),
        ("4-03-02-01", "intermediate"),
        ("4-07-05-01", "junior"),
    ]
    .iter()
    .enumerate()
    {
        let claim = wy_qualification(&format!("SO-{i}"), &p, occ, level, &format!("SO-C{i}"), "2021-05-01");
        assert_eq!(api.post_claim(&claim).await.status, 201);
    }
    let changes = json!([
        {"parameter": "/rules/qualification_training/levels/intermediate", "value": "1200"},
        {"parameter": "/annual_limit", "value": 2}
    ]);
    let online =
        api.post("/v1/simulations", crate::helpers::AUDITOR, &json!({"county": "wuyi", "changes": changes})).await;
    assert_eq!(online.status, 200, "{}", online.body);
    // The first intermediate grant raised to 1200; the second refused at the limit of 2; the
    // fourth claim was refused at the limit of 3 and stays refused.
    assert_eq!(online.body["changed"], json!({"claims": 2, "status": 1, "amount": 2}));
    app.stop();

    let file = dir.path().join("changes.json");
    std::fs::write(&file, changes.to_string()).unwrap();
    let (json_out, csv_out) = (dir.path().join("out.json"), dir.path().join("out.csv"));
    let run = bin()
        .args(["simulate", "--store"])
        .arg(&store)
        .args(["--county", "wuyi", "--changes"])
        .arg(&file)
        .arg("--json")
        .arg(&json_out)
        .arg("--csv")
        .arg(&csv_out)
        .output()
        .unwrap();
    let table = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "{table}{}", String::from_utf8_lossy(&run.stderr));
    assert!(table.contains("changed: 2 claims (1 in status, 2 in amount)"), "{table}");
    let offline: serde_json::Value = serde_json::from_slice(&std::fs::read(&json_out).unwrap()).unwrap();
    assert_eq!(offline, online.body, "the same engine offline and online");
    let csv = std::fs::read_to_string(&csv_out).unwrap();
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("section,name,baseline_count,baseline_amount,simulated_count,simulated_amount,count_change,amount_change")
    );
    assert_eq!(lines.next(), Some("granted,all,3,2800.00,2,2000.00,-1,-800.00"), "{csv}");

    let mut bad = bin();
    let bad = bad.args(["simulate", "--store"]).arg(&store).args(["--county", "wuyi", "--changes"]).arg(&file);
    let bad = bad.args(["--sample", "5000"]).output().unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("/sample"));

    // A backwards window and a bad change: both named, as over HTTP.
    let bad_change = dir.path().join("bad-changes.json");
    std::fs::write(&bad_change, json!([{"parameter": "/annual_limit", "value": "three"}]).to_string()).unwrap();
    let mut both = bin();
    let both = both.args(["simulate", "--store"]).arg(&store).args(["--county", "wuyi", "--changes"]).arg(&bad_change);
    let both = both.args(["--from", "2021-01-01", "--to", "2020-01-01"]).output().unwrap();
    assert_eq!(both.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&both.stderr);
    assert!(stderr.contains("/to:") && stderr.contains("/changes/0/value:"), "{stderr}");
}
