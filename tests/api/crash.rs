//! Crash consistency of the embedded store, over the real process. Cycle
//! after cycle on one store, the binary takes concurrent load (single claims,
//! batches, retries of a claim with its own body, reuses of a claim id with
//! another body, reads; many claims for a few people, so that their annual
//! limit is reached) and is killed with SIGKILL at a random moment while
//! requests are in flight. Then:
//!
//! - `subsidy-service check --store` finds no drift in the crashed store;
//! - restarted on that store, the service returns every acknowledged decision
//!   (a 201 or 200 answer, every decided item of a 200 batch) unchanged from
//!   `GET /v1/claims/{id}`; a claim whose answer was lost is either recorded
//!   (and reads the same ever after) or not at all, a batch all or nothing;
//! - no person has more counted grants in a year than the policy's annual
//!   limit, and the usage query lists exactly the counted grants the run saw;
//! - SIGTERM stops it, and `check --store` again finds no drift.
//!
//! Long, so ignored; `scripts/crash-test [CYCLES]` runs it. The environment
//! sets it up: `CRASH_CYCLES` (default 20), `CRASH_SEED` (default random,
//! printed: the same seed makes the same claims and choices; the moments of
//! the answers and the kills vary), `CRASH_CLIENTS` (concurrent clients,
//! default 8), `CRASH_KEEP_STORE=1` (keep the store, as after a violation),
//! `CRASH_SELF_TEST=1` (plant one wrong acknowledgement in the first cycle:
//! the run must then report it and fail).

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use chrono::{Datelike, NaiveDate};
use futures::stream::{self, StreamExt};
use serde_json::{json, Value};
use subsidy_service::domain::{County, Level};
use subsidy_service::policy::Policy;

use crate::helpers::{id_number, wy_qualification, Answer, BinaryApp, Client, PLATFORM};

/// The load runs this long (a random time in the range) before the kill.
const LOAD_BEFORE_KILL_MS: (usize, usize) = (300, 3000);
/// People claimed for by a cycle: a few hot ones, whose limits are reached…
const HOT_PEOPLE_OF_A_CYCLE: usize = 4;
/// …and many warm ones.
const WARM_PEOPLE_OF_A_CYCLE: usize = 300;
/// Hot people of every cycle: their limits are reached across restarts.
const HOT_PEOPLE_OF_THE_RUN: usize = 3;
/// Reads and conflicting reuses pick among the latest acknowledgements.
const RECENT: usize = 500;
/// Requests in flight at once while verifying a restarted service.
const VERIFIERS: usize = 6;
/// A request not answered in this time has no answer.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(30);
/// A verification request failing this often in a row is a violation.
const VERIFICATION_ATTEMPTS: usize = 4;
/// SIGTERM must stop the service within this time.
const GRACEFUL_STOP_WITHIN: Duration = Duration::from_secs(40);

#[tokio::test]
#[ignore = "long: run by scripts/crash-test"]
async fn acknowledged_decisions_and_annual_limits_survive_repeated_kill_9_under_load() {
    let settings = Settings::from_env();
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    println!(
        "crash-test: seed {}, {} cycles, {} concurrent clients, store {}",
        settings.seed,
        settings.cycles,
        settings.clients,
        store.display()
    );
    let mut rng = Rng::seeded(settings.seed);
    let mut residents = Residents::default();
    let hot_throughout: Vec<_> = (0..HOT_PEOPLE_OF_THE_RUN).map(|_| residents.new_one(&mut rng)).collect();
    let run = Arc::new(Run::new(settings, WuyiTerms::load()));
    let started = Instant::now();
    for n in 0..run.settings.cycles {
        let applicants = Applicants {
            hot: (0..HOT_PEOPLE_OF_A_CYCLE).map(|_| residents.new_one(&mut rng)).collect(),
            hot_throughout: hot_throughout.clone(),
            warm: (0..WARM_PEOPLE_OF_A_CYCLE).map(|_| residents.new_one(&mut rng)).collect(),
        };
        cycle(&run, &store, n, Arc::new(applicants), &mut rng).await;
    }
    let book = run.book();
    book.print_summary(&run.settings, started.elapsed());
    if !book.violations.is_empty() || run.settings.keep_store {
        println!("store kept at {}", dir.keep().display());
    }
    let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
    for (kind, _) in &book.violations {
        *kinds.entry(kind).or_default() += 1;
    }
    assert!(
        book.violations.is_empty(),
        "{} violation(s) (seed {}): {kinds:?}",
        book.violations.len(),
        run.settings.seed
    );
    assert!(!book.acknowledged.is_empty(), "no claim was acknowledged: nothing was verified");
    assert!(book.counts.refused_at_the_limit > 0, "no claim reached the annual limit: the limit was not exercised");
}

/// One cycle: start on the store, load, kill, check, restart, verify, stop, check.
async fn cycle(run: &Arc<Run>, store: &Path, n: usize, applicants: Arc<Applicants>, rng: &mut Rng) {
    let started = Instant::now();
    let acknowledged_before = run.book().acknowledged.len();
    let app = BinaryApp::start(store).await;
    run.stop.store(false, Ordering::SeqCst);
    let clients: Vec<_> = (0..run.settings.clients)
        .map(|_| {
            tokio::spawn(run.clone().load(client_of(&app.address), Rng::seeded(rng.next()), applicants.clone(), n))
        })
        .collect();
    let load_for = Duration::from_millis(rng.between(LOAD_BEFORE_KILL_MS.0, LOAD_BEFORE_KILL_MS.1) as u64);
    tokio::time::sleep(load_for).await;
    // The kill lands while requests are in flight: wait up to a second for one.
    let mut in_flight = run.in_flight.load(Ordering::SeqCst);
    for _ in 0..200 {
        if in_flight > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
        in_flight = run.in_flight.load(Ordering::SeqCst);
    }
    // No new request from here on; those in flight stay in flight.
    run.stop.store(true, Ordering::SeqCst);
    drop(app); // SIGKILL
    run.book().counts.in_flight_at_kills += in_flight as u64;
    for client in clients {
        tokio::time::timeout(Duration::from_secs(60), client)
            .await
            .expect("a client ends once the service is gone")
            .expect("a client runs to its end");
    }
    if run.settings.self_test && n == 0 {
        run.plant_a_wrong_acknowledgement();
    }
    let acknowledged = run.book().acknowledged.len() - acknowledged_before;

    run.check_store(store, n, "after kill -9");
    let app = BinaryApp::start(store).await;
    let api = client_of(&app.address);
    run.resolve_lost_answers(&api).await;
    let verified = run.verify_acknowledged(&api, n).await;
    let person_years = run.verify_usage(&api, n).await;
    if !app.stop_within(GRACEFUL_STOP_WITHIN) {
        run.violation("graceful_stop_timeout", format!("cycle {}: SIGTERM did not stop the service", n + 1));
    }
    run.check_store(store, n, "after restart and SIGTERM");
    {
        let mut book = run.book();
        book.verified_in_last_cycle = verified;
        book.cycles_done = n + 1;
    }
    println!(
        "cycle {:3}: killed after {:.2}s with {in_flight} request(s) in flight; +{acknowledged} acknowledged; \
         verified {verified} acknowledged claims, {person_years} person-years; violations so far {} ({:.1}s)",
        n + 1,
        load_for.as_secs_f64(),
        run.book().violations.len(),
        started.elapsed().as_secs_f64()
    );
}

/// What the environment asks of the run (see the module's documentation).
struct Settings {
    cycles: usize,
    seed: u64,
    clients: usize,
    keep_store: bool,
    self_test: bool,
}

impl Settings {
    fn from_env() -> Self {
        let number = |name: &str| {
            std::env::var(name)
                .ok()
                .map(|v| v.trim().parse::<u64>().unwrap_or_else(|_| panic!("{name}={v}: not a number")))
        };
        let flag = |name: &str| std::env::var(name).is_ok_and(|v| !matches!(v.trim(), "" | "0" | "false"));
        Settings {
            cycles: number("CRASH_CYCLES").map_or(20, |n| n as usize),
            seed: number("CRASH_SEED").unwrap_or_else(random_seed),
            clients: number("CRASH_CLIENTS").map_or(8, |n| n as usize).max(1),
            keep_store: flag("CRASH_KEEP_STORE"),
            self_test: flag("CRASH_SELF_TEST"),
        }
    }
}

fn random_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    std::collections::hash_map::RandomState::new().build_hasher().finish() % 1_000_000_000
}

/// The run's random choices, all following from its seed.
struct Rng(rand::rngs::StdRng);

impl Rng {
    fn seeded(seed: u64) -> Self {
        use rand::SeedableRng;
        Self(rand::rngs::StdRng::seed_from_u64(seed))
    }
    /// Uniform in `0..n`.
    fn below(&mut self, n: usize) -> usize {
        rand::Rng::random_range(&mut self.0, 0..n)
    }
    /// Uniform in `low..=high`.
    fn between(&mut self, low: usize, high: usize) -> usize {
        rand::Rng::random_range(&mut self.0, low..=high)
    }
    fn chance(&mut self, p: f64) -> bool {
        rand::Rng::random_bool(&mut self.0, p)
    }
    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
    fn next(&mut self) -> u64 {
        rand::Rng::random(&mut self.0)
    }
    /// Uniform in `0.0..1.0`.
    fn fraction(&mut self) -> f64 {
        rand::Rng::random(&mut self.0)
    }
}

/// What the run reads from Wuyi's policy data: when its claims' events may
/// fall, and each year's limit of counted grants.
struct WuyiTerms {
    first_day: NaiveDate,
    days: usize,
    annual_limits: BTreeMap<i32, u32>,
}

impl WuyiTerms {
    fn load() -> Self {
        let policy = Policy::load(Path::new("config/policies"), None).expect("the policy data loads");
        let common = &policy.county(County::Wuyi).common;
        let period = &common.period;
        let annual_limits = (period.from.year()..=period.to.year())
            .map(|year| {
                let last_day = NaiveDate::from_ymd_opt(year, 12, 31).expect("a date");
                (year, *common.annual_limit.at(last_day))
            })
            .collect();
        let days = (period.to - period.from).num_days() as usize + 1;
        WuyiTerms { first_day: period.from, days, annual_limits }
    }

    fn event_date(&self, rng: &mut Rng) -> NaiveDate {
        self.first_day + chrono::Days::new(rng.below(self.days) as u64)
    }

    fn limit(&self, year: i32) -> u32 {
        self.annual_limits[&year]
    }
}

/// Wuyi residents, each with a valid ID number of their own.
#[derive(Default)]
struct Residents {
    seen: HashSet<String>,
}

impl Residents {
    /// Someone new, born in Wuyi between 1962 and 1999.
    fn new_one(&mut self, rng: &mut Rng) -> String {
        let earliest = NaiveDate::from_ymd_opt(1962, 1, 1).expect("a date");
        loop {
            let birth = earliest + chrono::Days::new(rng.below(38 * 365) as u64);
            let id = id_number(&format!("330723{}{:03}", birth.format("%Y%m%d"), rng.below(1000)));
            if self.seen.insert(id.clone()) {
                return id;
            }
        }
    }
}

/// The people a cycle's claims are for.
struct Applicants {
    hot: Vec<String>,
    hot_throughout: Vec<String>,
    warm: Vec<String>,
}

impl Applicants {
    /// A quarter of the claims for the cycle's hot people, a tenth for the
    /// run's, the rest for the warm ones.
    fn pick(&self, rng: &mut Rng) -> &str {
        let r = rng.fraction();
        let people = if r < 0.25 {
            &self.hot
        } else if r < 0.35 {
            &self.hot_throughout
        } else {
            &self.warm
        };
        rng.pick(people).as_str()
    }
}

/// A claim the run sent.
struct Sent {
    claim: Value,
    person: String,
    year: i32,
}

/// How often things happened.
#[derive(Default)]
struct Counts {
    requests: u64,
    no_answer: u64,
    single_201: u64,
    replays_200: u64,
    batches_200: u64,
    batch_items_decided: u64,
    batch_items_replayed: u64,
    retries: u64,
    conflicts_409: u64,
    reads: u64,
    approved_and_counted: u64,
    refused_at_the_limit: u64,
    other_decisions: u64,
    in_flight_at_kills: u64,
    lost_batches_checked: u64,
    verified_reads: u64,
    usage_checks: u64,
    store_checks: u64,
}

/// What the run knows of the ledger.
#[derive(Default)]
struct Book {
    claims_made: u64,
    sent: HashMap<String, Sent>,
    sent_order: Vec<String>,
    /// The first decision acknowledged for each claim.
    acknowledged: HashMap<String, Value>,
    acknowledged_order: Vec<String>,
    /// Decisions found recorded after a crash, of claims whose answer was lost.
    recovered: HashMap<String, Value>,
    /// Claims sent whose answer has not come (yet).
    unknown: HashSet<String>,
    /// Claims whose answer was lost and that were found not recorded.
    not_recorded: u64,
    /// The claims of each batch whose answer was lost.
    lost_batches: Vec<Vec<String>>,
    /// Claims of batches in flight: retries leave them alone, so that a lost
    /// batch can be checked for atomicity.
    batches_in_flight: HashSet<String>,
    /// Acknowledged claims verified after the latest restart.
    verified_in_last_cycle: usize,
    cycles_done: usize,
    violations: Vec<(&'static str, String)>,
    counts: Counts,
}

impl Book {
    fn print_summary(&self, settings: &Settings, took: Duration) {
        let c = &self.counts;
        println!("\n== crash-test summary ==");
        println!(
            "  seed {}: {} / {} cycles in {:.1}s",
            settings.seed,
            self.cycles_done,
            settings.cycles,
            took.as_secs_f64()
        );
        println!(
            "  claims sent {}, acknowledged {}; {} acknowledged claims re-read identical after the last restart",
            self.sent.len(),
            self.acknowledged.len(),
            self.verified_in_last_cycle
        );
        println!(
            "  lost answers: {} claims found recorded, {} not; {} lost batches checked for all or nothing",
            self.recovered.len(),
            self.not_recorded,
            c.lost_batches_checked
        );
        println!(
            "  answers: single 201 {}, replays 200 {}, batches 200 {} ({} items decided, {} replayed), \
             retries {}, conflicts 409 {}, reads {}",
            c.single_201,
            c.replays_200,
            c.batches_200,
            c.batch_items_decided,
            c.batch_items_replayed,
            c.retries,
            c.conflicts_409,
            c.reads
        );
        println!(
            "  decisions: approved and counted {}, refused at the annual limit {}, other {}",
            c.approved_and_counted, c.refused_at_the_limit, c.other_decisions
        );
        println!(
            "  requests {} ({} without an answer, {} in flight at the kills); verification reads {}, \
             usage checks {}, store checks {}",
            c.requests, c.no_answer, c.in_flight_at_kills, c.verified_reads, c.usage_checks, c.store_checks
        );
        println!("  violations: {}", self.violations.len());
    }
}

/// The run: its settings, its book, and the signals to its clients.
struct Run {
    settings: Settings,
    terms: WuyiTerms,
    book: Mutex<Book>,
    in_flight: AtomicUsize,
    stop: AtomicBool,
}

impl Run {
    fn new(settings: Settings, terms: WuyiTerms) -> Self {
        Run { settings, terms, book: Mutex::default(), in_flight: AtomicUsize::new(0), stop: AtomicBool::new(false) }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().expect("the book")
    }

    fn violation(&self, kind: &'static str, detail: String) {
        println!("  VIOLATION [{kind}] {}", clip(&detail, 600));
        self.book().violations.push((kind, detail));
    }

    // ----- load

    /// One client: requests one after another until the run stops it.
    async fn load(self: Arc<Self>, api: Client, mut rng: Rng, applicants: Arc<Applicants>, cycle: usize) {
        while !self.stop.load(Ordering::SeqCst) {
            let r = rng.fraction();
            if r < 0.50 {
                self.single(&api, &mut rng, &applicants, cycle).await;
            } else if r < 0.70 {
                self.batch(&api, &mut rng, &applicants, cycle).await;
            } else if r < 0.85 {
                self.retry(&api, &mut rng).await;
            } else if r < 0.90 {
                self.conflict(&api, &mut rng).await;
            } else {
                self.read(&api, &mut rng).await;
            }
        }
    }

    /// A new qualification-training claim, noted as sent with no answer yet.
    fn new_claim(&self, rng: &mut Rng, applicants: &Applicants, cycle: usize) -> (String, Value) {
        let person = applicants.pick(rng).to_string();
        let event = self.terms.event_date(rng);
        let occupation = format!(
            "{}-{:02}-{:02}-{:02}",
            rng.between(1, 8),
            rng.between(1, 99),
            rng.between(1, 99),
            rng.between(1, 99)
        );
        let level = rng.pick(Level::ALL).as_str();
        let mut book = self.book();
        book.claims_made += 1;
        let n = book.claims_made;
        let claim_id = format!("CT-c{:03}-{n:07}", cycle + 1);
        let claim = wy_qualification(&claim_id, &person, &occupation, level, &format!("CT{n:09}"), &event.to_string());
        book.sent.insert(claim_id.clone(), Sent { claim: claim.clone(), person, year: event.year() });
        book.sent_order.push(claim_id.clone());
        book.unknown.insert(claim_id.clone());
        (claim_id, claim)
    }

    /// Sends a request of the load: its answer, or `None` when none came.
    async fn send(&self, request: reqwest::RequestBuilder) -> Option<Answer> {
        self.book().counts.requests += 1;
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let answer = try_answer(request).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if answer.is_none() {
            self.book().counts.no_answer += 1;
        }
        answer
    }

    async fn single(&self, api: &Client, rng: &mut Rng, applicants: &Applicants, cycle: usize) {
        let (claim_id, claim) = self.new_claim(rng, applicants, cycle);
        let Some(answer) = self.send(api.client.post(api.url("/v1/claims")).bearer_auth(PLATFORM).json(&claim)).await
        else {
            return;
        };
        match answer.status {
            201 => {
                self.book().counts.single_201 += 1;
                self.record(&claim_id, answer.body, "201");
            }
            // A retry of this claim got there first.
            200 => {
                self.book().counts.replays_200 += 1;
                self.replay_is_marked(&claim_id, &answer);
                self.record(&claim_id, answer.body, "200");
            }
            status => {
                self.book().unknown.remove(&claim_id);
                self.violation("claim_refused", format!("{claim_id}: {status} {}", answer.body));
            }
        }
    }

    /// A batch of 2 to 12 claims, now and then of 100 to 300; a fifth of
    /// them end with their first claim again, which must be a replay.
    async fn batch(&self, api: &Client, rng: &mut Rng, applicants: &Applicants, cycle: usize) {
        let n = if rng.chance(0.05) { rng.between(100, 300) } else { rng.between(2, 12) };
        let (mut ids, mut claims): (Vec<_>, Vec<_>) = (0..n).map(|_| self.new_claim(rng, applicants, cycle)).unzip();
        let repeats_first = rng.chance(0.2);
        if repeats_first {
            ids.push(ids[0].clone());
            claims.push(claims[0].clone());
        }
        self.book().batches_in_flight.extend(ids.iter().cloned());
        let body = json!({ "claims": claims });
        let answer = self.send(api.client.post(api.url("/v1/claims/batch")).bearer_auth(PLATFORM).json(&body)).await;
        {
            let mut book = self.book();
            for id in &ids {
                book.batches_in_flight.remove(id);
            }
            if answer.is_none() {
                let unique: BTreeSet<_> = ids.iter().cloned().collect();
                book.lost_batches.push(unique.into_iter().collect());
            }
        }
        let Some(answer) = answer else { return };
        if answer.status != 200 {
            self.violation("batch_refused", format!("{} {}", answer.status, clip(&answer.body.to_string(), 500)));
            return;
        }
        self.book().counts.batches_200 += 1;
        let results = answer.body["results"].as_array().cloned().unwrap_or_default();
        if results.len() != ids.len() {
            self.violation("batch_result_count", format!("{} claims sent, {} results", ids.len(), results.len()));
        }
        for (i, (claim_id, item)) in ids.iter().zip(results).enumerate() {
            if item["claim_id"] != claim_id.as_str() {
                self.violation("batch_item_order", format!("item {i}: expected {claim_id}, got {item}"));
            }
            if item.get("decision").is_none() {
                self.violation("batch_item_error", format!("{claim_id}: {item}"));
                continue;
            }
            let replayed = item["replayed"] == true;
            {
                let mut book = self.book();
                book.counts.batch_items_decided += 1;
                book.counts.batch_items_replayed += u64::from(replayed);
            }
            if repeats_first && i == ids.len() - 1 && !replayed {
                self.violation("batch_duplicate_not_replayed", format!("{claim_id}: {item}"));
            }
            self.record(claim_id, item["decision"].clone(), "batch");
        }
    }

    /// A claim sent before, again with the same body: its recorded decision
    /// (200, marked as a replay), or 201 if it had not been recorded.
    async fn retry(&self, api: &Client, rng: &mut Rng) {
        let (claim_id, claim, was_acknowledged) = {
            let mut book = self.book();
            if book.sent_order.is_empty() {
                return;
            }
            let claim_id = rng.pick(&book.sent_order).clone();
            if book.batches_in_flight.contains(&claim_id) {
                return;
            }
            let was_acknowledged = book.acknowledged.contains_key(&claim_id);
            if !was_acknowledged && !book.recovered.contains_key(&claim_id) {
                book.unknown.insert(claim_id.clone());
            }
            book.counts.retries += 1;
            (claim_id.clone(), book.sent[&claim_id].claim.clone(), was_acknowledged)
        };
        let Some(answer) = self.send(api.client.post(api.url("/v1/claims")).bearer_auth(PLATFORM).json(&claim)).await
        else {
            return;
        };
        match answer.status {
            200 => {
                self.book().counts.replays_200 += 1;
                self.replay_is_marked(&claim_id, &answer);
                self.record(&claim_id, answer.body, "retry 200");
            }
            201 if was_acknowledged => {
                let first = self.book().acknowledged[&claim_id].clone();
                self.violation(
                    "acknowledged_claim_decided_again",
                    format!("{claim_id}: first {first}, now {}", answer.body),
                );
            }
            201 => self.record(&claim_id, answer.body, "retry 201"),
            status => self.violation("retry_refused", format!("{claim_id}: {status} {}", answer.body)),
        }
    }

    /// An acknowledged claim's id with another certificate: 409.
    async fn conflict(&self, api: &Client, rng: &mut Rng) {
        let Some((claim_id, _)) = self.recent_acknowledgement(rng) else { return };
        let mut claim = self.book().sent[&claim_id].claim.clone();
        let other = format!("{}-other", claim["details"]["certificate_number"].as_str().unwrap_or_default());
        claim["details"]["certificate_number"] = other.into();
        let Some(answer) = self.send(api.client.post(api.url("/v1/claims")).bearer_auth(PLATFORM).json(&claim)).await
        else {
            return;
        };
        if answer.status == 409 && answer.body["code"] == "CLAIM_ID_CONFLICT" {
            self.book().counts.conflicts_409 += 1;
        } else {
            self.violation("conflict_not_409", format!("{claim_id}: {} {}", answer.status, answer.body));
        }
    }

    /// An acknowledged claim read back before the crash: its decision.
    async fn read(&self, api: &Client, rng: &mut Rng) {
        let Some((claim_id, want)) = self.recent_acknowledgement(rng) else { return };
        self.book().counts.reads += 1;
        let request = api.client.get(api.url(&format!("/v1/claims/{claim_id}"))).bearer_auth(PLATFORM);
        let Some(answer) = self.send(request).await else { return };
        if answer.status != 200 || answer.body != want {
            self.violation(
                "read_differs_before_crash",
                format!("{claim_id}: {} {}, acknowledged {want}", answer.status, answer.body),
            );
        }
    }

    fn recent_acknowledgement(&self, rng: &mut Rng) -> Option<(String, Value)> {
        let book = self.book();
        let order = &book.acknowledged_order;
        if order.is_empty() {
            return None;
        }
        let claim_id = rng.pick(&order[order.len().saturating_sub(RECENT)..]).clone();
        let decision = book.acknowledged[&claim_id].clone();
        Some((claim_id, decision))
    }

    fn replay_is_marked(&self, claim_id: &str, answer: &Answer) {
        let marked = answer.headers.get("idempotent-replayed").is_some_and(|v| v == "true");
        if !marked {
            self.violation("replay_without_header", format!("{claim_id}: {:?}", answer.headers));
        }
    }

    /// An acknowledged decision: it must equal any earlier one of the claim.
    fn record(&self, claim_id: &str, decision: Value, how: &str) {
        if decision["claim_id"] != claim_id {
            self.violation("wrong_claim_id", format!("{claim_id} ({how}): {decision}"));
        }
        let earlier = {
            let mut book = self.book();
            book.unknown.remove(claim_id);
            match book.acknowledged.get(claim_id) {
                Some(first) => Some(first.clone()),
                None => {
                    let earlier = book.recovered.remove(claim_id);
                    book.acknowledged.insert(claim_id.to_string(), earlier.clone().unwrap_or_else(|| decision.clone()));
                    book.acknowledged_order.push(claim_id.to_string());
                    earlier
                }
            }
        };
        if let Some(first) = earlier.filter(|first| *first != decision) {
            self.violation("replay_differs", format!("{claim_id} ({how}): first {first}, now {decision}"));
        }
        self.tally(claim_id, &decision);
    }

    fn tally(&self, claim_id: &str, decision: &Value) {
        let year = self.book().sent[claim_id].year;
        if decision["status"] == "approved" && decision["counted"] == true {
            self.book().counts.approved_and_counted += 1;
            let used = decision["usage"]["used"].as_u64().unwrap_or(0);
            if used > u64::from(self.terms.limit(year)) {
                self.violation("usage_over_limit_in_decision", format!("{claim_id}: {decision}"));
            }
        } else if decision["reasons"].as_array().is_some_and(|r| r.iter().any(|r| r["code"] == "ANNUAL_LIMIT_REACHED"))
        {
            self.book().counts.refused_at_the_limit += 1;
        } else {
            self.book().counts.other_decisions += 1;
        }
    }

    /// The first cycle's self-test: one acknowledgement changed, which the
    /// verification must report.
    fn plant_a_wrong_acknowledgement(&self) {
        let mut book = self.book();
        let Some(claim_id) = book.acknowledged_order.first().cloned() else { return };
        book.acknowledged.get_mut(&claim_id).expect("acknowledged")["amount"] = json!("99999.99");
        println!("  self-test: planted a wrong amount for {claim_id}");
    }

    // ----- verification

    /// A verification request to the restarted service, tried again on a
    /// transport error; `None` (and a violation) if it never got an answer.
    async fn verification_answer(&self, what: &str, request: impl Fn() -> reqwest::RequestBuilder) -> Option<Answer> {
        for attempt in 1..=VERIFICATION_ATTEMPTS {
            if let Some(answer) = try_answer(request()).await {
                return Some(answer);
            }
            if attempt < VERIFICATION_ATTEMPTS {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        self.violation("verify_request_failed", what.to_string());
        None
    }

    /// Whether each claim whose answer was lost was recorded; every lost
    /// batch must be recorded whole or not at all (one atomic commit).
    async fn resolve_lost_answers(&self, api: &Client) {
        let mut lost: Vec<String> = self.book().unknown.iter().cloned().collect();
        lost.sort();
        stream::iter(lost)
            .for_each_concurrent(VERIFIERS, |claim_id| async move {
                let path = format!("/v1/claims/{claim_id}");
                let request = || api.client.get(api.url(&path)).bearer_auth(PLATFORM);
                let Some(answer) = self.verification_answer(&path, request).await else { return };
                let mut book = self.book();
                if book.acknowledged.contains_key(&claim_id) {
                    book.unknown.remove(&claim_id);
                    return;
                }
                match answer.status {
                    200 => {
                        book.unknown.remove(&claim_id);
                        book.recovered.insert(claim_id, answer.body);
                    }
                    404 => {
                        book.unknown.remove(&claim_id);
                        book.not_recorded += 1;
                    }
                    status => {
                        drop(book);
                        self.violation("get_lost_answer_failed", format!("{claim_id}: {status} {}", answer.body));
                    }
                }
            })
            .await;

        let partly_recorded: Vec<String> = {
            let mut book = self.book();
            let lost_batches = std::mem::take(&mut book.lost_batches);
            book.counts.lost_batches_checked += lost_batches.len() as u64;
            lost_batches
                .iter()
                .filter_map(|ids| {
                    let recorded =
                        |id: &&String| book.acknowledged.contains_key(*id) || book.recovered.contains_key(*id);
                    let missing: Vec<_> = ids.iter().filter(|id| !recorded(id)).collect();
                    (!missing.is_empty() && missing.len() < ids.len()).then(|| {
                        format!("{} of {} claims recorded; missing {:?}", ids.len() - missing.len(), ids.len(), missing)
                    })
                })
                .collect()
        };
        for detail in partly_recorded {
            self.violation("batch_partly_recorded", detail);
        }
    }

    /// Every acknowledged decision, and every one found recorded after a
    /// lost answer, reads back identical: how many acknowledged ones did.
    async fn verify_acknowledged(&self, api: &Client, cycle: usize) -> usize {
        let items: Vec<(String, Value, bool)> = {
            let book = self.book();
            let acknowledged = book.acknowledged.iter().map(|(id, d)| (id.clone(), d.clone(), true));
            acknowledged.chain(book.recovered.iter().map(|(id, d)| (id.clone(), d.clone(), false))).collect()
        };
        let verified = AtomicUsize::new(0);
        let verified_ref = &verified;
        stream::iter(items)
            .for_each_concurrent(VERIFIERS, |(claim_id, want, acknowledged)| async move {
                let path = format!("/v1/claims/{claim_id}");
                let request = || api.client.get(api.url(&path)).bearer_auth(PLATFORM);
                let Some(got) = self.verification_answer(&path, request).await else { return };
                let what = if acknowledged { "acknowledged" } else { "found recorded after a lost answer" };
                if got.status != 200 {
                    let kind = if acknowledged { "acknowledged_claim_lost" } else { "recorded_claim_lost" };
                    self.violation(kind, format!("cycle {}: {claim_id} is {}; {what}: {want}", cycle + 1, got.status));
                } else if got.body != want {
                    let kind = if acknowledged { "acknowledged_claim_differs" } else { "recorded_claim_changed" };
                    self.violation(
                        kind,
                        format!("cycle {}: {claim_id} {what}: {want}, stored: {}", cycle + 1, got.body),
                    );
                } else {
                    self.book().counts.verified_reads += 1;
                    if acknowledged {
                        verified_ref.fetch_add(1, Ordering::SeqCst);
                    }
                }
            })
            .await;
        verified.into_inner()
    }

    /// For every person and year of the run: no more counted grants than the
    /// annual limit, the usage count equal to the claims the usage query
    /// lists, those all approved, all known to the run, and every counted
    /// grant the run knows of among them. How many person-years were checked.
    async fn verify_usage(&self, api: &Client, cycle: usize) -> usize {
        let (counted, person_years, known) = {
            let book = self.book();
            let decisions = book.recovered.iter().chain(book.acknowledged.iter());
            let mut counted: HashMap<(String, i32), BTreeSet<String>> = HashMap::new();
            let mut known = HashSet::new();
            for (claim_id, decision) in decisions {
                known.insert(claim_id.clone());
                if decision["status"] == "approved" && decision["counted"] == true {
                    let sent = &book.sent[claim_id];
                    counted.entry((sent.person.clone(), sent.year)).or_default().insert(claim_id.clone());
                }
            }
            let people: BTreeSet<&String> = book.sent.values().map(|s| &s.person).collect();
            let mut person_years = Vec::new();
            for person in people {
                for year in self.terms.annual_limits.keys() {
                    person_years.push((person.clone(), *year));
                }
            }
            (counted, person_years, known)
        };
        let checked = person_years.len();
        let (counted, known) = (&counted, &known);
        stream::iter(person_years)
            .for_each_concurrent(VERIFIERS, |(person, year)| async move {
                let body = json!({"county": "wuyi", "id_number": person, "year": year});
                let request = || api.client.post(api.url("/v1/usage/query")).bearer_auth(PLATFORM).json(&body);
                let Some(usage) = self.verification_answer("/v1/usage/query", request).await else { return };
                if usage.status != 200 {
                    self.violation("usage_query_failed", format!("{} {}", usage.status, usage.body));
                    return;
                }
                self.book().counts.usage_checks += 1;
                let problems =
                    usage_problems(&usage.body, self.terms.limit(year), counted.get(&(person.clone(), year)), known);
                if !problems.is_empty() {
                    let masked = format!("{}********{}", &person[..6], &person[14..]);
                    self.violation(
                        "usage",
                        format!(
                            "cycle {}, {masked} in {year}: {}; usage {}",
                            cycle + 1,
                            problems.join("; "),
                            usage.body
                        ),
                    );
                }
            })
            .await;
        checked
    }

    /// `subsidy-service check --store` must find no drift.
    fn check_store(&self, store: &Path, cycle: usize, when: &str) {
        let out = crate::maintenance::bin().arg("check").arg("--store").arg(store).output().expect("the check runs");
        self.book().counts.store_checks += 1;
        if !out.status.success() {
            let output = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
            let tail: String = output.chars().rev().take(3000).collect::<Vec<_>>().into_iter().rev().collect();
            self.violation("store_check_failed", format!("cycle {}, {when}: {}; {tail}", cycle + 1, out.status));
        }
    }
}

/// What is wrong with a person-year's usage answer, given its annual limit,
/// the counted grants the run knows of and every claim it knows decided.
fn usage_problems(
    usage: &Value,
    limit: u32,
    counted_known: Option<&BTreeSet<String>>,
    known: &HashSet<String>,
) -> Vec<String> {
    let no_claims = Vec::new();
    let claims = usage["claims"].as_array().unwrap_or(&no_claims);
    let listed: BTreeSet<&str> = claims.iter().filter_map(|c| c["claim_id"].as_str()).collect();
    let used = usage["used"].as_u64().unwrap_or(u64::MAX);
    let limit = u64::from(limit);
    let counted_known: BTreeSet<&str> = counted_known.into_iter().flatten().map(String::as_str).collect();
    let mut problems = Vec::new();
    if usage["limit"].as_u64() != Some(limit) {
        problems.push(format!("limit {} where the policy data says {limit}", usage["limit"]));
    }
    let not_approved: Vec<_> = claims.iter().filter(|c| c["status"] != "approved").collect();
    if !not_approved.is_empty() {
        problems.push(format!("lists claims that are not approved: {not_approved:?}"));
    }
    if used > limit {
        problems.push(format!("used {used} > {limit}"));
    }
    if counted_known.len() as u64 > limit {
        problems.push(format!("{} approved and counted decisions seen > {limit}", counted_known.len()));
    }
    if used != listed.len() as u64 {
        problems.push(format!("used {used} but {} claims listed", listed.len()));
    }
    let missing: Vec<_> = counted_known.difference(&listed).collect();
    if !missing.is_empty() {
        problems.push(format!("approved and counted claims not listed: {missing:?}"));
    }
    let unseen: Vec<_> = listed.iter().filter(|id| !known.contains(**id)).collect();
    if !unseen.is_empty() {
        problems.push(format!("lists claims the run never saw decided: {unseen:?}"));
    }
    problems
}

/// HTTP helpers to `address` whose requests give up after `REQUEST_TIMEOUT`.
fn client_of(address: &str) -> Client {
    let client = reqwest::Client::builder().timeout(REQUEST_TIMEOUT).build().expect("an HTTP client");
    Client { address: address.to_string(), client }
}

/// The answer to a request, or `None` when none came whole (the service
/// killed before or while answering).
async fn try_answer(request: reqwest::RequestBuilder) -> Option<Answer> {
    let response = request.send().await.ok()?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.ok()?;
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Some(Answer { status, headers, body })
}

/// At most `n` characters of `s`.
fn clip(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}
