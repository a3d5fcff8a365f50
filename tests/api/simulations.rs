//! Policy simulations (API.md §8): claims recorded over HTTP, replayed under
//! changes whose effects are worked out by hand.

use serde_json::{json, Value};

use crate::helpers::{id_number, spawn_app, wy_qualification, Client, ADMIN, AUDITOR, INSTITUTION, PLATFORM};

fn cx_key_group(claim_id: &str, id: &str, level: &str, cert: &str, fee: &str) -> Value {
    json!({
        "claim_id": claim_id, "county": "changxing", "kind": "key_group_training", "event_date": "2020-05-20",
        "applicant": {"id_number": id, "name": "测试", "local_hukou": true, "groups": ["unemployed"], "unemployment_registered": true},
        "institution": {"credit_code": "91330522MA0EXMP035", "name": "长兴技师学院"},
        "details": {"occupation_code": "4-03-02-01", "level": level, "certificate_number": cert, "fee": fee}
    })
}

async fn record(api: &Client, claim: &Value, status: &str) {
    let a = api.post_claim(claim).await;
    assert_eq!(a.status, 201, "{}", a.body);
    assert_eq!(a.body["status"], status, "{} {}", claim["claim_id"], a.body);
}

async fn simulate(api: &Client, body: Value) -> Value {
    let a = api.post("/v1/simulations", AUDITOR, &body).await;
    assert_eq!(a.status, 200, "{}", a.body);
    a.body
}

fn brief(status: &str, amount: &str) -> Value {
    json!({"status": status, "amount": amount})
}

/// The sample's claims, each with both runs' status and amount (reasons aside).
fn sample(c: &Value) -> Vec<(String, Value, Value)> {
    c["claims"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            let b = |run: &str| json!({"status": x[run]["status"], "amount": x[run]["amount"]});
            (x["claim_id"].as_str().unwrap().to_string(), b("baseline"), b("simulated"))
        })
        .collect()
}

#[tokio::test]
async fn simulations_replay_recorded_claims_under_changed_figures() {
    replays_recorded_claims_under_changed_figures(&spawn_app().await.api()).await;
}

/// Records claims through `api`, then simulates changes whose effects are
/// worked out by hand (either backend).
pub async fn replays_recorded_claims_under_changed_figures(api: &Client) {
    let api = api.clone();
    // Wuyi qualification training (WY §4(1)1: intermediate 1000, junior 800; 3 a year).
    let a = id_number("33072319900101001");
    let b = id_number("33072319910202002");
    let pensioner = id_number("33072319500303003");
    let gone = id_number("33072319920404004");
    record(&api, &wy_qualification("SIM-A1", &a, "6-31-01-03", "intermediate", "SIM-C1", "2020-06-15"), "approved")
        .await;
    record(&api, &wy_qualification("SIM-A2", &a, "6-31-01-04", "junior", "SIM-C2", "2020-07-15"), "approved").await;
    // b: three grants in 2021 (the third is the one a limit of 2 refuses).
    record(&api, &wy_qualification("SIM-B1", &b, "6-31-01-03", "intermediate", "SIM-C3", "2021-03-01"), "approved")
        .await;
    record(&api, &wy_qualification("SIM-B2", &b, "6-31-01-04", "junior", "SIM-C4", "2021-04-01"), "approved").await;
    record(&api, &wy_qualification("SIM-B3", &b, "6-31-01-05", "junior", "SIM-C5", "2021-05-01"), "approved").await;
    let mut p = wy_qualification("SIM-P1", &pensioner, "6-31-01-03", "intermediate", "SIM-C6", "2020-06-15");
    p["applicant"]["receives_monthly_pension"] = json!(true);
    record(&api, &p, "rejected").await;
    // A revoked grant is left out of both runs.
    record(&api, &wy_qualification("SIM-R1", &gone, "6-31-01-03", "intermediate", "SIM-C7", "2020-08-01"), "approved")
        .await;
    assert_eq!(api.revoke("SIM-R1").await.status, 200);
    // Changxing key-group training (CX §3(3): min(fee, cap), senior cap 1500, junior 1000).
    let c = id_number("33052219850505005");
    let d = id_number("33052219860606006");
    let e = id_number("33052219870707007");
    record(&api, &cx_key_group("SIM-K1", &c, "senior", "SIM-K-C1", "1200.00"), "approved").await;
    record(&api, &cx_key_group("SIM-K2", &d, "senior", "SIM-K-C2", "1600.00"), "approved").await;
    record(&api, &cx_key_group("SIM-K3", &e, "junior", "SIM-K-C3", "900.00"), "approved").await;

    // On PostgreSQL a claim is listed and replayed once every transaction
    // older than it has ended, in any database of the cluster: wait for that.
    for _ in 0..100 {
        if api.get("/v1/claims?limit=100", AUDITOR).await.body.to_string().contains("SIM-K3") {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }

    // What the real ledger shows before; it must show the same after.
    let real = |api: Client, b: String| async move {
        (
            api.get("/v1/reports/wuyi/2021", AUDITOR).await.body,
            api.get("/v1/reports/changxing/2020", AUDITOR).await.body,
            api.usage("wuyi", &b, 2021).await.body,
            api.get("/v1/claims/SIM-B3/events", AUDITOR).await.body,
            api.get("/v1/claims?limit=100", AUDITOR).await.body,
        )
    };
    let before = real(api.clone(), b.clone()).await;

    // No changes: both runs equal.
    let same = simulate(&api, json!({"county": "wuyi"})).await;
    assert_eq!(same["claims_replayed"], 6, "revoked claim left out: {same}");
    assert_eq!(same["baseline"], same["simulated"]);
    assert_eq!(same["policy_version"], same["simulated_policy_version"]);
    assert_eq!(same["changed"], json!({"claims": 0, "status": 0, "amount": 0}));
    assert_eq!(same["claims"], json!([]));
    assert_eq!(same["baseline"]["granted"], json!({"count": 5, "amount": "4400.00"}));
    let policy = api.get("/v1/policies/wuyi", PLATFORM).await.body;
    assert_eq!((&same["from"], &same["to"]), (&policy["period"]["from"], &policy["period"]["to"]));
    assert_eq!(same["policy_version"], policy["version"]);
    assert_eq!(same["directory_version"], policy["directory_version"], "the directory both runs read");

    // A level's fixed amount raised: every such amount moves, no status changes.
    let raised = simulate(
        &api,
        json!({"county": "wuyi", "changes": [{"parameter": "/rules/qualification_training/levels/intermediate", "value": "1300"}]}),
    )
    .await;
    assert_ne!(raised["simulated_policy_version"], raised["policy_version"]);
    assert_eq!(raised["changed"], json!({"claims": 2, "status": 0, "amount": 2}));
    assert_eq!(raised["baseline"]["granted"], json!({"count": 5, "amount": "4400.00"}));
    assert_eq!(raised["simulated"]["granted"], json!({"count": 5, "amount": "5000.00"}));
    assert_eq!(raised["simulated"]["by_kind"]["qualification_training"], json!({"count": 5, "amount": "5000.00"}));
    assert_eq!(raised["simulated"]["by_department"]["unassigned"], json!({"count": 5, "amount": "5000.00"}));
    assert_eq!(
        sample(&raised),
        vec![
            ("SIM-A1".into(), brief("approved", "1000.00"), brief("approved", "1300.00")),
            ("SIM-B1".into(), brief("approved", "1000.00"), brief("approved", "1300.00")),
        ]
    );

    // The yearly limit lowered to 2 from 2021: b's third grant of 2021 is refused.
    let limited = simulate(
        &api,
        json!({"county": "wuyi", "from": "2020-01-01", "to": "2021-12-31",
               "changes": [{"parameter": "/annual_limit", "value": 2, "from": "2021-01-01"}], "sample": 5}),
    )
    .await;
    assert_eq!(limited["changed"], json!({"claims": 1, "status": 1, "amount": 1}));
    assert_eq!(sample(&limited), vec![("SIM-B3".into(), brief("approved", "800.00"), brief("rejected", "0.00"))]);
    let reasons = &limited["claims"][0]["simulated"]["reasons"];
    assert!(reasons.as_array().unwrap().contains(&json!("ANNUAL_LIMIT_REACHED")), "{reasons}");
    assert_eq!(limited["simulated"]["granted"], json!({"count": 4, "amount": "3600.00"}));

    // Both changes at once (the README's example).
    let both = simulate(
        &api,
        json!({"county": "wuyi", "sample": 2, "changes": [
            {"parameter": "/rules/qualification_training/levels/intermediate", "value": "1300"},
            {"parameter": "/annual_limit", "value": 2, "from": "2021-01-01"}]}),
    )
    .await;
    assert_eq!(both["changed"], json!({"claims": 3, "status": 1, "amount": 3}));
    assert_eq!(both["simulated"]["granted"], json!({"count": 4, "amount": "4200.00"}));
    assert_eq!(sample(&both).len(), 2, "bounded by sample");
    if std::env::var_os("SHOW_SIMULATION").is_some() {
        eprintln!("{}", serde_json::to_string_pretty(&both).unwrap());
    }

    // The window selects claims by event date.
    let only_2021 = simulate(&api, json!({"county": "wuyi", "from": "2021-01-01"})).await;
    assert_eq!(only_2021["claims_replayed"], 3);

    // A cap lowered: fees above it are capped, fees below it stay.
    let capped = simulate(
        &api,
        json!({"county": "changxing", "changes": [{"parameter": "/rules/key_group_training/caps/senior", "value": "1300"}], "sample": 0}),
    )
    .await;
    assert_eq!(capped["claims_replayed"], 3);
    assert_eq!(capped["baseline"]["granted"], json!({"count": 3, "amount": "3600.00"}));
    assert_eq!(capped["simulated"]["granted"], json!({"count": 3, "amount": "3400.00"}));
    assert_eq!(capped["changed"], json!({"claims": 1, "status": 0, "amount": 1}));
    assert_eq!(capped["claims"], json!([]), "sample 0 lists none");
    let capped = simulate(
        &api,
        json!({"county": "changxing", "changes": [{"parameter": "/rules/key_group_training/caps/senior", "value": "1300"}]}),
    )
    .await;
    assert_eq!(sample(&capped), vec![("SIM-K2".into(), brief("approved", "1500.00"), brief("approved", "1300.00"))]);

    // Nothing of the real ledger moved, and claims are still decided.
    assert_eq!(real(api.clone(), b.clone()).await, before);
    let after = wy_qualification("SIM-A3", &a, "6-31-01-05", "intermediate", "SIM-C8", "2020-09-01");
    record(&api, &after, "approved").await;
}

#[tokio::test]
async fn bad_simulations_name_every_bad_field_and_only_auditors_and_admins_run_them() {
    let app = spawn_app().await;
    let api = app.api();
    let body = json!({"county": "wuyi", "changes": [
        {"parameter": "/rules/qualification_training/levels/grandmaster", "value": "1"},
        {"parameter": "/annual_limit", "value": "three"},
        {"parameter": "/period", "value": "2020-01-01"},
        {"parameter": "/trade_friction/kinds", "value": ["craftsman_award"]},
        // Figures no document could hold, whose products would overflow a decimal.
        {"parameter": "/rules/qualification_training/levels/intermediate", "value": "50000000000000000000000000000"},
        {"parameter": "/rules/project_training/rate_per_class_hour", "value": "0.0000000000000000000000000001"},
        {"parameter": "/rules/project_training/cap", "value": "1000000000"},
    ]});
    let a = api.post("/v1/simulations", ADMIN, &body).await;
    assert_eq!(a.status, 422, "{}", a.body);
    assert_eq!(a.body["code"], "VALIDATION_FAILED");
    assert_eq!(
        a.error_fields(),
        vec![
            "/changes/0/parameter",
            "/changes/1/value",
            "/changes/2/parameter",
            "/changes/3/value",
            "/changes/4/value",
            "/changes/5/value",
            "/changes/6/value"
        ]
    );
    let a = api.post("/v1/simulations", AUDITOR, &json!({"county": "narnia", "sample": -1, "to": "soon"})).await;
    assert_eq!(a.status, 422);
    let mut fields = a.error_fields();
    fields.sort();
    assert_eq!(fields, vec!["/county", "/sample", "/to"]);
    // A window outside the policy's period and a bad change, both named.
    let body =
        json!({"county": "wuyi", "from": "2023-01-01", "changes": [{"parameter": "/annual_limit", "value": "three"}]});
    let a = api.post("/v1/simulations", AUDITOR, &body).await;
    assert_eq!(a.status, 422, "{}", a.body);
    let mut fields = a.error_fields();
    fields.sort();
    assert_eq!(fields, vec!["/changes/0/value", "/from"]);
    // A `to` before `from` and a bad change, both named.
    let body = json!({"county": "wuyi", "from": "2020-06-01", "to": "2020-05-31",
        "changes": [{"parameter": "/annual_limit", "value": "three"}]});
    let a = api.post("/v1/simulations", AUDITOR, &body).await;
    assert_eq!(a.status, 422, "{}", a.body);
    let mut fields = a.error_fields();
    fields.sort();
    assert_eq!(fields, vec!["/changes/0/value", "/to"]);
    for key in [PLATFORM, INSTITUTION] {
        let a = api.post("/v1/simulations", key, &json!({"county": "wuyi"})).await;
        assert_eq!(a.status, 403, "{}", a.body);
    }
    let a = api.post("/v1/simulations", ADMIN, &json!({"county": "changxing"})).await;
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.body["claims_replayed"], 0);
    assert_eq!(a.body["baseline"]["granted"], json!({"count": 0, "amount": "0.00"}));
}

#[tokio::test]
async fn one_simulation_per_county_at_a_time_while_claims_keep_being_decided() {
    let app = spawn_app().await;
    let api = app.api();
    // Enough recorded claims that a replay lasts while the other requests arrive.
    for b in 0..3 {
        let claims: Vec<Value> = (0..1000)
            .map(|i| {
                let n = b * 1000 + i;
                let born = chrono::NaiveDate::from_ymd_opt(1960, 1, 1).unwrap() + chrono::Days::new(n);
                let id = id_number(&format!("330723{}001", born.format("%Y%m%d")));
                wy_qualification(&format!("SIMC-{n}"), &id, "6-31-01-03", "junior", &format!("SIMC-C{n}"), "2020-06-15")
            })
            .collect();
        let a = api.post("/v1/claims/batch", PLATFORM, &json!({ "claims": claims })).await;
        assert_eq!(a.status, 200, "{}", a.body);
    }
    let body = json!({"county": "wuyi", "changes": [{"parameter": "/annual_limit", "value": 2}], "sample": 1000});
    let simulations = futures_util::future::join_all((0..4).map(|_| api.post("/v1/simulations", AUDITOR, &body)));
    let person = id_number("33072319990909009");
    // Changes the policy refuses, sent while the replays run: named (422)
    // whether or not the county's slot is taken at that moment. A good
    // request just before and just after it answered 429 shows the slot
    // was held throughout (once given back it stays free: the waiting
    // simulations do not try again).
    let bad = json!({"county": "wuyi", "changes": [{"parameter": "/annual_limit", "value": "many"}]});
    let probe = json!({"county": "wuyi", "sample": 0});
    let during = async {
        let mut statuses = Vec::new();
        let mut refused = Vec::new();
        let occupations = ["6-31-01-03", "6-18-02-04", "4-03-02-01", "4-07-05-01", "6-31-01-04"];
        for (i, occupation) in occupations.iter().enumerate() {
            let c = wy_qualification(
                &format!("SIMD-{i}"),
                &person,
                occupation,
                "junior",
                &format!("SIMD-C{i}"),
                "2021-03-01",
            );
            statuses.push(api.post_claim(&c).await.status);
            let before = api.post("/v1/simulations", AUDITOR, &probe).await.status;
            let a = api.post("/v1/simulations", AUDITOR, &bad).await;
            let after = api.post("/v1/simulations", AUDITOR, &probe).await.status;
            refused.push((a.status, a.error_fields(), before == 429 && after == 429));
        }
        (statuses, refused)
    };
    let (answers, (during, refused)) = tokio::join!(simulations, during);
    assert!(
        refused
            .iter()
            .all(|(status, fields, _)| (*status, fields.as_slice()) == (422, &["/changes/0/value".to_string()][..])),
        "{refused:?}"
    );
    assert!(refused.iter().any(|(.., held)| *held), "no bad request was answered while the slot was held: {refused:?}");
    let ok: Vec<_> = answers.iter().filter(|a| a.status == 200).collect();
    let busy: Vec<_> = answers.iter().filter(|a| a.status == 429).collect();
    assert_eq!(ok.len() + busy.len(), 4, "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    assert!(!ok.is_empty() && !busy.is_empty(), "one runs, the others wait");
    for b in &busy {
        assert_eq!(b.body["code"], "RATE_LIMITED");
        assert!(b.headers.get("retry-after").is_some(), "Retry-After");
    }
    assert!(ok.iter().all(|a| a.body["claims_replayed"].as_u64() >= Some(3000)));
    // Claims were decided meanwhile (the person's fourth and fifth of the year refused as usual).
    assert_eq!(during, vec![201; 5]);
    assert_eq!(api.usage("wuyi", &person, 2021).await.body["used"], 3);
    // The slot was given back.
    assert_eq!(api.post("/v1/simulations", ADMIN, &json!({"county": "wuyi", "sample": 0})).await.status, 200);
}

/// Every cited figure of `policy` (a parameter whose dated values are
/// decimal strings or whole numbers) by its JSON pointer, with the extremes
/// its schema admits.
fn figures(policy: &Value, at: &str, out: &mut Vec<(String, [Value; 3])>) {
    match policy {
        Value::Object(o) => {
            let values =
                o.get("values").and_then(Value::as_array).filter(|v| !v.is_empty() && o.contains_key("clause"));
            let decimal = |v: &Value| v["value"].as_str().is_some_and(|s| s.parse::<rust_decimal::Decimal>().is_ok());
            if values.is_some_and(|v| v.iter().all(decimal)) {
                out.push((at.to_string(), [json!("0"), json!("0.0001"), json!("999999999.9999")]));
            } else if values.is_some_and(|v| v.iter().all(|v| v["value"].is_u64())) {
                out.push((at.to_string(), [json!(0), json!(1), json!(u32::MAX)]));
            }
            for (k, v) in o {
                figures(v, &format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")), out);
            }
        }
        Value::Array(a) => a.iter().enumerate().for_each(|(i, v)| figures(v, &format!("{at}/{i}"), out)),
        _ => {}
    }
}

/// A changed figure is any value its schema admits, from the smallest to the
/// largest; the replay of every scenario's claims under it is an answer, never
/// an overflow (a `503`) nor a `500`. A figure the policy's own checks refuse
/// at that value (a rate above 1, a value its type cannot hold) is a `422`
/// naming the change.
#[tokio::test]
async fn every_figure_at_its_extremes_is_simulated_or_refused_by_name() {
    let app = spawn_app().await;
    let api = app.api();
    let mut files: Vec<_> = std::fs::read_dir("tests/scenarios").unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    for file in files.iter().filter(|f| f.extension().is_some_and(|e| e == "json")) {
        crate::golden::run_file(&api, file).await;
    }
    let (mut simulated, mut refused) = (0, 0);
    for county in ["wuyi", "changxing"] {
        let policy = api.get(&format!("/v1/policies/{county}"), AUDITOR).await.body;
        let mut pointers = Vec::new();
        figures(&policy, "", &mut pointers);
        assert!(pointers.len() > 15, "{county}: {pointers:?}");
        for (pointer, extremes) in &pointers {
            for value in extremes {
                let body = json!({"county": county, "sample": 0, "changes": [{"parameter": pointer, "value": value}]});
                let a = api.post("/v1/simulations", AUDITOR, &body).await;
                match a.status {
                    200 => simulated += 1,
                    422 => {
                        assert_eq!(a.error_fields(), vec!["/changes/0/value"], "{pointer} = {value}: {}", a.body);
                        refused += 1;
                    }
                    _ => panic!("{county} {pointer} = {value}: {} {}", a.status, a.body),
                }
            }
        }
    }
    assert!(simulated > 2 * refused, "{simulated} simulated, {refused} refused");
}
