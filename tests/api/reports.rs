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
    // Years outside the county's policy period have no report (Wuyi: 2020-01-30..2021-12-31).
    for year in ["1999", "2019", "2022"] {
        let a = api.get(&format!("/v1/reports/wuyi/{year}"), AUDITOR).await;
        assert_eq!((a.status, a.body["code"].as_str()), (404, Some("NOT_FOUND")), "{year}");
    }
    assert_eq!(api.get("/v1/reports/changxing/2019", AUDITOR).await.status, 200, "Changxing's period starts in 2019");

    // The same report as CSV, row for row.
    let csv = api.client.get(api.url("/v1/reports/wuyi/2020")).bearer_auth(AUDITOR).header("Accept", "text/csv").send();
    let csv = csv.await.unwrap();
    assert_eq!(csv.status(), 200);
    assert_eq!(csv.headers()["content-type"], "text/csv; charset=utf-8");
    let text = csv.text().await.unwrap();
    if std::env::var_os("SHOW_REPORT_CSV").is_some() {
        eprintln!("{text}");
    }
    let text = text.strip_prefix('\u{feff}').expect("a byte-order mark for spreadsheet programs");
    let rows: Vec<csv::StringRecord> = csv::ReaderBuilder::new()
        .has_headers(false)
        .from_reader(text.as_bytes())
        .records()
        .map(Result::unwrap)
        .collect();
    let rows: Vec<Vec<&str>> = rows.iter().map(|r| r.iter().collect()).collect();
    assert_eq!(rows[0], ["county", "year", "section", "code", "name_zh", "clause", "granted", "amount", "plan"]);
    let total = &rows[1];
    assert_eq!(total[..3], ["wuyi", "2020", "total"]);
    assert_eq!(total[6], report.body["granted"].to_string());
    assert_eq!(total[7], report.body["amount"].as_str().unwrap());
    assert_eq!(total[8], "18860");
    let kinds = report.body["by_kind"].as_array().unwrap();
    let departments = report.body["by_department"].as_array().unwrap();
    assert_eq!(rows.len(), 2 + kinds.len() + departments.len());
    for (row, k) in rows[2..].iter().zip(kinds) {
        assert_eq!(
            (row[2], row[3], row[6], row[7]),
            ("kind", k["kind"].as_str().unwrap(), &*k["granted"].to_string(), k["amount"].as_str().unwrap())
        );
    }
    for (row, d) in rows[2 + kinds.len()..].iter().zip(departments) {
        let plan = d.get("plan").map(|p| p.to_string()).unwrap_or_default();
        assert_eq!(
            (row[2], row[3], row[6], row[7], row[8]),
            (
                "department",
                d["department"].as_str().unwrap(),
                &*d["granted"].to_string(),
                d["amount"].as_str().unwrap(),
                &*plan
            )
        );
    }
    // JSON stays the default, and wins when it is asked for first.
    let json_first = api.client.get(api.url("/v1/reports/wuyi/2020")).bearer_auth(AUDITOR);
    let json_first = json_first.header("Accept", "application/json, text/csv").send().await.unwrap();
    assert!(json_first.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    for (accept, csv) in
        [("text/csv;q=0.1, application/json", false), ("application/json;q=0.5, text/csv", true), ("*/*", false)]
    {
        let r = api.client.get(api.url("/v1/reports/wuyi/2020")).bearer_auth(AUDITOR).header("Accept", accept);
        let r = r.send().await.unwrap();
        assert_eq!(r.headers()["content-type"].to_str().unwrap().starts_with("text/csv"), csv, "{accept}");
    }
}

#[tokio::test]
async fn the_report_page_is_served_self_contained() {
    let app = spawn_app().await;
    let api = app.api();
    let page = api.client.get(api.url("/reports/")).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let csp = page.headers()["content-security-policy"].to_str().unwrap().to_string();
    assert!(csp.starts_with("default-src 'none'") && csp.contains("connect-src 'self'"), "{csp}");
    let script_src = csp.split(';').map(str::trim).find(|d| d.starts_with("script-src"));
    assert_eq!(script_src, Some("script-src 'self'"), "scripts only from the service, none inline: {csp}");
    let html = page.text().await.unwrap();
    assert!(html.contains("<script src=\"app.js\"></script>") && html.contains("Download CSV"));
    assert!(!html.contains("<script>"), "no inline script");
    let script = api.client.get(api.url("/reports/app.js")).send().await.unwrap();
    assert_eq!(script.headers()["content-type"], "text/javascript; charset=utf-8");
    assert!(script.text().await.unwrap().contains("/v1/reports/"));
    // No external asset: nothing loaded from another origin.
    for attr in ["src=\"http", "href=\"http", "url(http", "@import"] {
        assert!(!html.contains(attr), "the page refers to an external asset ({attr})");
    }
    let redirect = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = redirect.get(api.url("/reports")).send().await.unwrap();
    assert!(r.status().is_redirection());
    assert_eq!(r.headers()["location"], "/reports/");
}
