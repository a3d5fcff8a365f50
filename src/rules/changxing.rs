//! Changxing 长兴县, 长政办发〔2020〕7号 (RULES.md §4).

use chrono::{Months, NaiveDate};
use rust_decimal::Decimal;

use super::{base_eligibility, grant, is_4050, ApprenticePart, Ctx, Grant, LedgerKey, PersonScope, Reason, ReasonCode};
use crate::domain::{
    ApprenticeshipDetails, ApprenticeshipStage, ChangxingProjectTrainingDetails, ChangxingSafetyTrainingDetails,
    CooperativeEnrollmentDetails, CraftsmanAwardDetails, CraftsmanTitle, Details, EntrepreneurshipTrainingDetails,
    Group, InstitutionInvestmentDetails, KeyGroupTrainingDetails, MasterStudioAwardDetails, Payee, Programme,
    SafetyTrainingType, SkillContestFundingDetails, SkillUpgradeDetails, StudentLivingAllowanceDetails,
    TrainingLivingAllowanceDetails, VeteranTrainingDetails, VocationalSchoolSeniorDetails,
};
use crate::policy::ChangxingRules;

/// `end` is at least `months` calendar months after `start` (I-14): the same
/// day of the month, or that month's last day where it has no such day.
fn at_least_months(start: NaiveDate, end: NaiveDate, months: u32) -> bool {
    start.checked_add_months(Months::new(months)).is_some_and(|due| end >= due)
}

pub(crate) fn assess(ctx: &mut Ctx, r: &ChangxingRules) -> Option<Grant> {
    let claim = ctx.claim;
    let person_level = matches!(
        claim.details,
        Details::KeyGroupTraining(_)
            | Details::VeteranTraining(_)
            | Details::TrainingLivingAllowance(_)
            | Details::ChangxingProject(_)
            | Details::ChangxingSafety(_)
            | Details::Entrepreneurship(_)
            | Details::SkillUpgrade(_)
            | Details::Apprenticeship(_)
    );
    if person_level {
        base_eligibility(ctx);
    }
    match &claim.details {
        Details::InstitutionInvestment(d) => institution_investment(ctx, r, d),
        Details::VocationalSchoolSenior(d) => vocational_school_senior(ctx, r, d),
        Details::CooperativeEnrollment(d) => cooperative_enrollment(ctx, r, d),
        Details::StudentLivingAllowance(d) => student_living_allowance(ctx, r, d),
        Details::KeyGroupTraining(d) => key_group_training(ctx, r, d),
        Details::VeteranTraining(d) => veteran_training(ctx, r, d),
        Details::TrainingLivingAllowance(d) => training_living_allowance(ctx, r, d),
        Details::ChangxingProject(d) => project_training(ctx, r, d),
        Details::ChangxingSafety(d) => safety_training(ctx, r, d),
        Details::Entrepreneurship(d) => entrepreneurship_training(ctx, r, d),
        Details::SkillUpgrade(d) => skill_upgrade(ctx, r, d),
        Details::Apprenticeship(d) => apprenticeship(ctx, r, d),
        Details::CraftsmanAward(d) => craftsman_award(ctx, r, d),
        Details::MasterStudioAward(d) => master_studio_award(ctx, r, d),
        Details::SkillContestFunding(d) => skill_contest_funding(ctx, r, d),
        _ => None,
    }
}

fn institution_investment(ctx: &mut Ctx, r: &ChangxingRules, d: &InstitutionInvestmentDetails) -> Option<Grant> {
    let InstitutionInvestmentDetails { investment_amount, .. } = d;
    let day = ctx.day();
    let claim = ctx.claim;
    let p = &r.institution_investment;
    let gross = investment_amount.value() * p.rate.dec(day);
    ctx.step_detail("base", gross, &p.rate.clause, || {
        format!("{} × {}", investment_amount, p.rate.dec(day).normalize())
    });
    let org = claim.organization.as_ref().map(|o| o.credit_code.as_str()).unwrap_or("-");
    let key = LedgerKey::Cumulative { county: claim.county, kind: claim.kind, organization: org.to_string() };
    let cap = p.cumulative_cap.dec(day);
    let used = ctx.total(&key);
    // What is left, in whole cents (a total recorded before grants
    // were rounded into it may carry a fraction of a cent).
    let remaining = (cap - used).max(Decimal::ZERO).round_dp_with_strategy(2, rust_decimal::RoundingStrategy::ToZero);
    let amount = if remaining.is_zero() {
        let r = Reason::new(ReasonCode::InstitutionCapReached, &p.cumulative_cap.clause)
            .cap(cap)
            .used_limit(super::fmt2(used), super::fmt2(cap));
        ctx.ledger_rejections.push(r);
        gross
    } else if gross > remaining {
        let r = Reason::new(ReasonCode::CappedByCumulativeLimit, &p.cumulative_cap.clause)
            .cap(cap)
            .used_limit(super::fmt2(used), super::fmt2(cap));
        ctx.adjust(r);
        ctx.step("cumulative_cap", remaining, &p.cumulative_cap.clause);
        remaining
    } else {
        gross
    };
    ctx.effects.totals.push((key, amount));
    grant(amount)
}

fn vocational_school_senior(ctx: &mut Ctx, r: &ChangxingRules, d: &VocationalSchoolSeniorDetails) -> Option<Grant> {
    let VocationalSchoolSeniorDetails { school_year, programme, in_senior_stage } = d;
    let day = ctx.day();
    let eligible =
        matches!(programme, Programme::FiveYearSenior | Programme::SixYearPreparatoryTechnician) && *in_senior_stage;
    if !eligible {
        ctx.reject(ReasonCode::NotEligibleStudent, &r.vocational_school_senior.amount.clause);
        return None;
    }
    let amount = r.vocational_school_senior.amount.dec(day);
    ctx.step("base", amount, &r.vocational_school_senior.amount.clause);
    ctx.unique(
        ctx.person_key(PersonScope::SchoolYear(school_year.to_string())),
        ReasonCode::DuplicateSubsidy,
        &r.vocational_school_senior.once.clause,
    );
    grant(amount)
}

fn cooperative_enrollment(ctx: &mut Ctx, r: &ChangxingRules, d: &CooperativeEnrollmentDetails) -> Option<Grant> {
    let CooperativeEnrollmentDetails { school_year, standard_amount, .. } = d;
    let day = ctx.day();
    let p = &r.cooperative_enrollment;
    let v = standard_amount.value();
    if v < p.min.dec(day) || v > p.max.dec(day) {
        ctx.reject(ReasonCode::AmountOutOfRange, &p.min.clause);
        return None;
    }
    ctx.step("standard", v, &p.min.clause);
    ctx.unique(
        ctx.person_key(PersonScope::SchoolYear(school_year.to_string())),
        ReasonCode::DuplicateSubsidy,
        &p.once.clause,
    );
    grant(v)
}

fn student_living_allowance(ctx: &mut Ctx, r: &ChangxingRules, d: &StudentLivingAllowanceDetails) -> Option<Grant> {
    let StudentLivingAllowanceDetails { school_year, cooperative_enrollment } = d;
    let day = ctx.day();
    let p = &r.student_living_allowance;
    let county_student = ctx.applicant().is_some_and(|a| a.is_local_hukou()) && ctx.in_any(p.groups.at(day));
    if !cooperative_enrollment && !county_student {
        ctx.reject(ReasonCode::NotEligibleStudent, &p.groups.clause);
        return None;
    }
    let amount = p.amount.dec(day);
    ctx.step("base", amount, &p.amount.clause);
    ctx.unique(
        ctx.person_key(PersonScope::SchoolYear(school_year.to_string())),
        ReasonCode::DuplicateSubsidy,
        &p.once.clause,
    );
    grant(amount)
}

fn key_group_training(ctx: &mut Ctx, r: &ChangxingRules, d: &KeyGroupTrainingDetails) -> Option<Grant> {
    let KeyGroupTrainingDetails { occupation_code, level, certificate_number, fee } = d;
    let day = ctx.day();
    let p = &r.key_group_training;
    let key_groups = ctx.policy.common.eligibility.key_groups.at(day).clone();
    if !ctx.in_any(&key_groups) {
        ctx.reject(ReasonCode::NotKeyTrainingGroup, &ctx.policy.common.eligibility.key_groups.clause.clone());
    }
    let cap_param = p.caps.get(level);
    if cap_param.is_none() {
        ctx.reject(ReasonCode::LevelNotSubsidized, &p.levels.clause);
    }
    let cap_param = cap_param?;
    if ctx.failed() {
        return None;
    }
    // I-7: uplifts add up and raise the cap, never the fee.
    let standard = cap_param.dec(day);
    // Each uplift applied, in the order of its reason.
    let mut uplifts = Vec::new();
    let a = ctx.applicant()?;
    if a.in_group(Group::LabourCooperationBase) && a.is_employed_in_county() {
        let u = p.labour_cooperation_uplift.dec(day);
        uplifts.push(u);
        ctx.adjust(Reason::new(ReasonCode::UpliftLabourCooperation, &p.labour_cooperation_uplift.clause).uplift(u));
    }
    if let Some((u, clause)) = ctx.trade_friction_uplift() {
        uplifts.push(u);
        ctx.adjust(Reason::new(ReasonCode::UpliftTradeFriction, &clause).uplift(u));
    }
    let cap = standard * (Decimal::ONE + uplifts.iter().sum::<Decimal>());
    ctx.step("fee", fee.value(), &p.fee.clause);
    if !uplifts.is_empty() {
        // As I-7 writes it, each uplift as its reason shows it: 1500 × (1 + 1.00 + 0.30).
        ctx.step_detail("raised_cap", cap, &p.raised_cap.clause, || {
            let terms: String = uplifts.iter().map(|u| format!(" + {u:.2}")).collect();
            format!("{} × (1{terms})", standard.normalize())
        });
    }
    let amount = ctx.cap(fee.value(), cap, &cap_param.clause);
    ctx.unique(
        ctx.person_key(PersonScope::OccupationLevel {
            occupation: occupation_code.as_str().to_string(),
            level: level.to_string(),
        }),
        ReasonCode::DuplicateOccupationLevel,
        &p.once_per_level.clause,
    );
    ctx.certificate(certificate_number);
    grant(amount)
}

fn veteran_training(ctx: &mut Ctx, r: &ChangxingRules, d: &VeteranTrainingDetails) -> Option<Grant> {
    let VeteranTrainingDetails { occupation_code, project_code, level, start_date, end_date, fee } = d;
    let day = ctx.day();
    let p = &r.veteran_training;
    if !ctx.in_any(&[Group::Veteran]) {
        ctx.reject(ReasonCode::NotVeteran, &p.veterans_only.clause);
    }
    if !at_least_months(*start_date, *end_date, *p.min_months.at(day)) {
        ctx.reject(ReasonCode::TrainingTooShort, &p.min_months.clause);
    }
    if ctx.failed() {
        return None;
    }
    ctx.step("fee", fee.value(), &p.fee.clause);
    let amount = ctx.cap(fee.value(), p.cap.dec(day), &p.cap.clause);
    let lvl = level.map_or("none", |l| l.as_str());
    match (occupation_code, project_code) {
        (Some(o), _) => ctx.unique(
            ctx.person_key(PersonScope::OccupationLevel { occupation: o.as_str().to_string(), level: lvl.to_string() }),
            ReasonCode::DuplicateOccupationLevel,
            &p.once_per_level.clause,
        ),
        (None, Some(pc)) => ctx.unique(
            ctx.person_key(PersonScope::ProjectLevel { project: pc.to_string(), level: lvl.to_string() }),
            ReasonCode::DuplicateSubsidy,
            &p.once_per_project.clause,
        ),
        (None, None) => {}
    }
    grant(amount)
}

fn training_living_allowance(ctx: &mut Ctx, r: &ChangxingRules, d: &TrainingLivingAllowanceDetails) -> Option<Grant> {
    let TrainingLivingAllowanceDetails { training_reference, start_date, training_days } = d;
    let day = ctx.day();
    let p = &r.training_living_allowance;
    let rural_school_leaver = ctx.in_any(&[Group::SchoolLeaver]) && ctx.in_any(&[Group::Rural]);
    if !(is_4050(ctx, *start_date) || ctx.in_any(p.groups.at(day)) || rural_school_leaver) {
        ctx.reject(ReasonCode::NotLivingAllowanceGroup, &p.groups.clause);
    }
    if ctx.failed() {
        return None;
    }
    let amount = p.per_day.dec(day) * Decimal::from(training_days.get());
    ctx.step_detail("base", amount, &p.per_day.clause, || {
        format!("{} days × {}", training_days, p.per_day.dec(day).normalize())
    });
    ctx.unique(
        ctx.person_key(PersonScope::Training(training_reference.to_string())),
        ReasonCode::DuplicateSubsidy,
        &p.once.clause,
    );
    grant(amount)
}

fn project_training(ctx: &mut Ctx, r: &ChangxingRules, d: &ChangxingProjectTrainingDetails) -> Option<Grant> {
    let ChangxingProjectTrainingDetails { project_code, completion_certificate_number, fee, .. } = d;
    let day = ctx.day();
    if ctx.failed() {
        return None;
    }
    let p = &r.project_training;
    let fee = fee.value();
    ctx.step("fee", fee, &p.fee.clause);
    let amount = ctx.cap(fee, p.cap.dec(day), &p.cap.clause);
    ctx.unique(
        ctx.person_key(PersonScope::Project(project_code.to_string())),
        ReasonCode::DuplicateSubsidy,
        &p.once.clause,
    );
    ctx.certificate(completion_certificate_number);
    grant(amount)
}

fn safety_training(ctx: &mut Ctx, r: &ChangxingRules, d: &ChangxingSafetyTrainingDetails) -> Option<Grant> {
    let ChangxingSafetyTrainingDetails { certificate_number, fee_paid, training_type, .. } = d;
    let day = ctx.day();
    if ctx.failed() {
        return None;
    }
    let p = &r.safety_training;
    let (cap, tt) = match training_type {
        SafetyTrainingType::Renewal => (&p.renewal_cap, "renewal"),
        SafetyTrainingType::New => (&p.new_cap, "new"),
    };
    ctx.step("fee", fee_paid.value(), &p.fee.clause);
    let amount = ctx.cap(fee_paid.value(), cap.dec(day), &cap.clause);
    // A renewal may carry the original certificate's number once (RULES §8).
    ctx.certificate(&format!("{}:{tt}", certificate_number));
    grant(amount)
}

fn entrepreneurship_training(ctx: &mut Ctx, r: &ChangxingRules, d: &EntrepreneurshipTrainingDetails) -> Option<Grant> {
    let EntrepreneurshipTrainingDetails { training_reference, fee } = d;
    let day = ctx.day();
    if ctx.failed() {
        return None;
    }
    let p = &r.entrepreneurship_training;
    ctx.step("fee", fee.value(), &p.fee.clause);
    let amount = ctx.cap(fee.value(), p.cap.dec(day), &p.cap.clause);
    ctx.unique(
        ctx.person_key(PersonScope::Training(training_reference.to_string())),
        ReasonCode::DuplicateSubsidy,
        &p.once.clause,
    );
    grant(amount)
}

fn skill_upgrade(ctx: &mut Ctx, r: &ChangxingRules, d: &SkillUpgradeDetails) -> Option<Grant> {
    let SkillUpgradeDetails { occupation_code, level, certificate_number } = d;
    let day = ctx.day();
    let p = &r.skill_upgrade;
    if day < *p.certificates_from.at(day) {
        ctx.reject(ReasonCode::CertificateBeforeEligibleDate, &p.certificates_from.clause);
    }
    if ctx.applicant().is_some_and(|a| a.is_public_institution_staff()) {
        ctx.reject(ReasonCode::PublicInstitutionStaffExcluded, &p.public_institution_staff.clause);
    }
    let level_param = if *level == crate::domain::Level::SeniorTechnician && occupation_code.is_manufacturing() {
        Some(&p.manufacturing_senior_technician)
    } else {
        p.levels.get(level)
    };
    if level_param.is_none() {
        ctx.reject(ReasonCode::LevelNotSubsidized, &p.levels_listed.clause);
    }
    if ctx.failed() {
        return None;
    }
    let lp = level_param?;
    let base = lp.dec(day);
    ctx.step("base", base, &lp.clause);
    let amount = ctx.uplifted_with_step(base);
    ctx.unique(
        ctx.person_key(PersonScope::OccupationLevel {
            occupation: occupation_code.as_str().to_string(),
            level: level.to_string(),
        }),
        ReasonCode::DuplicateOccupationLevel,
        &p.once_per_level.clause,
    );
    ctx.certificate(certificate_number);
    grant(amount)
}

fn apprenticeship(ctx: &mut Ctx, r: &ChangxingRules, d: &ApprenticeshipDetails) -> Option<Grant> {
    let ApprenticeshipDetails { training_year, stage, acceptance_passed } = d;
    let day = ctx.day();
    let claim = ctx.claim;
    let p = &r.apprenticeship;
    if *stage == ApprenticeshipStage::Completion && *acceptance_passed != Some(true) {
        ctx.reject(ReasonCode::AcceptanceNotPassed, &p.acceptance.clause);
    }
    if ctx.failed() {
        return None;
    }
    let section = ctx
        .applicant()
        .and_then(|a| a.employer.as_ref())
        .and_then(|e| e.industry_code.as_ref())
        .map(|i| i.section().to_string());
    let manufacturing = section.is_some_and(|s| p.manufacturing_sections.at(day).contains(&s));
    let total_param = if manufacturing { &p.manufacturing } else { &p.other };
    let total = total_param.dec(day);
    ctx.step("yearly_total", total, &total_param.clause);
    let year_key = |part| ctx.person_key(PersonScope::ApprenticeYear { year: training_year.to_string(), part });
    let completion_key = year_key(ApprenticePart::Stage(ApprenticeshipStage::Completion.as_str().to_string()));
    let stage_key = year_key(ApprenticePart::Stage(stage.as_str().to_string()));
    let count_key = year_key(ApprenticePart::Counted);
    let paid_key = LedgerKey::Tranche {
        county: claim.county,
        kind: claim.kind,
        person: ctx.person().to_string(),
        training_year: training_year.to_string(),
    };
    let amount = match stage {
        ApprenticeshipStage::Enrolment => {
            let rate = p.first_tranche_rate.dec(day);
            let v = total * rate;
            ctx.adjust(Reason::new(ReasonCode::TrancheFirst, &p.first_tranche_rate.clause).ratio(rate));
            ctx.step("tranche_first", v, &p.first_tranche_rate.clause);
            // An enrolment after a granted completion is a duplicate (RULES §8).
            if let Some(h) = ctx.holder(&completion_key) {
                let mut r = Reason::new(ReasonCode::DuplicateSubsidy, &p.once.clause);
                r.held_by = Some(h);
                ctx.ledger_rejections.push(r);
            }
            v
        }
        ApprenticeshipStage::Completion => {
            let paid = ctx.total(&paid_key);
            if paid > Decimal::ZERO {
                let v = (total - paid).max(Decimal::ZERO);
                ctx.adjust(
                    Reason::new(ReasonCode::TrancheRemainder, &p.tranche_remainder.clause)
                        .used_limit(super::fmt2(paid), super::fmt2(total)),
                );
                ctx.step_detail("tranche_remainder", v, &p.tranche_remainder.clause, || {
                    format!("{} − {} already paid", total.normalize(), paid.normalize())
                });
                v
            } else {
                total
            }
        }
    };
    ctx.unique(stage_key, ReasonCode::DuplicateSubsidy, &p.once.clause);
    ctx.effects.totals.push((paid_key, amount));
    // Once per apprentice-year: the first granted tranche counts.
    let counts = ctx.holder(&count_key).is_none();
    if counts {
        ctx.effects.keys.push(count_key);
    }
    Some(Grant { amount, payee: None, counts: Some(counts) })
}

fn craftsman_award(ctx: &mut Ctx, r: &ChangxingRules, d: &CraftsmanAwardDetails) -> Option<Grant> {
    let CraftsmanAwardDetails { title } = d;
    let day = ctx.day();
    let claim = ctx.claim;
    let p = &r.craftsman_award;
    let param = p.amounts.get(title)?;
    let amount = param.dec(day);
    ctx.step("award", amount, &param.clause);
    let (recipient, payee) = match title {
        CraftsmanTitle::GoldenCradle => (
            claim.organization.as_ref().map(|o| o.credit_code.as_str().to_string()).unwrap_or_default(),
            Payee::Organization,
        ),
        _ => (ctx.person().to_string(), Payee::Person),
    };
    ctx.unique(ctx.natural_key(&[&recipient, title.as_str()]), ReasonCode::DuplicateSubsidy, &p.once.clause);
    Some(Grant { amount, payee: Some(payee), counts: None })
}

fn master_studio_award(ctx: &mut Ctx, r: &ChangxingRules, d: &MasterStudioAwardDetails) -> Option<Grant> {
    let MasterStudioAwardDetails { studio_id, level, key_rated } = d;
    let day = ctx.day();
    let p = &r.master_studio_award;
    let param = p.amounts.get(level)?;
    let mut amount = param.dec(day);
    ctx.step("award", amount, &param.clause);
    if *key_rated {
        amount += p.key_bonus.dec(day);
        ctx.step("key_studio_bonus", amount, &p.key_bonus.clause);
    }
    ctx.unique(ctx.natural_key(&[studio_id.as_str(), level.as_str()]), ReasonCode::DuplicateSubsidy, &p.once.clause);
    grant(amount)
}

fn skill_contest_funding(ctx: &mut Ctx, r: &ChangxingRules, d: &SkillContestFundingDetails) -> Option<Grant> {
    let SkillContestFundingDetails { contest_id, occupation_code, budget, .. } = d;
    let day = ctx.day();
    let p = &r.skill_contest_funding;
    let standard = p.standard.dec(day);
    let (max, clause) = if occupation_code.is_manufacturing() {
        (p.manufacturing_max.dec(day), p.manufacturing_max.clause.clone())
    } else {
        (standard, p.standard.clause.clone())
    };
    let amount = match budget {
        None => {
            ctx.step("standard", standard, &p.standard.clause);
            standard
        }
        Some(b) => {
            ctx.step("budget", b.value(), &clause);
            let kept = b.value().max(standard);
            if kept != b.value() {
                ctx.step("standard", kept, &p.standard.clause);
            }
            ctx.cap(kept, max, &clause)
        }
    };
    ctx.unique(ctx.natural_key(&[contest_id.as_str()]), ReasonCode::DuplicateSubsidy, &p.once.clause);
    grant(amount)
}

/// CX attachment 3: a training institution not on the list gets a notice.
pub(crate) fn institution_notice(ctx: &mut Ctx) {
    let Some(inst) = ctx.claim.institution.as_ref() else {
        return;
    };
    let Some(schools) = ctx.policy.reference.schools.as_ref() else {
        return;
    };
    if !schools.entries.iter().any(|s| s.name_zh == inst.name.trim()) {
        ctx.notices.push(Reason::new(ReasonCode::InstitutionNotInDirectory, &schools.clause));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> NaiveDate {
        NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
    }

    #[test]
    fn three_calendar_months_follow_i14() {
        assert!(at_least_months(d("2020-03-01"), d("2020-06-01"), 3));
        assert!(!at_least_months(d("2020-03-01"), d("2020-05-31"), 3));
        assert!(at_least_months(d("2020-11-30"), d("2021-02-28"), 3));
        assert!(!at_least_months(d("2020-11-30"), d("2021-02-27"), 3));
        assert!(at_least_months(d("2019-11-30"), d("2020-02-29"), 3));
    }

    #[test]
    fn year_is_what_the_event_date_says() {
        use chrono::Datelike;
        assert_eq!(d("2021-01-05").year(), 2021);
    }
}
