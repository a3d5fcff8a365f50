//! Reports equal a recount of the stored decisions after approvals, rejections and revocations.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::helpers::{id_number, spawn_app, wy_qualification, AUDITOR, PLATFORM};

#[tokio::test]
async fn report_totals_match_a_recount_of_stored_decisions() {
    let app = spawn_app().await;
    let api = app.api();
    let depts = ["human_resources", "education", "emergency_management"];
    for i in 0..12 {
        let p = id_number(&format!("3307231992030{}{:03}", i % 9 + 1, i));
        let mut c = wy_qualification(
            &format!("RP-{i}"),
            &p,
            "6-31-01-03",
            ["junior", "senior", "technician"][i % 3],
            &format!("RP-C{i}"),
            "2020-06-15",
        );
        c["department"] = json!(depts[i % 3]);
        if i % 5 == 4 {
            c["applicant"]["receives_monthly_pension"] = json!(true);
        }
        api.post_claim(&c).await;
    }
    for id in ["RP-0", "RP-7"] {
        assert_eq!(api.revoke(id).await.status, 200);
    }
    let report = api.get("/v1/reports/wuyi/2020", AUDITOR).await;
    assert_eq!(report.status, 200, "{}", report.body);
    assert_eq!(report.body["plan_total"], 18860);
    // Recount from the stored decisions.
    let list = api.get("/v1/claims?county=wuyi&limit=500", AUDITOR).await;
    let mut by_dept: BTreeMap<String, (u64, f64)> = BTreeMap::new();
    let mut granted = 0;
    let mut cents: i64 = 0;
    for c in list.body["claims"].as_array().unwrap() {
        if c["decision"]["status"] != "approved" {
            continue;
        }
        granted += 1;
        let amount = c["decision"]["amount"].as_str().unwrap().replace('.', "").parse::<i64>().unwrap();
        cents += amount;
        let e = by_dept.entry(c["department"].as_str().unwrap().to_string()).or_default();
        e.0 += 1;
    }
    assert_eq!(report.body["granted"], granted);
    assert_eq!(report.body["amount"].as_str().unwrap().replace('.', "").parse::<i64>().unwrap(), cents);
    for line in report.body["by_department"].as_array().unwrap() {
        let code = line["department"].as_str().unwrap();
        let want = by_dept.get(code).map_or(0, |x| x.0);
        assert_eq!(line["granted"], want, "department {code}");
    }
    let kinds: Vec<&Value> =
        report.body["by_kind"].as_array().unwrap().iter().filter(|k| k["kind"] == "qualification_training").collect();
    assert_eq!(kinds[0]["granted"], granted);
    assert_eq!(api.get("/v1/reports/wuyi/2020", PLATFORM).await.status, 403);
}
