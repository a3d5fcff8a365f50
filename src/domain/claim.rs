//! A claim (API.md §3): parsed from JSON into typed values, with every bad
//! field reported at once by its JSON pointer.

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde_json::{Map, Value};

use super::codes::*;
use super::{IdNumber, Money};
use crate::problem::FieldError;

#[derive(Debug, Clone)]
pub struct Employer {
    pub credit_code: CreditCode,
    pub name: String,
    pub industry_code: Option<IndustryCode>,
}

#[derive(Debug, Clone)]
pub struct Applicant {
    pub id_number: IdNumber,
    pub name: String,
    pub local_hukou: bool,
    pub residence_permit: bool,
    pub employed_in_county: bool,
    pub unemployment_registered: bool,
    pub receives_monthly_pension: bool,
    pub public_institution_staff: bool,
    pub groups: Vec<Group>,
    pub employer: Option<Employer>,
}

impl Applicant {
    pub fn in_group(&self, g: Group) -> bool {
        self.groups.contains(&g)
    }
}

/// An organisation: the claimant of organisation kinds, or a training institution.
#[derive(Debug, Clone)]
pub struct Organization {
    pub credit_code: CreditCode,
    pub name: String,
    pub industry_code: Option<IndustryCode>,
}

#[derive(Debug, Clone)]
pub struct OnlineDay {
    pub date: NaiveDate,
    /// Class hours of the day; halves and quarters allowed (3.5).
    pub class_hours: Decimal,
}

/// `details`, by kind. Fields one county's table does not give are absent
/// (`None`) for the other county.
#[derive(Debug, Clone)]
pub enum Details {
    Qualification {
        occupation_code: OccupationCode,
        level: Level,
        certificate_number: String,
        payee: Payee,
        training_start_date: Option<NaiveDate>,
    },
    Project {
        project_code: String,
        completion_certificate_number: String,
        class_hours: Option<u32>,
        class_size: Option<u32>,
        class_size_exception_approved: bool,
        fee: Option<Money>,
        training_start_date: Option<NaiveDate>,
    },
    ApprenticeshipEmployee {
        training_year: i32,
        completion_certificate: bool,
        additional_certificate_level: Option<Level>,
        training_cost: Option<Money>,
        training_start_date: Option<NaiveDate>,
    },
    ApprenticeshipStudent {
        training_year: i32,
        monthly_allowance: Money,
        months: u32,
        training_start_date: Option<NaiveDate>,
    },
    Safety {
        certificate_type: CertificateType,
        certificate_number: String,
        fee_paid: Money,
        approved_fee_standard: Option<Money>,
        trained_in_county: Option<bool>,
        training_type: Option<SafetyTrainingType>,
        training_start_date: Option<NaiveDate>,
    },
    Online {
        period_id: String,
        filing_reference: Option<String>,
        mode: OnlineMode,
        trainees: u32,
        days: Vec<OnlineDay>,
        repeated_hours: Decimal,
        invoice_amount: Option<Money>,
    },
    InstitutionInvestment {
        category: InvestmentCategory,
        investment_amount: Money,
        invoice_reference: String,
    },
    VocationalSchoolSenior {
        school_year: i32,
        programme: Programme,
        in_senior_stage: bool,
    },
    CooperativeEnrollment {
        school_year: i32,
        standard_amount: Money,
        cooperation_region: String,
    },
    StudentLivingAllowance {
        school_year: i32,
        cooperative_enrollment: bool,
    },
    KeyGroupTraining {
        occupation_code: OccupationCode,
        level: Level,
        certificate_number: String,
        fee: Money,
    },
    VeteranTraining {
        occupation_code: Option<OccupationCode>,
        project_code: Option<String>,
        level: Option<Level>,
        start_date: NaiveDate,
        end_date: NaiveDate,
        fee: Money,
    },
    TrainingLivingAllowance {
        training_reference: String,
        start_date: NaiveDate,
        training_days: u32,
    },
    Entrepreneurship {
        training_reference: String,
        fee: Money,
    },
    SkillUpgrade {
        occupation_code: OccupationCode,
        level: Level,
        certificate_number: String,
    },
    Apprenticeship {
        training_year: i32,
        stage: ApprenticeshipStage,
        acceptance_passed: Option<bool>,
    },
    CraftsmanAward {
        title: CraftsmanTitle,
    },
    MasterStudioAward {
        studio_id: String,
        level: StudioLevel,
        key_rated: bool,
    },
    SkillContestFunding {
        contest_id: String,
        contest_level: ContestLevel,
        occupation_code: OccupationCode,
        budget: Option<Money>,
    },
}

#[derive(Debug, Clone)]
pub struct Claim {
    pub claim_id: ClaimId,
    pub county: County,
    pub kind: Kind,
    pub event_date: NaiveDate,
    pub department: Option<String>,
    pub applicant: Option<Applicant>,
    pub institution: Option<Organization>,
    pub organization: Option<Organization>,
    pub details: Details,
}

impl Claim {
    /// Credit codes of the parties an institution key may act for.
    pub fn party_codes(&self) -> Vec<&str> {
        [&self.institution, &self.organization].into_iter().flatten().map(|o| o.credit_code.as_str()).collect()
    }
}

/// Organisation-level kinds carry `organization` instead of `applicant`.
pub fn is_organization_kind(kind: Kind, details: Option<&Value>) -> bool {
    match kind {
        Kind::OnlineTraining | Kind::InstitutionInvestment | Kind::MasterStudioAward | Kind::SkillContestFunding => {
            true
        }
        Kind::CraftsmanAward => details.and_then(|d| d.get("title")).and_then(Value::as_str) == Some("golden_cradle"),
        _ => false,
    }
}

/// Reads the fields of one JSON object, remembering which names it knows so
/// that the rest can be reported as unknown.
struct Obj<'a> {
    map: Option<&'a Map<String, Value>>,
    base: String,
    known: Vec<&'static str>,
}

fn ptr(base: &str, name: &str) -> String {
    format!("{base}/{}", name.replace('~', "~0").replace('/', "~1"))
}

impl<'a> Obj<'a> {
    fn new(v: Option<&'a Value>, base: &str, errs: &mut Vec<FieldError>) -> Self {
        let map = match v {
            Some(Value::Object(m)) => Some(m),
            Some(_) => {
                errs.push(FieldError::new(base, "invalid_type", "must be an object"));
                None
            }
            None => None,
        };
        Self { map, base: base.to_string(), known: Vec::new() }
    }

    fn raw(&mut self, name: &'static str) -> Option<&'a Value> {
        self.known.push(name);
        self.map?.get(name).filter(|v| !v.is_null())
    }

    /// Pointer to one of the known field names (plain names: nothing to escape).
    fn path(&self, name: &'static str) -> String {
        let mut p = String::with_capacity(self.base.len() + 1 + name.len());
        p.push_str(&self.base);
        p.push('/');
        p.push_str(name);
        p
    }

    fn req<T>(
        &mut self,
        name: &'static str,
        errs: &mut Vec<FieldError>,
        f: impl FnOnce(&Value, &str) -> Result<T, FieldError>,
    ) -> Option<T> {
        let p = self.path(name);
        match self.raw(name) {
            Some(v) => f(v, &p).map_err(|e| errs.push(e)).ok(),
            None => {
                if self.map.is_some() {
                    errs.push(FieldError::new(p, "required", "this field is required"));
                }
                None
            }
        }
    }

    fn opt<T>(
        &mut self,
        name: &'static str,
        errs: &mut Vec<FieldError>,
        f: impl FnOnce(&Value, &str) -> Result<T, FieldError>,
    ) -> Option<T> {
        let p = self.path(name);
        self.raw(name).and_then(|v| f(v, &p).map_err(|e| errs.push(e)).ok())
    }

    /// Reports every field not read (unknown, or given to the other county).
    fn finish(self, errs: &mut Vec<FieldError>) {
        if let Some(m) = self.map {
            for k in m.keys() {
                if !self.known.contains(&k.as_str()) {
                    errs.push(FieldError::new(
                        ptr(&self.base, k),
                        "unknown_field",
                        "this field is not part of this claim",
                    ));
                }
            }
        }
    }
}

fn p_str(v: &Value, p: &str) -> Result<String, FieldError> {
    match v.as_str() {
        Some(s) if !s.trim().is_empty() && s.chars().count() <= 200 => Ok(s.to_string()),
        Some(s) if s.trim().is_empty() => Err(FieldError::new(p, "required", "must not be empty")),
        Some(_) => Err(FieldError::new(p, "out_of_range", "at most 200 characters")),
        None => Err(FieldError::new(p, "invalid_type", "must be a string")),
    }
}

fn p_bool(v: &Value, p: &str) -> Result<bool, FieldError> {
    v.as_bool().ok_or_else(|| FieldError::new(p, "invalid_type", "must be true or false"))
}

fn p_count(min: u64, max: u64) -> impl Fn(&Value, &str) -> Result<u32, FieldError> {
    move |v, p| {
        let n = v.as_u64().filter(|_| v.is_u64()).ok_or_else(|| {
            if v.is_number() {
                FieldError::new(p, "out_of_range", format!("must be a whole number from {min} to {max}"))
            } else {
                FieldError::new(p, "invalid_type", "must be a whole number")
            }
        })?;
        if n < min || n > max {
            return Err(FieldError::new(p, "out_of_range", format!("must be from {min} to {max}")));
        }
        Ok(n as u32)
    }
}

/// Hours as a JSON number with at most 2 decimal places, `min` ≤ h ≤ `max`
/// (read from the number's text, never through arithmetic on a float).
fn p_hours(min: u32, max: u32) -> impl Fn(&Value, &str) -> Result<Decimal, FieldError> {
    move |v, p| {
        let Value::Number(n) = v else {
            return Err(FieldError::new(p, "invalid_type", "must be a number of hours"));
        };
        let h: Decimal =
            n.to_string().parse().map_err(|_| FieldError::new(p, "invalid_format", "hours such as 4 or 3.5"))?;
        if h.scale() > 2 {
            return Err(FieldError::new(p, "invalid_format", "hours have at most 2 decimal places"));
        }
        if h < Decimal::from(min) || h > Decimal::from(max) {
            return Err(FieldError::new(p, "out_of_range", format!("from {min} to {max} hours")));
        }
        Ok(h)
    }
}

fn p_year(v: &Value, p: &str) -> Result<i32, FieldError> {
    p_count(1900, 2100)(v, p).map(|y| y as i32)
}

fn p_date(v: &Value, p: &str) -> Result<NaiveDate, FieldError> {
    let s = v.as_str().ok_or_else(|| FieldError::new(p, "invalid_type", "must be a date string YYYY-MM-DD"))?;
    let invalid = || FieldError::new(p, "invalid_date", "must be a real date YYYY-MM-DD");
    // Exactly `DDDD-DD-DD`: no signs, spaces or one-digit months and days.
    let b = s.as_bytes();
    let shaped = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| if i == 4 || i == 7 { *c == b'-' } else { c.is_ascii_digit() });
    if !shaped {
        return Err(invalid());
    }
    let n = |r: std::ops::Range<usize>| super::digits_value(&b[r]);
    NaiveDate::from_ymd_opt(n(0..4) as i32, n(5..7), n(8..10)).ok_or_else(invalid)
}

fn p_money(v: &Value, p: &str) -> Result<Money, FieldError> {
    match v {
        Value::String(s) => Money::parse(s, p),
        Value::Number(_) => {
            Err(FieldError::new(p, "invalid_type", "money is a decimal string such as \"500.00\", not a JSON number"))
        }
        _ => Err(FieldError::new(p, "invalid_type", "money is a decimal string such as \"500.00\"")),
    }
}

fn p_enum<T>(
    parse: fn(&str) -> Option<T>,
    all: &'static [T],
    name: fn(&T) -> &'static str,
) -> impl Fn(&Value, &str) -> Result<T, FieldError> {
    move |v, p| {
        let s = v.as_str().ok_or_else(|| FieldError::new(p, "invalid_type", "must be a string"))?;
        parse(s).ok_or_else(|| {
            let allowed: Vec<&str> = all.iter().map(name).collect();
            FieldError::new(p, "invalid_value", format!("must be one of: {}", allowed.join(", ")))
        })
    }
}

macro_rules! en {
    ($t:ident) => {
        p_enum($t::parse, $t::ALL, |x: &$t| x.as_str())
    };
}

fn p_id(v: &Value, p: &str) -> Result<IdNumber, FieldError> {
    IdNumber::parse(v.as_str().ok_or_else(|| FieldError::new(p, "invalid_type", "must be a string"))?, p)
}

fn p_cc(v: &Value, p: &str) -> Result<CreditCode, FieldError> {
    CreditCode::parse_at(v.as_str().ok_or_else(|| FieldError::new(p, "invalid_type", "must be a string"))?, p)
}

fn p_occ(v: &Value, p: &str) -> Result<OccupationCode, FieldError> {
    OccupationCode::parse(v.as_str().ok_or_else(|| FieldError::new(p, "invalid_type", "must be a string"))?, p)
}

fn p_ind(v: &Value, p: &str) -> Result<IndustryCode, FieldError> {
    IndustryCode::parse(v.as_str().ok_or_else(|| FieldError::new(p, "invalid_type", "must be a string"))?, p)
}

fn p_claim_id(v: &Value, p: &str) -> Result<ClaimId, FieldError> {
    ClaimId::parse(v.as_str().ok_or_else(|| FieldError::new(p, "invalid_type", "must be a string"))?, p)
}

/// The claim id of a body, if it has a readable one (for batch results).
pub fn peek_claim_id(v: &Value) -> Option<String> {
    v.get("claim_id").and_then(Value::as_str).filter(|s| ClaimId::parse(s, "").is_ok()).map(str::to_string)
}

fn organization(v: Option<&Value>, base: &str, errs: &mut Vec<FieldError>, required: bool) -> Option<Organization> {
    if v.is_none() {
        if required {
            errs.push(FieldError::new(base, "required", "this kind needs the organisation"));
        }
        return None;
    }
    let mut o = Obj::new(v, base, errs);
    let credit_code = o.req("credit_code", errs, p_cc);
    let name = o.req("name", errs, p_str);
    let industry_code = o.opt("industry_code", errs, p_ind);
    o.finish(errs);
    Some(Organization { credit_code: credit_code?, name: name?, industry_code })
}

/// What a kind needs of the applicant's employer.
#[derive(Clone, Copy, PartialEq)]
enum EmployerNeed {
    Optional,
    /// The enterprise is the payee (WY apprenticeship_employee).
    Employer,
    /// The amount depends on the employer's industry (CX apprenticeship).
    WithIndustry,
}

fn applicant(v: Option<&Value>, errs: &mut Vec<FieldError>, need: EmployerNeed) -> Option<Applicant> {
    let Some(v) = v else {
        errs.push(FieldError::new("/applicant", "required", "this kind needs the applicant"));
        return None;
    };
    let mut o = Obj::new(Some(v), "/applicant", errs);
    let id_number = o.req("id_number", errs, p_id);
    let name = o.req("name", errs, p_str);
    let flag = |o: &mut Obj, n: &'static str, errs: &mut Vec<FieldError>| o.opt(n, errs, p_bool).unwrap_or(false);
    let local_hukou = flag(&mut o, "local_hukou", errs);
    let residence_permit = flag(&mut o, "residence_permit", errs);
    let employed_in_county = flag(&mut o, "employed_in_county", errs);
    let unemployment_registered = flag(&mut o, "unemployment_registered", errs);
    let receives_monthly_pension = flag(&mut o, "receives_monthly_pension", errs);
    let public_institution_staff = flag(&mut o, "public_institution_staff", errs);
    let groups = group_list(&mut o, errs);
    let employer_v = o.raw("employer");
    let employer = if employer_v.is_none() && need != EmployerNeed::Optional {
        errs.push(FieldError::new("/applicant/employer", "required", "this kind needs the employer"));
        None
    } else {
        organization(employer_v, "/applicant/employer", errs, false).map(|e| Employer {
            credit_code: e.credit_code,
            name: e.name,
            industry_code: e.industry_code,
        })
    };
    if need == EmployerNeed::WithIndustry {
        if let Some(e) = &employer {
            if e.industry_code.is_none() {
                errs.push(FieldError::new(
                    "/applicant/employer/industry_code",
                    "required",
                    "this kind needs the employer's industry code",
                ));
            }
        }
    }
    o.finish(errs);
    Some(Applicant {
        id_number: id_number?,
        name: name?,
        local_hukou,
        residence_permit,
        employed_in_county,
        unemployment_registered,
        receives_monthly_pension,
        public_institution_staff,
        groups,
        employer,
    })
}

/// Parses a claim body. On failure, every bad field is listed.
pub fn parse_claim(body: &Value) -> Result<Claim, Vec<FieldError>> {
    let mut errs = Vec::new();
    if !body.is_object() {
        return Err(vec![FieldError::new("", "invalid_type", "a claim is a JSON object")]);
    }
    let mut o = Obj::new(Some(body), "", &mut errs);
    let claim_id = o.req("claim_id", &mut errs, p_claim_id);
    let county = o.req("county", &mut errs, en!(County));
    let kind = o.req("kind", &mut errs, en!(Kind));
    let event_date = o.req("event_date", &mut errs, p_date);
    let department = o.opt("department", &mut errs, |v, p| {
        let s = p_str(v, p)?;
        if s.len() <= 64 && s.bytes().all(|c| c.is_ascii_lowercase() || c == b'_' || c.is_ascii_digit()) {
            Ok(s)
        } else {
            Err(FieldError::new(p, "invalid_value", "a department code such as human_resources"))
        }
    });
    let details_v = o.raw("details");
    let applicant_v = o.raw("applicant");
    let organization_v = o.raw("organization");
    let institution_v = o.raw("institution");
    o.finish(&mut errs);

    let mut details = None;
    let mut applicant_p = None;
    let mut organization_p = None;
    if let (Some(kind), Some(county)) = (kind, county) {
        let org_kind = is_organization_kind(kind, details_v);
        if org_kind {
            organization_p = organization(organization_v, "/organization", &mut errs, true);
            if applicant_v.is_some() {
                errs.push(FieldError::new(
                    "/applicant",
                    "unknown_field",
                    "this kind is claimed by an organisation, not a person",
                ));
            }
        } else {
            let need = match kind {
                Kind::ApprenticeshipEmployee => EmployerNeed::Employer,
                Kind::Apprenticeship => EmployerNeed::WithIndustry,
                _ => EmployerNeed::Optional,
            };
            applicant_p = applicant(applicant_v, &mut errs, need);
            if organization_v.is_some() {
                errs.push(FieldError::new(
                    "/organization",
                    "unknown_field",
                    "this kind is claimed by a person, not an organisation",
                ));
            }
        }
        if details_v.is_none() {
            errs.push(FieldError::new("/details", "required", "this field is required"));
        } else {
            details = parse_details(kind, county, details_v, &mut errs);
        }
    }
    let institution = organization(institution_v, "/institution", &mut errs, false);
    if !errs.is_empty() {
        return Err(errs);
    }
    match (claim_id, county, kind, event_date, details) {
        (Some(claim_id), Some(county), Some(kind), Some(event_date), Some(details)) => Ok(Claim {
            claim_id,
            county,
            kind,
            event_date,
            department,
            applicant: applicant_p,
            institution,
            organization: organization_p,
            details,
        }),
        _ => Err(vec![FieldError::new("", "invalid_value", "the claim could not be read")]),
    }
}

/// The applicant's groups, every unknown entry reported; repeats are ignored.
fn group_list(o: &mut Obj, errs: &mut Vec<FieldError>) -> Vec<Group> {
    let p = o.path("groups");
    let Some(v) = o.raw("groups") else {
        return Vec::new();
    };
    let Some(arr) = v.as_array() else {
        errs.push(FieldError::new(p, "invalid_type", "must be an array of group names"));
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, g) in arr.iter().enumerate() {
        match en!(Group)(g, &format!("{p}/{i}")) {
            Ok(g) if !out.contains(&g) => out.push(g),
            Ok(_) => {}
            Err(e) => errs.push(e),
        }
    }
    out
}

/// The online training days, every bad entry reported (not only the first).
fn online_days(d: &mut Obj, e: &mut Vec<FieldError>) -> Option<Vec<OnlineDay>> {
    let p = d.path("days");
    let Some(v) = d.raw("days") else {
        if d.map.is_some() {
            e.push(FieldError::new(p, "required", "this field is required"));
        }
        return None;
    };
    let Some(arr) = v.as_array() else {
        e.push(FieldError::new(p, "invalid_type", "must be an array of {date, class_hours}"));
        return None;
    };
    if arr.is_empty() || arr.len() > 366 {
        e.push(FieldError::new(p, "out_of_range", "from 1 to 366 training days"));
        return None;
    }
    let before = e.len();
    let mut out: Vec<OnlineDay> = Vec::new();
    for (i, day) in arr.iter().enumerate() {
        let base = format!("{p}/{i}");
        let mut o = Obj::new(Some(day), &base, e);
        let date = o.req("date", e, p_date);
        let class_hours = o.req("class_hours", e, p_hours(1, 24));
        o.finish(e);
        if let (Some(date), Some(class_hours)) = (date, class_hours) {
            if out.iter().any(|d| d.date == date) {
                e.push(FieldError::new(format!("{base}/date"), "duplicate", "each date appears once"));
            }
            out.push(OnlineDay { date, class_hours });
        }
    }
    (e.len() == before).then_some(out)
}

fn parse_details(kind: Kind, county: County, v: Option<&Value>, errs: &mut Vec<FieldError>) -> Option<Details> {
    let mut d = Obj::new(v, "/details", errs);
    let wy = county == County::Wuyi;
    let e = errs;
    // R-PRIOR: WY person-level training kinds take an optional training start date.
    let prior = |d: &mut Obj, e: &mut Vec<FieldError>| {
        if wy {
            d.opt("training_start_date", e, p_date)
        } else {
            None
        }
    };
    let out = match kind {
        Kind::QualificationTraining => {
            let occupation_code = d.req("occupation_code", e, p_occ);
            let level = d.req("level", e, en!(Level));
            let certificate_number = d.req("certificate_number", e, p_str);
            let payee = d.req(
                "payee",
                e,
                p_enum(
                    |s| match s {
                        "person" => Some(Payee::Person),
                        "institution" => Some(Payee::Institution),
                        "enterprise" => Some(Payee::Enterprise),
                        _ => None,
                    },
                    &[Payee::Person, Payee::Institution, Payee::Enterprise],
                    |x: &Payee| x.as_str(),
                ),
            );
            let training_start_date = prior(&mut d, e);
            (|| {
                Some(Details::Qualification {
                    occupation_code: occupation_code?,
                    level: level?,
                    certificate_number: certificate_number?,
                    payee: payee?,
                    training_start_date,
                })
            })()
        }
        Kind::ProjectTraining => {
            let project_code = d.req("project_code", e, p_str);
            let completion_certificate_number = d.req("completion_certificate_number", e, p_str);
            let (class_hours, class_size, exc, fee) = if wy {
                (
                    d.req("class_hours", e, p_count(1, 10_000)),
                    d.req("class_size", e, p_count(1, 100_000)),
                    d.opt("class_size_exception_approved", e, p_bool).unwrap_or(false),
                    None,
                )
            } else {
                (None, None, false, d.req("fee", e, p_money))
            };
            let training_start_date = prior(&mut d, e);
            let ok = !wy || (class_hours.is_some() && class_size.is_some());
            let ok = ok && (wy || fee.is_some());
            (|| {
                if !ok {
                    return None;
                }
                Some(Details::Project {
                    project_code: project_code?,
                    completion_certificate_number: completion_certificate_number?,
                    class_hours,
                    class_size,
                    class_size_exception_approved: exc,
                    fee,
                    training_start_date,
                })
            })()
        }
        Kind::ApprenticeshipEmployee => {
            let training_year = d.req("training_year", e, p_year);
            let completion_certificate = d.req("completion_certificate", e, p_bool);
            let additional_certificate_level = d.opt("additional_certificate_level", e, en!(Level));
            let training_cost = d.opt("training_cost", e, p_money);
            let training_start_date = prior(&mut d, e);
            (|| {
                Some(Details::ApprenticeshipEmployee {
                    training_year: training_year?,
                    completion_certificate: completion_certificate?,
                    additional_certificate_level,
                    training_cost,
                    training_start_date,
                })
            })()
        }
        Kind::ApprenticeshipStudent => {
            let training_year = d.req("training_year", e, p_year);
            let monthly_allowance = d.req("monthly_allowance", e, p_money);
            let months = d.req("months", e, p_count(1, 12));
            let training_start_date = prior(&mut d, e);
            (|| {
                Some(Details::ApprenticeshipStudent {
                    training_year: training_year?,
                    monthly_allowance: monthly_allowance?,
                    months: months?,
                    training_start_date,
                })
            })()
        }
        Kind::SafetyTraining => {
            let certificate_type = d.req("certificate_type", e, en!(CertificateType));
            let certificate_number = d.req("certificate_number", e, p_str);
            let fee_paid = d.req("fee_paid", e, p_money);
            let (approved_fee_standard, trained_in_county, training_type) = if wy {
                (d.req("approved_fee_standard", e, p_money), d.req("trained_in_county", e, p_bool), None)
            } else {
                (None, None, d.req("training_type", e, en!(SafetyTrainingType)))
            };
            let training_start_date = prior(&mut d, e);
            let ok = if wy {
                approved_fee_standard.is_some() && trained_in_county.is_some()
            } else {
                training_type.is_some()
            };
            (|| {
                if !ok {
                    return None;
                }
                Some(Details::Safety {
                    certificate_type: certificate_type?,
                    certificate_number: certificate_number?,
                    fee_paid: fee_paid?,
                    approved_fee_standard,
                    trained_in_county,
                    training_type,
                    training_start_date,
                })
            })()
        }
        Kind::OnlineTraining => {
            let period_id = d.req("period_id", e, p_str);
            let filing_reference = d.opt("filing_reference", e, p_str);
            let mode = d.req("mode", e, en!(OnlineMode));
            let trainees = d.req("trainees", e, p_count(1, 1_000_000));
            let days = online_days(&mut d, e);
            let repeated_hours = d.opt("repeated_hours", e, p_hours(0, 100_000)).unwrap_or_default();
            let invoice_amount = d.opt("invoice_amount", e, p_money);
            if mode == Some(OnlineMode::PlatformPurchase)
                && invoice_amount.is_none()
                && d.map.is_some_and(|m| m.get("invoice_amount").is_none_or(Value::is_null))
            {
                e.push(FieldError::new(
                    "/details/invoice_amount",
                    "required",
                    "a platform purchase needs the invoice amount",
                ));
            }
            if let Some(days) = &days {
                let total: Decimal = days.iter().map(|d| d.class_hours).sum();
                if repeated_hours > total {
                    e.push(FieldError::new(
                        "/details/repeated_hours",
                        "out_of_range",
                        "repeated hours cannot exceed the total class hours",
                    ));
                }
            }
            (|| {
                if mode? == OnlineMode::PlatformPurchase && invoice_amount.is_none() {
                    return None;
                }
                Some(Details::Online {
                    period_id: period_id?,
                    filing_reference,
                    mode: mode?,
                    trainees: trainees?,
                    days: days?,
                    repeated_hours,
                    invoice_amount,
                })
            })()
        }
        Kind::InstitutionInvestment => {
            let category = d.req("category", e, en!(InvestmentCategory));
            let investment_amount = d.req("investment_amount", e, p_money);
            let invoice_reference = d.req("invoice_reference", e, p_str);
            (|| {
                Some(Details::InstitutionInvestment {
                    category: category?,
                    investment_amount: investment_amount?,
                    invoice_reference: invoice_reference?,
                })
            })()
        }
        Kind::VocationalSchoolSenior => {
            let school_year = d.req("school_year", e, p_year);
            let programme = d.req("programme", e, en!(Programme));
            let in_senior_stage = d.req("in_senior_stage", e, p_bool);
            (|| {
                Some(Details::VocationalSchoolSenior {
                    school_year: school_year?,
                    programme: programme?,
                    in_senior_stage: in_senior_stage?,
                })
            })()
        }
        Kind::CooperativeEnrollment => {
            let school_year = d.req("school_year", e, p_year);
            let standard_amount = d.req("standard_amount", e, p_money);
            let cooperation_region = d.req("cooperation_region", e, p_str);
            (|| {
                Some(Details::CooperativeEnrollment {
                    school_year: school_year?,
                    standard_amount: standard_amount?,
                    cooperation_region: cooperation_region?,
                })
            })()
        }
        Kind::StudentLivingAllowance => {
            let school_year = d.req("school_year", e, p_year);
            let cooperative_enrollment = d.req("cooperative_enrollment", e, p_bool);
            (|| {
                Some(Details::StudentLivingAllowance {
                    school_year: school_year?,
                    cooperative_enrollment: cooperative_enrollment?,
                })
            })()
        }
        Kind::KeyGroupTraining => {
            let occupation_code = d.req("occupation_code", e, p_occ);
            let level = d.req("level", e, en!(Level));
            let certificate_number = d.req("certificate_number", e, p_str);
            let fee = d.req("fee", e, p_money);
            (|| {
                Some(Details::KeyGroupTraining {
                    occupation_code: occupation_code?,
                    level: level?,
                    certificate_number: certificate_number?,
                    fee: fee?,
                })
            })()
        }
        Kind::VeteranTraining => {
            let occupation_code = d.opt("occupation_code", e, p_occ);
            let project_code = d.opt("project_code", e, p_str);
            let has_occ = d.map.is_some_and(|m| m.get("occupation_code").is_some_and(|v| !v.is_null()));
            let has_proj = d.map.is_some_and(|m| m.get("project_code").is_some_and(|v| !v.is_null()));
            if d.map.is_some() && has_occ == has_proj {
                e.push(FieldError::new(
                    "/details/occupation_code",
                    "required",
                    "give exactly one of occupation_code and project_code",
                ));
            }
            let level = d.opt("level", e, en!(Level));
            let start_date = d.req("start_date", e, p_date);
            // An end before the start is read, not refused: the training is
            // shorter than the minimum (TRAINING_TOO_SHORT, I-14), a decision.
            let end_date = d.req("end_date", e, p_date);
            let fee = d.req("fee", e, p_money);
            (|| {
                if has_occ == has_proj {
                    return None;
                }
                Some(Details::VeteranTraining {
                    occupation_code,
                    project_code,
                    level,
                    start_date: start_date?,
                    end_date: end_date?,
                    fee: fee?,
                })
            })()
        }
        Kind::TrainingLivingAllowance => {
            let training_reference = d.req("training_reference", e, p_str);
            let start_date = d.req("start_date", e, p_date);
            let training_days = d.req("training_days", e, p_count(1, 366));
            (|| {
                Some(Details::TrainingLivingAllowance {
                    training_reference: training_reference?,
                    start_date: start_date?,
                    training_days: training_days?,
                })
            })()
        }
        Kind::EntrepreneurshipTraining => {
            let training_reference = d.req("training_reference", e, p_str);
            let fee = d.req("fee", e, p_money);
            (|| Some(Details::Entrepreneurship { training_reference: training_reference?, fee: fee? }))()
        }
        Kind::SkillUpgrade => {
            let occupation_code = d.req("occupation_code", e, p_occ);
            let level = d.req("level", e, en!(Level));
            let certificate_number = d.req("certificate_number", e, p_str);
            (|| {
                Some(Details::SkillUpgrade {
                    occupation_code: occupation_code?,
                    level: level?,
                    certificate_number: certificate_number?,
                })
            })()
        }
        Kind::Apprenticeship => {
            let training_year = d.req("training_year", e, p_year);
            let stage = d.req("stage", e, en!(ApprenticeshipStage));
            let acceptance_passed = d.opt("acceptance_passed", e, p_bool);
            (|| Some(Details::Apprenticeship { training_year: training_year?, stage: stage?, acceptance_passed }))()
        }
        Kind::CraftsmanAward => {
            let title = d.req("title", e, en!(CraftsmanTitle));
            (|| Some(Details::CraftsmanAward { title: title? }))()
        }
        Kind::MasterStudioAward => {
            let studio_id = d.req("studio_id", e, p_str);
            let level = d.req("level", e, en!(StudioLevel));
            let key_rated = d.req("key_rated", e, p_bool);
            (|| Some(Details::MasterStudioAward { studio_id: studio_id?, level: level?, key_rated: key_rated? }))()
        }
        Kind::SkillContestFunding => {
            let contest_id = d.req("contest_id", e, p_str);
            let contest_level = d.req("contest_level", e, en!(ContestLevel));
            let occupation_code = d.req("occupation_code", e, p_occ);
            let budget = d.opt("budget", e, p_money);
            (|| {
                Some(Details::SkillContestFunding {
                    contest_id: contest_id?,
                    contest_level: contest_level?,
                    occupation_code: occupation_code?,
                    budget,
                })
            })()
        }
    };
    d.finish(e);
    out
}

/// SHA-256 of the body with object keys sorted: retries that differ only in
/// key order or spacing are the same body.
fn canon(v: &Value, out: &mut Vec<u8>) {
    match v {
        Value::Object(m) => {
            out.push(b'{');
            let mut keys: Vec<_> = m.keys().collect();
            keys.sort();
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::String(k.clone()).to_string().as_bytes());
                out.push(b':');
                canon(&m[k], out);
            }
            out.push(b'}');
        }
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canon(x, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

pub fn body_hash(v: &Value) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(canonical_body(v)))
}

/// The body with object keys sorted and no spacing (what a body hash hashes).
pub fn canonical_body(v: &Value) -> Vec<u8> {
    let mut buf = Vec::new();
    canon(v, &mut buf);
    buf
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn wy_qualification() -> Value {
        json!({
            "claim_id": "T-1", "county": "wuyi", "kind": "qualification_training", "event_date": "2020-06-15",
            "applicant": {"id_number": "330723199005060038", "name": "张三", "local_hukou": true, "groups": ["enterprise_employee"]},
            "details": {"occupation_code": "6-31-01-03", "level": "junior", "certificate_number": "ZS1", "payee": "person"}
        })
    }

    fn fields(v: &Value) -> Vec<(String, String)> {
        parse_claim(v).unwrap_err().into_iter().map(|e| (e.field, e.code)).collect()
    }

    #[test]
    fn dates_are_exactly_yyyy_mm_dd_and_real() {
        for bad in ["2020-1-01 ", "2020 -1-01", "2020-01-1 ", "2020-1-1  ", "+020-01-01", "2020-02-30", "2020/01/01"] {
            assert!(p_date(&json!(bad), "/event_date").is_err(), "{bad:?} was accepted");
        }
        assert_eq!(p_date(&json!("2020-02-29"), "/event_date").ok(), NaiveDate::from_ymd_opt(2020, 2, 29));
    }

    #[test]
    fn a_valid_claim_parses() {
        let c = parse_claim(&wy_qualification()).unwrap();
        assert_eq!(c.kind, Kind::QualificationTraining);
        assert!(matches!(c.details, Details::Qualification { level: Level::Junior, .. }));
    }

    #[test]
    fn every_bad_field_is_reported_at_once() {
        let mut v = wy_qualification();
        v["applicant"]["id_number"] = json!("330723199005061130");
        v["event_date"] = json!("2020-02-30");
        v["details"]["level"] = json!("expert");
        v["details"]["fee"] = json!("1.00");
        v["extra"] = json!(1);
        let f = fields(&v);
        for (field, code) in [
            ("/applicant/id_number", "invalid_checksum"),
            ("/event_date", "invalid_date"),
            ("/details/level", "invalid_value"),
            ("/details/fee", "unknown_field"),
            ("/extra", "unknown_field"),
        ] {
            assert!(f.contains(&(field.to_string(), code.to_string())), "{field} {code} in {f:?}");
        }
    }

    #[test]
    fn a_field_of_the_other_county_is_unknown() {
        let v = json!({
            "claim_id": "T-2", "county": "changxing", "kind": "project_training", "event_date": "2020-06-15",
            "applicant": {"id_number": "330522199005060495", "name": "李四"},
            "details": {"project_code": "P", "completion_certificate_number": "C", "fee": "100", "class_hours": 20, "training_start_date": "2020-01-01"}
        });
        let f = fields(&v);
        assert!(f.contains(&("/details/class_hours".into(), "unknown_field".into())));
        assert!(f.contains(&("/details/training_start_date".into(), "unknown_field".into())));
    }

    #[test]
    fn money_as_a_json_number_and_missing_fields_are_refused() {
        let v = json!({
            "claim_id": "T-3", "county": "changxing", "kind": "entrepreneurship_training", "event_date": "2020-06-15",
            "applicant": {"id_number": "330522199005060495", "name": "李四"},
            "details": {"fee": 100}
        });
        let f = fields(&v);
        assert!(f.contains(&("/details/fee".into(), "invalid_type".into())));
        assert!(f.contains(&("/details/training_reference".into(), "required".into())));
    }
}
