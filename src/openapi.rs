//! The OpenAPI 3.1 document, generated from the code. `openapi/openapi.json`
//! is its checked-in copy (regenerate: `cargo run -- openapi > openapi/openapi.json`).

use serde_json::{json, Value};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::openapi::{example::ExampleBuilder, RefOr};
use utoipa::{Modify, OpenApi, ToSchema};

use crate::domain::*;
use crate::problem::{ErrorCode, FieldError, Problem};
use crate::routes;
use crate::rules::{Decision, PolicyRef, Reason, ReasonCode, Revocation, Severity, Status, Step, Usage};

/// A batch of claims (the items are read one by one: a bad item is answered
/// in its place and does not fail the batch).
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct BatchRequest {
    /// 1..1000 claims, decided in order. Each item is validated on its own
    /// and answered in `results` (a bad item does not fail the batch).
    #[schema(min_items = 1, max_items = 1000)]
    pub claims: Vec<Claim>,
}

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

/// Who may do what: the demo keys and the permission table, from the code.
fn start_here() -> String {
    use crate::auth::{roles_of, Role, DEMO_KEYS, PERMISSIONS};
    let mut t = String::from(
        "## Start here\n\nPress **Authorize** and paste a key. The local profile ships one demo key per role \
         (the production profile refuses them):\n\n| role | demo key | may |\n|---|---|---|\n",
    );
    for (role, key) in Role::ALL.iter().zip(DEMO_KEYS) {
        let may: Vec<&str> =
            PERMISSIONS.iter().filter(|(op, _)| roles_of(*op).contains(role)).map(|(op, _)| op.describe()).collect();
        t.push_str(&format!("| {} | `{key}` | {} |\n", role.as_str(), may.join("; ")));
    }
    t.push_str(
        "\nAn institution key is bound to one credit code and sees only claims naming it. Policies, reason codes, \
         health, readiness and metrics need no key. A refused operation answers `403 FORBIDDEN` naming the roles \
         that may perform it.",
    );
    t
}

struct Extras;

impl Modify for Extras {
    fn modify(&self, api: &mut utoipa::openapi::OpenApi) {
        let components = api.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                Http::builder()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some("API key: `Authorization: Bearer <key>`"))
                    .build(),
            ),
        );
        api.info.description = Some(format!("{}\n\n{}", api.info.description.take().unwrap_or_default(), start_here()));
        // Public operations need no key: say so, rather than inherit nothing.
        for path in ["/healthz", "/readyz", "/metrics", "/v1/policies", "/v1/policies/{county}", "/v1/reason-codes"] {
            if let Some(op) = api.paths.paths.get_mut(path).and_then(|i| i.get.as_mut()) {
                op.security = Some(Vec::new());
            }
        }
        // Examples of every kind on the claim operations, taken from the code
        // that a test submits to a fresh server.
        for (path, method_is_post) in [("/v1/claims", true), ("/v1/evaluations", true)] {
            let Some(item) = api.paths.paths.get_mut(path) else {
                continue;
            };
            let Some(op) = (if method_is_post { item.post.as_mut() } else { None }) else {
                continue;
            };
            let Some(body) = op.request_body.as_mut() else {
                continue;
            };
            let RefOr::T(body) = body else { continue };
            if let Some(RefOr::T(content)) = body.content.get_mut("application/json") {
                for (name, value) in claim_examples() {
                    content
                        .examples
                        .insert(name.to_string(), RefOr::T(ExampleBuilder::new().value(Some(value)).build()));
                }
            }
        }
        if let Some(op) = api.paths.paths.get_mut("/v1/claims/batch").and_then(|i| i.post.as_mut()) {
            if let Some(RefOr::T(content)) = op.request_body.as_mut().and_then(|b| match b {
                RefOr::T(b) => b.content.get_mut("application/json"),
                RefOr::Ref(_) => None,
            }) {
                let claims: Vec<Value> = claim_examples().into_iter().take(2).map(|(_, v)| v).collect();
                content.examples.insert(
                    "two_claims".into(),
                    RefOr::T(ExampleBuilder::new().value(Some(json!({"claims": claims}))).build()),
                );
            }
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "subsidy-service",
        description = "Adjudicates vocational-training and skill subsidies under the Wuyi (武人社〔2020〕21号) and Changxing (长政办发〔2020〕7号) 2020–2021 skill-upgrade plans. Every decision is explained by reason codes and cites its clauses and the policy version. Errors are `application/problem+json`.",
        license(name = "MIT", url = "https://opensource.org/license/mit")
    ),
    servers((url = "/", description = "This service (the origin the document is read from)")),
    paths(
        routes::claims::submit, routes::claims::batch, routes::claims::evaluate, routes::claims::list,
        routes::claims::get, routes::claims::submission, routes::claims::revoke, routes::claims::events,
        routes::usage::query,
        routes::policies::list, routes::policies::get, routes::policies::reason_codes,
        routes::directories::get, routes::directories::put, routes::reports::get,
        routes::simulations::simulate,
        routes::health::healthz, routes::health::readyz, routes::health::metrics,
    ),
    components(schemas(
        Claim, BatchRequest, Decision, Status, Step, Reason,
        ReasonCode, Severity, Usage, PolicyRef, Revocation, Problem, FieldError, ErrorCode,
        County, Kind, Level, Group, Payee,
    )),
    modifiers(&Extras),
    tags(
        (name = "claims", description = "Adjudicate, record, read and revoke claims"),
        (name = "policies", description = "The policies and reason codes in force"),
        (name = "directories", description = "Trade-friction directories"),
        (name = "reports", description = "Plan against actual, for auditors"),
        (name = "simulations", description = "Policy what-if: recorded claims replayed under changed parameters"),
        (name = "operations", description = "Health, readiness and metrics"),
    )
)]
pub struct ApiDoc;

/// The document as served and checked in.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}
