//! The parameters of 长政办发〔2020〕7号 (Changxing), as loaded from
//! `config/policies/changxing/policy.toml`.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{Amount, Citation, Param};
use crate::domain::{CraftsmanTitle, Group, Kind, Level, StudioLevel};

/// The kinds the Changxing rules module implements.
pub const KINDS: &[Kind] = &[
    Kind::InstitutionInvestment,
    Kind::VocationalSchoolSenior,
    Kind::CooperativeEnrollment,
    Kind::StudentLivingAllowance,
    Kind::KeyGroupTraining,
    Kind::VeteranTraining,
    Kind::TrainingLivingAllowance,
    Kind::ProjectTraining,
    Kind::SafetyTraining,
    Kind::EntrepreneurshipTraining,
    Kind::SkillUpgrade,
    Kind::Apprenticeship,
    Kind::CraftsmanAward,
    Kind::MasterStudioAward,
    Kind::SkillContestFunding,
];

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChangxingRules {
    pub institution_investment: CxInvestment,
    pub vocational_school_senior: CxFixed,
    pub cooperative_enrollment: CxRange,
    pub student_living_allowance: CxStudentAllowance,
    pub key_group_training: CxKeyGroup,
    pub veteran_training: CxVeteran,
    pub training_living_allowance: CxLivingAllowance,
    pub project_training: CxCap,
    pub safety_training: CxSafety,
    pub entrepreneurship_training: CxCap,
    pub skill_upgrade: CxSkillUpgrade,
    pub apprenticeship: CxApprenticeship,
    pub craftsman_award: CxCraftsman,
    pub master_studio_award: CxStudio,
    pub skill_contest_funding: CxContest,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CxInvestment {
    pub rate: Param<Amount>,
    pub cumulative_cap: Param<Amount>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CxFixed {
    pub amount: Param<Amount>,
    /// R-ONCE: one grant per student and school year.
    pub once: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CxCap {
    pub cap: Param<Amount>,
    /// The fee paid, before the cap.
    pub fee: Citation,
    /// R-ONCE: one grant per person and training (or project).
    pub once: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CxRange {
    pub min: Param<Amount>,
    pub max: Param<Amount>,
    /// R-ONCE: one grant per student and school year.
    pub once: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CxStudentAllowance {
    pub amount: Param<Amount>,
    /// County students of these groups receive the same allowance.
    pub groups: Param<Vec<Group>>,
    /// R-ONCE: one grant per student and school year.
    pub once: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CxKeyGroup {
    /// Caps by level; a level not listed is not subsidised.
    pub caps: BTreeMap<Level, Param<Amount>>,
    pub labour_cooperation_uplift: Param<Amount>,
    /// A level without a cap is not subsidised.
    pub levels: Citation,
    /// The fee paid, before the cap.
    pub fee: Citation,
    /// The cap raised for labour cooperation and the trade-friction uplift (I-7).
    pub raised_cap: Citation,
    /// R-SAME-LEVEL: one grant per occupation and level (I-5).
    pub once_per_level: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CxVeteran {
    pub min_months: Param<u32>,
    pub cap: Param<Amount>,
    /// Only veterans.
    pub veterans_only: Citation,
    /// The fee paid, before the cap.
    pub fee: Citation,
    /// R-SAME-LEVEL: one grant per occupation and level (I-5).
    pub once_per_level: Citation,
    /// R-ONCE: one grant per project and level, when no occupation is given.
    pub once_per_project: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CxLivingAllowance {
    pub per_day: Param<Amount>,
    /// Groups eligible besides 4050 unemployed and rural school leavers.
    pub groups: Param<Vec<Group>>,
    /// R-ONCE: one allowance per person and training.
    pub once: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CxSafety {
    pub new_cap: Param<Amount>,
    pub renewal_cap: Param<Amount>,
    /// The fee paid, before the cap.
    pub fee: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CxSkillUpgrade {
    pub certificates_from: Param<NaiveDate>,
    /// Amounts by level; a level not listed is not subsidised.
    pub levels: BTreeMap<Level, Param<Amount>>,
    pub manufacturing_senior_technician: Param<Amount>,
    /// Staff of public institutions are excluded.
    pub public_institution_staff: Citation,
    /// A level without an amount is not subsidised.
    pub levels_listed: Citation,
    /// R-SAME-LEVEL: one grant per occupation and level (I-5).
    pub once_per_level: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CxApprenticeship {
    pub manufacturing: Param<Amount>,
    pub other: Param<Amount>,
    /// GB/T 4754 sections counted as manufacturing.
    pub manufacturing_sections: Param<Vec<String>>,
    pub first_tranche_rate: Param<Amount>,
    /// The completion tranche only after the acceptance is passed.
    pub acceptance: Citation,
    /// The completion tranche pays what the first did not.
    pub tranche_remainder: Citation,
    /// R-ONCE: each tranche once per apprentice and training year.
    pub once: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CxCraftsman {
    pub amounts: BTreeMap<CraftsmanTitle, Param<Amount>>,
    /// R-ONCE: one award per recipient and title (I-13).
    pub once: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CxStudio {
    pub amounts: BTreeMap<StudioLevel, Param<Amount>>,
    pub key_bonus: Param<Amount>,
    /// R-ONCE: one award per studio and level (I-13).
    pub once: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CxContest {
    pub standard: Param<Amount>,
    pub manufacturing_max: Param<Amount>,
    /// R-ONCE: one grant per contest.
    pub once: Citation,
}
