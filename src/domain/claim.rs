//! A claim (API.md §3): one declaration per shape is the Rust type the rules
//! read, the reader that fills it (every bad field reported at once, by its
//! JSON pointer) and its schema in the OpenAPI document. [`SHAPES`] ties each
//! kind (and county, where their tables differ) to its `details` type.

use chrono::NaiveDate;
use serde_json::Value;
use utoipa::openapi::{RefOr, Schema};
use utoipa::{PartialSchema, ToSchema};

use super::codes::*;
use super::read::FieldError;
use super::values::*;
use super::{FromJson, IdNumber, Json, Money, Node};
use crate::request_type;

request_type! {
    /// An organisation: an enterprise, training institution or school.
    pub struct Organization {
        pub credit_code: CreditCode,
        pub name: Text,
        pub industry_code: Option<IndustryCode>,
    }
}

request_type! {
    /// A resident, the claimant of person-level kinds. Only what the claim
    /// says counts: an absent flag is false.
    pub struct Applicant {
        pub id_number: IdNumber,
        /// Personal data.
        pub name: Text,
        pub local_hukou: Option<bool>,
        /// Lives in the county and holds its residence permit.
        pub residence_permit: Option<bool>,
        pub employed_in_county: Option<bool>,
        pub unemployment_registered: Option<bool>,
        pub receives_monthly_pension: Option<bool>,
        pub public_institution_staff: Option<bool>,
        pub groups: Option<Vec<Group>>,
        pub employer: Option<Organization>,
    }
}

impl Applicant {
    pub fn in_group(&self, g: Group) -> bool {
        self.groups.as_ref().is_some_and(|groups| groups.contains(&g))
    }

    pub fn is_local_hukou(&self) -> bool {
        self.local_hukou == Some(true)
    }

    pub fn has_residence_permit(&self) -> bool {
        self.residence_permit == Some(true)
    }

    pub fn is_employed_in_county(&self) -> bool {
        self.employed_in_county == Some(true)
    }

    pub fn is_unemployment_registered(&self) -> bool {
        self.unemployment_registered == Some(true)
    }

    pub fn receives_pension(&self) -> bool {
        self.receives_monthly_pension == Some(true)
    }

    pub fn is_public_institution_staff(&self) -> bool {
        self.public_institution_staff == Some(true)
    }
}

request_type! {
    /// `qualification_training` (WY). `training_start_date` serves R-PRIOR.
    pub struct QualificationTrainingDetails {
        pub occupation_code: OccupationCode,
        pub level: Level,
        pub certificate_number: Text,
        pub payee: QualificationPayee,
        /// Wuyi only (R-PRIOR): when the training started. In a Changxing
        /// claim of this kind an unknown field.
        pub training_start_date: Option<NaiveDate>,
    }
}

request_type! {
    /// `project_training` in Wuyi. `training_start_date` serves R-PRIOR.
    pub struct WuyiProjectTrainingDetails {
        pub project_code: Text,
        pub completion_certificate_number: Text,
        pub class_hours: ClassHours,
        pub class_size: ClassSize,
        /// The bureau approved a class above the size limit; absent is false.
        pub class_size_exception_approved: Option<bool>,
        pub training_start_date: Option<NaiveDate>,
    }
}

request_type! {
    /// `project_training` in Changxing.
    pub struct ChangxingProjectTrainingDetails {
        pub project_code: Text,
        pub completion_certificate_number: Text,
        pub fee: Money,
    }
}

request_type! {
    /// `apprenticeship_employee` (WY).
    pub struct ApprenticeshipEmployeeDetails {
        pub training_year: Year,
        pub completion_certificate: bool,
        pub additional_certificate_level: Option<Level>,
        pub training_cost: Option<Money>,
        /// Wuyi only (R-PRIOR): when the training started. In a Changxing
        /// claim of this kind an unknown field.
        pub training_start_date: Option<NaiveDate>,
    }
}

request_type! {
    /// `apprenticeship_student` (WY).
    pub struct ApprenticeshipStudentDetails {
        pub training_year: Year,
        pub monthly_allowance: Money,
        pub months: Months,
        /// Wuyi only (R-PRIOR): when the training started. In a Changxing
        /// claim of this kind an unknown field.
        pub training_start_date: Option<NaiveDate>,
    }
}

request_type! {
    /// `safety_training` in Wuyi. `training_start_date` serves R-PRIOR.
    pub struct WuyiSafetyTrainingDetails {
        pub certificate_type: CertificateType,
        pub certificate_number: Text,
        pub fee_paid: Money,
        pub approved_fee_standard: Money,
        pub trained_in_county: bool,
        pub training_start_date: Option<NaiveDate>,
    }
}

request_type! {
    /// `safety_training` in Changxing.
    pub struct ChangxingSafetyTrainingDetails {
        pub certificate_type: CertificateType,
        pub certificate_number: Text,
        pub fee_paid: Money,
        pub training_type: SafetyTrainingType,
    }
}

request_type! {
    /// One day of online training.
    pub struct OnlineDay {
        pub date: NaiveDate,
        pub class_hours: DayHours,
    }
}

/// The days of an online training period: 1..366 of them, each date once.
#[derive(Debug, Clone, PartialEq)]
pub struct OnlineDays(Vec<OnlineDay>);

impl OnlineDays {
    const MAX: usize = 366;
}

impl std::ops::Deref for OnlineDays {
    type Target = [OnlineDay];
    fn deref(&self) -> &[OnlineDay] {
        &self.0
    }
}

impl FromJson for OnlineDays {
    fn from_json<J: Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self> {
        let len = v.as_array().map_or(0, <[J]>::len);
        if v.as_array().is_some() && !(1..=Self::MAX).contains(&len) {
            errs.push(FieldError::new(at, "out_of_range", format!("from 1 to {} training days", Self::MAX)));
            return None;
        }
        let days = Vec::<OnlineDay>::from_json(v, at, errs)?;
        let before = errs.len();
        for (i, day) in days.iter().enumerate() {
            if days[..i].iter().any(|d| d.date == day.date) {
                errs.push(FieldError::new(format!("{at}/{i}/date"), "duplicate", "each date appears once"));
            }
        }
        (errs.len() == before).then_some(Self(days))
    }
}

impl PartialSchema for OnlineDays {
    fn schema() -> RefOr<Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(RefOr::Ref(utoipa::openapi::Ref::from_schema_name(OnlineDay::name())))
            .min_items(Some(1))
            .max_items(Some(Self::MAX))
            .description(Some("The training days, each date once."))
            .into()
    }
}

impl ToSchema for OnlineDays {
    fn schemas(schemas: &mut Vec<(String, RefOr<Schema>)>) {
        schemas.push((OnlineDay::name().into(), OnlineDay::schema()));
        OnlineDay::schemas(schemas);
    }
}

request_type! {
    /// `online_training` (WY). A platform purchase needs `invoice_amount`.
    pub struct OnlineTrainingDetails {
        pub period_id: Text,
        /// The filing 备案 with the HR bureau; absent → `NOT_FILED`.
        pub filing_reference: Option<Text>,
        pub mode: OnlineMode,
        pub trainees: Trainees,
        pub days: OnlineDays,
        /// At most the period's total class hours; absent is 0.
        pub repeated_hours: Option<RepeatedHours>,
        /// Required for `platform_purchase`.
        pub invoice_amount: Option<Money>,
    }
}

request_type! {
    /// `institution_investment` (CX).
    pub struct InstitutionInvestmentDetails {
        pub category: InvestmentCategory,
        pub investment_amount: Money,
        pub invoice_reference: Text,
    }
}

request_type! {
    /// `vocational_school_senior` (CX).
    pub struct VocationalSchoolSeniorDetails {
        pub school_year: Year,
        pub programme: Programme,
        pub in_senior_stage: bool,
    }
}

request_type! {
    /// `cooperative_enrollment` (CX).
    pub struct CooperativeEnrollmentDetails {
        pub school_year: Year,
        pub standard_amount: Money,
        pub cooperation_region: Text,
    }
}

request_type! {
    /// `student_living_allowance` (CX).
    pub struct StudentLivingAllowanceDetails {
        pub school_year: Year,
        pub cooperative_enrollment: bool,
    }
}

request_type! {
    /// `key_group_training` (CX).
    pub struct KeyGroupTrainingDetails {
        pub occupation_code: OccupationCode,
        pub level: Level,
        pub certificate_number: Text,
        pub fee: Money,
    }
}

request_type! {
    /// `veteran_training` (CX): exactly one of `occupation_code` and `project_code`.
    pub struct VeteranTrainingDetails {
        pub occupation_code: Option<OccupationCode>,
        pub project_code: Option<Text>,
        pub level: Option<Level>,
        pub start_date: NaiveDate,
        /// An end before the start is read, not refused: the training is
        /// shorter than the minimum (`TRAINING_TOO_SHORT`, I-14), a decision.
        pub end_date: NaiveDate,
        pub fee: Money,
    }
}

request_type! {
    /// `training_living_allowance` (CX).
    pub struct TrainingLivingAllowanceDetails {
        pub training_reference: Text,
        pub start_date: NaiveDate,
        pub training_days: TrainingDays,
    }
}

request_type! {
    /// `entrepreneurship_training` (CX).
    pub struct EntrepreneurshipTrainingDetails {
        pub training_reference: Text,
        pub fee: Money,
    }
}

request_type! {
    /// `skill_upgrade` (CX).
    pub struct SkillUpgradeDetails {
        pub occupation_code: OccupationCode,
        pub level: Level,
        pub certificate_number: Text,
    }
}

request_type! {
    /// `apprenticeship` (CX). The employer's industry code is required.
    pub struct ApprenticeshipDetails {
        pub training_year: Year,
        pub stage: ApprenticeshipStage,
        pub acceptance_passed: Option<bool>,
    }
}

request_type! {
    /// `craftsman_award` (CX). `golden_cradle` is claimed by an organisation.
    pub struct CraftsmanAwardDetails {
        pub title: CraftsmanTitle,
    }
}

request_type! {
    /// `master_studio_award` (CX).
    pub struct MasterStudioAwardDetails {
        pub studio_id: Text,
        pub level: StudioLevel,
        pub key_rated: bool,
    }
}

request_type! {
    /// `skill_contest_funding` (CX).
    pub struct SkillContestFundingDetails {
        pub contest_id: Text,
        pub contest_level: ContestLevel,
        pub occupation_code: OccupationCode,
        pub budget: Option<Money>,
    }
}

/// `details`, by shape.
#[derive(Debug, Clone, PartialEq)]
pub enum Details {
    Qualification(QualificationTrainingDetails),
    WuyiProject(WuyiProjectTrainingDetails),
    ChangxingProject(ChangxingProjectTrainingDetails),
    ApprenticeshipEmployee(ApprenticeshipEmployeeDetails),
    ApprenticeshipStudent(ApprenticeshipStudentDetails),
    WuyiSafety(WuyiSafetyTrainingDetails),
    ChangxingSafety(ChangxingSafetyTrainingDetails),
    Online(OnlineTrainingDetails),
    InstitutionInvestment(InstitutionInvestmentDetails),
    VocationalSchoolSenior(VocationalSchoolSeniorDetails),
    CooperativeEnrollment(CooperativeEnrollmentDetails),
    StudentLivingAllowance(StudentLivingAllowanceDetails),
    KeyGroupTraining(KeyGroupTrainingDetails),
    VeteranTraining(VeteranTrainingDetails),
    TrainingLivingAllowance(TrainingLivingAllowanceDetails),
    Entrepreneurship(EntrepreneurshipTrainingDetails),
    SkillUpgrade(SkillUpgradeDetails),
    Apprenticeship(ApprenticeshipDetails),
    CraftsmanAward(CraftsmanAwardDetails),
    MasterStudioAward(MasterStudioAwardDetails),
    SkillContestFunding(SkillContestFundingDetails),
}

/// Who claims a kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claimant {
    Person,
    /// A person, with the employer (WY apprenticeship_employee: the enterprise is paid).
    PersonWithEmployer,
    /// A person, with the employer's industry code (CX apprenticeship: the amount depends on it).
    PersonWithEmployerIndustry,
    Organization,
    /// A person; an organisation for the golden-cradle title (CX craftsman_award).
    PersonOrOrganization,
}

/// One shape of claim: a kind (in one county, where the counties' tables
/// differ), who claims it, and its `details` type.
pub struct Shape {
    pub kind: Kind,
    /// `None`: the same shape in every county. A county that does not offer
    /// the kind still reads this shape, and decides `KIND_NOT_IN_COUNTY_POLICY`.
    pub county: Option<County>,
    pub claimant: Claimant,
    /// Reads `details` from a request body.
    read: fn(&Value, &mut Vec<FieldError>) -> Option<Details>,
    /// Reads `details` from a stored claim.
    read_stored: fn(&Node, &mut Vec<FieldError>) -> Option<Details>,
    /// The `details` type's schema name, its schema, and the schemas it refers to.
    pub details_name: fn() -> std::borrow::Cow<'static, str>,
    pub details_schema: fn() -> RefOr<Schema>,
    pub details_refs: fn(&mut Vec<(String, RefOr<Schema>)>),
}

macro_rules! shape {
    ($kind:ident, $county:expr, $claimant:ident, $variant:ident($ty:ty)) => {
        Shape {
            kind: Kind::$kind,
            county: $county,
            claimant: Claimant::$claimant,
            read: |v, errs| <$ty as FromJson>::from_json(v, "/details", errs).map(Details::$variant),
            read_stored: |v, errs| <$ty as FromJson>::from_json(v, "/details", errs).map(Details::$variant),
            details_name: <$ty as ToSchema>::name,
            details_schema: <$ty as PartialSchema>::schema,
            details_refs: <$ty as ToSchema>::schemas,
        }
    };
}

const WY: Option<County> = Some(County::Wuyi);
const CX: Option<County> = Some(County::Changxing);

/// Every shape of claim, in the order of RULES.md §3 and §4.
pub static SHAPES: [Shape; 21] = [
    shape!(QualificationTraining, None, Person, Qualification(QualificationTrainingDetails)),
    shape!(ProjectTraining, WY, Person, WuyiProject(WuyiProjectTrainingDetails)),
    shape!(ProjectTraining, CX, Person, ChangxingProject(ChangxingProjectTrainingDetails)),
    shape!(ApprenticeshipEmployee, None, PersonWithEmployer, ApprenticeshipEmployee(ApprenticeshipEmployeeDetails)),
    shape!(ApprenticeshipStudent, None, Person, ApprenticeshipStudent(ApprenticeshipStudentDetails)),
    shape!(SafetyTraining, WY, Person, WuyiSafety(WuyiSafetyTrainingDetails)),
    shape!(SafetyTraining, CX, Person, ChangxingSafety(ChangxingSafetyTrainingDetails)),
    shape!(OnlineTraining, None, Organization, Online(OnlineTrainingDetails)),
    shape!(InstitutionInvestment, None, Organization, InstitutionInvestment(InstitutionInvestmentDetails)),
    shape!(VocationalSchoolSenior, None, Person, VocationalSchoolSenior(VocationalSchoolSeniorDetails)),
    shape!(CooperativeEnrollment, None, Person, CooperativeEnrollment(CooperativeEnrollmentDetails)),
    shape!(StudentLivingAllowance, None, Person, StudentLivingAllowance(StudentLivingAllowanceDetails)),
    shape!(KeyGroupTraining, None, Person, KeyGroupTraining(KeyGroupTrainingDetails)),
    shape!(VeteranTraining, None, Person, VeteranTraining(VeteranTrainingDetails)),
    shape!(TrainingLivingAllowance, None, Person, TrainingLivingAllowance(TrainingLivingAllowanceDetails)),
    shape!(EntrepreneurshipTraining, None, Person, Entrepreneurship(EntrepreneurshipTrainingDetails)),
    shape!(SkillUpgrade, None, Person, SkillUpgrade(SkillUpgradeDetails)),
    shape!(Apprenticeship, None, PersonWithEmployerIndustry, Apprenticeship(ApprenticeshipDetails)),
    shape!(CraftsmanAward, None, PersonOrOrganization, CraftsmanAward(CraftsmanAwardDetails)),
    shape!(MasterStudioAward, None, Organization, MasterStudioAward(MasterStudioAwardDetails)),
    shape!(SkillContestFunding, None, Organization, SkillContestFunding(SkillContestFundingDetails)),
];

/// The shape of a kind's claims in a county.
pub fn shape_of(kind: Kind, county: County) -> Option<&'static Shape> {
    SHAPES.iter().find(|s| s.kind == kind && s.county.is_none_or(|c| c == county))
}

#[derive(Debug, Clone)]
pub struct Claim {
    pub claim_id: ClaimId,
    pub county: County,
    pub kind: Kind,
    /// Certificate issue date, training or school period end, or award date.
    pub event_date: NaiveDate,
    pub department: Option<DepartmentCode>,
    pub applicant: Option<Applicant>,
    /// The training institution or school, when there is one.
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

/// Whether a claim of `kind` is made by an organisation (`details` decides
/// for the craftsman award).
pub fn is_organization_kind<J: Json>(kind: Kind, details: Option<&J>) -> bool {
    match SHAPES.iter().find(|s| s.kind == kind).map(|s| s.claimant) {
        Some(Claimant::Organization) => true,
        Some(Claimant::PersonOrOrganization) => {
            details.and_then(|d| d.get("title")).and_then(J::as_str) == Some(CraftsmanTitle::GoldenCradle.as_str())
        }
        _ => false,
    }
}

/// The claim id of a body, if it has a readable one (for batch results).
pub fn peek_claim_id<J: Json>(v: &J) -> Option<String> {
    v.get("claim_id").and_then(J::as_str).filter(|s| ClaimId::parse(s, "").is_ok()).map(str::to_string)
}

/// A JSON value a claim is read from, with the reader of each shape's `details`.
pub trait ClaimJson: Json {
    fn read_details(shape: &Shape, details: &Self, errs: &mut Vec<FieldError>) -> Option<Details>;
}

impl ClaimJson for Value {
    fn read_details(shape: &Shape, details: &Self, errs: &mut Vec<FieldError>) -> Option<Details> {
        (shape.read)(details, errs)
    }
}

impl ClaimJson for Node<'_> {
    fn read_details(shape: &Shape, details: &Self, errs: &mut Vec<FieldError>) -> Option<Details> {
        (shape.read_stored)(details, errs)
    }
}

/// Parses a claim as a request brings it: [`parse_claim`], and what a new
/// claim is refused for beyond its shape ([`intake_checks`]); every bad field
/// is listed once: an intake refusal in place of a shape error at the same
/// field, none inside a member the shape refused whole (an `applicant` on an
/// organisation's claim). Recorded claims are read with [`parse_claim`]
/// alone, so that a record made before one of these refusals still reads.
pub fn parse_new_claim<J: ClaimJson>(body: &J) -> Result<Claim, Vec<FieldError>> {
    let parsed = parse_claim(body);
    let mut intake = intake_checks(body, parsed.as_ref().ok());
    match parsed {
        Ok(claim) if intake.is_empty() => Ok(claim),
        Ok(_) => Err(intake),
        Err(mut errs) => {
            intake.retain(|i| {
                !errs.iter().any(|e| i.field.strip_prefix(e.field.as_str()).is_some_and(|r| r.starts_with('/')))
            });
            errs.retain(|e| !intake.iter().any(|i| i.field == e.field));
            errs.extend(intake);
            Err(errs)
        }
    }
}

/// What a new claim is refused for beyond its shape: a claim id holding a
/// resident ID number (claim ids are shown in URLs and logs), an applicant
/// born after the claim's `event_date`, and a field only the other county's
/// table gives on a kind both counties read with one shape
/// ([`county_only_fields`]), unknown whatever its value. `claim` is the
/// body as [`parse_claim`] read it, when it read.
fn intake_checks<J: Json>(body: &J, claim: Option<&Claim>) -> Vec<FieldError> {
    let mut errs = Vec::new();
    if body.get("claim_id").and_then(J::as_str).is_some_and(super::codes::holds_id_number) {
        errs.push(FieldError::new(
            "/claim_id",
            "invalid_value",
            "a claim id must not hold a resident ID number: claim ids are shown in URLs and logs",
        ));
    }
    // A person born after the event cannot have been trained, certified or
    // awarded on it: the ID number or the date is wrong. The claim's own
    // dates when it read; else the two read again from the body with the
    // claim's readers (either one unreadable is its shape error alone).
    let dates = match claim {
        Some(c) => c.applicant.as_ref().map(|a| (a.id_number.birth_date(), c.event_date)),
        None => {
            let id_number = body.get("applicant").and_then(|a| a.get("id_number")).and_then(J::as_str);
            let born = id_number.and_then(|id| IdNumber::parse(id, "").ok()).map(|id| id.birth_date());
            born.zip(body.get("event_date").and_then(|d| NaiveDate::from_json(d, "", &mut Vec::new())))
        }
    };
    if dates.is_some_and(|(born, event)| born > event) {
        errs.push(FieldError::new(
            "/applicant/id_number",
            "invalid_value",
            "the birth date in the ID number is after the claim's event_date",
        ));
    }
    let county = body.get("county").and_then(J::as_str).and_then(County::parse);
    let kind = body.get("kind").and_then(J::as_str).and_then(Kind::parse);
    let details = body.get("details").filter(|d| d.is_object());
    if let (Some(county), Some((only, names)), Some(details)) = (county, kind.and_then(county_only_fields), details) {
        for name in names.iter().filter(|name| only != county && details.get(name).is_some()) {
            errs.push(FieldError::new(
                format!("/details/{name}"),
                "unknown_field",
                format!("only {only} claims of this kind take `{name}`"),
            ));
        }
    }
    errs
}

/// Parses a claim body (a request's, or a stored claim's). On failure, every
/// bad field is listed.
pub fn parse_claim<J: ClaimJson>(body: &J) -> Result<Claim, Vec<FieldError>> {
    let mut errs = Vec::new();
    let Some(mut fields) = super::Fields::new(body, "", &mut errs) else {
        return Err(vec![FieldError::new("", "invalid_type", "a claim is a JSON object")]);
    };
    let claim_id = fields.read::<ClaimId>("claim_id", &mut errs);
    let county = fields.read::<County>("county", &mut errs);
    let kind = fields.read::<Kind>("kind", &mut errs);
    let event_date = fields.read::<NaiveDate>("event_date", &mut errs);
    let department = fields.read::<Option<DepartmentCode>>("department", &mut errs);
    let institution = fields.read::<Option<Organization>>("institution", &mut errs);
    let details = fields.raw("details");
    let applicant = fields.raw("applicant");
    let organization = fields.raw("organization");
    fields.finish(&mut errs);

    let shape = kind.zip(county).and_then(|(kind, county)| shape_of(kind, county));
    let parties = match shape {
        Some(shape) => Some(claimant(shape, details, applicant, organization, &mut errs)),
        None => {
            // Without a kind and county there is no shape to read `details`
            // by, nor to say which party is needed; the parties given are
            // still read, so that their own bad fields are listed too.
            if let Some(v) = applicant {
                Applicant::from_json(v, "/applicant", &mut errs);
            }
            if let Some(v) = organization {
                Organization::from_json(v, "/organization", &mut errs);
            }
            None
        }
    };
    let details = shape.and_then(|shape| match details {
        Some(v) => {
            // The fields one needs beside another are checked as written,
            // so that they are named even when another field is bad.
            let read = J::read_details(shape, v, &mut errs);
            let present = presence_checks(shape.kind, v, &mut errs);
            let consistent = read.as_ref().is_some_and(|d| cross_checks(d, &mut errs));
            read.filter(|_| present && consistent)
        }
        None => {
            errs.push(FieldError::new("/details", "required", "this field is required"));
            None
        }
    });
    match (claim_id, county, kind, event_date, department, institution, parties, details) {
        (
            Some(claim_id),
            Some(county),
            Some(kind),
            Some(event_date),
            Some(department),
            Some(institution),
            Some((Some(applicant), Some(organization))),
            Some(details),
        ) if errs.is_empty() => {
            Ok(Claim { claim_id, county, kind, event_date, department, applicant, institution, organization, details })
        }
        _ if errs.is_empty() => Err(vec![FieldError::new("", "invalid_value", "the claim could not be read")]),
        _ => Err(errs),
    }
}

/// Reads the claimant: the applicant or the organisation, as the shape says.
/// Each side is `Some` when read as required (`Some(None)`: rightly absent).
fn claimant<J: Json>(
    shape: &Shape,
    details: Option<&J>,
    applicant: Option<&J>,
    organization: Option<&J>,
    errs: &mut Vec<FieldError>,
) -> (Option<Option<Applicant>>, Option<Option<Organization>>) {
    if is_organization_kind(shape.kind, details) {
        let organization = match organization {
            Some(v) => Organization::from_json(v, "/organization", errs).map(Some),
            None => required("/organization", "this kind needs the organisation", errs),
        };
        let applicant = absent(applicant, "/applicant", "this kind is claimed by an organisation, not a person", errs);
        return (applicant, organization);
    }
    let applicant = match applicant {
        Some(v) => Applicant::from_json(v, "/applicant", errs).and_then(|a| employer_checks(shape, a, errs)),
        None => required("/applicant", "this kind needs the applicant", errs),
    };
    let organization =
        absent(organization, "/organization", "this kind is claimed by a person, not an organisation", errs);
    (applicant, organization)
}

/// `Some(None)` for a party rightly absent; an error for one given.
fn absent<T, J>(v: Option<&J>, at: &str, why: &str, errs: &mut Vec<FieldError>) -> Option<Option<T>> {
    if v.is_some() {
        errs.push(FieldError::new(at, "unknown_field", why));
        None
    } else {
        Some(None)
    }
}

fn required<T>(at: &str, why: &str, errs: &mut Vec<FieldError>) -> Option<T> {
    errs.push(FieldError::new(at, "required", why));
    None
}

/// What the kind needs of the applicant's employer.
fn employer_checks(shape: &Shape, applicant: Applicant, errs: &mut Vec<FieldError>) -> Option<Option<Applicant>> {
    let needs_employer = matches!(shape.claimant, Claimant::PersonWithEmployer | Claimant::PersonWithEmployerIndustry);
    match &applicant.employer {
        None if needs_employer => required("/applicant/employer", "this kind needs the employer", errs),
        Some(e) if shape.claimant == Claimant::PersonWithEmployerIndustry && e.industry_code.is_none() => {
            required("/applicant/employer/industry_code", "this kind needs the employer's industry code", errs)
        }
        _ => Some(Some(applicant)),
    }
}

/// Fields of `details` that one needs beside another, as written (a field
/// given as `null` is absent); false when one is missing or doubled.
fn presence_checks<J: Json>(kind: Kind, details: &J, errs: &mut Vec<FieldError>) -> bool {
    if !details.is_object() {
        return true; // the reader names `details` itself
    }
    let given = |name: &str| details.get(name).is_some_and(|v| !v.is_null());
    let missing = match kind {
        // Neither: the first is missing. Both: the second is one too many.
        Kind::VeteranTraining => match (given("occupation_code"), given("project_code")) {
            (false, false) => {
                Some(("/details/occupation_code", "required", "give exactly one of occupation_code and project_code"))
            }
            (true, true) => Some((
                "/details/project_code",
                "invalid_value",
                "give exactly one of occupation_code and project_code, not both",
            )),
            _ => None,
        },
        Kind::OnlineTraining
            if details.get("mode").and_then(J::as_str) == Some(OnlineMode::PlatformPurchase.as_str())
                && !given("invoice_amount") =>
        {
            Some(("/details/invoice_amount", "required", "a platform purchase needs the invoice amount"))
        }
        _ => None,
    };
    let Some((field, code, message)) = missing else { return true };
    // A field the reader already named (malformed) is named once.
    if !errs.iter().any(|e| e.field == field) {
        errs.push(FieldError::new(field, code, message));
    }
    false
}

/// Fields of a kind read with one shape in both counties that only one
/// county's table gives (RULES.md §8, input shapes: `training_start_date` on
/// a CX claim is an unknown field, whatever its kind): that county, and the
/// fields.
pub(super) fn county_only_fields(kind: Kind) -> Option<(County, &'static [&'static str])> {
    match kind {
        Kind::QualificationTraining | Kind::ApprenticeshipEmployee | Kind::ApprenticeshipStudent => {
            Some((County::Wuyi, &["training_start_date"]))
        }
        _ => None,
    }
}

/// Rules between the values of one `details`; false when one is broken.
fn cross_checks(details: &Details, errs: &mut Vec<FieldError>) -> bool {
    let before = errs.len();
    if let Details::Online(d) = details {
        let total: rust_decimal::Decimal = d.days.iter().map(|day| day.class_hours.get()).sum();
        if d.repeated_hours.is_some_and(|h| h.get() > total) {
            errs.push(FieldError::new(
                "/details/repeated_hours",
                "out_of_range",
                "repeated hours cannot exceed the total class hours",
            ));
        }
    }
    errs.len() == before
}

/// SHA-256 of the body with object keys sorted: retries that differ only in
/// key order or spacing are the same body.
fn canon<J: Json>(v: &J, out: &mut Vec<u8>) {
    if v.is_object() {
        // `keys` answers each name once, in byte order.
        separated(out, (b'{', b'}'), v.keys(), |k, out| {
            json_into(k, out);
            out.push(b':');
            if let Some(x) = v.get(k) {
                canon(x, out);
            }
        });
    } else if let Some(a) = v.as_array() {
        separated(out, (b'[', b']'), a.iter(), canon);
    } else if let Some(s) = v.as_str() {
        json_into(s, out);
    } else if let Some(n) = v.as_number() {
        json_into(n, out);
    } else if let Some(b) = v.as_bool() {
        json_into(&b, out);
    } else {
        out.extend_from_slice(b"null");
    }
}

/// Writes `items` between the brackets, separated by commas.
fn separated<T>(
    out: &mut Vec<u8>,
    (open, close): (u8, u8),
    items: impl Iterator<Item = T>,
    mut write: impl FnMut(T, &mut Vec<u8>),
) {
    out.push(open);
    for (i, x) in items.enumerate() {
        if i > 0 {
            out.push(b',');
        }
        write(x, out);
    }
    out.push(close);
}

/// Appends a string or a scalar as compact JSON (what `Value`'s `Display`
/// writes), without an intermediate `String`.
fn json_into<T: serde::Serialize + ?Sized>(v: &T, out: &mut Vec<u8>) {
    // Writing a string or a scalar into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, v);
}

pub fn body_hash(v: &Value) -> String {
    use sha2::{Digest, Sha256};
    faster_hex::hex_string(&Sha256::digest(canonical_body(v)))
}

/// The body with object keys sorted and no spacing (what a body hash hashes).
pub fn canonical_body<J: Json>(v: &J) -> Vec<u8> {
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

    /// The canonical body is what the body hashes of recorded claims were
    /// taken over: `Value`'s compact text with object keys sorted (which a
    /// `Value`'s own keys are), escapes and numbers written the same way.
    #[test]
    fn the_canonical_body_is_the_compact_text_of_the_value() {
        let v = json!({
            "z\"q": ["\u{1}\t\n", "张三", "\u{7f}", "a/b\\c"],
            "b": [-0.0, 1.5e300, -7, 18446744073709551615u64, 0.1, true, null],
            "a": {"y": {}, "x": [], "\u{e9}": "é"}
        });
        assert_eq!(String::from_utf8(canonical_body(&v)).unwrap(), v.to_string());
        assert_eq!(
            body_hash(&wy_qualification()),
            faster_hex::hex_string(&<sha2::Sha256 as sha2::Digest>::digest(wy_qualification().to_string()))
        );
    }

    #[test]
    fn a_valid_claim_parses() {
        let c = parse_claim(&wy_qualification()).unwrap();
        assert_eq!(c.kind, Kind::QualificationTraining);
        assert!(matches!(c.details, Details::Qualification(QualificationTrainingDetails { level: Level::Junior, .. })));
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
        // Also on a kind Changxing does not offer, read with Wuyi's shape:
        // named once, as unknown, whatever its value; Wuyi's claim takes it.
        let mut v = wy_qualification();
        for (date, county, named) in [
            (json!("2020-01-01"), "changxing", true),
            (json!("2020-02-30"), "changxing", true),
            (Value::Null, "changxing", true),
            (json!("2020-01-01"), "wuyi", false),
        ] {
            v["county"] = json!(county);
            v["details"]["training_start_date"] = date.clone();
            let f: Vec<_> =
                parse_new_claim(&v).err().unwrap_or_default().into_iter().map(|e| (e.field, e.code)).collect();
            let at: Vec<_> = f.iter().filter(|(field, _)| field == "/details/training_start_date").collect();
            match named {
                true => assert_eq!(
                    at,
                    [&("/details/training_start_date".to_string(), "unknown_field".to_string())],
                    "{date}"
                ),
                false => assert!(f.is_empty(), "{f:?}"),
            }
        }
    }

    /// The intake refusals are a new claim's: a claim recorded before them
    /// (read back for a simulation) still reads.
    #[test]
    fn recorded_claims_are_read_without_the_intake_refusals() {
        let mut v = wy_qualification();
        v["claim_id"] = json!("WY-330723199005061233-1");
        v["county"] = json!("changxing");
        v["details"]["training_start_date"] = json!("2020-01-01");
        assert!(parse_claim(&v).is_ok());
        let mut f: Vec<_> = parse_new_claim(&v).unwrap_err().into_iter().map(|e| (e.field, e.code)).collect();
        f.sort();
        assert_eq!(
            f,
            [
                ("/claim_id".into(), "invalid_value".into()),
                ("/details/training_start_date".into(), "unknown_field".into())
            ]
        );
        // Beside the shape's own errors, each named once.
        v["event_date"] = json!("2020-02-30");
        let mut f: Vec<_> = parse_new_claim(&v).unwrap_err().into_iter().map(|e| e.field).collect();
        f.sort();
        assert_eq!(f, ["/claim_id", "/details/training_start_date", "/event_date"]);
    }

    #[test]
    fn an_applicant_born_after_the_event_date_is_refused_on_intake() {
        // Born 1990-05-06: on the day itself it reads, the day before not.
        let mut v = wy_qualification();
        v["event_date"] = json!("1990-05-06");
        assert!(parse_new_claim(&v).is_ok());
        v["event_date"] = json!("1990-05-05");
        assert!(parse_claim(&v).is_ok(), "a recorded claim still reads");
        let f: Vec<_> = parse_new_claim(&v).unwrap_err().into_iter().map(|e| (e.field, e.code)).collect();
        assert_eq!(f, [("/applicant/id_number".into(), "invalid_value".into())]);
        // Named beside another field's error too (the body read again).
        let mut bad = v.clone();
        bad["details"]["level"] = json!("bogus");
        let f: Vec<_> = parse_new_claim(&bad).unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(f, ["/details/level", "/applicant/id_number"]);
        // A date or an ID number that does not read is its shape error alone.
        v["event_date"] = json!("1990-02-30");
        let f: Vec<_> = parse_new_claim(&v).unwrap_err().into_iter().map(|e| e.field).collect();
        assert_eq!(f, ["/event_date"]);
        // An applicant on an organisation's claim is refused whole, not
        // again for its birth date.
        let mut org = v.clone();
        org["kind"] = json!("online_training");
        org["event_date"] = json!("1990-05-05");
        let f: Vec<_> = parse_new_claim(&org).unwrap_err().into_iter().map(|e| e.field).collect();
        assert!(f.contains(&"/applicant".to_string()), "{f:?}");
        assert!(!f.iter().any(|f| f.starts_with("/applicant/")), "{f:?}");
        v["event_date"] = json!("1990-05-05");
        v["applicant"]["id_number"] = json!("330723199005060039");
        let f: Vec<_> = parse_new_claim(&v).unwrap_err().into_iter().map(|e| (e.field, e.code)).collect();
        assert_eq!(f, [("/applicant/id_number".into(), "invalid_checksum".into())]);
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

    #[test]
    fn every_kind_has_one_shape_in_each_county() {
        for kind in Kind::ALL {
            for county in County::ALL {
                let n = SHAPES.iter().filter(|s| s.kind == *kind && s.county.is_none_or(|c| c == *county)).count();
                assert_eq!(n, 1, "{kind} in {county}");
            }
        }
    }

    #[test]
    fn cross_field_rules_are_reported() {
        let v = json!({
            "claim_id": "T-4", "county": "changxing", "kind": "veteran_training", "event_date": "2020-06-15",
            "applicant": {"id_number": "330522199005060495", "name": "李四"},
            "details": {"start_date": "2020-01-01", "end_date": "2020-06-01", "fee": "100"}
        });
        assert!(fields(&v).contains(&("/details/occupation_code".into(), "required".into())));
        let v = json!({
            "claim_id": "T-5", "county": "changxing", "kind": "apprenticeship", "event_date": "2020-06-15",
            "applicant": {"id_number": "330522199005060495", "name": "李四", "employer": {"credit_code": "91330522MA5000188J", "name": "E"}},
            "details": {"training_year": 2020, "stage": "enrolment"}
        });
        assert_eq!(fields(&v), [("/applicant/employer/industry_code".to_string(), "required".to_string())]);
    }
}
