//! Microbenchmark of the pure rules core: `cargo bench --bench decide`.
//!
//! - `decide/mix`: one `decide` (with its full calculation trace and
//!   reasons) per iteration, cycling through the example claim of every
//!   county and kind (`openapi::claim_examples()`): the mean is the mean time
//!   of one decision over the mix. Target: ≤ 5 µs.
//! - `parse/mix`: one `parse_claim` from a `serde_json::Value`, same mix.
//! - `parse_json/mix`: bytes → `serde_json::Value` → `parse_claim` (what a
//!   request pays before the rules).
//! - `decision_json/mix`: serialising the decision to JSON bytes (what a
//!   response pays after the rules).
//! - `person_key`: the HMAC-SHA256 pseudonym of one ID number.
//! - `decide_kind/<county_kind>`: one `decide` for each example.
//! - `sled_commit/{64,1000}`: not the rules but the store under them, for
//!   comparison: the one write a recorded claim makes in layout v2 (its
//!   record: a small header and the zstd-compressed body), N claims per
//!   `apply_batch` + `flush` + `fdatasync` of sled's log, on sled configured
//!   as `ledger::Store::open` does. Reported per group; divide by N for one
//!   claim. Run only these with `cargo bench --bench decide -- sled_commit`.
//!
//! The ledger is empty (`EmptyLedger`); the trade-friction directory lists
//! the examples' enterprises so the uplift steps are part of the trace.

use std::hint::black_box;
use std::path::Path;

use chrono::{NaiveDate, TimeZone, Utc};
use criterion::{criterion_group, criterion_main, Criterion};
use serde_json::Value;
use subsidy_service::domain::{parse_claim, Claim};
use subsidy_service::openapi::claim_examples;
use subsidy_service::policy::Policy;
use subsidy_service::privacy::Pseudonymizer;
use subsidy_service::rules::{decide, Directory, EmptyLedger};

struct Fixture {
    policy: Policy,
    directory: Directory,
    names: Vec<&'static str>,
    values: Vec<Value>,
    bytes: Vec<Vec<u8>>,
    claims: Vec<Claim>,
    persons: Vec<Option<String>>,
}

fn fixture() -> Fixture {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let policy = Policy::load(&root.join("config/policies"), None).expect("policy data loads");
    let mut directory = Directory { version: "bench".into(), ..Directory::default() };
    let listed = NaiveDate::from_ymd_opt(2019, 6, 1).expect("date");
    let pseudonymizer = Pseudonymizer::new("bench-secret");
    let (mut names, mut values, mut bytes, mut claims, mut persons) = (vec![], vec![], vec![], vec![], vec![]);
    for (name, value) in claim_examples() {
        let claim = parse_claim(&value).unwrap_or_else(|e| panic!("example {name} parses: {e:?}"));
        for code in ["employer", "organization"] {
            let holder = if code == "employer" { value.pointer("/applicant/employer") } else { value.get(code) };
            if let Some(cc) = holder.and_then(|v| v.get("credit_code")).and_then(Value::as_str) {
                directory.listed.insert(cc.to_string(), listed);
            }
        }
        persons.push(claim.applicant.as_ref().map(|a| pseudonymizer.person_key(&a.id_number)));
        bytes.push(serde_json::to_vec(&value).expect("json"));
        names.push(name);
        values.push(value);
        claims.push(claim);
    }
    Fixture { policy, directory, names, values, bytes, claims, persons }
}

fn benches(c: &mut Criterion) {
    let f = fixture();
    let n = f.claims.len();
    let at = Utc.with_ymd_and_hms(2021, 1, 15, 8, 0, 0).single().expect("time");
    let decide_one = |i: usize| {
        let claim = &f.claims[i];
        decide(claim, f.persons[i].as_deref(), &EmptyLedger, f.policy.county(claim.county), &f.directory, at)
            .expect("an empty ledger never fails")
    };
    // Every example must give a decision with a trace (approved ones have steps).
    let approved = (0..n).filter(|&i| !decide_one(i).decision.calculation.is_empty()).count();
    eprintln!("decide bench: {n} example claims, {approved} with a calculation trace");

    let mut i = 0usize;
    c.bench_function("decide/mix", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(decide_one(black_box(i)))
        })
    });
    let mut i = 0usize;
    c.bench_function("parse/mix", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(parse_claim(black_box(&f.values[i])).is_ok())
        })
    });
    let mut i = 0usize;
    c.bench_function("parse_json/mix", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            let v: Value = serde_json::from_slice(black_box(&f.bytes[i])).expect("json");
            black_box(parse_claim(&v).is_ok())
        })
    });
    let outcomes: Vec<_> = (0..n).map(decide_one).collect();
    let mut i = 0usize;
    c.bench_function("decision_json/mix", |b| {
        b.iter(|| {
            i = (i + 1) % n;
            black_box(serde_json::to_vec(black_box(&outcomes[i].decision)).expect("json").len())
        })
    });
    let pseudonymizer = Pseudonymizer::new("bench-secret");
    let id = &f.claims[0].applicant.as_ref().expect("applicant").id_number;
    c.bench_function("person_key", |b| b.iter(|| black_box(pseudonymizer.person_key(black_box(id)))));

    let mut g = c.benchmark_group("decide_kind");
    g.warm_up_time(std::time::Duration::from_millis(300));
    g.measurement_time(std::time::Duration::from_secs(1));
    for (k, name) in f.names.iter().enumerate() {
        g.bench_function(*name, |b| b.iter(|| black_box(decide_one(black_box(k)))));
    }
    g.finish();
}

fn sled_benches(c: &mut Criterion) {
    let f = fixture();
    let at = Utc.with_ymd_and_hms(2021, 1, 15, 8, 0, 0).single().expect("time");
    let claim = &f.claims[0];
    let mut d = decide(claim, f.persons[0].as_deref(), &EmptyLedger, f.policy.county(claim.county), &f.directory, at)
        .expect("an empty ledger never fails")
        .decision;
    d.recorded = true;
    // A record body is the decision, the claim as submitted (sealed) and a
    // few ids, compressed at `ledger::record`'s level (zstd -1, here without
    // its dictionary); the header
    // adds ~150 B of ids, dates and key digests.
    let json = serde_json::to_vec(&serde_json::json!({"decision": d, "body_hash": "cc82ed3fb5675451525c053318d4646d7e45e4b54eba3641438a870491e9631c", "submitted": f.values[0], "id_masked": "330723********0013", "recorded_by": "local-platform"})).expect("json");
    let record = zstd::bulk::compress(&json, -1).expect("zstd");
    let mut g = c.benchmark_group("sled_commit");
    g.sample_size(10);
    g.warm_up_time(std::time::Duration::from_millis(500));
    g.measurement_time(std::time::Duration::from_secs(3));
    let dir = tempfile::tempdir().expect("tempdir");
    let db = sled::Config::new()
        .path(dir.path())
        .cache_capacity(64 * 1024 * 1024)
        .mode(sled::Mode::HighThroughput)
        .open()
        .expect("sled");
    let tree = db.open_tree("ledger-v2").expect("tree");
    let log = std::fs::File::open(dir.path().join("db")).expect("sled's log");
    let header = [7u8; 150];
    let mut n = 0u64;
    for per in [64u64, 1000] {
        g.bench_function(per.to_string(), |b| {
            b.iter(|| {
                let mut batch = sled::Batch::default();
                for _ in 0..per {
                    n += 1;
                    let mut k = vec![b'R'];
                    k.extend_from_slice(&n.to_be_bytes());
                    batch.insert(k, [&header[..], &record[..]].concat());
                }
                tree.apply_batch(batch).expect("apply");
                db.flush().expect("flush");
                log.sync_data().expect("fdatasync");
            })
        });
    }
    eprintln!(
        "sled_commit: {n} claims written ({} B record, {} B as JSON), {} bytes on disk",
        record.len(),
        json.len(),
        db.size_on_disk().unwrap_or(0)
    );
    g.finish();
}

criterion_group!(decide_benches, benches, sled_benches);
criterion_main!(decide_benches);
