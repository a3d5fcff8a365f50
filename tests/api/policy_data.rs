//! The rules read every figure and date from the policy data: decisions on
//! policy data changed the way an amendment would change it (a `history`
//! entry, a shorter uplift, a kind taken off the uplift list) follow the
//! change. These call the rules directly, without a server.

use std::path::Path;

use chrono::{NaiveDate, TimeZone, Utc};
use serde_json::Value;
use subsidy_service::domain::{parse_claim, County, Level};
use subsidy_service::policy::{Amount, CountyPolicy, Dated, Policy};
use subsidy_service::rules::{decide, Decision, Directory, EmptyLedger};

fn policy(county: County) -> CountyPolicy {
    Policy::load(Path::new("config/policies"), None).expect("the policy data loads").county(county).clone()
}

fn example(name: &str) -> Value {
    subsidy_service::openapi::claim_examples()
        .into_iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no example {name}"))
        .1
}

fn date(s: &str) -> NaiveDate {
    s.parse().unwrap()
}

/// The Changxing example enterprise, on the directory from 2019.
fn cx_directory() -> Directory {
    let mut d = Directory { version: "test".into(), ..Directory::default() };
    d.listed.insert("91330522MA0EXMP048".into(), date("2019-01-01"));
    d
}

fn decide_on(body: &Value, p: &CountyPolicy, directory: &Directory) -> Decision {
    let claim = parse_claim(body).expect("the claim parses");
    decide(&claim, Some("p1"), &EmptyLedger, p, directory, Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap())
        .expect("an empty ledger never fails")
        .decision
}

fn skill_upgrade_on(day: &str) -> Value {
    // senior technician, manufacturing occupation (I-11): 8000; employer listed
    let mut c = example("cx_skill_upgrade");
    c["event_date"] = day.into();
    c
}

fn codes(d: &Decision) -> Vec<&str> {
    d.reasons.iter().map(|r| r.code.as_str()).collect()
}

#[test]
fn the_trade_friction_uplift_ends_on_its_until_date() {
    let mut p = policy(County::Changxing);
    p.common.trade_friction.until.values = vec![Dated { from: None, value: date("2020-06-30") }];
    let on = decide_on(&skill_upgrade_on("2020-06-30"), &p, &cx_directory());
    assert_eq!(on.amount, "10400.00", "{:?}", on.reasons);
    assert!(codes(&on).contains(&"UPLIFT_TRADE_FRICTION"));
    let after = decide_on(&skill_upgrade_on("2020-07-01"), &p, &cx_directory());
    assert_eq!(after.amount, "8000.00", "{:?}", after.reasons);
    assert!(!codes(&after).contains(&"UPLIFT_TRADE_FRICTION"));
}

#[test]
fn only_the_kinds_the_data_lists_are_uplifted() {
    let listed = decide_on(&skill_upgrade_on("2020-05-10"), &policy(County::Changxing), &cx_directory());
    assert_eq!(listed.amount, "10400.00");
    let mut p = policy(County::Changxing);
    p.common.trade_friction.kinds.values[0].value.retain(|k| k.as_str() != "skill_upgrade");
    let unlisted = decide_on(&skill_upgrade_on("2020-05-10"), &p, &cx_directory());
    assert_eq!(unlisted.amount, "8000.00", "{:?}", unlisted.reasons);
    assert_eq!(unlisted.calculation.len(), 2, "base and total only: {:?}", unlisted.calculation);
}

#[test]
fn a_figure_amended_from_a_date_applies_from_that_date() {
    let mut p = policy(County::Wuyi);
    let subsidy_service::policy::CountyRules::Wuyi(rules) = &mut p.rules else {
        panic!("the Wuyi policy has Wuyi rules")
    };
    let intermediate = rules.qualification_training.levels.get_mut(&Level::Intermediate).unwrap();
    intermediate.values = vec![
        Dated { from: None, value: Amount("1000".parse().unwrap()) },
        Dated { from: Some(date("2021-01-01")), value: Amount("1300".parse().unwrap()) },
    ];
    let on = |day: &str| {
        let mut c = example("wy_qualification_training");
        c["event_date"] = day.into();
        decide_on(&c, &p, &Directory::default())
    };
    let before = on("2020-12-31");
    assert_eq!((before.amount.as_str(), before.calculation[0].amount.as_str()), ("1000.00", "1000.00"));
    let after = on("2021-01-01");
    assert_eq!((after.amount.as_str(), after.calculation[0].amount.as_str()), ("1300.00", "1300.00"));
}

/// A parameter is one value (optionally from a date) or a non-empty history
/// of values with strictly increasing dates, the first possibly undated.
#[test]
fn a_parameter_history_must_be_well_formed() {
    use subsidy_service::policy::Param;
    let parse = |s: &str| toml::from_str::<Param<Amount>>(&format!("clause = \"X\"\n{s}"));
    let increasing = parse(r#"history = [{ from = "2020-01-01", value = "1" }, { from = "2021-01-01", value = "2" }]"#)
        .expect("strictly increasing dates are a history");
    assert_eq!(increasing.dec(date("2020-12-31")), "1".parse().unwrap());
    assert_eq!(increasing.dec(date("2021-01-01")), "2".parse().unwrap());
    assert!(parse(r#"history = [{ value = "1" }, { from = "2021-01-01", value = "2" }]"#).is_ok());
    for bad in [
        "history = []",
        r#"from = "2020-01-01"
history = [{ value = "1" }]"#,
        r#"history = [{ from = "2021-01-01", value = "1" }, { from = "2020-01-01", value = "2" }]"#,
        r#"history = [{ from = "2021-01-01", value = "1" }, { value = "2" }]"#,
        r#"value = "1"
history = [{ value = "1" }]"#,
        "",
    ] {
        assert!(parse(bad).is_err(), "accepted: {bad}");
    }
}

#[test]
fn a_policy_directory_that_does_not_exist_is_an_error() {
    let missing = tempfile::tempdir().unwrap().path().join("policies");
    let err = Policy::load(&missing, None).expect_err("no built-in fallback for a directory named by configuration");
    assert!(format!("{err:#}").contains("reading policy directory"), "{err:#}");
    // Only the default directory, when absent, falls back to the built-in data.
    assert!(Policy::load(Path::new("config/policies"), None).is_ok());
}

#[test]
fn each_county_offers_exactly_its_own_kinds() {
    fn own_kinds(county: County) -> &'static [subsidy_service::domain::Kind] {
        match county {
            County::Wuyi => subsidy_service::policy::WUYI_KINDS,
            County::Changxing => subsidy_service::policy::CHANGXING_KINDS,
        }
    }
    let policies = Policy::load(Path::new("config/policies"), None).unwrap();
    for county in County::ALL {
        let p = policies.county(*county);
        assert_eq!(p.county(), *county);
        for kind in subsidy_service::domain::Kind::ALL {
            let own = own_kinds(*county).contains(kind);
            assert_eq!(p.common.kinds.contains_key(kind), own, "{county} {kind}");
        }
    }
    assert_eq!(policies.counties().count(), 2);
}

/// The end of the epidemic window is configuration (WY §4(3)): a training
/// day after the configured end is outside the window.
#[test]
fn the_configured_end_of_the_epidemic_window_applies() {
    let end = date("2020-03-05");
    let p = Policy::load(Path::new("config/policies"), Some(end)).unwrap().county(County::Wuyi).clone();
    // two training days, 2020-03-05 and 2020-03-06
    let d = decide_on(&example("wy_online_training"), &p, &Directory::default());
    assert_eq!(codes(&d), ["OUTSIDE_EPIDEMIC_WINDOW"]);
    assert_eq!(d.reasons[0].days.as_deref(), Some(&[date("2020-03-06")][..]));
    let default = decide_on(&example("wy_online_training"), &policy(County::Wuyi), &Directory::default());
    assert_eq!(default.amount, "16000.00", "{:?}", default.reasons);
}

/// Base eligibility cites the county's clause; a pension refusal adds I-1,
/// once, and a refusal for want of a tie to the county does not cite it.
#[test]
fn base_eligibility_cites_its_clause_and_the_pension_choice_once() {
    let clause_of = |d: &Decision, code: &str| -> String {
        d.reasons.iter().find(|r| r.code.as_str() == code).map(|r| r.clause.clone()).unwrap_or_default()
    };
    for (name, county, clause) in [
        ("wy_qualification_training", County::Wuyi, "WY §2(1)"),
        ("cx_skill_upgrade", County::Changxing, "I-2, CX §3(3)"),
    ] {
        let mut c = example(name);
        c["applicant"]["receives_monthly_pension"] = true.into();
        let d = decide_on(&c, &policy(county), &cx_directory());
        assert_eq!(clause_of(&d, "APPLICANT_RECEIVES_PENSION"), format!("{clause}, I-1"), "{name}");
        let mut c = example(name);
        for tie in ["local_hukou", "residence_permit", "employed_in_county", "unemployment_registered"] {
            c["applicant"][tie] = false.into();
        }
        c["applicant"]["groups"] = serde_json::json!(["enterprise_employee"]);
        let d = decide_on(&c, &policy(county), &cx_directory());
        assert_eq!(clause_of(&d, "APPLICANT_NOT_ELIGIBLE"), clause, "{name}: {:?}", codes(&d));
    }
}
