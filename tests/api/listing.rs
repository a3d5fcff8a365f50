//! The claims listing: filters and stable cursor pagination.

use std::collections::BTreeSet;

use serde_json::json;

use crate::helpers::{id_number, spawn_app, wy_qualification, AUDITOR};

#[tokio::test]
async fn pages_follow_the_cursor_without_gaps_or_repeats_and_filters_apply() {
    let app = spawn_app().await;
    let api = app.api();
    for i in 0..25 {
        let mut c = wy_qualification(
            &format!("L-{i:02}"),
            &id_number(&format!("3307231994{:02}01{:03}", i % 12 + 1, i)),
            "6-31-01-03",
            "junior",
            &format!("L-C{i}"),
            if i % 2 == 0 { "2020-06-15" } else { "2021-03-01" },
        );
        if i % 5 == 0 {
            c["applicant"]["receives_monthly_pension"] = json!(true);
        }
        c["department"] = json!(if i % 3 == 0 { "education" } else { "human_resources" });
        assert_eq!(api.post_claim(&c).await.status, 201);
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/claims?limit=7&cursor={c}"),
            None => "/v1/claims?limit=7".to_string(),
        };
        let page = api.get(&path, AUDITOR).await;
        assert_eq!(page.status, 200, "{}", page.body);
        seen.extend(
            page.body["claims"].as_array().unwrap().iter().map(|c| c["claim_id"].as_str().unwrap().to_string()),
        );
        match page.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 25, "no repeats");
    let sorted = {
        let mut s = seen.clone();
        s.sort();
        s
    };
    assert_eq!(seen, sorted, "recording order");

    let rejected = api.get("/v1/claims?status=rejected", AUDITOR).await;
    assert_eq!(rejected.body["claims"].as_array().unwrap().len(), 5);
    let in_2021 = api.get("/v1/claims?from=2021-01-01&to=2021-12-31", AUDITOR).await;
    assert_eq!(in_2021.body["claims"].as_array().unwrap().len(), 12);
    let education = api.get("/v1/claims?department=education&kind=qualification_training&county=wuyi", AUDITOR).await;
    assert_eq!(education.body["claims"].as_array().unwrap().len(), 9);
    assert_eq!(api.get("/v1/claims?county=changxing", AUDITOR).await.body["claims"].as_array().unwrap().len(), 0);
    assert_eq!(api.get("/v1/claims?cursor=abc", AUDITOR).await.status, 422);
    // Any cursor the document's pattern allows (1 to 19 digits) is read: past the end, an empty last page.
    let far = api.get("/v1/claims?cursor=9999999999999999999", AUDITOR).await;
    assert_eq!((far.status, far.body["claims"].as_array().map(Vec::len)), (200, Some(0)));
    assert!(far.body.get("next_cursor").is_none());
    assert_eq!(api.get("/v1/claims?colour=red", AUDITOR).await.status, 422);

    // Claims naming no department: the reports' `unassigned` line, and the
    // listing's filter of that name.
    for i in 0..2 {
        let c = wy_qualification(
            &format!("L-U{i}"),
            &id_number(&format!("33072319950101{i:03}")),
            "6-31-01-03",
            "junior",
            &format!("L-UC{i}"),
            "2020-06-15",
        );
        assert_eq!(api.post_claim(&c).await.status, 201);
    }
    let unassigned = api.get("/v1/claims?department=unassigned", AUDITOR).await;
    let ids = unassigned.claim_ids();
    assert_eq!(ids, ["L-U0", "L-U1"]);
    let report = api.get("/v1/reports/wuyi/2020", AUDITOR).await;
    let lines = report.body["by_department"].as_array().unwrap();
    let line = lines.iter().find(|l| l["department"] == "unassigned").expect("an unassigned line");
    assert_eq!(line["granted"], 2, "{}", report.body);
    // A filter that could only match nothing is refused, naming it.
    for (query, field) in [
        ("department=educaton", "/department"),
        ("department=", "/department"),
        ("county=changxing&department=propaganda", "/department"),
        ("from=2021-12-31&to=2020-01-01", "/to"),
        ("limit=+5", "/limit"),
        ("cursor=+5", "/cursor"),
        ("cursor=18446744073709551615", "/cursor"),
    ] {
        let refused = api.get(&format!("/v1/claims?{query}"), AUDITOR).await;
        assert_eq!(refused.status, 422, "{query}: {}", refused.body);
        assert_eq!(refused.error_fields(), vec![field], "{query}");
    }
    // A Wuyi department without a county, or with Wuyi, is a department.
    assert_eq!(api.get("/v1/claims?department=propaganda", AUDITOR).await.status, 200);
    assert_eq!(api.get("/v1/claims?county=wuyi&department=propaganda", AUDITOR).await.status, 200);
}
