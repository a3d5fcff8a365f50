//! The parameters of 武人社〔2020〕21号 (Wuyi), as loaded from
//! `config/policies/wuyi/policy.toml`.

use std::collections::BTreeMap;

use chrono::NaiveDate;
use serde::{Deserialize, Serialize};

use super::{Amount, Citation, Dated, Param};
use crate::domain::{Kind, Level};

/// The kinds the Wuyi rules module implements.
pub const KINDS: &[Kind] = &[
    Kind::QualificationTraining,
    Kind::ProjectTraining,
    Kind::ApprenticeshipEmployee,
    Kind::ApprenticeshipStudent,
    Kind::SafetyTraining,
    Kind::OnlineTraining,
];

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WuyiRules {
    /// R-PRIOR: training begun before the plan's publication keeps the earlier standard (I-18).
    pub prior_standard_before: Param<NaiveDate>,
    pub qualification_training: WyQualification,
    pub project_training: WyProject,
    pub apprenticeship_employee: WyApprenticeEmployee,
    pub apprenticeship_student: WyApprenticeStudent,
    pub safety_training: WySafety,
    pub online_training: WyOnline,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WyQualification {
    /// R-SAME-LEVEL: one grant per occupation and level (I-5).
    pub once_per_level: Citation,
    pub levels: BTreeMap<Level, Param<Amount>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WyProject {
    pub rate_per_class_hour: Param<Amount>,
    pub min_class_hours: Param<u32>,
    pub cap: Param<Amount>,
    pub max_class_size: Param<u32>,
    /// R-ONCE: one grant per person and project.
    pub once: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WyApprenticeEmployee {
    pub completion_only: Param<Amount>,
    pub with_junior_or_special_ability: Param<Amount>,
    pub with_intermediate: Param<Amount>,
    pub with_senior_or_above: Param<Amount>,
    /// The enterprise's training cost, when the claim gives it, capped at the maximum (I-16).
    pub training_cost: Citation,
    /// R-ONCE: one grant per apprentice and training year.
    pub once: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WyApprenticeStudent {
    pub yearly_cap: Param<Amount>,
    /// The monthly allowance times the months.
    pub allowance: Citation,
    /// R-ONCE: one grant per apprentice and training year.
    pub once: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WySafety {
    /// Only training given in the county.
    pub trained_in_county: Citation,
    /// The fee paid, capped at the approved fee standard.
    pub fee: Citation,
}

#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WyOnline {
    pub window_from: Param<NaiveDate>,
    pub window_to: Param<NaiveDate>,
    pub min_daily_class_hours: Param<u32>,
    pub rate_per_class_hour: Param<Amount>,
    pub daily_cap: Param<Amount>,
    pub period_cap: Param<Amount>,
    pub platform_rate: Param<Amount>,
    pub full_trainees: Param<u32>,
    /// Only training filed with the bureau.
    pub filing: Citation,
    /// Courseware repeated within the period is deducted pro rata.
    pub repeated_courseware: Citation,
    /// R-ONCE: one grant per enterprise and training period.
    pub once: Citation,
}

impl WuyiRules {
    /// Applies the configured end of the epidemic window (WY §4(3)).
    pub fn override_window_end(&mut self, end: NaiveDate) {
        self.online_training.window_to.values = vec![Dated { from: None, value: end }];
        self.online_training.window_to.note = Some("set by configuration: policy.epidemic_window_end".into());
    }
}
