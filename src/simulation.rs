//! Policy what-if (API.md §8): a county's recorded claims replayed twice
//! through the same rules, each run in a scratch ledger of its own that
//! starts empty (never the real one): once under the policy in force
//! (`baseline`), once under a changed copy of it (`simulated`). Both runs see
//! the claims in recording order, so yearly limits, unique keys, cumulative
//! caps and tranches act as they did, and the two runs' decisions are
//! compared claim by claim.

use std::collections::{BTreeMap, HashMap};

use chrono::{NaiveDate, Utc};
use rust_decimal::Decimal;
use serde::Serialize;
use utoipa::ToSchema;

use crate::domain::{fmt2, parse_claim, Claim, County};
use crate::ledger::{LedgerError, Submissions};
use crate::policy::CountyPolicy;
use crate::privacy::{Pseudonymizer, Sealer};
use crate::rules::{decide, Directory, LedgerKey, LedgerReadError, LedgerView, Status};

/// A ledger that lives for one run: what the run's grants hold.
#[derive(Default)]
struct Scratch {
    counts: HashMap<LedgerKey, u32>,
    holders: HashMap<LedgerKey, String>,
    totals: HashMap<LedgerKey, Decimal>,
}

impl LedgerView for Scratch {
    fn count(&self, key: &LedgerKey) -> Result<u32, LedgerReadError> {
        Ok(self.counts.get(key).copied().unwrap_or(0))
    }
    fn holder(&self, key: &LedgerKey) -> Result<Option<String>, LedgerReadError> {
        Ok(self.holders.get(key).cloned())
    }
    fn total(&self, key: &LedgerKey) -> Result<Decimal, LedgerReadError> {
        Ok(self.totals.get(key).copied().unwrap_or_default())
    }
}

/// Granted claims: how many and how much.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct Granted {
    pub count: u64,
    #[schema(value_type = String, example = "1000.00")]
    #[serde(serialize_with = "as_amount")]
    pub amount: Decimal,
}

fn as_amount<S: serde::Serializer>(v: &Decimal, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&fmt2(*v))
}

impl Granted {
    fn add(&mut self, amount: Decimal) {
        self.count += 1;
        self.amount += amount;
    }
}

/// One run's approved claims, tallied as `GET /v1/reports` does.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct RunTotals {
    pub granted: Granted,
    pub by_kind: BTreeMap<String, Granted>,
    /// By the claim's department; `unassigned` when it names none.
    pub by_department: BTreeMap<String, Granted>,
}

/// A claim's decision in one run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct Brief {
    pub status: Status,
    #[schema(value_type = String, example = "1300.00")]
    #[serde(serialize_with = "as_amount")]
    pub amount: Decimal,
    /// The decision's reason codes, in order.
    pub reasons: Vec<String>,
}

/// A claim whose status or amount differs between the runs.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChangedClaim {
    pub claim_id: String,
    pub baseline: Brief,
    pub simulated: Brief,
}

/// How many claims differ between the runs.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, ToSchema)]
pub struct ChangedCounts {
    /// Claims whose status or amount differ.
    pub claims: u64,
    /// Claims whose status differs.
    pub status: u64,
    /// Claims whose amount differs.
    pub amount: u64,
}

/// The comparison of the two runs (API.md §8).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Comparison {
    pub county: County,
    #[schema(value_type = String, format = Date)]
    pub from: NaiveDate,
    #[schema(value_type = String, format = Date)]
    pub to: NaiveDate,
    pub policy_version: String,
    pub simulated_policy_version: String,
    /// Recorded claims replayed in both runs.
    pub claims_replayed: u64,
    /// Recorded claims selected but not replayed: records moved from layout v1
    /// keep only their decision, not the claim as submitted.
    pub claims_without_submission: u64,
    pub baseline: RunTotals,
    pub simulated: RunTotals,
    pub changed: ChangedCounts,
    /// The first changed claims in recording order (at most `sample`).
    pub claims: Vec<ChangedClaim>,
}

/// One run: a policy, a scratch ledger and the run's totals.
struct Run<'a> {
    policy: &'a CountyPolicy,
    directory: &'a Directory,
    ledger: Scratch,
    totals: RunTotals,
}

impl<'a> Run<'a> {
    fn new(policy: &'a CountyPolicy, directory: &'a Directory) -> Self {
        Self { policy, directory, ledger: Scratch::default(), totals: RunTotals::default() }
    }

    /// Decides a claim against the run's ledger and takes what a grant holds.
    fn decide(&mut self, r: &Replay) -> Result<Brief, LedgerError> {
        let o = decide(&r.claim, r.person.as_deref(), &self.ledger, self.policy, self.directory, Utc::now())
            .map_err(|e| LedgerError::Unavailable(e.to_string()))?;
        let d = &o.decision;
        if d.status == Status::Approved {
            let e = o.effects;
            if let Some(k) = e.count {
                *self.ledger.counts.entry(k).or_default() += 1;
            }
            for k in e.keys {
                self.ledger.holders.insert(k, r.claim.claim_id.as_str().to_string());
            }
            for (k, v) in e.totals {
                *self.ledger.totals.entry(k).or_default() += v;
            }
            let t = &mut self.totals;
            t.granted.add(o.amount);
            t.by_kind.entry(r.claim.kind.as_str().to_string()).or_default().add(o.amount);
            let department = r.claim.department.clone().unwrap_or_else(|| "unassigned".into());
            t.by_department.entry(department).or_default().add(o.amount);
        }
        Ok(Brief { status: d.status, amount: o.amount, reasons: d.reasons.iter().map(|x| x.code.clone()).collect() })
    }
}

/// A recorded claim ready to be decided again.
struct Replay {
    claim: Claim,
    person: Option<String>,
}

/// What is replayed and how the answer is bounded.
pub struct Simulation<'a> {
    pub baseline: &'a CountyPolicy,
    pub simulated: &'a CountyPolicy,
    pub directory: &'a Directory,
    pub from: NaiveDate,
    pub to: NaiveDate,
    /// At most this many changed claims are listed.
    pub sample: usize,
}

/// Claims decoded at a time: one thread decodes the next chunk while the
/// other decides this one.
const CHUNK: usize = 2048;

impl Simulation<'_> {
    /// Replays `source` (the recorded claims in recording order) in both
    /// runs. Runs on the calling thread and one more, which reads the store,
    /// opens the sealed fields and parses the claims.
    pub fn run(
        &self,
        source: Submissions,
        sealer: &Sealer,
        pseudonymizer: &Pseudonymizer,
    ) -> Result<Comparison, LedgerError> {
        let (tx, rx) = crossbeam_channel::bounded::<Result<Vec<Option<Replay>>, LedgerError>>(4);
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut chunk = Vec::with_capacity(CHUNK);
                for row in source {
                    let decoded = row.and_then(|r| decode(r.claim_id, r.submitted, sealer, pseudonymizer));
                    match decoded {
                        Ok(r) => chunk.push(r),
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    }
                    if chunk.len() == CHUNK
                        && tx.send(Ok(std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK)))).is_err()
                    {
                        return;
                    }
                }
                let _ = tx.send(Ok(chunk));
            });
            self.decide_all(rx)
        })
    }

    fn decide_all(
        &self,
        rx: crossbeam_channel::Receiver<Result<Vec<Option<Replay>>, LedgerError>>,
    ) -> Result<Comparison, LedgerError> {
        let mut baseline = Run::new(self.baseline, self.directory);
        let mut simulated = Run::new(self.simulated, self.directory);
        let (mut replayed, mut without) = (0, 0);
        let mut changed = ChangedCounts::default();
        let mut claims = Vec::new();
        for chunk in rx {
            for r in chunk? {
                let Some(r) = r else {
                    without += 1;
                    continue;
                };
                replayed += 1;
                let (b, s) = (baseline.decide(&r)?, simulated.decide(&r)?);
                let (status, amount) = (b.status != s.status, b.amount != s.amount);
                if status || amount {
                    changed.claims += 1;
                    changed.status += u64::from(status);
                    changed.amount += u64::from(amount);
                    if claims.len() < self.sample {
                        claims.push(ChangedClaim {
                            claim_id: r.claim.claim_id.as_str().to_string(),
                            baseline: b,
                            simulated: s,
                        });
                    }
                }
            }
        }
        Ok(Comparison {
            county: self.baseline.county(),
            from: self.from,
            to: self.to,
            policy_version: self.baseline.version.clone(),
            simulated_policy_version: self.simulated.version.clone(),
            claims_replayed: replayed,
            claims_without_submission: without,
            baseline: baseline.totals,
            simulated: simulated.totals,
            changed,
            claims,
        })
    }
}

/// A recorded claim as the rules read it: its sealed fields opened, parsed as
/// when it arrived. `None` for a record without the claim as submitted.
fn decode(
    claim_id: String,
    submitted: Option<serde_json::Value>,
    sealer: &Sealer,
    pseudonymizer: &Pseudonymizer,
) -> Result<Option<Replay>, LedgerError> {
    let Some(stored) = submitted else { return Ok(None) };
    let unreadable = |why: String| LedgerError::Unavailable(format!("recorded claim {claim_id}: {why}"));
    let body = sealer.unseal_claim(&stored).map_err(|e| unreadable(format!("{e:#}")))?;
    let claim = parse_claim(&body).map_err(|errs| {
        let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
        unreadable(format!("the claim as submitted no longer parses ({})", fields.join(", ")))
    })?;
    let person = claim.applicant.as_ref().map(|a| pseudonymizer.person_key(&a.id_number));
    Ok(Some(Replay { claim, person }))
}
