//! Real concurrency over HTTP: the ledger serialises what must be serialised.
//! Each check takes the servers to spread its claims over: one process on
//! either backend, or several replicas sharing one PostgreSQL database.

use futures::future::join_all;

use crate::helpers::{id_number, spawn_app, wy_qualification, Client};

/// 50 simultaneous claims for one person, spread over `apis`: exactly 3 granted.
pub async fn fifty_claims_for_one_person_grant_three(apis: &[Client], id_digits: &str) {
    let person = id_number(id_digits);
    let occupations = ["6-31-01-03", "6-18-02-04", "4-03-02-01", "4-07-05-01", "4-10-01-01"];
    let levels: Vec<&str> = subsidy_service::domain::Level::ALL.iter().map(|l| l.as_str()).collect();
    let claims: Vec<_> = (0..50)
        .map(|i| {
            wy_qualification(
                &format!("C50-{i}"),
                &person,
                occupations[i % 5],
                levels[i / 5 % 7],
                &format!("C50-CERT-{i}"),
                "2020-07-01",
            )
        })
        .collect();
    let answers = join_all(claims.iter().enumerate().map(|(i, c)| apis[i % apis.len()].post_claim(c))).await;
    let refused: Vec<_> = answers.iter().filter(|a| a.status != 201).map(|a| (a.status, &a.body)).collect();
    assert!(refused.is_empty(), "every claim gets a decision: {refused:?}");
    let approved = answers.iter().filter(|a| a.body["status"] == "approved").count();
    assert_eq!(approved, 3, "exactly three grants in a year");
    let limited = answers.iter().filter(|a| a.codes().contains(&"ANNUAL_LIMIT_REACHED".to_string())).count();
    assert_eq!(limited, 47);
    for api in apis {
        let usage = api.usage("wuyi", &person, 2020).await;
        assert_eq!(usage.body["used"], 3, "{}", usage.body);
        assert_eq!(usage.body["remaining"], 0);
        assert_eq!(usage.body["claims"].as_array().unwrap().len(), 3);
    }
    // Recorded in the order they were decided: the three grants first, so
    // that replaying the records in order (a simulation, `check`) decides
    // them as they were decided.
    let statuses = recorded_statuses(&apis[0], "C50-", 50).await;
    let granted_first: Vec<&str> = ["approved"; 3].into_iter().chain(["rejected"; 47]).collect();
    assert_eq!(statuses, granted_first, "the recording order is the order of the decisions");
}

/// The statuses of the claims whose ids start with `prefix`, in recording
/// order, once the listing shows `n` claims (each test's store or database
/// holds only its own).
pub async fn recorded_statuses(api: &Client, prefix: &str, n: usize) -> Vec<String> {
    let page = crate::helpers::listing(api, "/v1/claims?limit=500", n).await;
    let claims = page.body["claims"].as_array().unwrap().iter();
    let ours = claims.filter(|c| c["claim_id"].as_str().is_some_and(|id| id.starts_with(prefix)));
    ours.map(|c| c["decision"]["status"].as_str().unwrap().to_string()).collect()
}

/// 20 identical simultaneous submissions spread over `apis`: one 201, 19 replays.
pub async fn twenty_identical_submissions_record_one_decision(apis: &[Client], id_digits: &str) {
    let person = id_number(id_digits);
    let claim = wy_qualification("SAME-1", &person, "6-31-01-03", "junior", "SAME-CERT", "2020-07-01");
    let answers = join_all((0..20).map(|i| apis[i % apis.len()].post_claim(&claim))).await;
    let created = answers.iter().filter(|a| a.status == 201).count();
    let replayed: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    assert_eq!(created, 1);
    assert_eq!(replayed.len(), 19);
    assert!(replayed.iter().all(|a| a.headers.get("idempotent-replayed").is_some_and(|v| v == "true")));
    let first = answers.iter().find(|a| a.status == 201).unwrap();
    assert!(replayed.iter().all(|a| a.body == first.body), "a replay returns the stored decision");
    for api in apis {
        assert_eq!(api.usage("wuyi", &person, 2020).await.body["used"], 1, "counted once");
    }
    let mut other = claim.clone();
    other["details"]["level"] = "senior".into();
    for api in apis {
        assert_eq!(api.post_claim(&other).await.status, 409, "the same id with another body conflicts");
    }
}

/// 10 people claiming on one certificate at once, spread over `apis`: one grant.
pub async fn claims_on_one_certificate_grant_it_once(apis: &[Client]) {
    let claims: Vec<_> = (0..10)
        .map(|i| {
            wy_qualification(
                &format!("CERT-{i}"),
                &id_number(&format!("3307231990010110{i}")),
                "6-31-01-03",
                "junior",
                "SHARED-CERT",
                "2020-07-01",
            )
        })
        .collect();
    let answers = join_all(claims.iter().enumerate().map(|(i, c)| apis[i % apis.len()].post_claim(c))).await;
    assert_eq!(answers.iter().filter(|a| a.body["status"] == "approved").count(), 1);
    assert_eq!(answers.iter().filter(|a| a.codes().contains(&"CERTIFICATE_ALREADY_USED".to_string())).count(), 9);
}

#[tokio::test]
async fn fifty_simultaneous_claims_for_one_person_grant_exactly_three() {
    let app = spawn_app().await;
    fifty_claims_for_one_person_grant_three(&[app.api()], "33072319880808001").await;
}

#[tokio::test]
async fn twenty_identical_simultaneous_submissions_record_one_decision() {
    let app = spawn_app().await;
    twenty_identical_submissions_record_one_decision(&[app.api()], "33072319880808002").await;
}

#[tokio::test]
async fn concurrent_claims_on_one_certificate_grant_it_once() {
    let app = spawn_app().await;
    claims_on_one_certificate_grant_it_once(&[app.api()]).await;
}
