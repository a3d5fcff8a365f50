//! Policy what-if (API.md §8): a county's recorded claims replayed twice
//! through the same rules, each run in a scratch ledger of its own that
//! starts empty (never the real one): once under the policy in force
//! (`baseline`), once under a changed copy of it (`simulated`). Both runs see
//! the claims in recording order, so yearly limits, unique keys, cumulative
//! caps and tranches act as they did, and the two runs' decisions are
//! compared claim by claim.

use std::collections::BTreeMap;
use std::hash::BuildHasher as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use chrono::NaiveDate;
use rust_decimal::Decimal;
use serde::Serialize;
use serde_json::Value;
use utoipa::{PartialSchema, ToSchema};

use crate::domain::{fmt2, parse_claim, Claim, County};
use crate::domain::{string_schema, FieldError, FromJson, Json};
use crate::ledger::{LedgerError, Submissions, Submitted};
use crate::policy::{ChangeError, CountyPolicy, ParamChange, Policy};
use crate::privacy::{Pseudonymizer, Sealer};
use crate::rules::{judge, Directory, LedgerKey, LedgerReadError, LedgerView, ReasonCode, Status, Trace};
use crate::{bounded_whole, request_type};

/// How many changed claims an answer lists when the request does not say.
const DEFAULT_SAMPLE: u32 = 20;

/// A JSON pointer to a parameter (an object carrying `clause` and `values`)
/// in `GET /v1/policies/{county}`.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterPointer(String);

impl ParameterPointer {
    const MAX_LEN: usize = 300;
}

impl FromJson for ParameterPointer {
    fn from_json<J: Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self> {
        let Some(s) = v.as_str() else {
            errs.push(FieldError::new(at, "invalid_type", "must be a string"));
            return None;
        };
        if !s.starts_with('/') || s.len() > Self::MAX_LEN {
            errs.push(FieldError::new(at, "invalid_format", "a JSON pointer such as /annual_limit"));
            return None;
        }
        Some(Self(s.to_string()))
    }
}

impl PartialSchema for ParameterPointer {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        let description = "A JSON pointer to a parameter (an object carrying `clause` and `values`) in \
                           `GET /v1/policies/{county}`.";
        string_schema(
            description,
            Some("^/"),
            Some((1, Self::MAX_LEN)),
            "/rules/qualification_training/levels/intermediate",
        )
    }
}
impl ToSchema for ParameterPointer {}

/// A parameter's new value: any JSON value but `null` (which reads as absent).
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterValue(Value);

impl FromJson for ParameterValue {
    fn from_json<J: Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self> {
        Value::from_json(v, at, errs).map(Self)
    }
}

impl PartialSchema for ParameterValue {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{AnyOfBuilder, ArrayBuilder, ObjectBuilder, Type};
        let of = |kind| ObjectBuilder::new().schema_type(kind);
        AnyOfBuilder::new()
            .item(of(Type::String))
            .item(of(Type::Number))
            .item(of(Type::Boolean))
            .item(ArrayBuilder::new())
            .item(of(Type::Object))
            .description(Some(
                "A value of the same shape as the parameter's values (amounts are quoted decimal strings, \
                 counts are numbers, dates `YYYY-MM-DD`); never `null`.",
            ))
            .into()
    }
}
impl ToSchema for ParameterValue {}

request_type! {
    /// A parameter change (API.md §8).
    pub struct ChangeRequest {
        pub parameter: ParameterPointer,
        pub value: ParameterValue,
        /// The date from which the new value applies; earlier dates keep the
        /// value in force. Without it the new value holds for the whole period.
        pub from: Option<NaiveDate>,
    }
}

/// The changes of one simulation, applied in order: at most 100.
#[derive(Debug, Clone, PartialEq)]
pub struct Changes(Vec<ChangeRequest>);

impl Changes {
    pub const MAX: usize = 100;
}

impl FromJson for Changes {
    fn from_json<J: Json>(v: &J, at: &str, errs: &mut Vec<FieldError>) -> Option<Self> {
        if v.as_array().is_some_and(|list| list.len() > Self::MAX) {
            errs.push(FieldError::new(at, "out_of_range", format!("at most {} changes", Self::MAX)));
            return None;
        }
        Vec::from_json(v, at, errs).map(Self)
    }
}

impl PartialSchema for Changes {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::schema::ArrayBuilder::new()
            .items(utoipa::openapi::Ref::from_schema_name(ChangeRequest::name()))
            .max_items(Some(Self::MAX))
            .description(Some("The changes, applied in order."))
            .into()
    }
}

impl ToSchema for Changes {
    fn schemas(schemas: &mut Vec<(String, utoipa::openapi::RefOr<utoipa::openapi::schema::Schema>)>) {
        schemas.push((ChangeRequest::name().into(), ChangeRequest::schema()));
        ChangeRequest::schemas(schemas);
    }
}

bounded_whole!(
    "How many changed claims the answer lists (default 20)."
    SampleSize(u32), 0..=1000
);

request_type! {
    /// A what-if question: the county's recorded claims replayed under the
    /// policy in force and under the changed one.
    pub struct SimulationRequest {
        pub county: County,
        /// First event date replayed (default: the start of the county's policy period).
        pub from: Option<NaiveDate>,
        /// Last event date replayed (default: the end of the county's policy period).
        pub to: Option<NaiveDate>,
        pub changes: Option<Changes>,
        pub sample: Option<SampleSize>,
    }
}

/// The event dates replayed: `from` and `to`, else the ends of the county's
/// policy period. A `to` before `from` is refused here, with a window
/// outside the period, so that the changes' errors are named beside either.
fn window(
    policy: &CountyPolicy,
    from: Option<NaiveDate>,
    to: Option<NaiveDate>,
) -> Result<(NaiveDate, NaiveDate), Vec<FieldError>> {
    let period = &policy.common.period;
    if from.zip(to).is_some_and(|(from, to)| from > to) {
        return Err(vec![FieldError::new("/to", "out_of_range", "`to` is before `from`")]);
    }
    let field = if from.is_some() { "/from" } else { "/to" };
    let (from, to) = (from.unwrap_or(period.from), to.unwrap_or(period.to));
    if from > to {
        let message = format!(
            "no event date from {from} to {to} (the {} policy runs from {} to {})",
            policy.county(),
            period.from,
            period.to
        );
        return Err(vec![FieldError::new(field, "out_of_range", message)]);
    }
    Ok((from, to))
}

fn param_change(c: ChangeRequest) -> ParamChange {
    ParamChange { parameter: c.parameter.0, value: c.value.0, from: c.from }
}

/// A simulation request (API.md §8) checked against the policy in force:
/// its county and sample, its window of event dates, and the county's
/// policy with the changes.
pub struct Checked {
    pub county: County,
    pub sample: usize,
    pub from: NaiveDate,
    pub to: NaiveDate,
    pub simulated: CountyPolicy,
}

/// Checks a simulation request and its changes against `policy`, naming
/// every bad field at once: the request's shape, its window, and what the
/// policy's checks refuse of its changes (each change loads the policy).
/// When the shape is bad, what of it still reads is checked too: the window
/// of the dates that read, and the well-formed changes, in order, as if the
/// malformed ones were not there.
pub fn check_request(body: &Value, policy: &Policy) -> Result<Checked, Vec<FieldError>> {
    let mut errors = Vec::new();
    let request = SimulationRequest::from_json(body, "", &mut errors).filter(|_| errors.is_empty());
    // The parts to check against the policy, each change with its place.
    let (county, from, to, changes): (_, _, _, Vec<(usize, ParamChange)>) = match &request {
        Some(r) => {
            let changes = r.changes.iter().flat_map(|c| c.0.iter().cloned().map(param_change)).enumerate();
            (Some(r.county), r.from, r.to, changes.collect())
        }
        // Each part read again on its own, its errors already named.
        None => {
            let county = body.get("county").and_then(|v| County::from_json(v, "", &mut Vec::new()));
            let date = |name: &str| body.get(name).and_then(|v| NaiveDate::from_json(v, "", &mut Vec::new()));
            let list = body.get("changes").and_then(Value::as_array).filter(|l| l.len() <= Changes::MAX);
            let changes = list.into_iter().flatten().enumerate();
            let changes =
                changes.filter_map(|(i, v)| Some((i, param_change(ChangeRequest::from_json(v, "", &mut Vec::new())?))));
            (county, date("from"), date("to"), changes.collect())
        }
    };
    let Some(county) = county else { return Err(errors) };
    let baseline = policy.county(county);
    let window = window(baseline, from, to);
    let (places, changes): (Vec<usize>, Vec<ParamChange>) = changes.into_iter().unzip();
    match (request, window, baseline.with_changes(&changes)) {
        (Some(r), Ok((from, to)), Ok(simulated)) => {
            let sample = r.sample.map_or(DEFAULT_SAMPLE, SampleSize::get) as usize;
            Ok(Checked { county, sample, from, to, simulated })
        }
        (_, window, simulated) => {
            errors.extend(window.err().into_iter().flatten());
            let refused = simulated.err().into_iter().flatten();
            errors.extend(refused.map(|e| ChangeError { index: places[e.index], ..e }.into_field_error()));
            Err(errors)
        }
    }
}

/// Why a simulation gave no comparison.
#[derive(Debug, thiserror::Error)]
pub enum SimulationError {
    /// The recorded claims could not be read now (`503`; worth retrying).
    #[error(transparent)]
    Store(#[from] LedgerError),
    /// The replay itself failed: the rules failed on a recorded claim (a
    /// bug, logged) or a thread of the pipeline stopped.
    #[error("{0}")]
    Replay(String),
    /// The caller went away; the replay stopped.
    #[error("the simulation was cancelled")]
    Cancelled,
}

/// A ledger that lives for one run: what the run's grants hold, under each
/// key's fingerprint, a key's holder by its number in `ids` (a few bytes a
/// key, so that a run over a million claims stays small).
struct Scratch {
    fingerprints: Fingerprints,
    counts: hashbrown::HashMap<Fingerprint, u32>,
    holders: hashbrown::HashMap<Fingerprint, u32>,
    totals: hashbrown::HashMap<Fingerprint, Decimal>,
    ids: HolderIds,
}

/// A key's fingerprint, 96 bits as three 32-bit words: with a `u32` value a
/// table entry is 16 bytes (a `u128` would be 32 with its alignment).
type Fingerprint = [u32; 3];

/// The claims holding keys, each once, by number: their ids end to end in
/// one string (not an allocation each).
#[derive(Default)]
struct HolderIds {
    text: String,
    /// Where each id ends in `text`.
    ends: Vec<usize>,
}

impl HolderIds {
    fn with_capacity(ids: usize) -> Self {
        Self { text: String::new(), ends: Vec::with_capacity(ids) }
    }

    /// Adds an id; its number.
    fn push(&mut self, id: &str) -> u32 {
        self.text.push_str(id);
        self.ends.push(self.text.len());
        u32::try_from(self.ends.len() - 1).unwrap_or(u32::MAX)
    }

    fn get(&self, i: u32) -> Option<&str> {
        let i = i as usize;
        let start = if i == 0 { 0 } else { *self.ends.get(i - 1)? };
        self.text.get(start..*self.ends.get(i)?)
    }
}

/// A key's identity in a scratch ledger: 96 bits of its 128-bit SipHash-1-3
/// under a key drawn at random for the run. Cheaper than the real ledger's
/// digest (no canonical text is built). Among the few million keys of a
/// run, two share 96 bits with a chance of about 10^-16, and nobody outside
/// the process knows the key to aim for a collision.
struct Fingerprints(siphasher::sip128::SipHasher13);

impl Fingerprints {
    fn new() -> Self {
        use ring::rand::SecureRandom;
        let mut key = [0u8; 16];
        // Without the system's randomness, std's per-process hash keys
        // (random too, only not as fresh) stand in.
        if ring::rand::SystemRandom::new().fill(&mut key).is_err() {
            let state = std::hash::RandomState::new();
            key[..8].copy_from_slice(&state.hash_one(0u8).to_le_bytes());
            key[8..].copy_from_slice(&state.hash_one(1u8).to_le_bytes());
        }
        Self(siphasher::sip128::SipHasher13::new_with_key(&key))
    }

    fn of(&self, key: &LedgerKey) -> Fingerprint {
        use siphasher::sip128::Hasher128 as _;
        use std::hash::Hash as _;
        let mut h = self.0;
        key.hash(&mut h);
        let h = h.finish128();
        [h.h1 as u32, (h.h1 >> 32) as u32, h.h2 as u32]
    }
}

impl Scratch {
    /// A scratch ledger with room for the effects of `grants` grants: a
    /// yearly count and two held keys each (a person's grant holds its
    /// certificate and a scope such as occupation and level). Other grants
    /// only make a table grow or stay part empty.
    fn with_capacity(grants: usize) -> Self {
        Self {
            fingerprints: Fingerprints::new(),
            counts: hashbrown::HashMap::with_capacity(grants),
            holders: hashbrown::HashMap::with_capacity(grants.saturating_mul(2)),
            totals: hashbrown::HashMap::new(),
            ids: HolderIds::with_capacity(grants),
        }
    }
}

impl LedgerView for Scratch {
    fn count(&self, key: &LedgerKey) -> Result<u32, LedgerReadError> {
        Ok(self.counts.get(&self.fingerprints.of(key)).copied().unwrap_or(0))
    }
    fn holder(&self, key: &LedgerKey) -> Result<Option<String>, LedgerReadError> {
        let holder = self.holders.get(&self.fingerprints.of(key));
        Ok(holder.and_then(|i| self.ids.get(*i)).map(str::to_string))
    }
    fn total(&self, key: &LedgerKey) -> Result<Decimal, LedgerReadError> {
        Ok(self.totals.get(&self.fingerprints.of(key)).copied().unwrap_or_default())
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
    pub reasons: Vec<ReasonCode>,
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
    /// The trade-friction directory both runs read (its version, as a
    /// decision cites it): with the two policy versions, what the answer
    /// depends on besides the recorded claims.
    pub directory_version: String,
    /// Recorded claims replayed in both runs.
    pub claims_replayed: u64,
    /// Recorded claims selected but not replayed: records moved from layout v1
    /// keep only their decision, not the claim as submitted.
    pub claims_without_submission: u64,
    /// Recorded claims selected but not replayed because they do not open
    /// with this configuration's secret or no longer parse (each one logged).
    pub claims_unreadable: u64,
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
    fn new(policy: &'a CountyPolicy, directory: &'a Directory, grants: usize) -> Self {
        Self { policy, directory, ledger: Scratch::with_capacity(grants), totals: RunTotals::default() }
    }

    /// Decides a claim against the run's ledger and takes what a grant holds.
    fn decide(&mut self, r: &Replay) -> Result<Brief, SimulationError> {
        let id = r.claim.claim_id.as_str();
        // A bug in the rules (or data they cannot handle) must not take the service down.
        let judged = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            judge(&r.claim, r.person.as_deref(), &self.ledger, self.policy, self.directory, Trace::Omitted)
        }));
        let verdict = match judged {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(e)) => return Err(SimulationError::Replay(format!("recorded claim {id}: {e}"))),
            Err(_) => return Err(SimulationError::Replay(format!("the rules failed on recorded claim {id}"))),
        };
        if verdict.status == Status::Approved {
            let (e, ledger) = (verdict.effects, &mut self.ledger);
            if let Some(k) = e.count {
                *ledger.counts.entry(ledger.fingerprints.of(&k)).or_default() += 1;
            }
            if !e.keys.is_empty() {
                let holder = ledger.ids.push(id);
                for k in e.keys {
                    ledger.holders.insert(ledger.fingerprints.of(&k), holder);
                }
            }
            for (k, v) in e.totals {
                *ledger.totals.entry(ledger.fingerprints.of(&k)).or_default() += v;
            }
            let t = &mut self.totals;
            t.granted.add(verdict.amount);
            add_to(&mut t.by_kind, r.claim.kind.as_str(), verdict.amount);
            add_to(
                &mut t.by_department,
                r.claim.department.as_ref().map_or(crate::ledger::UNASSIGNED, |d| d.as_str()),
                verdict.amount,
            );
        }
        Ok(Brief {
            status: verdict.status,
            amount: verdict.amount,
            reasons: verdict.reasons.iter().map(|x| x.code).collect(),
        })
    }
}

/// Adds a grant under `name` (its key allocated only the first time).
fn add_to(totals: &mut BTreeMap<String, Granted>, name: &str, amount: Decimal) {
    match totals.get_mut(name) {
        Some(granted) => granted.add(amount),
        None => totals.entry(name.to_string()).or_default().add(amount),
    }
}

/// A recorded claim as the replay finds it. Nearly every item is a
/// `Replay`, so it is not boxed (that would be one more allocation a claim).
#[allow(clippy::large_enum_variant)]
enum Item {
    Replay(Replay),
    /// A record moved from layout v1: only its decision was kept.
    WithoutSubmission,
    /// A record whose claim does not open with this configuration's secret
    /// or no longer parses (logged; left out of both runs).
    Unreadable,
}

impl Item {
    fn replay(&self) -> Option<&Replay> {
        match self {
            Item::Replay(r) => Some(r),
            _ => None,
        }
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
    /// About how many claims the window's records grant (the running
    /// report totals): the scratch ledgers' tables are made that large at
    /// the start, so that they do not grow (rehashing every key) during the
    /// replay. 0 when not known.
    pub grants: usize,
}

/// Claims read, decoded and decided at a time.
const CHUNK: usize = 1024;
/// Threads opening and parsing recorded claims.
const DECODERS: usize = 2;
/// Chunks read ahead of the one being decided.
const AHEAD: usize = 4;

type Decoded = Result<Vec<Item>, SimulationError>;

impl Simulation<'_> {
    /// Replays `source` (the recorded claims in recording order) in both
    /// runs, as a pipeline of chunks: one thread reads the store, two open the
    /// sealed fields and parse the claims, and the two runs decide each chunk
    /// side by side (the simulated run on a thread of its own). Each chunk
    /// gets its own answer channel, queued in reading order, so the chunks are
    /// decided in order and at most [`AHEAD`] wait. `cancel`, once set, stops
    /// the replay at the next chunk.
    pub fn run(
        &self,
        source: Submissions,
        sealer: &Sealer,
        pseudonymizer: &Pseudonymizer,
        cancel: &AtomicBool,
    ) -> Result<Comparison, SimulationError> {
        type Answer = crossbeam_channel::Receiver<Decoded>;
        let (order_tx, order_rx) = crossbeam_channel::bounded::<Answer>(AHEAD);
        let (work_tx, work_rx) =
            crossbeam_channel::bounded::<(Vec<Submitted>, crossbeam_channel::Sender<Decoded>)>(AHEAD);
        std::thread::scope(|s| {
            s.spawn(move || {
                let mut rows = source.peekable();
                while rows.peek().is_some() {
                    let (answer_tx, answer_rx) = crossbeam_channel::bounded(1);
                    if order_tx.send(answer_rx).is_err() {
                        return;
                    }
                    let chunk: Result<Vec<Submitted>, LedgerError> = rows.by_ref().take(CHUNK).collect();
                    match chunk {
                        Ok(chunk) => {
                            if work_tx.send((chunk, answer_tx)).is_err() {
                                return;
                            }
                        }
                        Err(e) => {
                            let _ = answer_tx.send(Err(e.into()));
                            return;
                        }
                    }
                }
            });
            for _ in 0..DECODERS {
                let work_rx = work_rx.clone();
                s.spawn(move || {
                    for (chunk, answer) in work_rx {
                        let decoded = chunk.into_iter().map(|r| decode(r, sealer, pseudonymizer)).collect();
                        // The decider may have stopped; the next chunk then finds no one either.
                        let _ = answer.send(Ok(decoded));
                    }
                });
            }
            drop(work_rx);
            let chunks = order_rx.into_iter().map(|answer| {
                answer.recv().unwrap_or_else(|_| Err(SimulationError::Replay("a decoding thread failed".into())))
            });
            self.decide_all(chunks, s, cancel)
        })
    }

    fn decide_all<'s, 'e: 's>(
        &'e self,
        chunks: impl Iterator<Item = Decoded>,
        scope: &'s std::thread::Scope<'s, 'e>,
        cancel: &AtomicBool,
    ) -> Result<Comparison, SimulationError> {
        let mut baseline = Run::new(self.baseline, self.directory, self.grants);
        // The simulated run decides each chunk on its own thread meanwhile.
        let (sim_tx, sim_rx) = crossbeam_channel::bounded::<Arc<Vec<Item>>>(1);
        let (briefs_tx, briefs_rx) = crossbeam_channel::bounded::<Result<Vec<Brief>, SimulationError>>(1);
        let simulated_run = scope.spawn(move || {
            let mut simulated = Run::new(self.simulated, self.directory, self.grants);
            for chunk in sim_rx {
                let briefs = chunk.iter().filter_map(Item::replay).map(|r| simulated.decide(r)).collect();
                if briefs_tx.send(briefs).is_err() {
                    break;
                }
            }
            simulated.totals
        });
        let mut tally = Tally::new(self.sample);
        let compared = (|| {
            for chunk in chunks {
                if cancel.load(Ordering::Relaxed) {
                    return Err(SimulationError::Cancelled);
                }
                let chunk = Arc::new(chunk?);
                let stopped = || SimulationError::Replay("the simulated run stopped".into());
                sim_tx.send(chunk.clone()).map_err(|_| stopped())?;
                let base: Vec<Brief> =
                    chunk.iter().filter_map(Item::replay).map(|r| baseline.decide(r)).collect::<Result<_, _>>()?;
                let sim = briefs_rx.recv().map_err(|_| stopped())??;
                tally.add(&chunk, base, sim);
            }
            Ok(())
        })();
        // The simulated run ends once it has no more chunks; it is joined on
        // every path, so a failure there is an error here, not a panic.
        drop(sim_tx);
        let simulated = simulated_run.join();
        compared?;
        let simulated = simulated.map_err(|_| SimulationError::Replay("the simulated run failed".into()))?;
        Ok(Comparison {
            county: self.baseline.county(),
            from: self.from,
            to: self.to,
            policy_version: self.baseline.version.clone(),
            simulated_policy_version: self.simulated.version.clone(),
            directory_version: self.directory.version.clone(),
            claims_replayed: tally.replayed,
            claims_without_submission: tally.without,
            claims_unreadable: tally.unreadable,
            baseline: baseline.totals,
            simulated,
            changed: tally.changed,
            claims: tally.claims,
        })
    }
}

/// The claim-by-claim comparison of the two runs.
struct Tally {
    sample: usize,
    replayed: u64,
    without: u64,
    unreadable: u64,
    changed: ChangedCounts,
    claims: Vec<ChangedClaim>,
}

impl Tally {
    fn new(sample: usize) -> Self {
        Self { sample, replayed: 0, without: 0, unreadable: 0, changed: ChangedCounts::default(), claims: Vec::new() }
    }

    fn add(&mut self, chunk: &[Item], baseline: Vec<Brief>, simulated: Vec<Brief>) {
        self.without += chunk.iter().filter(|r| matches!(r, Item::WithoutSubmission)).count() as u64;
        self.unreadable += chunk.iter().filter(|r| matches!(r, Item::Unreadable)).count() as u64;
        for ((r, b), s) in chunk.iter().filter_map(Item::replay).zip(baseline).zip(simulated) {
            self.replayed += 1;
            let (status, amount) = (b.status != s.status, b.amount != s.amount);
            if status || amount {
                self.changed.claims += 1;
                self.changed.status += u64::from(status);
                self.changed.amount += u64::from(amount);
                if self.claims.len() < self.sample {
                    let claim_id = r.claim.claim_id.as_str().to_string();
                    self.claims.push(ChangedClaim { claim_id, baseline: b, simulated: s });
                }
            }
        }
    }
}

/// One line of the side-by-side totals: what both runs granted under a heading.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TotalsLine {
    /// `granted`, `kind` or `department`.
    pub section: &'static str,
    pub name: String,
    pub baseline_count: u64,
    #[serde(serialize_with = "as_amount")]
    pub baseline_amount: Decimal,
    pub simulated_count: u64,
    #[serde(serialize_with = "as_amount")]
    pub simulated_amount: Decimal,
    pub count_change: i64,
    #[serde(serialize_with = "as_amount")]
    pub amount_change: Decimal,
}

impl Comparison {
    /// Both runs' totals side by side: the whole, then by kind, then by department.
    pub fn lines(&self) -> Vec<TotalsLine> {
        let line = |section, name: &str, b: Option<&Granted>, s: Option<&Granted>| {
            let (b, s) = (b.cloned().unwrap_or_default(), s.cloned().unwrap_or_default());
            TotalsLine {
                section,
                name: name.to_string(),
                baseline_count: b.count,
                baseline_amount: b.amount,
                simulated_count: s.count,
                simulated_amount: s.amount,
                count_change: i64::try_from(s.count).unwrap_or(i64::MAX) - i64::try_from(b.count).unwrap_or(i64::MAX),
                amount_change: s.amount - b.amount,
            }
        };
        let mut out = vec![line("granted", "all", Some(&self.baseline.granted), Some(&self.simulated.granted))];
        for (section, b, s) in [
            ("kind", &self.baseline.by_kind, &self.simulated.by_kind),
            ("department", &self.baseline.by_department, &self.simulated.by_department),
        ] {
            let names: std::collections::BTreeSet<&String> = b.keys().chain(s.keys()).collect();
            out.extend(names.into_iter().map(|n| line(section, n, b.get(n), s.get(n))));
        }
        out
    }

    /// The comparison as a text table, for a terminal.
    pub fn table(&self) -> String {
        use std::fmt::Write;
        let mut t = String::new();
        let _ = writeln!(
            t,
            "{} {}..{}: {} claims replayed ({} without the claim as submitted)",
            self.county, self.from, self.to, self.claims_replayed, self.claims_without_submission
        );
        let _ = writeln!(
            t,
            "policy    {}\nsimulated {}\ndirectory {}\n",
            self.policy_version, self.simulated_policy_version, self.directory_version
        );
        let _ = writeln!(
            t,
            "{:<40} {:>8} {:>14} {:>8} {:>14} {:>8} {:>14}",
            "", "baseline", "amount", "simul.", "amount", "change", "amount"
        );
        for l in self.lines() {
            let _ = writeln!(
                t,
                "{:<40} {:>8} {:>14} {:>8} {:>14} {:>+8} {:>14}",
                format!("{} {}", l.section, l.name),
                l.baseline_count,
                fmt2(l.baseline_amount),
                l.simulated_count,
                fmt2(l.simulated_amount),
                l.count_change,
                fmt2(l.amount_change),
            );
        }
        let c = &self.changed;
        let _ = writeln!(t, "\nchanged: {} claims ({} in status, {} in amount)", c.claims, c.status, c.amount);
        for x in &self.claims {
            let b = |r: &Brief| format!("{:?} {}", r.status, fmt2(r.amount)).to_lowercase();
            let _ = writeln!(t, "  {:<40} {:>22} -> {}", x.claim_id, b(&x.baseline), b(&x.simulated));
        }
        t
    }

    /// The side-by-side totals as CSV (a header, then [`Comparison::lines`]).
    pub fn write_csv(&self, out: impl std::io::Write) -> anyhow::Result<()> {
        let mut w = csv::Writer::from_writer(out);
        for l in self.lines() {
            w.serialize(l)?;
        }
        w.flush()?;
        Ok(())
    }
}

/// A recorded claim as the rules read it: its sealed fields opened, parsed as
/// when it arrived (read as a [`crate::domain::Node`] borrowed from the
/// record's text, not built into a `Value`).
fn decode(r: Submitted, sealer: &Sealer, pseudonymizer: &Pseudonymizer) -> Item {
    let claim_id = r.claim_id;
    let item = r.claim.read(|stored, body_hash| {
        let Some(mut stored) = stored else { return Item::WithoutSubmission };
        let bound = match sealer.unseal_node(&mut stored, &claim_id) {
            Ok(bound) => bound,
            Err(e) => {
                tracing::error!(claim_id = %claim_id, error = %format!("{e:#}"), "a recorded claim cannot be opened; left out of the simulation");
                return Item::Unreadable;
            }
        };
        // The claim opened is the body its record's hash was taken of: keyed,
        // so that no one without the secret can make a changed claim match.
        // Records of the releases with plain hashes (before keyed ones, and
        // so before seals were bound) carry a seal without the binding; a
        // plain hash counts only for those.
        let plain_allowed = bound == Some(false);
        if body_hash.is_some_and(|h| !pseudonymizer.is_body_of(h, &stored, plain_allowed)) {
            tracing::error!(claim_id = %claim_id, "a recorded claim is not the body its record's hash was taken of; left out of the simulation");
            return Item::Unreadable;
        }
        match parse_claim(&stored) {
            Ok(claim) if claim.claim_id.as_str() != claim_id => {
                tracing::error!(claim_id = %claim_id, "a recorded claim holds another claim's id; left out of the simulation");
                Item::Unreadable
            }
            Ok(claim) => {
                let person = claim.applicant.as_ref().map(|a| pseudonymizer.person_key(&a.id_number));
                Item::Replay(Replay { claim, person })
            }
            Err(errs) => {
                let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
                tracing::error!(claim_id = %claim_id, fields = %fields.join(", "), "a recorded claim no longer parses; left out of the simulation");
                Item::Unreadable
            }
        }
    });
    item.unwrap_or_else(|e| {
        tracing::error!(claim_id = %claim_id, error = %format!("{e:#}"), "a recorded claim cannot be decoded; left out of the simulation");
        Item::Unreadable
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::ledger::StoredClaim;
    use crate::policy::Policy;

    /// `n` sealed Wuyi qualification-training claims (`sealed` of them as
    /// recorded today, the rest without the claim as submitted), in order.
    fn recorded(n: usize, sealer: &Sealer) -> Vec<Submitted> {
        (0..n)
            .map(|i| {
                let claim = match i % 1000 {
                    999 => StoredClaim::Missing,
                    _ => StoredClaim::Json(sealer.seal_claim(&submitted(i), None)),
                };
                Submitted { seq: i as u64 + 1, claim_id: format!("P-{i}"), claim }
            })
            .collect()
    }

    /// Claim `P-{i}` as submitted: a Wuyi qualification-training claim.
    fn submitted(i: usize) -> serde_json::Value {
        let born = NaiveDate::from_ymd_opt(1960, 1, 1).unwrap() + chrono::Days::new(i as u64);
        let first17 = format!("330723{}001", born.format("%Y%m%d"));
        let id = crate::domain::IdNumber::complete(&first17).unwrap();
        let level = if i.is_multiple_of(2) { "intermediate" } else { "junior" };
        json!({
            "claim_id": format!("P-{i}"), "county": "wuyi", "kind": "qualification_training", "event_date": "2020-06-15",
            "applicant": {"id_number": id, "name": "测试", "local_hukou": true, "employed_in_county": true},
            "details": {"occupation_code": "6-31-01-03", "level": level, "certificate_number": format!("C-{i}"), "payee": "person"}
        })
    }

    #[test]
    fn a_replay_over_many_chunks_keeps_recording_order_and_counts_every_claim() {
        let policy = Policy::embedded(None).unwrap();
        let baseline = policy.county(County::Wuyi);
        let change = ParamChange {
            parameter: "/rules/qualification_training/levels/intermediate".into(),
            value: json!("1300"),
            from: None,
        };
        let simulated = baseline.with_changes(&[change]).unwrap();
        let (sealer, pseudonymizer) = (Sealer::new("test"), Pseudonymizer::new("test"));
        let n = CHUNK * 3 + 17;
        let mut rows = recorded(n, &sealer);
        // One record sealed under another secret: left out and counted, not an error.
        rows[10].claim = StoredClaim::Json(
            Sealer::new("another").seal_claim(&json!({"claim_id": "P-10", "applicant": {"id_number": "x"}}), None),
        );
        // Another claim's sealed text in a record: its seal is bound to its own id.
        rows[20].claim = StoredClaim::Json(sealer.seal_claim(&submitted(21), None));
        // Another claim's text with nothing sealed: its id is not the record's.
        rows[30].claim = StoredClaim::Json(submitted(31));
        // Records as the ledgers keep them, with their body hashes: one as
        // recorded, one whose sealed part was replaced by another person's
        // number in clear (its record's keyed hash is of the original).
        let section = |claim: serde_json::Value, hash_of: &serde_json::Value| {
            let body_hash = pseudonymizer.body_hashes(hash_of).keyed;
            let part = crate::ledger::ClaimPart {
                body_hash,
                submitted: Some(claim),
                id_masked: None,
                recorded_by: "k".into(),
            };
            StoredClaim::Section(part.encode())
        };
        rows[40].claim = section(sealer.seal_claim(&submitted(40), None), &submitted(40));
        let mut swapped = submitted(42);
        swapped["applicant"]["id_number"] = submitted(43)["applicant"]["id_number"].clone();
        rows[42].claim = section(swapped, &submitted(42));
        // The same edit given the plain hash of the edited body (which needs
        // no secret): a claim with a bound seal, or none, takes keyed hashes only.
        let mut forged = submitted(44);
        forged["applicant"]["id_number"] = submitted(45)["applicant"]["id_number"].clone();
        let part = crate::ledger::ClaimPart {
            body_hash: crate::domain::body_hash(&forged),
            submitted: Some(forged),
            id_masked: None,
            recorded_by: "k".into(),
        };
        rows[44].claim = StoredClaim::Section(part.encode());
        let directory = Directory::default();
        let period = &baseline.common.period;
        let sim = Simulation {
            baseline,
            simulated: &simulated,
            directory: &directory,
            from: period.from,
            to: period.to,
            sample: 1000,
            // Fewer than the grants: the scratch tables grow past it.
            grants: 100,
        };
        let source: Submissions = Box::new(rows.into_iter().map(Ok));
        let c = sim.run(source, &sealer, &pseudonymizer, &AtomicBool::new(false)).unwrap();
        let without = (0..n).filter(|i| i % 1000 == 999).count() as u64;
        assert_eq!((c.claims_without_submission, c.claims_unreadable), (without, 5));
        assert_eq!(c.claims_replayed, n as u64 - without - 5);
        // Every intermediate grant (even claim numbers) changes; listed in recording order.
        let changed: Vec<usize> =
            c.claims.iter().map(|x| x.claim_id.strip_prefix("P-").unwrap().parse().unwrap()).collect();
        let want: Vec<usize> =
            (0..n).filter(|i| i % 2 == 0 && ![10, 20, 30, 42, 44].contains(i) && i % 1000 != 999).take(1000).collect();
        assert_eq!(changed, want);
        assert_eq!(c.changed.claims, c.changed.amount);
        assert_eq!(c.changed.status, 0);
        assert_eq!(c.baseline.granted.count, c.simulated.granted.count);
        let raised = Decimal::from(300) * Decimal::from(c.changed.amount);
        assert_eq!(c.simulated.granted.amount - c.baseline.granted.amount, raised);

        // Cancelled: stops with no comparison.
        let source: Submissions = Box::new(recorded(CHUNK * 3, &sealer).into_iter().map(Ok));
        let e = sim.run(source, &sealer, &pseudonymizer, &AtomicBool::new(true)).unwrap_err();
        assert!(matches!(e, SimulationError::Cancelled), "{e}");
        // A store read that fails mid-way is the store's error.
        let mut rows: Vec<Result<Submitted, LedgerError>> = recorded(CHUNK * 2, &sealer).into_iter().map(Ok).collect();
        rows.insert(CHUNK + 3, Err(LedgerError::Unavailable("disk".into())));
        let e = sim.run(Box::new(rows.into_iter()), &sealer, &pseudonymizer, &AtomicBool::new(false)).unwrap_err();
        assert!(matches!(e, SimulationError::Store(_)), "{e}");
    }

    /// A claim as the service records it (hashed and sealed from the
    /// request's text, its section encoded) reads back as the body its hash
    /// was taken of, numbers with fractions and exponents included.
    #[test]
    fn a_recorded_claim_reads_back_as_the_body_it_was_hashed_as() {
        let (sealer, pseudonymizer) = (Sealer::new("test"), Pseudonymizer::new("test"));
        let text = br#"{"claim_id":"F-1","county":"wuyi","kind":"online_training","event_date":"2020-06-15",
            "applicant":{"id_number":"330723199005060038","name":"\u5f20\u4e09","local_hukou":null},
            "details":{"days":[{"class_hours":2.50},{"class_hours":1e1}],"n":-0.0,"big":12345678901234567890}}"#;
        let body = crate::domain::Node::parse(text).unwrap();
        let hash = pseudonymizer.body_hashes(&body).keyed;
        let sealed = sealer.seal_node(body, "F-1", Some("330723********0038"));
        let part = crate::ledger::ClaimPart {
            body_hash: hash,
            submitted: Some(sealed),
            id_masked: None,
            recorded_by: "k".into(),
        };
        let read = StoredClaim::Section(part.encode()).read(|stored, body_hash| {
            let mut stored = stored.expect("kept");
            sealer.unseal_node(&mut stored, "F-1").expect("opens");
            pseudonymizer.is_body_of(body_hash.expect("recorded"), &stored, false)
        });
        assert!(read.unwrap(), "the claim read back hashes as it did when it arrived");
        assert!(!pseudonymizer.is_body_of("hmac:zz", &json!({}), false), "a hash that is not hex");
        // A plain hash counts only where allowed (records before keyed hashes).
        let body = json!({"claim_id": "F-1"});
        let plain = crate::domain::body_hash(&body);
        assert!(pseudonymizer.is_body_of(&plain, &body, true));
        assert!(!pseudonymizer.is_body_of(&plain, &body, false));
    }

    #[test]
    fn holder_ids_are_kept_end_to_end_and_read_back_by_number() {
        let mut ids = HolderIds::default();
        assert_eq!(ids.get(0), None);
        assert_eq!((ids.push("C-1"), ids.push("培训-22"), ids.push("C-333")), (0, 1, 2));
        assert_eq!(
            (ids.get(0), ids.get(1), ids.get(2), ids.get(3)),
            (Some("C-1"), Some("培训-22"), Some("C-333"), None)
        );
    }

    #[test]
    fn the_documented_example_request_is_valid() {
        let example = json!({
            "county": "wuyi", "from": "2020-01-01", "to": "2021-12-31",
            "changes": [
                {"parameter": "/rules/qualification_training/levels/intermediate", "value": "1300"},
                {"parameter": "/annual_limit", "value": 2, "from": "2021-01-01"}
            ],
            "sample": 20
        });
        let policy = Policy::embedded(None).unwrap();
        let r = check_request(&example, &policy).expect("the example and its changes are valid");
        assert_eq!((r.county, r.sample), (County::Wuyi, 20));
        assert_eq!(r.from.to_string(), "2020-01-01");
        let late = check_request(&json!({"county": "wuyi", "from": "2022-01-01"}), &policy).err().unwrap();
        assert_eq!(late[0].field, "/from");
        let backwards = json!({"county": "wuyi", "from": "2021-01-01", "to": "2020-01-01"});
        assert_eq!(check_request(&backwards, &policy).err().unwrap()[0].field, "/to");
    }

    fn fields(v: Value) -> Vec<String> {
        match check_request(&v, &Policy::embedded(None).unwrap()) {
            Ok(_) => Vec::new(),
            Err(e) => e.into_iter().map(|f| f.field).collect(),
        }
    }

    #[test]
    fn every_bad_field_is_named() {
        let bad = json!({
            "county": "hangzhou", "from": "2020-13-01", "to": 5, "sample": 1001, "extra": 1,
            "changes": [
                {"parameter": "annual_limit", "value": 2},
                {"value": 2, "from": "2021-02-30", "note": "x"},
                {"parameter": "/annual_limit"}
            ]
        });
        let mut got = fields(bad);
        got.sort();
        let mut want = vec![
            "/county",
            "/from",
            "/to",
            "/sample",
            "/extra",
            "/changes/0/parameter",
            "/changes/1/parameter",
            "/changes/1/from",
            "/changes/1/note",
            "/changes/2/value",
        ];
        want.sort();
        assert_eq!(got, want);
        assert_eq!(fields(json!({"county": "wuyi", "changes": {}})), vec!["/changes"]);
        assert!(fields(json!({"county": "changxing", "changes": [], "sample": 0})).is_empty());
    }

    /// A request whose shape is bad still has its well-formed changes
    /// checked against the policy, each named at its own place.
    #[test]
    fn the_changes_are_checked_beside_a_bad_shape() {
        let policy = Policy::embedded(None).unwrap();
        let named = |v: Value| {
            let mut f: Vec<String> = match check_request(&v, &policy) {
                Ok(_) => Vec::new(),
                Err(e) => e.into_iter().map(|f| f.field).collect(),
            };
            f.sort();
            f
        };
        let unknown = json!({"parameter": "/nope", "value": "1"});
        assert_eq!(
            named(json!({"county": "wuyi", "sample": 5000, "changes": [unknown]})),
            ["/changes/0/parameter", "/sample"]
        );
        assert_eq!(
            named(json!({"county": "wuyi", "extra": 1, "changes": [unknown]})),
            ["/changes/0/parameter", "/extra"]
        );
        // A malformed change is left out, and the places of the others kept.
        let bad_date = json!({"parameter": "/annual_limit", "value": 2, "from": "2021-02-30"});
        let bad_value = json!({"parameter": "/annual_limit", "value": "many"});
        assert_eq!(
            named(json!({"county": "wuyi", "changes": [unknown, bad_date, bad_value]})),
            ["/changes/0/parameter", "/changes/1/from", "/changes/2/value"]
        );
        // The window too, of the dates that read.
        let backwards = json!({"county": "wuyi", "from": "2021-01-01", "to": "2020-01-01", "sample": 5000});
        assert_eq!(named(backwards), ["/sample", "/to"]);
        assert_eq!(named(json!({"county": "wuyi", "from": "2022-01-01", "to": 5})), ["/from", "/to"]);
        // No county to check against: the shape's errors alone.
        assert_eq!(named(json!({"county": "hangzhou", "changes": [unknown]})), ["/county"]);
        // A well-formed request: the window's errors and the changes' together.
        assert_eq!(
            named(json!({"county": "wuyi", "from": "2022-01-01", "changes": [unknown]})),
            ["/changes/0/parameter", "/from"]
        );
        assert!(check_request(
            &json!({"county": "wuyi", "changes": [{"parameter": "/annual_limit", "value": 2}]}),
            &policy
        )
        .is_ok());
    }
}
