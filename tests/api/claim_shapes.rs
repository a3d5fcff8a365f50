//! The input shapes of RULES §8 at their edges, read by the claim parser
//! directly: counts and years at their limits, the number of online days,
//! repeated hours up to the total, and the canonical body a retry is
//! compared by.

use chrono::{Duration, NaiveDate};
use serde_json::{json, Value};
use subsidy_service::domain::{canonical_body, parse_claim, Details};

fn example(name: &str) -> Value {
    subsidy_service::openapi::claim_examples().into_iter().find(|(n, _)| *n == name).unwrap().1
}

/// The fields a claim is refused for, with their codes.
fn refused(body: &Value) -> Vec<(String, String)> {
    match parse_claim(body) {
        Ok(_) => Vec::new(),
        Err(errors) => errors.into_iter().map(|e| (e.field, e.code)).collect(),
    }
}

fn with(name: &str, field: &str, value: Value) -> Value {
    let mut c = example(name);
    c["details"][field] = value;
    c
}

#[test]
fn counts_are_accepted_up_to_their_maximum_and_refused_above() {
    let student = |months: u32| with("wy_apprenticeship_student", "months", json!(months));
    match parse_claim(&student(12)).expect("12 months is one training year").details {
        Details::ApprenticeshipStudent(d) => assert_eq!((d.months.get(), d.training_year.get()), (12, 2020)),
        other => panic!("{other:?}"),
    }
    assert_eq!(refused(&student(13)), [("/details/months".into(), "out_of_range".into())]);
    assert_eq!(refused(&student(0)), [("/details/months".into(), "out_of_range".into())]);
    let days = |n: u32| with("cx_training_living_allowance", "training_days", json!(n));
    assert!(refused(&days(366)).is_empty());
    assert_eq!(refused(&days(367)), [("/details/training_days".into(), "out_of_range".into())]);
}

#[test]
fn years_run_from_1900_to_2100() {
    for year in [1900, 2100] {
        let c = with("wy_apprenticeship_student", "training_year", json!(year));
        match parse_claim(&c).expect("a year in range").details {
            Details::ApprenticeshipStudent(d) => assert_eq!(d.training_year.get(), year),
            other => panic!("{other:?}"),
        }
    }
    for year in [1899, 2101] {
        let c = with("wy_apprenticeship_student", "training_year", json!(year));
        assert_eq!(refused(&c), [("/details/training_year".into(), "out_of_range".into())], "{year}");
    }
}

#[test]
fn an_online_period_has_1_to_366_days() {
    let start = NaiveDate::from_ymd_opt(2020, 3, 1).unwrap();
    let days = |n: i64| {
        let list: Vec<_> =
            (0..n).map(|i| json!({"date": (start + Duration::days(i)).to_string(), "class_hours": 4})).collect();
        with("wy_online_training", "days", json!(list))
    };
    assert!(refused(&days(366)).is_empty());
    assert_eq!(refused(&days(367)), [("/details/days".into(), "out_of_range".into())]);
    assert_eq!(refused(&days(0)), [("/details/days".into(), "out_of_range".into())]);
}

#[test]
fn repeated_hours_may_equal_the_total_hours_but_not_exceed_them() {
    // the example's two days of 4 class hours: 8 in all
    assert!(refused(&with("wy_online_training", "repeated_hours", json!(8))).is_empty());
    assert_eq!(
        refused(&with("wy_online_training", "repeated_hours", json!(8.5))),
        [("/details/repeated_hours".into(), "out_of_range".into())]
    );
}

/// A retry is the same body when only key order or spacing differ; the
/// canonical text is what stored body hashes were taken of, so it is fixed.
#[test]
fn the_canonical_body_sorts_keys_and_drops_spacing() {
    let body: Value = serde_json::from_str(r#"{ "b": [1, {"y": 2, "x": "s"}, 3], "a": null, "c": {} }"#).unwrap();
    assert_eq!(String::from_utf8(canonical_body(&body)).unwrap(), r#"{"a":null,"b":[1,{"x":"s","y":2},3],"c":{}}"#);
}

#[test]
fn a_blank_text_field_is_missing_and_a_long_one_out_of_range() {
    let mut blank = example("wy_qualification_training");
    blank["applicant"]["name"] = json!("   ");
    assert_eq!(refused(&blank), [("/applicant/name".into(), "required".into())]);
    let mut long = example("wy_qualification_training");
    long["applicant"]["name"] = json!("张".repeat(201));
    assert_eq!(refused(&long), [("/applicant/name".into(), "out_of_range".into())]);
    long["applicant"]["name"] = json!("张".repeat(200));
    assert!(refused(&long).is_empty());
}

/// An apprenticeship is paid by the employer's industry (CX §3(6)): the
/// employer and its industry code are required; a WY apprentice employee
/// needs the employer only.
#[test]
fn an_apprenticeship_names_its_employer_and_industry() {
    let mut no_industry = example("cx_apprenticeship");
    no_industry["applicant"]["employer"].as_object_mut().unwrap().remove("industry_code");
    assert_eq!(refused(&no_industry), [("/applicant/employer/industry_code".into(), "required".into())]);
    let mut no_employer = example("cx_apprenticeship");
    no_employer["applicant"].as_object_mut().unwrap().remove("employer");
    assert_eq!(refused(&no_employer), [("/applicant/employer".into(), "required".into())]);
    let mut wy = example("wy_apprenticeship_employee");
    wy["applicant"]["employer"].as_object_mut().unwrap().remove("industry_code");
    assert!(refused(&wy).is_empty());
    wy["applicant"].as_object_mut().unwrap().remove("employer");
    assert_eq!(refused(&wy), [("/applicant/employer".into(), "required".into())]);
}

/// Money travels as a decimal string (API.md); a JSON number is refused with
/// the reason, since it would have passed through a binary float.
#[test]
fn money_as_a_json_number_is_refused_saying_why() {
    let c = with("cx_key_group_training", "fee", json!(1200.5));
    let errors = parse_claim(&c).expect_err("a JSON number is not money");
    assert_eq!(errors.len(), 1);
    assert_eq!((errors[0].field.as_str(), errors[0].code.as_str()), ("/details/fee", "invalid_type"));
    assert!(errors[0].message.contains("not a JSON number"), "{}", errors[0].message);
    let c = with("cx_key_group_training", "fee", json!(true));
    assert!(!parse_claim(&c).unwrap_err()[0].message.contains("JSON number"));
}
