//! The examples of the OpenAPI document, in one place. Tests submit every
//! claim example to a fresh server and compare the decision example with
//! what it answers.

use serde_json::{json, Value};

use crate::problem::{ApiError, ErrorCode, FieldError};

fn person(id: &str, name: &str, extra: Value) -> Value {
    let mut a = json!({
        "id_number": id, "name": name, "local_hukou": true, "residence_permit": false,
        "employed_in_county": true, "unemployment_registered": false,
        "receives_monthly_pension": false, "public_institution_staff": false,
        "groups": ["enterprise_employee"]
    });
    if let (Some(a), Some(e)) = (a.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            a.insert(k.clone(), v.clone());
        }
    }
    a
}

/// One valid claim per kind and county; each is approved on a fresh store.
pub fn claim_examples() -> Vec<(&'static str, Value)> {
    let wy_school = json!({"credit_code": "91330723MA0EXMP01P", "name": "武义县示例职业技能培训学校"});
    let cx_school = json!({"credit_code": "91330522MA0EXMP035", "name": "长兴技师学院"});
    let wy_enterprise =
        json!({"credit_code": "91330723MA0EXMP02T", "name": "武义示例制造有限公司", "industry_code": "C3311"});
    let cx_enterprise =
        json!({"credit_code": "91330522MA0EXMP048", "name": "长兴示例电池有限公司", "industry_code": "C3843"});
    vec![
        (
            "wy_qualification_training",
            json!({
                "claim_id": "EX-WY-QT-1", "county": "wuyi", "kind": "qualification_training", "event_date": "2020-06-15",
                "department": "human_resources",
                "applicant": person("330723198502011013", "张一", json!({"employer": wy_enterprise})),
                "institution": wy_school,
                "details": {"occupation_code": "6-31-01-03", "level": "intermediate", "certificate_number": "EX-ZS-0001", "payee": "person"}
            }),
        ),
        (
            "wy_project_training",
            json!({
                "claim_id": "EX-WY-PT-1", "county": "wuyi", "kind": "project_training", "event_date": "2020-09-30",
                "applicant": person("330723198503011023", "张二", json!({})), "institution": wy_school,
                "details": {"project_code": "WY-PX-EX01", "completion_certificate_number": "EX-PX-0001", "class_hours": 20, "class_size": 40}
            }),
        ),
        (
            "wy_apprenticeship_employee",
            json!({
                "claim_id": "EX-WY-AE-1", "county": "wuyi", "kind": "apprenticeship_employee", "event_date": "2020-12-20",
                "applicant": person("330723198504011033", "张三", json!({"employer": wy_enterprise})),
                "details": {"training_year": 2020, "completion_certificate": true, "additional_certificate_level": "intermediate"}
            }),
        ),
        (
            "wy_apprenticeship_student",
            json!({
                "claim_id": "EX-WY-AS-1", "county": "wuyi", "kind": "apprenticeship_student", "event_date": "2020-12-31",
                "applicant": person("330723198505011043", "张四", json!({"groups": ["school_leaver"], "employer": wy_enterprise})),
                "details": {"training_year": 2020, "monthly_allowance": "450.00", "months": 6}
            }),
        ),
        (
            "wy_safety_training",
            json!({
                "claim_id": "EX-WY-ST-1", "county": "wuyi", "kind": "safety_training", "event_date": "2020-10-10",
                "applicant": person("330723198506011053", "张五", json!({})), "institution": wy_school,
                "details": {"certificate_type": "special_operation", "certificate_number": "EX-T-0001", "fee_paid": "700.00", "approved_fee_standard": "760.00", "trained_in_county": true}
            }),
        ),
        (
            "wy_online_training",
            json!({
                "claim_id": "EX-WY-OT-1", "county": "wuyi", "kind": "online_training", "event_date": "2020-03-06",
                "organization": wy_enterprise,
                "details": {"period_id": "EX-P1", "filing_reference": "WYBA-2020-EX1", "mode": "self_produced", "trainees": 120,
                    "days": [{"date": "2020-03-05", "class_hours": 4}, {"date": "2020-03-06", "class_hours": 4}]}
            }),
        ),
        (
            "cx_institution_investment",
            json!({
                "claim_id": "EX-CX-II-1", "county": "changxing", "kind": "institution_investment", "event_date": "2020-11-11",
                "organization": cx_school,
                "details": {"category": "equipment", "investment_amount": "60000.00", "invoice_reference": "EX-INV-1"}
            }),
        ),
        (
            "cx_vocational_school_senior",
            json!({
                "claim_id": "EX-CX-VS-1", "county": "changxing", "kind": "vocational_school_senior", "event_date": "2021-06-30",
                "applicant": person("330522198601021121", "李一", json!({"groups": []})), "institution": cx_school,
                "details": {"school_year": 2020, "programme": "five_year_senior", "in_senior_stage": true}
            }),
        ),
        (
            "cx_cooperative_enrollment",
            json!({
                "claim_id": "EX-CX-CE-1", "county": "changxing", "kind": "cooperative_enrollment", "event_date": "2021-06-30",
                "applicant": person("330522198602021131", "李二", json!({"local_hukou": false, "groups": []})), "institution": cx_school,
                "details": {"school_year": 2020, "standard_amount": "3000.00", "cooperation_region": "贵州省某县"}
            }),
        ),
        (
            "cx_student_living_allowance",
            json!({
                "claim_id": "EX-CX-SL-1", "county": "changxing", "kind": "student_living_allowance", "event_date": "2021-06-30",
                "applicant": person("330522198603021141", "李三", json!({"groups": ["dibao"]})), "institution": cx_school,
                "details": {"school_year": 2020, "cooperative_enrollment": false}
            }),
        ),
        (
            "cx_key_group_training",
            json!({
                "claim_id": "EX-CX-KG-1", "county": "changxing", "kind": "key_group_training", "event_date": "2020-05-20",
                "applicant": person("330522198604021151", "李四", json!({"groups": ["unemployed"], "unemployment_registered": true})), "institution": cx_school,
                "details": {"occupation_code": "4-03-02-01", "level": "senior", "certificate_number": "EX-ZS-0002", "fee": "1200.00"}
            }),
        ),
        (
            "cx_veteran_training",
            json!({
                "claim_id": "EX-CX-VT-1", "county": "changxing", "kind": "veteran_training", "event_date": "2020-06-01",
                "applicant": person("330522198605021161", "李五", json!({"groups": ["veteran"]})), "institution": cx_school,
                "details": {"occupation_code": "4-02-02-01", "level": "intermediate", "start_date": "2020-03-01", "end_date": "2020-06-01", "fee": "6000.00"}
            }),
        ),
        (
            "cx_training_living_allowance",
            json!({
                "claim_id": "EX-CX-TL-1", "county": "changxing", "kind": "training_living_allowance", "event_date": "2020-09-30",
                "applicant": person("330522198606021171", "李六", json!({"groups": ["dibao"]})), "institution": cx_school,
                "details": {"training_reference": "EX-TR-1", "start_date": "2020-09-01", "training_days": 20}
            }),
        ),
        (
            "cx_project_training",
            json!({
                "claim_id": "EX-CX-PT-1", "county": "changxing", "kind": "project_training", "event_date": "2020-08-08",
                "applicant": person("330522198607021181", "李七", json!({})), "institution": cx_school,
                "details": {"project_code": "CX-PX-EX01", "completion_certificate_number": "EX-PX-0002", "fee": "600.00"}
            }),
        ),
        (
            "cx_safety_training",
            json!({
                "claim_id": "EX-CX-ST-1", "county": "changxing", "kind": "safety_training", "event_date": "2020-08-08",
                "applicant": person("330522198608021191", "李八", json!({})), "institution": cx_school,
                "details": {"certificate_type": "special_operation", "certificate_number": "EX-T-0002", "training_type": "new", "fee_paid": "900.00"}
            }),
        ),
        (
            "cx_entrepreneurship_training",
            json!({
                "claim_id": "EX-CX-ET-1", "county": "changxing", "kind": "entrepreneurship_training", "event_date": "2020-08-08",
                "applicant": person("330522198609021206", "李九", json!({"groups": ["graduate"]})), "institution": cx_school,
                "details": {"training_reference": "EX-CY-1", "fee": "1800.00"}
            }),
        ),
        (
            "cx_skill_upgrade",
            json!({
                "claim_id": "EX-CX-SU-1", "county": "changxing", "kind": "skill_upgrade", "event_date": "2020-05-10",
                "department": "human_resources",
                "applicant": person("330522198610021211", "王一", json!({"employer": cx_enterprise})),
                "details": {"occupation_code": "6-18-01-01", "level": "senior_technician", "certificate_number": "EX-ZS-0003"}
            }),
        ),
        (
            "cx_apprenticeship",
            json!({
                "claim_id": "EX-CX-AP-1", "county": "changxing", "kind": "apprenticeship", "event_date": "2020-03-31",
                "applicant": person("330522198611021221", "王二", json!({"employer": cx_enterprise})),
                "details": {"training_year": 2020, "stage": "enrolment"}
            }),
        ),
        (
            "cx_craftsman_award",
            json!({
                "claim_id": "EX-CX-CA-1", "county": "changxing", "kind": "craftsman_award", "event_date": "2020-12-01",
                "applicant": person("330522198612021231", "王三", json!({})),
                "details": {"title": "craftsman"}
            }),
        ),
        (
            "cx_master_studio_award",
            json!({
                "claim_id": "EX-CX-MS-1", "county": "changxing", "kind": "master_studio_award", "event_date": "2020-10-01",
                "organization": cx_enterprise,
                "details": {"studio_id": "CX-DSGZS-EX1", "level": "municipal", "key_rated": false}
            }),
        ),
        (
            "cx_skill_contest_funding",
            json!({
                "claim_id": "EX-CX-SC-1", "county": "changxing", "kind": "skill_contest_funding", "event_date": "2020-10-20",
                "organization": {"credit_code": "91330522MA0EXMP05B", "name": "长兴县总工会示例", "industry_code": "S9421"},
                "details": {"contest_id": "CX-JS-EX1", "contest_level": "county", "occupation_code": "6-18-02-04", "budget": "45000.00"}
            }),
        ),
    ]
}

/// The decision a fresh server gives `wy_qualification_training`, under the
/// policy data built into the binary and an empty directory (only the time
/// differs from run to run).
pub fn decision_example() -> Value {
    let version = crate::policy::Policy::embedded(None)
        .map(|p| p.county(crate::domain::County::Wuyi).version.clone())
        .unwrap_or_default();
    let directory_version = crate::ledger::DirectoryRecord::new(Vec::new(), None).version;
    json!({
        "claim_id": "EX-WY-QT-1",
        "status": "approved",
        "amount": "1000.00",
        "currency": "CNY",
        "payee": "person",
        "calculation": [
            {"step": "base", "amount": "1000.00", "clause": "WY §4(1)1"},
            {"step": "total", "amount": "1000.00", "clause": "WY §2(3)1, §4(1)1"}
        ],
        "reasons": [{
            "code": "PUBLIC_NOTICE_REQUIRED",
            "severity": "notice",
            "clause": "WY §5(1)-(2)",
            "message_zh": "结果经公示无误后发放",
            "message_en": "Payment follows a public notice of the result"
        }],
        "counted": true,
        "usage": {"year": 2020, "used": 1, "limit": 3},
        "policy": {
            "document": "武人社〔2020〕21号",
            "version": version,
            "directory_version": directory_version
        },
        "decided_at": "2020-06-20T08:00:00Z",
        "recorded": true
    })
}

/// The problem a request meeting `code` gets, made by the code that answers it.
pub fn problem_example(code: ErrorCode) -> Value {
    let error = match code {
        ErrorCode::MalformedJson => ApiError::MalformedJson("expected `,` or `}` at line 1 column 42".into()),
        ErrorCode::ValidationFailed => ApiError::Validation(vec![
            FieldError::new("/applicant/id_number", "invalid_checksum", "the check digit is wrong"),
            FieldError::new("/details/level", "invalid_value", "must be one of: junior, intermediate, senior"),
        ]),
        ErrorCode::Unauthenticated => ApiError::Unauthenticated,
        ErrorCode::Forbidden => {
            use crate::auth::{Caller, Operation, Role};
            let auditor = Caller { key_id: "auditor-1".into(), role: Role::Auditor, credit_code: None };
            auditor.require(Operation::RevokeClaim).err().unwrap_or(ApiError::Unauthenticated)
        }
        ErrorCode::NotFound => ApiError::NotFound("no claim `WY-2020-PX-000123`".into()),
        ErrorCode::MethodNotAllowed => ApiError::MethodNotAllowed,
        ErrorCode::ClaimIdConflict => ApiError::ClaimIdConflict("WY-2020-PX-000123".into()),
        ErrorCode::ClaimNotRevocable => {
            ApiError::ClaimNotRevocable("claim `WY-2020-PX-000123` was rejected: there is nothing to revoke".into())
        }
        ErrorCode::PayloadTooLarge => ApiError::PayloadTooLarge(262_144),
        ErrorCode::RequestTimeout => ApiError::RequestTimeout,
        ErrorCode::UnsupportedMediaType => ApiError::UnsupportedMediaType,
        ErrorCode::RateLimited => ApiError::RateLimited { retry_after_secs: 1 },
        ErrorCode::StoreUnavailable => ApiError::StoreUnavailable,
        ErrorCode::Internal => ApiError::Internal(anyhow::anyhow!("logged, never shown")),
    };
    serde_json::to_value(error.problem()).unwrap_or_default()
}
