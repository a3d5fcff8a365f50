//! Codes and enumerations of the claim (API.md §3).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::read::{keep, string_at};
use super::{FieldError, FromJson};

macro_rules! string_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $s:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vm])* #[serde(rename = $s)] $variant),+ }
        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str { match self { $($name::$variant => $s),+ } }
            pub fn parse(s: &str) -> Option<Self> { match s { $($s => Some($name::$variant),)+ _ => None } }
        }
        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result { f.write_str(self.as_str()) }
        }
        impl FromJson for $name {
            fn from_json<J: crate::domain::Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self> {
                let value = string_at(v, at).and_then(|s| {
                    Self::parse(s).ok_or_else(|| {
                        let names: Vec<&str> = Self::ALL.iter().map(|x| x.as_str()).collect();
                        FieldError::new(at, "invalid_value", format!("must be one of: {}", names.join(", ")))
                    })
                });
                keep(value, errs)
            }
        }
    };
}

string_enum!(
    /// The two counties whose plans the service applies.
    County { Wuyi = "wuyi", Changxing = "changxing" }
);

string_enum!(
    /// Every kind of subsidy of both documents (RULES.md §3, §4).
    Kind {
        QualificationTraining = "qualification_training",
        ProjectTraining = "project_training",
        ApprenticeshipEmployee = "apprenticeship_employee",
        ApprenticeshipStudent = "apprenticeship_student",
        SafetyTraining = "safety_training",
        OnlineTraining = "online_training",
        InstitutionInvestment = "institution_investment",
        VocationalSchoolSenior = "vocational_school_senior",
        CooperativeEnrollment = "cooperative_enrollment",
        StudentLivingAllowance = "student_living_allowance",
        KeyGroupTraining = "key_group_training",
        VeteranTraining = "veteran_training",
        TrainingLivingAllowance = "training_living_allowance",
        EntrepreneurshipTraining = "entrepreneurship_training",
        SkillUpgrade = "skill_upgrade",
        Apprenticeship = "apprenticeship",
        CraftsmanAward = "craftsman_award",
        MasterStudioAward = "master_studio_award",
        SkillContestFunding = "skill_contest_funding",
    }
);

string_enum!(
    /// Certificate levels.
    Level {
        Junior = "junior",
        Intermediate = "intermediate",
        Senior = "senior",
        Technician = "technician",
        SeniorTechnician = "senior_technician",
        SpecialAbilityJunior = "special_ability_junior",
        SpecialAbilityAdvanced = "special_ability_advanced",
    }
);

string_enum!(
    /// Groups a person may belong to (API.md §3); only what the claim says counts.
    Group {
        EnterpriseEmployee = "enterprise_employee",
        RuralTransferWorker = "rural_transfer_worker",
        MigrantWorker = "migrant_worker",
        SchoolLeaver = "school_leaver",
        Rural = "rural",
        Unemployed = "unemployed",
        Veteran = "veteran",
        EmploymentDifficulty = "employment_difficulty",
        Disabled = "disabled",
        Graduate = "graduate",
        ProfessionalFarmer = "professional_farmer",
        LowIncomeHousehold = "low_income_household",
        LabourCooperationBase = "labour_cooperation_base",
        Dibao = "dibao",
        DibaoMarginal = "dibao_marginal",
        ExpenditurePoverty = "expenditure_poverty",
        ExtremePovertySupport = "extreme_poverty_support",
        MartyrChild = "martyr_child",
    }
);

string_enum!(
    /// Who is paid.
    Payee { Person = "person", Institution = "institution", Enterprise = "enterprise", School = "school", Organization = "organization", Student = "student" }
);

string_enum!(
    /// Who a qualification-training subsidy is paid to (WY §4(1)).
    QualificationPayee { Person = "person", Institution = "institution", Enterprise = "enterprise" }
);

impl From<QualificationPayee> for Payee {
    fn from(p: QualificationPayee) -> Self {
        match p {
            QualificationPayee::Person => Payee::Person,
            QualificationPayee::Institution => Payee::Institution,
            QualificationPayee::Enterprise => Payee::Enterprise,
        }
    }
}

string_enum!(CertificateType { SafetyTraining = "safety_training", SpecialOperation = "special_operation", SpecialEquipment = "special_equipment" });
string_enum!(SafetyTrainingType { New = "new", Renewal = "renewal" });
string_enum!(OnlineMode { SelfProduced = "self_produced", PlatformPurchase = "platform_purchase" });
string_enum!(InvestmentCategory { ShortageCourse = "shortage_course", Equipment = "equipment", InformationSystem = "information_system" });
string_enum!(Programme { FiveYearSenior = "five_year_senior", SixYearPreparatoryTechnician = "six_year_preparatory_technician" });
string_enum!(ApprenticeshipStage { Enrolment = "enrolment", Completion = "completion" });
string_enum!(CraftsmanTitle { Craftsman = "craftsman", GreatCraftsman = "great_craftsman", MasterCraftsman = "master_craftsman", GoldenCradle = "golden_cradle" });
string_enum!(StudioLevel { National = "national", Provincial = "provincial", Municipal = "municipal" });
string_enum!(ContestLevel { County = "county", Municipal = "municipal" });

pub(super) const USCC_CHARS: &[u8; 31] = b"0123456789ABCDEFGHJKLMNPQRTUWXY";
const USCC_WEIGHTS: [u32; 17] = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28];

/// Unified social credit code, GB 32100-2015 (18 characters, check character last).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct CreditCode(String);

impl CreditCode {
    pub fn parse(s: &str, field: &str) -> Result<Self, FieldError> {
        let s = s.to_ascii_uppercase();
        let b = s.as_bytes();
        let idx = |c: &u8| USCC_CHARS.iter().position(|x| x == c);
        if b.len() != 18 || b.iter().any(|c| idx(c).is_none()) {
            return Err(FieldError::new(
                field,
                "invalid_format",
                "a credit code is 18 characters of 0-9 and A-Y without I, O, S, V, Z",
            ));
        }
        let sum: usize = b[..17].iter().zip(USCC_WEIGHTS).map(|(c, w)| idx(c).unwrap_or(0) * w as usize).sum();
        let check = (31 - sum % 31) % 31;
        if USCC_CHARS[check] != b[17] {
            return Err(FieldError::new(field, "invalid_checksum", "the check character is wrong"));
        }
        Ok(Self(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Occupation code of the national occupational classification, `D-DD-DD-DD`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct OccupationCode(String);

impl OccupationCode {
    pub fn parse(s: &str, field: &str) -> Result<Self, FieldError> {
        let b = s.as_bytes();
        let ok = b.len() == 10
            && b.iter().enumerate().all(|(i, c)| if [1, 4, 7].contains(&i) { *c == b'-' } else { c.is_ascii_digit() });
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(FieldError::new(field, "invalid_format", "an occupation code looks like 6-31-01-03"))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Major group 6, 生产制造及有关人员 (I-11).
    pub fn is_manufacturing(&self) -> bool {
        self.0.starts_with('6')
    }
}

/// Industry code, GB/T 4754: section letter then up to 4 digits (`C3311`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct IndustryCode(String);

impl IndustryCode {
    pub fn parse(s: &str, field: &str) -> Result<Self, FieldError> {
        let b = s.as_bytes();
        let ok =
            !b.is_empty() && b.len() <= 5 && (b'A'..=b'T').contains(&b[0]) && b[1..].iter().all(u8::is_ascii_digit);
        if ok {
            Ok(Self(s.to_string()))
        } else {
            Err(FieldError::new(
                field,
                "invalid_format",
                "an industry code is a section letter A-T and up to 4 digits, e.g. C3311",
            ))
        }
    }

    pub fn section(&self) -> char {
        self.0.as_bytes()[0] as char
    }
}

/// Caller-chosen claim id: 1..64 of `A-Z a-z 0-9 . _ : -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct ClaimId(String);

impl ClaimId {
    pub fn parse(s: &str, field: &str) -> Result<Self, FieldError> {
        let ok = !s.is_empty() && s.len() <= 64 && s.bytes().all(|c| c.is_ascii_alphanumeric() || b"._:-".contains(&c));
        if !ok {
            return Err(FieldError::new(field, "invalid_format", "a claim id is 1..64 of A-Z a-z 0-9 . _ : -"));
        }
        Ok(Self(s.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Whether 18 consecutive characters of `s` are a resident ID number (a real
/// birth date and the right check character).
pub(crate) fn holds_id_number(s: &str) -> bool {
    s.as_bytes().windows(18).any(|w| {
        w[..17].iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(w).is_ok_and(|w| super::IdNumber::parse(w, "").is_ok())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credit_codes_of_the_golden_cases_are_valid() {
        for c in ["91330723MA00000156", "91330522MA5000188J", "91330723MA0000090Y", "91330522MA500025X6"] {
            assert!(CreditCode::parse(c, "").is_ok(), "{c}");
        }
        assert_eq!(CreditCode::parse("91330723MA00000157", "").unwrap_err().code, "invalid_checksum");
        assert_eq!(CreditCode::parse("91330723MA0000015", "").unwrap_err().code, "invalid_format");
        assert_eq!(CreditCode::parse("91330723MA0000I156", "").unwrap_err().code, "invalid_format");
    }

    #[test]
    fn occupation_industry_and_claim_id_shapes() {
        assert!(OccupationCode::parse("6-31-01-03", "").unwrap().is_manufacturing());
        assert!(!OccupationCode::parse("4-07-05-01", "").unwrap().is_manufacturing());
        assert!(OccupationCode::parse("6-31-01-3", "").is_err());
        assert!(OccupationCode::parse("6-31-0103x", "").is_err());
        assert_eq!(IndustryCode::parse("C3311", "").unwrap().section(), 'C');
        assert!(IndustryCode::parse("C", "").is_ok());
        assert!(IndustryCode::parse("C33111", "").is_err());
        assert!(IndustryCode::parse("c3311", "").is_err());
        assert!(ClaimId::parse(&"a".repeat(64), "").is_ok());
        assert!(ClaimId::parse(&"a".repeat(65), "").is_err());
        assert!(ClaimId::parse("", "").is_err());
        assert!(ClaimId::parse("a/b", "").is_err());
        // An ID number anywhere in it, in either case of its check character,
        // is found; digits that are not one (a wrong check character, no real
        // birth date) are not.
        for id in ["330723199005061233", "WY-330723199005061233-1", "33072319900506002x", "A:33072319900506002X"] {
            assert!(holds_id_number(id), "{id}");
        }
        for other in ["330723199005061234", "WY-2020-PX-000123", "330723199013061233", "123456789012345678901234"] {
            assert!(!holds_id_number(other), "{other}");
        }
    }
}

#[cfg(test)]
mod naming {
    use super::*;

    /// The wire names, the parser and the OpenAPI schema all use the same strings.
    #[test]
    fn every_enum_value_serializes_as_its_wire_name() {
        fn check<T: Serialize + Copy>(all: &[T], name: fn(T) -> &'static str) {
            for v in all {
                assert_eq!(serde_json::to_value(v).unwrap(), serde_json::json!(name(*v)));
            }
        }
        check(County::ALL, County::as_str);
        check(Kind::ALL, Kind::as_str);
        check(Level::ALL, Level::as_str);
        check(Group::ALL, Group::as_str);
        check(Payee::ALL, Payee::as_str);
        check(Programme::ALL, Programme::as_str);
        check(CraftsmanTitle::ALL, CraftsmanTitle::as_str);
    }
}
