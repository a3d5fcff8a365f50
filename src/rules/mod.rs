//! Pure adjudication: `decide(claim, ledger view, policy, directory)` with no
//! I/O. Stages (RULES.md §2, §8): eligibility and static checks, all failures
//! reported together → amount (base, cap, uplift, proration) → ledger checks
//! (annual limit, duplicates, remaining cumulative cap).

mod changxing;
mod keys;
#[cfg(test)]
mod props;
mod reasons;
mod wuyi;

use std::collections::HashMap;

use chrono::{DateTime, NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use keys::{ApprenticePart, LedgerKey, PersonScope};
pub use reasons::{ReasonCode, Severity};

use crate::domain::{fmt2, Applicant, Claim, County, Group, Money, Payee};
use crate::policy::{CountyPolicy, CountyRules, KindEntry};

/// What the rules need to know of the ledger. The ledger implements it over
/// its committed state (plus a group's pending effects); tests implement it
/// with a map. A read that fails is an error, never "absent": the claim is
/// then not decided (`503 STORE_UNAVAILABLE`).
pub trait LedgerView {
    /// How many granted claims a counter holds (a person's counted grants in a year).
    fn count(&self, key: &LedgerKey) -> Result<u32, LedgerReadError>;
    /// The claim holding a unique key (certificate, same level, natural key).
    fn holder(&self, key: &LedgerKey) -> Result<Option<String>, LedgerReadError>;
    /// A running total (an institution's cumulative grants, tranches paid).
    fn total(&self, key: &LedgerKey) -> Result<Decimal, LedgerReadError>;
}

/// The ledger could not be read; nothing was decided.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("the ledger could not be read: {0}")]
pub struct LedgerReadError(pub String);

/// An empty ledger: what a claim would get with nothing recorded.
pub struct EmptyLedger;

impl LedgerView for EmptyLedger {
    fn count(&self, _: &LedgerKey) -> Result<u32, LedgerReadError> {
        Ok(0)
    }
    fn holder(&self, _: &LedgerKey) -> Result<Option<String>, LedgerReadError> {
        Ok(None)
    }
    fn total(&self, _: &LedgerKey) -> Result<Decimal, LedgerReadError> {
        // Zero: Decimal's default (a "default value" mutant is this very code).
        Ok(Default::default())
    }
}

/// A county's trade-friction directory (I-6): credit code → listed from.
#[derive(Debug, Clone, Default)]
pub struct Directory {
    pub version: String,
    pub listed: HashMap<String, NaiveDate>,
}

impl Directory {
    /// Listed on `day` (an entry counts from the date it was listed).
    pub fn is_listed(&self, credit_code: &str, day: NaiveDate) -> bool {
        self.listed.get(credit_code).is_some_and(|from| *from <= day)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Approved,
    Rejected,
    Revoked,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Approved => "approved",
            Self::Rejected => "rejected",
            Self::Revoked => "revoked",
        }
    }
}

/// One step of the calculation, citing its clause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Step {
    pub step: String,
    #[schema(value_type = String, example = "1000.00")]
    pub amount: String,
    pub clause: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// A reason on a decision, with the figures that explain it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Reason {
    pub code: ReasonCode,
    pub severity: Severity,
    pub clause: String,
    pub message_zh: String,
    pub message_en: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uplift: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ratio: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub used: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub days: Option<Vec<NaiveDate>>,
    /// The claim that already holds the key, when a duplicate is refused
    /// (left out of what an institution's key is answered when that claim is
    /// not one it may read).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub held_by: Option<String>,
}

impl Reason {
    pub fn new(code: ReasonCode, clause: &str) -> Self {
        Self {
            code,
            severity: code.severity(),
            clause: clause.to_string(),
            message_zh: code.message_zh().to_string(),
            message_en: code.message_en().to_string(),
            cap: None,
            uplift: None,
            ratio: None,
            used: None,
            limit: None,
            days: None,
            held_by: None,
        }
    }

    fn cap(mut self, d: Decimal) -> Self {
        self.cap = Some(fmt2(d));
        self
    }
    fn uplift(mut self, d: Decimal) -> Self {
        self.uplift = Some(format!("{:.2}", d));
        self
    }
    fn ratio(mut self, d: Decimal) -> Self {
        // Half away from zero, as money is rounded (`round_dp` alone would
        // round a half to even).
        let shown = d.round_dp_with_strategy(4, rust_decimal::RoundingStrategy::MidpointAwayFromZero);
        self.ratio = Some(shown.normalize().to_string());
        self
    }
    fn used_limit(mut self, used: String, limit: String) -> Self {
        self.used = Some(used);
        self.limit = Some(limit);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Usage {
    pub year: i32,
    pub used: u32,
    pub limit: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PolicyRef {
    /// The document number, e.g. 武人社〔2020〕21号.
    pub document: String,
    /// `sha256:` of the county's loaded policy data.
    pub version: String,
    /// Version of the trade-friction directory consulted.
    pub directory_version: String,
}

/// A recorded decision of the given status, for the tests of its stored and
/// answered forms.
#[cfg(test)]
pub(crate) fn sample_decision(status: &str) -> Decision {
    serde_json::from_value(serde_json::json!({
        "claim_id": "C-1", "status": status, "amount": "1000.00", "currency": "CNY", "payee": "person",
        "calculation": [{"step": "base", "amount": "1000.00", "clause": "WY §4(1)1"}],
        "reasons": [], "counted": true,
        "policy": {"document": "武人社〔2020〕21号", "version": "sha256:00", "directory_version": "sha256:11"},
        "decided_at": "2020-06-15T08:00:00.123456789Z", "recorded": true
    }))
    .expect("a decision")
}

/// The answer to a claim (API.md §4).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Decision {
    pub claim_id: String,
    pub status: Status,
    #[schema(value_type = String, example = "1300.00")]
    pub amount: String,
    pub currency: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payee: Option<Payee>,
    pub calculation: Vec<Step>,
    pub reasons: Vec<Reason>,
    /// Whether this decision took one of the person's yearly places when it
    /// was made. It is a record of the decision: a revoked decision keeps
    /// `true` and its `revocation` says the place was given back
    /// (`POST /v1/usage/query` gives the count today).
    pub counted: bool,
    /// The person's yearly usage as this decision saw it (this claim included
    /// when counted); later claims and revocations do not change it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    pub policy: PolicyRef,
    pub decided_at: DateTime<Utc>,
    pub recorded: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revocation: Option<Revocation>,
}

/// A grant withdrawn: its amount and its place in every limit were released
/// (the usage query and reports no longer count it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Revocation {
    pub reason: String,
    pub revoked_at: DateTime<Utc>,
}

/// What a granted claim holds in the ledger; a revocation releases exactly this.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// Counter incremented (the person's counted grants of a year).
    pub count: Option<LedgerKey>,
    /// Unique keys taken.
    pub keys: Vec<LedgerKey>,
    /// Running totals raised, with the amount.
    pub totals: Vec<(LedgerKey, Decimal)>,
}

pub struct Outcome {
    pub decision: Decision,
    /// Empty unless approved.
    pub effects: Effects,
    pub amount: Decimal,
}

/// What the rules found, before it is written out as a [`Decision`] (which
/// adds the claim id, the amount as text, the policy's and directory's
/// versions and the time). A replay that compares outcomes reads this and
/// builds no decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    pub status: Status,
    /// Rounded to cents; zero unless approved.
    pub amount: Decimal,
    pub payee: Option<Payee>,
    pub calculation: Vec<Step>,
    pub reasons: Vec<Reason>,
    pub counted: bool,
    pub usage: Option<Usage>,
    /// Empty unless approved.
    pub effects: Effects,
}

impl Verdict {
    /// The decision of `claim`, decided at `decided_at` under `policy` and
    /// `directory`.
    pub fn into_outcome(
        self,
        claim: &Claim,
        policy: &CountyPolicy,
        directory: &Directory,
        decided_at: DateTime<Utc>,
    ) -> Outcome {
        let decision = Decision {
            claim_id: claim.claim_id.as_str().to_string(),
            status: self.status,
            amount: fmt2(self.amount),
            currency: "CNY".into(),
            payee: self.payee,
            calculation: self.calculation,
            reasons: self.reasons,
            counted: self.counted,
            usage: self.usage,
            policy: PolicyRef {
                document: policy.common.document.number.clone(),
                version: policy.version.clone(),
                directory_version: directory.version.clone(),
            },
            decided_at,
            recorded: false,
            revocation: None,
        };
        Outcome { decision, effects: self.effects, amount: self.amount }
    }
}

/// What a kind's rule grants when nothing stops it.
pub(crate) struct Grant {
    amount: Decimal,
    payee: Option<Payee>,
    /// Overrides the kind's `counts` (a later apprenticeship tranche does not count).
    counts: Option<bool>,
}

/// The working state of one decision.
pub(crate) struct Ctx<'a> {
    claim: &'a Claim,
    policy: &'a CountyPolicy,
    view: &'a dyn LedgerView,
    directory: &'a Directory,
    person: Option<&'a str>,
    rejections: Vec<Reason>,
    ledger_rejections: Vec<Reason>,
    adjustments: Vec<Reason>,
    notices: Vec<Reason>,
    steps: Vec<Step>,
    /// Whether calculation steps are kept (a replay needs only the outcome).
    trace: bool,
    effects: Effects,
    /// The first failed ledger read: the claim is then not decided.
    read_error: Option<LedgerReadError>,
}

impl<'a> Ctx<'a> {
    fn day(&self) -> NaiveDate {
        self.claim.event_date
    }
    fn reject(&mut self, code: ReasonCode, clause: &str) {
        self.rejections.push(Reason::new(code, clause));
    }
    fn adjust(&mut self, r: Reason) {
        self.adjustments.push(r);
    }
    fn step(&mut self, name: &str, amount: Decimal, clause: &str) {
        if !self.trace {
            return;
        }
        self.steps.push(Step { step: name.into(), amount: fmt2(amount), clause: clause.into(), detail: None });
    }
    /// A step with a detail, written only when the trace is kept.
    fn step_detail(&mut self, name: &str, amount: Decimal, clause: &str, detail: impl FnOnce() -> String) {
        if !self.trace {
            return;
        }
        let detail = Some(detail());
        self.steps.push(Step { step: name.into(), amount: fmt2(amount), clause: clause.into(), detail });
    }
    fn failed(&self) -> bool {
        !self.rejections.is_empty()
    }
    fn applicant(&self) -> Option<&'a Applicant> {
        self.claim.applicant.as_ref()
    }
    fn person(&self) -> &'a str {
        self.person.unwrap_or("-")
    }
    /// Reads the ledger; a failed read is remembered and fails the decision.
    fn read<T: Default>(&mut self, r: Result<T, LedgerReadError>) -> T {
        r.unwrap_or_else(|e| {
            self.read_error.get_or_insert(e);
            T::default()
        })
    }
    fn holder(&mut self, key: &LedgerKey) -> Option<String> {
        let r = self.view.holder(key);
        self.read(r)
    }
    fn total(&mut self, key: &LedgerKey) -> Decimal {
        let r = self.view.total(key);
        self.read(r)
    }
    /// Takes a unique key; a key the ledger shows held refuses this one. (An
    /// evaluation of a recorded claim gets a view that sets its own record
    /// aside; the writer never decides a recorded claim again.)
    fn unique(&mut self, key: LedgerKey, code: ReasonCode, clause: &str) {
        if let Some(holder) = self.holder(&key) {
            let mut r = Reason::new(code, clause);
            r.held_by = Some(holder);
            self.ledger_rejections.push(r);
        }
        self.effects.keys.push(key);
    }
    /// R-SAME-LEVEL / R-ONCE keys of a person.
    fn person_key(&self, scope: PersonScope) -> LedgerKey {
        LedgerKey::Person { county: self.claim.county, kind: self.claim.kind, person: self.person().to_string(), scope }
    }
    /// R-ONCE key of a claim without a person.
    fn natural_key(&self, parts: &[&str]) -> LedgerKey {
        LedgerKey::Natural {
            county: self.claim.county,
            kind: self.claim.kind,
            parts: parts.iter().map(|p| p.to_string()).collect(),
        }
    }
    /// R-CERT: one certificate backs at most one granted claim per county and kind.
    fn certificate(&mut self, number: &str) {
        let key = LedgerKey::Certificate {
            county: self.claim.county,
            kind: self.claim.kind,
            number: number.trim().to_uppercase(),
        };
        let policy = self.policy;
        self.unique(key, ReasonCode::CertificateAlreadyUsed, &policy.common.certificate_once.clause);
    }
    /// R-UPLIFT-TF: the employer's listing on the county's directory on the event date.
    fn trade_friction_uplift(&self) -> Option<(Decimal, String)> {
        let tf = &self.policy.common.trade_friction;
        let day = self.day();
        if !tf.kinds.at(day).contains(&self.claim.kind) || day > *tf.until.at(day) {
            return None;
        }
        let employer = self.applicant()?.employer.as_ref()?;
        self.directory.is_listed(employer.credit_code.as_str(), day).then(|| (tf.rate.dec(day), tf.rate.clause.clone()))
    }
    /// Applies the trade-friction uplift to a standard, recording its reason.
    fn uplifted(&mut self, standard: Decimal) -> Decimal {
        match self.trade_friction_uplift() {
            Some((rate, clause)) => {
                let raised = standard * (Decimal::ONE + rate);
                self.adjust(Reason::new(ReasonCode::UpliftTradeFriction, &clause).uplift(rate));
                raised
            }
            None => standard,
        }
    }
    /// [`Ctx::uplifted`], with an `uplift_trade_friction` step citing the
    /// uplift's clause when the standard is raised.
    fn uplifted_with_step(&mut self, standard: Decimal) -> Decimal {
        let raised = self.uplifted(standard);
        if raised != standard {
            let policy = self.policy;
            self.step("uplift_trade_friction", raised, &policy.common.trade_friction.rate.clause);
        }
        raised
    }
    /// min(value, cap), with `CAPPED_AT_MAXIMUM` when the cap cuts.
    fn cap(&mut self, value: Decimal, cap: Decimal, clause: &str) -> Decimal {
        if value > cap {
            self.adjust(Reason::new(ReasonCode::CappedAtMaximum, clause).cap(cap));
            self.step("cap", cap, clause);
            cap
        } else {
            value
        }
    }
    fn in_any(&self, groups: &[Group]) -> bool {
        self.applicant().is_some_and(|a| groups.iter().any(|g| a.in_group(*g)))
    }
}

/// Decides a claim. Deterministic: the same claim, ledger, policy, directory
/// and `decided_at` give the same decision. Fails only when the ledger cannot
/// be read.
pub fn decide(
    claim: &Claim,
    person: Option<&str>,
    view: &dyn LedgerView,
    policy: &CountyPolicy,
    directory: &Directory,
    decided_at: DateTime<Utc>,
) -> Result<Outcome, LedgerReadError> {
    decide_traced(claim, person, view, policy, directory, decided_at, Trace::Kept)
}

/// Whether a decision keeps its calculation steps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trace {
    Kept,
    /// An empty `calculation`, the same status, amount, reasons and effects:
    /// for replays that compare outcomes only.
    Omitted,
}

/// [`decide`], keeping the calculation steps or not.
pub fn decide_traced(
    claim: &Claim,
    person: Option<&str>,
    view: &dyn LedgerView,
    policy: &CountyPolicy,
    directory: &Directory,
    decided_at: DateTime<Utc>,
    trace: Trace,
) -> Result<Outcome, LedgerReadError> {
    Ok(judge(claim, person, view, policy, directory, trace)?.into_outcome(claim, policy, directory, decided_at))
}

/// What the rules find for a claim: [`decide_traced`] without writing the
/// decision out.
pub fn judge(
    claim: &Claim,
    person: Option<&str>,
    view: &dyn LedgerView,
    policy: &CountyPolicy,
    directory: &Directory,
    trace: Trace,
) -> Result<Verdict, LedgerReadError> {
    let mut ctx = Ctx {
        claim,
        policy,
        view,
        directory,
        person,
        rejections: Vec::new(),
        ledger_rejections: Vec::new(),
        adjustments: Vec::new(),
        notices: Vec::new(),
        steps: Vec::new(),
        trace: trace == Trace::Kept,
        effects: Effects::default(),
        read_error: None,
    };
    let common = &policy.common;
    let kind_entry = common.kinds.get(&claim.kind);
    let grant = assess(&mut ctx, kind_entry);
    // Only a person's grants of a counting kind take a yearly place.
    let counts = kind_entry.is_some_and(|k| k.counts) && person.is_some();
    let limit = *common.annual_limit.at(claim.event_date);
    let year = chrono::Datelike::year(&claim.event_date);
    let usage_key = LedgerKey::Usage { county: claim.county, person: ctx.person().to_string(), year };
    let used_before = if counts {
        let r = view.count(&usage_key);
        ctx.read(r)
    } else {
        0
    };
    let settled = match (ctx.failed(), grant) {
        (false, Some(g)) => settle(&mut ctx, g, kind_entry, counts.then_some((usage_key, used_before, limit))),
        _ => {
            // RULES §8 Stages: a claim failing eligibility or static checks stops
            // there; ledger checks some kinds make while computing do not count.
            ctx.steps.clear();
            ctx.adjustments.clear();
            ctx.ledger_rejections.clear();
            Settled::default()
        }
    };
    let usage = counts.then(|| Usage { year, used: used_before + u32::from(settled.counted), limit });
    finish(ctx, kind_entry, settled, usage)
}

/// The period, the kind and the county's rules for it: the grant they give,
/// if any (RULES §8, stages 1 and 2).
fn assess(ctx: &mut Ctx, kind_entry: Option<&KindEntry>) -> Option<Grant> {
    let policy = ctx.policy;
    let period = &policy.common.period;
    if ctx.claim.event_date < period.from || ctx.claim.event_date > period.to {
        ctx.reject(ReasonCode::OutsidePolicyPeriod, &period.clause);
    }
    let grant = match kind_entry {
        None => {
            ctx.reject(ReasonCode::KindNotInCountyPolicy, "R-KIND");
            None
        }
        Some(_) => match &policy.rules {
            CountyRules::Wuyi(r) => wuyi::assess(ctx, r),
            CountyRules::Changxing(r) => changxing::assess(ctx, r),
        },
    };
    if grant.is_none() && !ctx.failed() {
        // A level or title the policy data gives no figure for is not subsidised.
        let clause = kind_entry.map(|k| k.clause.clone()).unwrap_or_default();
        ctx.reject(ReasonCode::LevelNotSubsidized, &clause);
    }
    grant
}

/// What a grant that passed the static checks comes to.
#[derive(Default)]
struct Settled {
    counted: bool,
    amount: Decimal,
    payee: Option<Payee>,
}

/// The ledger stage of a grant: the yearly limit (`place`: the usage key, the
/// places used before and the limit, for a counting grant), then the notices
/// of an approval.
fn settle(
    ctx: &mut Ctx,
    grant: Grant,
    kind_entry: Option<&KindEntry>,
    place: Option<(LedgerKey, u32, u32)>,
) -> Settled {
    let policy = ctx.policy;
    let common = &policy.common;
    let claim = ctx.claim;
    let this_counts = place.is_some() && grant.counts.unwrap_or(true);
    if let (true, Some((usage_key, used_before, limit))) = (this_counts, place) {
        if used_before >= limit {
            let r = Reason::new(ReasonCode::AnnualLimitReached, &common.annual_limit.clause)
                .used_limit(used_before.to_string(), limit.to_string());
            ctx.ledger_rejections.insert(0, r);
        }
        ctx.effects.count = Some(usage_key);
    }
    if !ctx.ledger_rejections.is_empty() {
        return Settled::default();
    }
    if claim.county == County::Changxing {
        changxing::institution_notice(ctx);
    }
    if common.public_notice.at(claim.event_date).contains(&claim.kind) {
        ctx.notices.push(Reason::new(ReasonCode::PublicNoticeRequired, &common.public_notice.clause));
    }
    Settled {
        counted: this_counts,
        amount: grant.amount,
        payee: grant.payee.or_else(|| kind_entry.and_then(|k| k.payee)),
    }
}

/// The verdict and its ledger effects, the amount rounded once, here.
fn finish(
    mut ctx: Ctx,
    kind_entry: Option<&KindEntry>,
    settled: Settled,
    usage: Option<Usage>,
) -> Result<Verdict, LedgerReadError> {
    let approved = !ctx.failed() && ctx.ledger_rejections.is_empty() && kind_entry.is_some();
    let mut reasons = Vec::new();
    reasons.append(&mut ctx.rejections);
    reasons.append(&mut ctx.ledger_rejections);
    reasons.append(&mut ctx.adjustments);
    reasons.append(&mut ctx.notices);
    let rounded = Money::round(settled.amount);
    // Running totals hold what is granted, in cents, so that grants never add
    // up past a cumulative cap (the rules modules push unrounded amounts).
    for (_, total) in &mut ctx.effects.totals {
        *total = Money::round(*total).value();
    }
    if approved {
        ctx.step("total", rounded.value(), kind_entry.map_or("", |k| k.clause.as_str()));
    }
    if let Some(e) = ctx.read_error {
        return Err(e);
    }
    Ok(Verdict {
        status: if approved { Status::Approved } else { Status::Rejected },
        amount: if approved { rounded.value() } else { Decimal::ZERO },
        payee: if approved { settled.payee } else { None },
        calculation: ctx.steps,
        reasons,
        counted: settled.counted,
        usage,
        effects: if approved { ctx.effects } else { Effects::default() },
    })
}

/// Base eligibility (WY §2(1); CX I-2 with §3(3)), shared by both counties.
pub(crate) fn base_eligibility(ctx: &mut Ctx) {
    let Some(a) = ctx.applicant() else { return };
    let elig = &ctx.policy.common.eligibility;
    let day = ctx.day();
    if a.receives_pension() {
        ctx.reject(ReasonCode::ApplicantReceivesPension, &format!("{}, I-1", elig.clause));
    }
    let tie = a.is_local_hukou()
        || a.has_residence_permit()
        || a.is_employed_in_county()
        || a.is_unemployment_registered()
        || (*elig.labour_cooperation_base_eligible.at(day) && a.in_group(Group::LabourCooperationBase));
    if !tie {
        ctx.reject(ReasonCode::ApplicantNotEligible, &elig.clause);
    }
}

/// 4050 unemployed: registered unemployed and, on `on`, a woman of 40+ or a man of 50+ (I-17).
pub(crate) fn is_4050(ctx: &Ctx, on: NaiveDate) -> bool {
    let Some(a) = ctx.applicant() else {
        return false;
    };
    let e = &ctx.policy.common.eligibility;
    let min_age = match a.id_number.sex() {
        crate::domain::Sex::Female => *e.age_4050_women.at(on),
        crate::domain::Sex::Male => *e.age_4050_men.at(on),
    };
    a.is_unemployment_registered() && a.id_number.age_on(on) >= min_age as i32
}

pub(crate) fn grant(amount: Decimal) -> Option<Grant> {
    Some(Grant { amount, payee: None, counts: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ratio_is_shown_to_four_places_rounded_half_away_from_zero() {
        let shown = |n: i64, d: i64| {
            Reason::new(ReasonCode::ProratedByTrainees, "WY §4(3)").ratio(Decimal::new(n, 0) / Decimal::new(d, 0)).ratio
        };
        assert_eq!(shown(29, 32).as_deref(), Some("0.9063"), "0.90625");
        assert_eq!(shown(1, 32).as_deref(), Some("0.0313"), "0.03125");
        assert_eq!(shown(1, 3).as_deref(), Some("0.3333"));
        assert_eq!(shown(1, 2).as_deref(), Some("0.5"));
    }
}
