//! ID numbers never appear in logs, metrics or the store in clear.

use crate::helpers::{id_number, spawn_app, wy_qualification, BinaryApp, PLATFORM};

fn files_contain(dir: &std::path::Path, needle: &[u8]) -> bool {
    walk(dir).iter().any(|f| std::fs::read(f).is_ok_and(|b| b.windows(needle.len()).any(|w| w == needle)))
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

#[tokio::test]
async fn id_numbers_stay_out_of_the_store_the_logs_and_the_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let log = dir.path().join("service.log");
    let app = BinaryApp::start_with_log(&store, Some(&log)).await;
    let api = crate::helpers::base(&app.address);
    let people: Vec<String> =
        (0..20).map(|i| id_number(&format!("330723199107{:02}{:03}", i % 28 + 1, 100 + i))).collect();
    for (i, p) in people.iter().enumerate() {
        let c = wy_qualification(&format!("PD-{i}"), p, "6-31-01-03", "junior", &format!("PD-C{i}"), "2020-06-15");
        assert_eq!(api.post_claim(&c).await.status, 201);
        assert_eq!(api.usage("wuyi", p, 2020).await.status, 200);
        api.evaluate(&c).await;
    }
    let metrics = api.get("/metrics", PLATFORM).await.body.as_str().unwrap_or_default().to_string();
    app.stop();
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(logs.contains("request completed"), "the log was written");
    for p in &people {
        assert!(!metrics.contains(p.as_str()), "an ID number is in the metrics");
        assert!(!logs.contains(p.as_str()), "an ID number is in the logs");
        assert!(!files_contain(&store, p.as_bytes()), "an ID number is in the store in clear");
    }
    // The store's own content, decompressed: the masked form only.
    let export = std::process::Command::new(env!("CARGO_BIN_EXE_subsidy-service"))
        .args(["export", "--store"])
        .arg(&store)
        .output()
        .unwrap();
    assert!(export.status.success());
    let records = String::from_utf8(export.stdout).unwrap();
    for p in &people {
        assert!(!records.contains(p.as_str()), "an ID number is stored in clear");
    }
    let masked = format!("{}********{}", &people[0][..6], &people[0][14..]);
    assert!(records.contains(&masked));
}

#[tokio::test]
async fn listings_show_id_numbers_masked() {
    let app = spawn_app().await;
    let api = app.api();
    let p = id_number("33072319910101001");
    api.post_claim(&wy_qualification("PM-1", &p, "6-31-01-03", "junior", "PM-C1", "2020-06-15")).await;
    let list = api.get("/v1/claims", crate::helpers::AUDITOR).await;
    let text = list.body.to_string();
    assert!(!text.contains(&p));
    assert_eq!(list.body["claims"][0]["id_number_masked"], format!("{}********{}", &p[..6], &p[14..]));
    assert!(app.store.exists());
}

#[tokio::test]
async fn the_claim_as_submitted_is_kept_and_shown_masked() {
    let app = spawn_app().await;
    let api = app.api();
    let p = id_number("33072319910101002");
    let claim = wy_qualification("PS-1", &p, "6-31-01-03", "junior", "PS-C1", "2020-06-15");
    let decided = api.post_claim(&claim).await;
    assert_eq!(decided.status, 201);
    let shown = api.get("/v1/claims/PS-1/submission", crate::helpers::AUDITOR).await;
    assert_eq!(shown.status, 200, "{}", shown.body);
    assert_eq!(shown.body["decision"], decided.body);
    assert_eq!(shown.body["recorded_by"], "local-platform");
    let kept = &shown.body["claim"];
    // Everything the rules read is there as submitted ...
    for field in ["claim_id", "county", "kind", "event_date", "details"] {
        assert_eq!(kept[field], claim[field], "{field}");
    }
    assert_eq!(kept["applicant"]["groups"], claim["applicant"]["groups"]);
    // ... but the ID number and name only masked, and nothing sealed is shown.
    assert_eq!(kept["applicant"]["id_number"], format!("{}********{}", &p[..6], &p[14..]));
    let name = claim["applicant"]["name"].as_str().unwrap();
    assert_ne!(kept["applicant"]["name"], name);
    assert!(kept.get("sealed").is_none());
    assert!(!shown.body.to_string().contains(&p));
    // An institution that is not a party sees nothing; an unknown id is 404.
    assert_eq!(api.get("/v1/claims/PS-1/submission", crate::helpers::INSTITUTION).await.status, 404);
    assert_eq!(api.get("/v1/claims/PS-404/submission", PLATFORM).await.status, 404);
}
