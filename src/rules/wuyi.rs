//! Wuyi 武义县, 武人社〔2020〕21号 (RULES.md §3).

use chrono::NaiveDate;
use rust_decimal::Decimal;

use super::{base_eligibility, grant, Ctx, Grant, PersonScope, Reason, ReasonCode};
use crate::domain::{
    ApprenticeshipEmployeeDetails, ApprenticeshipStudentDetails, Details, Level, OnlineMode, OnlineTrainingDetails,
    Payee, QualificationTrainingDetails, WuyiProjectTrainingDetails, WuyiSafetyTrainingDetails,
};
use crate::policy::{WuyiRules, WyOnline};

pub(crate) fn assess(ctx: &mut Ctx, r: &WuyiRules) -> Option<Grant> {
    let day = ctx.day();
    let claim = ctx.claim;
    // R-PRIOR (I-18): training begun before publication keeps the earlier standard.
    let start = match &claim.details {
        Details::Qualification(QualificationTrainingDetails { training_start_date, .. })
        | Details::WuyiProject(WuyiProjectTrainingDetails { training_start_date, .. })
        | Details::ApprenticeshipEmployee(ApprenticeshipEmployeeDetails { training_start_date, .. })
        | Details::ApprenticeshipStudent(ApprenticeshipStudentDetails { training_start_date, .. })
        | Details::WuyiSafety(WuyiSafetyTrainingDetails { training_start_date, .. }) => *training_start_date,
        _ => None,
    };
    if let Some(start) = start {
        if start < *r.prior_standard_before.at(day) {
            ctx.reject(ReasonCode::PriorStandardApplies, &r.prior_standard_before.clause);
        }
    }
    if claim.applicant.is_some() {
        base_eligibility(ctx);
    }
    match &claim.details {
        Details::Qualification(d) => qualification_training(ctx, r, d),
        Details::WuyiProject(d) => project_training(ctx, r, d),
        Details::ApprenticeshipEmployee(d) => apprenticeship_employee(ctx, r, d),
        Details::ApprenticeshipStudent(d) => apprenticeship_student(ctx, r, d),
        Details::WuyiSafety(d) => safety_training(ctx, r, d),
        Details::Online(d) => online_training(ctx, r, d),
        _ => None,
    }
}

fn qualification_training(ctx: &mut Ctx, r: &WuyiRules, d: &QualificationTrainingDetails) -> Option<Grant> {
    let QualificationTrainingDetails { occupation_code, level, certificate_number, payee, .. } = d;
    let day = ctx.day();
    let p = r.qualification_training.levels.get(level)?;
    if ctx.failed() {
        return None;
    }
    let base = p.dec(day);
    ctx.step("base", base, &p.clause);
    let amount = ctx.uplifted_with_step(base);
    let key = ctx.person_key(PersonScope::OccupationLevel {
        occupation: occupation_code.as_str().to_string(),
        level: level.to_string(),
    });
    ctx.unique(key, ReasonCode::DuplicateOccupationLevel, &r.qualification_training.once_per_level.clause);
    ctx.certificate(certificate_number);
    Some(Grant { amount, payee: Some(Payee::from(*payee)), counts: None })
}

fn project_training(ctx: &mut Ctx, r: &WuyiRules, d: &WuyiProjectTrainingDetails) -> Option<Grant> {
    let WuyiProjectTrainingDetails {
        project_code,
        completion_certificate_number,
        class_hours,
        class_size,
        class_size_exception_approved,
        ..
    } = d;
    let day = ctx.day();
    let p = &r.project_training;
    let hours = Decimal::from(class_hours.get());
    if class_hours.get() < *p.min_class_hours.at(day) {
        ctx.reject(ReasonCode::BelowMinClassHours, &p.min_class_hours.clause);
    }
    if class_size.get() > *p.max_class_size.at(day) && *class_size_exception_approved != Some(true) {
        ctx.reject(ReasonCode::ClassSizeExceeded, &p.max_class_size.clause);
    }
    if ctx.failed() {
        return None;
    }
    // The uplift raises the standard: the hourly rate and its cap (I-7).
    let rate = ctx.uplifted(p.rate_per_class_hour.dec(day));
    let cap = p.cap.dec(day) * rate / p.rate_per_class_hour.dec(day);
    let gross = rate * hours;
    ctx.step_detail("base", gross, &p.rate_per_class_hour.clause, || {
        format!("{} class hours × {}", hours, rate.normalize())
    });
    let amount = ctx.cap(gross, cap, &p.cap.clause);
    ctx.unique(
        ctx.person_key(PersonScope::Project(project_code.to_string())),
        ReasonCode::DuplicateSubsidy,
        &p.once.clause,
    );
    ctx.certificate(completion_certificate_number);
    grant(amount)
}

fn apprenticeship_employee(ctx: &mut Ctx, r: &WuyiRules, d: &ApprenticeshipEmployeeDetails) -> Option<Grant> {
    let ApprenticeshipEmployeeDetails {
        training_year,
        completion_certificate,
        additional_certificate_level,
        training_cost,
        ..
    } = d;
    let day = ctx.day();
    let p = &r.apprenticeship_employee;
    if !completion_certificate {
        ctx.reject(ReasonCode::MissingCompletionCertificate, &p.completion_only.clause);
    }
    if ctx.failed() {
        return None;
    }
    let max = match additional_certificate_level {
        None => &p.completion_only,
        Some(Level::Junior | Level::SpecialAbilityJunior | Level::SpecialAbilityAdvanced) => {
            &p.with_junior_or_special_ability
        }
        Some(Level::Intermediate) => &p.with_intermediate,
        Some(_) => &p.with_senior_or_above,
    };
    let base = max.dec(day);
    ctx.step("maximum", base, &max.clause);
    let maximum = ctx.uplifted_with_step(base);
    // I-16: the maximum, or the enterprise's cost when the claim gives it.
    let amount = match training_cost {
        Some(cost) => {
            ctx.step("training_cost", cost.value(), &p.training_cost.clause);
            ctx.cap(cost.value(), maximum, &max.clause)
        }
        None => maximum,
    };
    ctx.unique(
        ctx.person_key(PersonScope::TrainingYear(training_year.to_string())),
        ReasonCode::DuplicateSubsidy,
        &p.once.clause,
    );
    grant(amount)
}

fn apprenticeship_student(ctx: &mut Ctx, r: &WuyiRules, d: &ApprenticeshipStudentDetails) -> Option<Grant> {
    let ApprenticeshipStudentDetails { training_year, monthly_allowance, months, .. } = d;
    let day = ctx.day();
    if ctx.failed() {
        return None;
    }
    let p = &r.apprenticeship_student;
    let gross = monthly_allowance.value() * Decimal::from(months.get());
    ctx.step_detail("base", gross, &p.allowance.clause, || format!("{} months × {}", months, monthly_allowance));
    let amount = ctx.cap(gross, p.yearly_cap.dec(day), &p.yearly_cap.clause);
    ctx.unique(
        ctx.person_key(PersonScope::TrainingYear(training_year.to_string())),
        ReasonCode::DuplicateSubsidy,
        &p.once.clause,
    );
    grant(amount)
}

fn safety_training(ctx: &mut Ctx, r: &WuyiRules, d: &WuyiSafetyTrainingDetails) -> Option<Grant> {
    let WuyiSafetyTrainingDetails { certificate_number, fee_paid, approved_fee_standard, trained_in_county, .. } = d;
    if !*trained_in_county {
        ctx.reject(ReasonCode::NotTrainedInCounty, &r.safety_training.trained_in_county.clause);
    }
    if ctx.failed() {
        return None;
    }
    let clause = &r.safety_training.fee.clause;
    ctx.step("fee_paid", fee_paid.value(), clause);
    let standard = approved_fee_standard.value();
    let amount = ctx.cap(fee_paid.value(), standard, clause);
    ctx.certificate(certificate_number);
    grant(amount)
}

fn online_training(ctx: &mut Ctx, r: &WuyiRules, d: &OnlineTrainingDetails) -> Option<Grant> {
    let OnlineTrainingDetails { period_id, filing_reference, mode, trainees, days, invoice_amount, .. } = d;
    let day = ctx.day();
    let claim = ctx.claim;
    let p = &r.online_training;
    if filing_reference.is_none() {
        ctx.reject(ReasonCode::NotFiled, &p.filing.clause);
    }
    let (from, to) = (*p.window_from.at(day), *p.window_to.at(day));
    let outside: Vec<_> = days.iter().map(|d| d.date).filter(|d| *d < from || *d > to).collect();
    if !outside.is_empty() || day > to {
        let mut reason = Reason::new(ReasonCode::OutsideEpidemicWindow, &p.window_from.clause);
        reason.days = (!outside.is_empty()).then_some(outside);
        ctx.rejections.push(reason);
    }
    let min = Decimal::from(*p.min_daily_class_hours.at(day));
    let short: Vec<_> = days.iter().filter(|d| d.class_hours.get() < min).map(|d| d.date).collect();
    if !short.is_empty() {
        let mut reason = Reason::new(ReasonCode::TrainingTooShort, &p.min_daily_class_hours.clause);
        reason.days = Some(short);
        ctx.rejections.push(reason);
    }
    if ctx.failed() {
        return None;
    }
    let period_cap = p.period_cap.dec(day);
    let standard = match mode {
        OnlineMode::SelfProduced => self_produced(ctx, p, d, day),
        OnlineMode::PlatformPurchase => {
            let invoice = invoice_amount.map(|m| m.value()).unwrap_or_default();
            let gross = invoice * p.platform_rate.dec(day);
            ctx.step_detail("base", gross, &p.platform_rate.clause, || {
                format!("invoice {} × {}", invoice.normalize(), p.platform_rate.dec(day).normalize())
            });
            Fraction::whole(gross)
        }
    };
    // The period's cap, on the value divided once: the cap, or the fraction.
    let value = standard.value();
    let capped = ctx.cap(value, period_cap, &p.period_cap.clause);
    let standard = if capped < value { Fraction::whole(capped) } else { standard };
    // I-10: the trainee proration applies after the cap.
    let full = Decimal::from(*p.full_trainees.at(day));
    let ratio = (Decimal::from(trainees.get()) / full).min(Decimal::ONE);
    let amount = if ratio < Decimal::ONE {
        let v = standard.times(Decimal::from(trainees.get()), full).value();
        ctx.adjust(Reason::new(ReasonCode::ProratedByTrainees, &p.full_trainees.clause).ratio(ratio));
        ctx.step_detail("prorated_by_trainees", v, &p.full_trainees.clause, || format!("× {trainees} / {full}"));
        v
    } else {
        standard.value()
    };
    let org = claim.organization.as_ref().map(|o| o.credit_code.as_str()).unwrap_or("-");
    let key = ctx.natural_key(&[org, period_id.as_str()]);
    ctx.unique(key, ReasonCode::DuplicateSubsidy, &p.once.clause);
    grant(amount)
}

/// An amount kept as a fraction until it is read: a quotient that does not
/// terminate (15.35 / 15.36) would be cut at 28 digits, and a later product
/// (the trainees' share) could then turn an exact half cent into one just
/// below it, which rounds the other way.
#[derive(Debug, Clone, Copy)]
struct Fraction {
    num: Decimal,
    den: Decimal,
}

impl Fraction {
    fn whole(value: Decimal) -> Self {
        Self { num: value, den: Decimal::ONE }
    }
    /// × `num` / `den`, still undivided.
    fn times(self, num: Decimal, den: Decimal) -> Self {
        Self { num: self.num * num, den: self.den * den }
    }
    /// The one division (`den` is never zero: hours above zero times
    /// `full_trainees`, which the policy's checks keep above zero).
    fn value(self) -> Decimal {
        self.num / self.den
    }
}

/// WY §4(3), courseware of its own: each day's hours at the rate, each day
/// capped, less repeated courseware in proportion (capped for the period by
/// the caller).
fn self_produced(ctx: &mut Ctx, p: &WyOnline, d: &OnlineTrainingDetails, day: NaiveDate) -> Fraction {
    let OnlineTrainingDetails { days, repeated_hours, .. } = d;
    let rate = p.rate_per_class_hour.dec(day);
    let daily_cap = p.daily_cap.dec(day);
    let mut gross = Decimal::ZERO;
    let mut capped_days = Vec::new();
    for d in days.iter() {
        let v = rate * d.class_hours.get();
        if v > daily_cap {
            capped_days.push(d.date);
        }
        gross += v.min(daily_cap);
    }
    ctx.step_detail("base", gross, &p.rate_per_class_hour.clause, || {
        format!("{} days, each min(hours × {}, {})", days.len(), rate.normalize(), daily_cap.normalize())
    });
    if !capped_days.is_empty() {
        let mut reason = Reason::new(ReasonCode::CappedAtMaximum, &p.daily_cap.clause).cap(daily_cap);
        reason.days = Some(capped_days);
        ctx.adjust(reason);
    }
    let total: Decimal = days.iter().map(|d| d.class_hours.get()).sum();
    let repeated_hours = repeated_hours.unwrap_or_default().get();
    let mut gross = Fraction::whole(gross);
    if repeated_hours > Decimal::ZERO && total > Decimal::ZERO {
        let kept = total - repeated_hours;
        gross = gross.times(kept, total);
        ctx.adjust(
            Reason::new(ReasonCode::RepeatedCoursewareDeducted, &p.repeated_courseware.clause).ratio(kept / total),
        );
        ctx.step_detail("repeated_courseware_deducted", gross.value(), &p.repeated_courseware.clause, || {
            format!("× ({total} − {repeated_hours}) / {total}")
        });
    }
    gross
}
