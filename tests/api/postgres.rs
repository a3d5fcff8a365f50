//! The PostgreSQL ledger (API.md §7): the same guarantees as the embedded
//! store, in one process and across replicas sharing one database. The
//! database is a throwaway cluster the tests start themselves
//! (`scripts/postgres-throwaway`, which installs PostgreSQL when missing).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};
use tokio::net::{TcpListener, TcpStream};

use crate::concurrency::{
    claims_on_one_certificate_grant_it_once, fifty_claims_for_one_person_grant_three,
    twenty_identical_submissions_record_one_decision,
};
use crate::golden::{public_cases_pass, run_file_over, scenario_files_pass};
use crate::helpers::{
    base, fresh_database, id_number, listing, spawn_app, spawn_app_on_postgres, spawn_app_with, use_postgres,
    wy_qualification, BinaryApp, Client, TestApp, AUDITOR, PLATFORM,
};

/// Two service processes sharing one fresh database.
async fn two_replicas() -> (BinaryApp, BinaryApp) {
    let url = fresh_database().await;
    let a = BinaryApp::start_on_postgres(&url).await;
    let b = BinaryApp::start_on_postgres(&url).await;
    (a, b)
}

fn apis(replicas: &(BinaryApp, BinaryApp)) -> [Client; 2] {
    [base(&replicas.0.address), base(&replicas.1.address)]
}

/// New decisions, alone and in a batch, are answered with their records'
/// texts on PostgreSQL too.
#[tokio::test]
async fn new_decisions_are_answered_with_their_stored_texts_on_postgres() {
    let app = spawn_app_on_postgres().await;
    crate::ledger::new_decisions_are_answered_with_their_stored_texts(&app.api(), 20, "330723198702").await;
}

#[tokio::test]
async fn every_public_golden_case_passes_on_postgres() {
    public_cases_pass(&spawn_app_on_postgres().await.api()).await;
}

#[tokio::test]
async fn every_project_scenario_file_passes_on_postgres() {
    scenario_files_pass(spawn_app_on_postgres).await;
}

#[tokio::test]
async fn an_institution_reads_only_its_own_claims_on_postgres() {
    crate::auth::institution_reads_only_its_own_claims(&spawn_app_on_postgres().await.api()).await;
}

#[tokio::test]
async fn simulations_replay_a_postgres_ledger() {
    crate::simulations::replays_recorded_claims_under_changed_figures(&spawn_app_on_postgres().await.api()).await;
}

#[tokio::test]
async fn races_in_one_process_on_postgres() {
    let app = spawn_app_on_postgres().await;
    fifty_claims_for_one_person_grant_three(&[app.api()], "33072319880808011").await;
    let app = spawn_app_on_postgres().await;
    twenty_identical_submissions_record_one_decision(&[app.api()], "33072319880808012").await;
    let app = spawn_app_on_postgres().await;
    claims_on_one_certificate_grant_it_once(&[app.api()]).await;
}

#[tokio::test]
async fn fifty_claims_for_one_person_split_over_two_replicas_grant_exactly_three() {
    let replicas = two_replicas().await;
    fifty_claims_for_one_person_grant_three(&apis(&replicas), "33072319880808021").await;
}

/// A database whose default isolation is repeatable read (a role's or a
/// database's setting, or a PostgreSQL-compatible engine's): each
/// transaction's reads after its locks must still see what the lock's
/// previous holder committed, so the yearly limit holds all the same.
#[tokio::test]
async fn the_yearly_limit_holds_on_a_database_whose_default_isolation_is_repeatable_read() {
    let url = fresh_database().await;
    let admin = subsidy_service::ledger::postgres::connect(&url).await.expect("the test database answers");
    let name = url.rsplit_once('/').map(|(_, name)| name).expect("a database name");
    let set = format!("ALTER DATABASE {name} SET default_transaction_isolation = 'repeatable read'");
    admin.batch_execute(&set).await.expect("the setting");
    let shown: String = admin_setting(&url, "default_transaction_isolation").await;
    assert_eq!(shown, "repeatable read", "new sessions take the database's setting");
    let replicas = (BinaryApp::start_on_postgres(&url).await, BinaryApp::start_on_postgres(&url).await);
    fifty_claims_for_one_person_grant_three(&apis(&replicas), "33072319880808023").await;
}

/// The replicas' sessions: a transaction left idle (its replica gone without
/// closing the connection) is ended after a minute, freeing its locks, unless
/// the URL's `options` say otherwise; commits wait for the WAL flush
/// whatever the URL says.
#[tokio::test]
async fn sessions_end_idle_transactions_and_always_commit_synchronously() {
    let url = fresh_database().await;
    let settings = |url: String| async move {
        let target = subsidy_service::ledger::postgres::session_config(&url).expect("a URL");
        let (c, connection) = target.config.connect(target.tls).await.expect("the test database answers");
        tokio::spawn(connection);
        let mut shown = Vec::new();
        for name in ["idle_in_transaction_session_timeout", "synchronous_commit"] {
            shown.push(c.query_one(&format!("SHOW {name}"), &[]).await.expect("the setting").get::<_, String>(0));
        }
        shown
    };
    assert_eq!(settings(url.clone()).await, ["1min", "on"]);
    let own = format!("{url}?options=-c%20idle_in_transaction_session_timeout%3D2s%20-c%20synchronous_commit%3Doff");
    assert_eq!(settings(own).await, ["2s", "on"]);
}

/// A claim whose client gives up while its transaction waits for a lock
/// leaves no session behind waiting: the statement is cancelled and the
/// connection closed, though the lock is still held.
#[tokio::test]
async fn a_claim_given_up_while_waiting_for_a_lock_leaves_no_session_waiting() {
    given_up_claims_leave_no_session_waiting(spawn_app_on_postgres().await).await;
}

/// The test above on `app`, a service on PostgreSQL.
pub async fn given_up_claims_leave_no_session_waiting(app: TestApp) {
    let url = app.database.clone().expect("a database");
    // Hold the claim id's advisory lock (as the ledger computes it) from a session of our own.
    let lock = claim_id_lock("GIVEUP-1");
    let holder = subsidy_service::ledger::postgres::connect(&url).await.unwrap();
    holder.execute("SELECT pg_advisory_lock($1)", &[&lock]).await.unwrap();
    let claim =
        wy_qualification("GIVEUP-1", &id_number("33072319900101088"), "6-31-01-03", "junior", "GU-1", "2020-06-15");
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(800)).build().unwrap();
    let given_up = impatient.post(format!("{}/v1/claims", app.address)).bearer_auth(PLATFORM).json(&claim).send().await;
    assert!(given_up.is_err(), "the claim waits for the lock");
    let waiting =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
    let mut left = -1;
    for _ in 0..50 {
        left = holder.query_one(waiting, &[]).await.unwrap().get::<_, i64>(0);
        if left == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(left, 0, "a session still waits for the lock its client gave up on");
    holder.execute("SELECT pg_advisory_unlock($1)", &[&lock]).await.unwrap();
    assert_eq!(app.api().post_claim(&claim).await.status, 201, "the claim is recorded when sent again");
}

/// The advisory lock a claim id takes, as the ledger computes it.
fn claim_id_lock(claim_id: &str) -> i64 {
    use sha2::Digest as _;
    let d = sha2::Sha256::digest(format!("claim-id\0{claim_id}"));
    i64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]])
}

/// A replica's `/metrics` shows its database connections, and none of the
/// embedded store's figures: with a pool of one connection, held by a claim
/// waiting for a lock, a second claim waits for the connection.
#[tokio::test]
async fn metrics_show_a_replicas_database_connections() {
    let url = fresh_database().await;
    let app = spawn_app_with(|s| {
        use_postgres(s, &url);
        s.store.pool_size = 1;
        s.store.connect_timeout_ms = 30_000;
    })
    .await;
    let api = app.api();
    let gauges = || async {
        let text = app.api().get("/metrics", PLATFORM).await.body.as_str().unwrap_or_default().to_string();
        let gauge = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok());
        let names = [
            "subsidy_ledger_db_connections ",
            "subsidy_ledger_db_connections_idle ",
            "subsidy_ledger_db_connections_max ",
            "subsidy_ledger_db_waiting ",
        ];
        assert!(!text.contains("subsidy_ledger_fsyncs") && !text.contains("subsidy_ledger_claims"), "{text}");
        names.map(|n| gauge(n).unwrap_or_else(|| panic!("{n}: {text}")))
    };
    let claim = |n: &str| {
        let id = format!("MET-{n}");
        wy_qualification(&id, &id_number(&format!("3307231987070701{n}")), "6-31-01-03", "junior", &id, "2020-07-01")
    };
    assert_eq!(api.post_claim(&claim("1")).await.status, 201);
    assert_eq!(gauges().await, [1, 1, 1, 0], "[open, idle, max, waiting] with nothing in flight");
    // Claim 2 holds the one connection, waiting for its claim id's lock;
    // claim 3 waits for the connection.
    let lock = claim_id_lock("MET-2");
    let holder = subsidy_service::ledger::postgres::connect(&url).await.unwrap();
    holder.execute("SELECT pg_advisory_lock($1)", &[&lock]).await.unwrap();
    let (second, third) = (app.api(), app.api());
    let second = tokio::spawn(async move { second.post_claim(&claim("2")).await.status });
    let waiting =
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'";
    while holder.query_one(waiting, &[]).await.unwrap().get::<_, i64>(0) == 0 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let third = tokio::spawn(async move { third.post_claim(&claim("3")).await.status });
    let mut seen = [0; 4];
    for _ in 0..100 {
        seen = gauges().await;
        if seen[3] > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen, [1, 0, 1, 1], "[open, idle, max, waiting] with one claim waiting for the connection");
    holder.execute("SELECT pg_advisory_unlock($1)", &[&lock]).await.unwrap();
    assert_eq!((second.await.unwrap(), third.await.unwrap()), (201, 201));
}

/// A setting as a new session of the database at `url` has it.
async fn admin_setting(url: &str, name: &str) -> String {
    let c = subsidy_service::ledger::postgres::connect(url).await.expect("the test database answers");
    c.query_one(&format!("SHOW {name}"), &[]).await.expect("the setting").get(0)
}

/// Batches and single claims for one person at once, over two replicas: the
/// recording order is the order of the decisions, batches included (a batch
/// is numbered once its keys are locked), so its three grants come first.
#[tokio::test]
async fn batches_and_claims_for_one_person_are_recorded_in_the_order_decided() {
    let replicas = two_replicas().await;
    let apis = apis(&replicas);
    let person = id_number("33072319880808024");
    let occupations = ["6-31-01-03", "6-18-02-04", "4-03-02-01", "4-07-05-01", "4-10-01-01"];
    let levels: Vec<&str> = subsidy_service::domain::Level::ALL.iter().map(|l| l.as_str()).collect();
    let claim = |i: usize| {
        let (occupation, level) = (occupations[i % 5], levels[i / 5 % 7]);
        wy_qualification(&format!("BO-{i:02}"), &person, occupation, level, &format!("BO-C{i}"), "2020-07-01")
    };
    let batches = (0..5).map(|b| {
        let api = apis[b % 2].clone();
        let claims: Vec<Value> = (0..4).map(|j| claim(b * 4 + j)).collect();
        async move { api.post("/v1/claims/batch", PLATFORM, &json!({ "claims": claims })).await.status }
    });
    let singles = (20..30).map(|i| {
        let (api, c) = (apis[i % 2].clone(), claim(i));
        async move { api.post_claim(&c).await.status }
    });
    let (batched, single) = tokio::join!(join_all(batches), join_all(singles));
    assert!(batched.iter().all(|s| *s == 200) && single.iter().all(|s| *s == 201), "{batched:?} {single:?}");
    let statuses = crate::concurrency::recorded_statuses(&apis[0], "BO-", 30).await;
    let granted_first: Vec<&str> = ["approved"; 3].into_iter().chain(["rejected"; 27]).collect();
    assert_eq!(statuses, granted_first, "the recording order is the order of the decisions");
}

#[tokio::test]
async fn twenty_identical_claims_over_two_replicas_record_one_decision() {
    let replicas = two_replicas().await;
    twenty_identical_submissions_record_one_decision(&apis(&replicas), "33072319880808022").await;
}

#[tokio::test]
async fn one_certificate_claimed_through_two_replicas_is_granted_once() {
    let replicas = two_replicas().await;
    claims_on_one_certificate_grant_it_once(&apis(&replicas)).await;
}

/// Every scenario file, its steps sent to two replicas in turn: a directory
/// put through one is used by the other, a revocation through one frees the
/// limit for the other, usage and reports agree.
#[tokio::test]
async fn every_scenario_file_passes_with_its_steps_spread_over_two_replicas() {
    let mut files: Vec<_> = std::fs::read_dir("tests/scenarios")
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    let mut failures = Vec::new();
    for f in files {
        let replicas = two_replicas().await;
        failures.extend(run_file_over(&apis(&replicas), &f).await.1);
    }
    assert!(failures.is_empty(), "{} step(s) failed:\n{}", failures.len(), failures.join("\n"));
}

#[tokio::test]
async fn a_replica_killed_under_load_loses_no_acknowledged_claim() {
    let (a, b) = two_replicas().await;
    let (to_a, to_b) = (base(&a.address), base(&b.address));
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let senders: Vec<_> = (0..16)
        .map(|w| {
            let (api, acknowledged) = (to_a.clone(), acknowledged.clone());
            tokio::spawn(async move {
                for i in 0.. {
                    let id = format!("K9-{w}-{i}");
                    // Most of a worker's claims are over its person's limit: a decision all the same.
                    let person = id_number(&format!("33072319850101{w:03}"));
                    let claim =
                        wy_qualification(&id, &person, "6-31-01-03", "junior", &format!("K9C-{w}-{i}"), "2020-07-01");
                    let Ok(r) = api.client.post(api.url("/v1/claims")).bearer_auth(PLATFORM).json(&claim).send().await
                    else {
                        return;
                    };
                    if r.status() == 201 {
                        let body: serde_json::Value = r.json().await.unwrap_or_default();
                        acknowledged.lock().unwrap().push((id, body));
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    drop(a); // SIGKILL
    for s in senders {
        let _ = s.await;
    }
    let acknowledged = std::mem::take(&mut *acknowledged.lock().unwrap());
    assert!(acknowledged.len() > 20, "only {} claims were acknowledged before the kill", acknowledged.len());
    for (id, decision) in &acknowledged {
        let got = to_b.get(&format!("/v1/claims/{id}"), AUDITOR).await;
        assert_eq!(got.status, 200, "acknowledged claim {id} is missing after the kill");
        assert_eq!(got.body["status"], decision["status"]);
        assert_eq!(got.body["amount"], decision["amount"]);
    }
    // The survivor keeps deciding.
    let claim =
        wy_qualification("K9-after", &id_number("33072319850909001"), "6-31-01-03", "junior", "K9-AFTER", "2020-07-01");
    assert_eq!(to_b.post_claim(&claim).await.status, 201);
}

/// A TCP forwarder to the database that can cut every connection and refuse
/// new ones (the database unreachable), then let them through again.
struct Forwarder {
    port: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Forwarder {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let open = Arc::new(Mutex::new(Vec::new()));
        let (up2, open2) = (up.clone(), open.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    continue; // dropped: the connection is refused
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut out) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
                    }
                });
                open2.lock().unwrap().push(task.abort_handle());
            }
        });
        Self { port, up, open }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        self.open.lock().unwrap().drain(..).for_each(|t| t.abort());
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

/// A fresh database of the test cluster behind a forwarder: the forwarder,
/// and the URL through it (of the database named `database` instead, when
/// given).
async fn behind_forwarder(database: Option<&str>) -> (Forwarder, String) {
    let url = fresh_database().await;
    let (server, fresh) = url.trim_start_matches("postgres://postgres@").split_once('/').unwrap();
    let forwarder = Forwarder::start(server.to_string()).await;
    let through = format!("postgres://postgres@127.0.0.1:{}/{}", forwarder.port, database.unwrap_or(fresh));
    (forwarder, through)
}

/// Settings of a ledger at `url` that waits 500 ms for a connection.
fn on_postgres_briefly(s: &mut subsidy_service::configuration::Settings, url: &str) {
    use_postgres(s, url);
    s.store.connect_timeout_ms = 500;
}

// Multi-threaded: the forwarder runs on the test's runtime while the
// application's start-up (synchronous) connects through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_gives_503_and_the_service_reconnects_by_itself() {
    let (forwarder, through) = behind_forwarder(None).await;
    let app = spawn_app_with(|s| on_postgres_briefly(s, &through)).await;
    let api = app.api();
    let person = id_number("33072319870707001");
    let claim = |n: usize, level: &str| {
        wy_qualification(&format!("OUT-{n}"), &person, "6-31-01-03", level, &format!("OUT-C{n}"), "2020-07-01")
    };
    assert_eq!(api.post_claim(&claim(1, "junior")).await.status, 201);

    forwarder.cut();
    let during = api.post_claim(&claim(2, "intermediate")).await;
    assert_eq!(during.status, 503, "{}", during.body);
    assert_eq!(during.body["code"], "STORE_UNAVAILABLE");
    assert_eq!(api.get("/readyz", PLATFORM).await.status, 503);
    assert_eq!(api.get("/v1/claims/OUT-1", AUDITOR).await.status, 503, "a failed read is never 'absent'");

    forwarder.restore();
    let mut after = None;
    for _ in 0..50 {
        let a = api.post_claim(&claim(3, "senior")).await;
        if a.status != 503 {
            after = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(after.expect("the service reconnected").status, 201);
    assert_eq!(api.get("/readyz", PLATFORM).await.status, 200);
    assert_eq!(api.get("/v1/claims/OUT-2", AUDITOR).await.status, 404, "nothing of the refused claim was written");
    assert_eq!(api.usage("wuyi", &person, 2020).await.body["used"], 2);
}

/// API.md §7 from the start: a database that cannot be reached when the
/// service starts does not stop it; claims and `/readyz` answer 503 until
/// the database answers, and then the schema is made and claims recorded.
/// One that answers and refuses (no such database) stops the start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_unreachable_at_start_gives_503_until_it_answers() {
    let (forwarder, through) = behind_forwarder(None).await;
    forwarder.cut();
    let app = spawn_app_with(|s| on_postgres_briefly(s, &through)).await;
    let api = app.api();
    let person = id_number("33072319870707021");
    let claim = |n: usize| {
        wy_qualification(&format!("LATE-{n}"), &person, "6-31-01-03", "junior", &format!("LATE-C{n}"), "2020-07-01")
    };
    let before = api.post_claim(&claim(1)).await;
    assert_eq!(before.status, 503, "{}", before.body);
    assert_eq!(before.body["code"], "STORE_UNAVAILABLE");
    assert_eq!(api.get("/readyz", PLATFORM).await.status, 503);
    assert_eq!(api.get("/healthz", "").await.status, 200, "alive, not ready");
    // The directory in force is not known: no policy document shows a version of it.
    for path in ["/v1/policies", "/v1/policies/wuyi"] {
        let a = api.get(path, PLATFORM).await;
        assert_eq!(a.status, 503, "{path}: {}", a.body);
        assert_eq!(a.body["code"], "STORE_UNAVAILABLE");
    }

    forwarder.restore();
    let mut ready = false;
    for _ in 0..100 {
        if api.get("/readyz", PLATFORM).await.status == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the service became ready once the database answered");
    assert_eq!(api.get("/v1/policies/wuyi", PLATFORM).await.status, 200, "the directory in force is known again");
    assert_eq!(api.post_claim(&claim(2)).await.status, 201);
    assert_eq!(api.get("/v1/claims/LATE-1", AUDITOR).await.status, 404, "nothing of the refused claim was written");

    let missing = format!("{}/no_such_database", through.rsplit_once('/').unwrap().0);
    let refused = subsidy_service::startup::Application::build({
        let dir = tempfile::tempdir().unwrap();
        let mut s = crate::helpers::test_settings(&dir.path().join("store"));
        use_postgres(&mut s, &missing);
        s
    });
    let err = refused.err().expect("a database that refuses stops the start");
    assert!(format!("{err:#}").contains("no_such_database"), "{err:#}");
}

/// A database first reached after the start that then refuses it (here: no
/// such database) stops the service, exit status an error, instead of
/// leaving it answering 503 for ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_refuses_once_reached_after_the_start_stops_the_service() {
    let (forwarder, through) = behind_forwarder(Some("no_such_database")).await;
    forwarder.cut();
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::helpers::test_settings(&dir.path().join("store"));
    on_postgres_briefly(&mut settings, &through);
    let app = subsidy_service::startup::Application::build(settings).expect("an unreachable database lets it start");
    let api = crate::helpers::base(&format!("http://127.0.0.1:{}", app.port()));
    let running = tokio::spawn(app.run_until_stopped());
    assert_eq!(api.get("/readyz", PLATFORM).await.status, 503);
    forwarder.restore();
    let ended = tokio::time::timeout(Duration::from_secs(20), running).await.expect("the service stopped");
    let err = ended.expect("no panic").expect_err("stopped with an error");
    assert!(format!("{err:#}").contains("store failed"), "{err:#}");
}

/// Rows whose claim is not kept, which the foreign keys refuse.
const ORPHAN_HOLDER: &str =
    "INSERT INTO holders (key, claim_id) VALUES ('\\x00112233445566778899aabbccddeeff', 'NOT-KEPT')";
const ORPHAN_USAGE: &str =
    "INSERT INTO usage_counts (key, claim_id) VALUES ('\\x00112233445566778899aabbccddeeff', 'NOT-KEPT')";
const ORPHAN_EVENT: &str = "INSERT INTO events (seq, claim_seq, event) VALUES (9999999, 424242, '{}')";

/// The first column of a query's rows.
async fn column<T: for<'a> tokio_postgres::types::FromSql<'a>>(c: &tokio_postgres::Client, sql: &str) -> Vec<T> {
    c.query(sql, &[]).await.unwrap().iter().map(|r| r.get(0)).collect()
}

/// `subsidy-service migrate --url URL`, run to its end.
pub fn migrate_command(url: &str) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_subsidy-service"))
        .args(["migrate", "--url", url])
        .output()
        .expect("the binary runs")
}

#[tokio::test]
async fn the_migrate_command_creates_the_schema_once() {
    let url = fresh_database().await;
    let first = migrate_command(&url);
    assert!(first.status.success(), "{}", String::from_utf8_lossy(&first.stderr));
    assert!(String::from_utf8_lossy(&first.stdout).contains("applied schema migrations [1, 2, 3, 4]"));
    let again = migrate_command(&url);
    assert!(again.status.success());
    assert!(String::from_utf8_lossy(&again.stdout).contains("up to date"));
    // A service started on the migrated database decides claims.
    let app = BinaryApp::start_on_postgres(&url).await;
    let claim =
        wy_qualification("MIG-1", &id_number("33072319870707002"), "6-31-01-03", "junior", "MIG-C1", "2020-07-01");
    assert_eq!(base(&app.address).post_claim(&claim).await.status, 201);
}

/// A database the release with migration 2 left without the claims' foreign
/// keys gets them back from migrations 3 (added, new rows checked) and 4
/// (the rows there checked); a row whose claim is not kept stops migration
/// 4, which names the constraint, and leaves 3 applied.
#[tokio::test]
async fn migrations_3_and_4_restore_the_foreign_keys_on_a_database_in_use() {
    let url = fresh_database().await;
    let migrate = || migrate_command(&url);
    let claim =
        wy_qualification("FK-1", &id_number("33072319870707002"), "6-31-01-03", "junior", "FK-C1", "2020-07-01");
    {
        let app = BinaryApp::start_on_postgres(&url).await;
        assert_eq!(base(&app.address).post_claim(&claim).await.status, 201);
    }
    // The database as migration 2 left it, with a row it let in.
    let c = subsidy_service::ledger::postgres::connect(&url).await.unwrap();
    c.batch_execute(include_str!("../../src/ledger/migrations/0002_no_row_lock_per_write.sql")).await.unwrap();
    c.execute("DELETE FROM schema_migrations WHERE version IN (3, 4)", &[]).await.unwrap();
    c.execute(ORPHAN_HOLDER, &[]).await.unwrap();
    let refused = migrate();
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("schema migration 4") && message.contains("holders_claim_id_fkey"), "{message}");
    // Migration 3 was applied (rows written from then on are checked), 4 is still to do.
    assert_eq!(column::<i32>(&c, "SELECT version FROM schema_migrations ORDER BY version").await, [1, 2, 3]);
    let refused_now = c.execute(ORPHAN_USAGE, &[]).await.expect_err("a usage row of no claim, once migration 3 is in");
    assert_eq!(refused_now.code(), Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION));
    c.execute("DELETE FROM holders WHERE claim_id = 'NOT-KEPT'", &[]).await.unwrap();
    let applied = migrate();
    assert!(applied.status.success(), "{}", String::from_utf8_lossy(&applied.stderr));
    assert!(String::from_utf8_lossy(&applied.stdout).contains("applied schema migrations [4]"));
    let validated = column::<bool>(&c, "SELECT convalidated FROM pg_constraint WHERE conname LIKE '%claim%fkey'").await;
    assert_eq!(validated, [true, true, true], "the three foreign keys, checked");
    let orphan = c.execute(ORPHAN_EVENT, &[]).await.expect_err("an event of no claim");
    assert_eq!(orphan.code(), Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION));
    // The claim recorded before is still there: a retry replays it.
    let app = BinaryApp::start_on_postgres(&url).await;
    assert_eq!(base(&app.address).post_claim(&claim).await.status, 200, "a replay of the recorded claim");
}

#[tokio::test]
async fn a_batch_is_recorded_in_order_and_listed_across_replicas() {
    let replicas = two_replicas().await;
    let [a, b] = apis(&replicas);
    let person = id_number("33072319870707003");
    let levels = ["junior", "intermediate", "senior", "technician"];
    let mut claims: Vec<_> = levels
        .iter()
        .enumerate()
        .map(|(i, l)| wy_qualification(&format!("B-{i}"), &person, "6-31-01-03", l, &format!("B-C{i}"), "2020-07-01"))
        .collect();
    claims[1]["department"] = json!("education");
    let batch = a.post("/v1/claims/batch", PLATFORM, &json!({ "claims": claims })).await;
    assert_eq!(batch.status, 200, "{}", batch.body);
    let listed = listing(&b, "/v1/claims?county=wuyi", 4).await;
    let ids = listed.claim_ids();
    assert_eq!(ids, ["B-0", "B-1", "B-2", "B-3"], "recording order is the batch's order");
    let statuses: Vec<_> =
        listed.body["claims"].as_array().unwrap().iter().map(|c| c["decision"]["status"].clone()).collect();
    assert_eq!(statuses, ["approved", "approved", "approved", "rejected"], "the fourth is over the yearly limit");
    // The department filter, `unassigned` included, in SQL as in memory.
    for (query, expected) in
        [("department=education", vec!["B-1"]), ("department=unassigned", vec!["B-0", "B-2", "B-3"])]
    {
        let listed = b.get(&format!("/v1/claims?{query}"), AUDITOR).await;
        let ids = listed.claim_ids();
        assert_eq!(ids, expected, "{query}");
    }
    let results = join_all([a.usage("wuyi", &person, 2020), b.usage("wuyi", &person, 2020)]).await;
    assert!(results.iter().all(|u| u.body["used"] == 3));
}

/// A directory put through one replica is the one the other's policy
/// document names (within the second it rereads the revisions), before that
/// replica has decided anything; and on a fresh database the policy
/// document and the decisions name the same empty directory, as on sled.
#[tokio::test]
async fn a_directory_put_through_one_replica_is_in_force_on_the_other() {
    let replicas = two_replicas().await;
    let [a, b] = apis(&replicas);
    let before = b.get("/v1/policies/wuyi", PLATFORM).await;
    assert_eq!(before.status, 200, "{}", before.body);
    let claim =
        wy_qualification("DIRV-1", &id_number("33072319870707031"), "6-31-01-03", "junior", "DIRV-C1", "2020-07-01");
    let decided = b.post("/v1/evaluations", PLATFORM, &claim).await;
    assert_eq!(decided.status, 200, "{}", decided.body);
    assert_eq!(decided.body["policy"]["directory_version"], before.body["directory_version"]);
    let embedded = spawn_app().await;
    let on_sled = embedded.api().get("/v1/policies/wuyi", PLATFORM).await;
    assert_eq!(on_sled.body["directory_version"], before.body["directory_version"], "the empty directory's version");

    let list = json!([{"credit_code": "91330723MA00000156", "name": "企业", "listed_from": "2019-06-01"}]);
    let put = a.put_directory("wuyi", &list).await;
    assert_eq!(put.status, 200, "{}", put.body);
    let version = put.body["version"].as_str().expect("a version").to_string();
    assert_ne!(before.body["directory_version"], version.as_str());
    let mut named = Value::Null;
    for _ in 0..30 {
        named = b.get("/v1/policies/wuyi", PLATFORM).await.body["directory_version"].clone();
        if named == version.as_str() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(named, version.as_str(), "named by the other replica within its recheck");
    let all = b.get("/v1/policies", PLATFORM).await;
    let wuyi = all.body["policies"].as_array().unwrap().iter().find(|p| p["county"] == "wuyi").unwrap();
    assert_eq!(wuyi["directory_version"], version.as_str());
}

/// A listing shows only claims whose transaction is older than every one
/// still running: a cursor never passes a claim that commits later.
#[tokio::test]
async fn a_listing_never_shows_a_claim_ahead_of_one_still_being_recorded() {
    let app = spawn_app_on_postgres().await;
    let api = app.api();
    let url = app.database.clone().unwrap();
    let mut slow = subsidy_service::ledger::postgres::connect(&url).await.unwrap();
    let slow = slow.transaction().await.unwrap();
    // A transaction that has written (so it holds a transaction id) and not committed.
    slow.execute("SELECT pg_current_xact_id()", &[]).await.unwrap();
    let claim = wy_qualification("H-1", &id_number("33072319870707004"), "6-31-01-03", "junior", "H-C1", "2020-07-01");
    assert_eq!(api.post_claim(&claim).await.status, 201);
    assert_eq!(api.get("/v1/claims/H-1", AUDITOR).await.status, 200, "the claim itself is readable at once");
    let listed = api.get("/v1/claims", AUDITOR).await;
    assert_eq!(listed.body["claims"].as_array().unwrap().len(), 0, "not listed while an older transaction runs");
    slow.commit().await.unwrap();
    let listed = listing(&api, "/v1/claims", 1).await;
    assert_eq!(listed.body["claims"][0]["claim_id"], "H-1");
}

/// A ledger moves from sled to PostgreSQL and back by export and import,
/// unchanged; `check --url` recounts what the database keeps.
#[tokio::test]
async fn a_ledger_moves_from_sled_to_postgres_and_back() {
    use crate::maintenance::{bin, import_into, record_sample, sample_reads_the_same, sorted_lines};
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let app = BinaryApp::start(&store).await;
    let sample = record_sample(&base(&app.address)).await;
    app.stop();
    let from_sled = bin().args(["export", "--store"]).arg(&store).output().unwrap();
    assert!(from_sled.status.success());
    let from_sled = String::from_utf8(from_sled.stdout).unwrap();

    let url = fresh_database().await;
    assert!(import_into(&["--url".as_ref(), url.as_ref()], &from_sled));
    let check = bin().args(["check", "--url", &url]).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let from_pg = bin().args(["export", "--url", &url]).output().unwrap();
    assert!(from_pg.status.success(), "{}", String::from_utf8_lossy(&from_pg.stderr));
    assert_eq!(sorted_lines(&from_sled), sorted_lines(&String::from_utf8(from_pg.stdout).unwrap()));
    assert!(!import_into(&["--url".as_ref(), url.as_ref()], &from_sled), "import refuses a ledger that is not empty");

    // The service on the imported database: the same answers, and new claims after the old.
    let app = BinaryApp::start_on_postgres(&url).await;
    let api = base(&app.address);
    sample_reads_the_same(&api, &sample).await;
    let claim = wy_qualification("X-after", &sample.person, "4-10-01-01", "junior", "X-AFTER", "2020-06-01");
    assert_eq!(api.post_claim(&claim).await.body["status"], "approved", "the revocation freed a place");
    let listed = listing(&api, "/v1/claims", 5).await;
    assert_eq!(listed.body["claims"][4]["claim_id"], "X-after");
    app.stop();

    // And back to sled.
    let from_pg = bin().args(["export", "--url", &url]).output().unwrap();
    let from_pg = String::from_utf8(from_pg.stdout).unwrap();
    let back = dir.path().join("back");
    assert!(import_into(&["--store".as_ref(), back.as_os_str()], &from_pg));
    let check = bin().args(["check", "--store"]).arg(&back).output().unwrap();
    assert!(check.status.success(), "{}", String::from_utf8_lossy(&check.stdout));
    let again = bin().args(["export", "--store"]).arg(&back).output().unwrap();
    assert_eq!(sorted_lines(&from_pg), sorted_lines(&String::from_utf8(again.stdout).unwrap()));

    // Drift in what the database keeps is found.
    let c = subsidy_service::ledger::postgres::connect(&url).await.unwrap();
    c.execute("DELETE FROM usage_counts WHERE claim_id = 'X-0'", &[]).await.unwrap();
    c.execute("UPDATE totals SET total = total + 1", &[]).await.unwrap();
    // A row whose claim is not kept is refused (the foreign keys).
    for orphan in [ORPHAN_HOLDER, ORPHAN_USAGE, ORPHAN_EVENT] {
        let refused = c.execute(orphan, &[]).await.expect_err(orphan);
        assert_eq!(refused.code(), Some(&tokio_postgres::error::SqlState::FOREIGN_KEY_VIOLATION), "{orphan}");
    }
    let drift = bin().args(["check", "--url", &url]).output().unwrap();
    assert_eq!(drift.status.code(), Some(1));
    let report = String::from_utf8_lossy(&drift.stdout);
    assert!(report.contains("of claim X-0: missing"), "{report}");
}

/// `check --url` on a database the replicas go on recording into: the
/// records, events and what the database keeps are read in one snapshot,
/// so claims committed during the check are either wholly in it or not at
/// all, and it finds no drift.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_a_live_database_reads_one_state_and_finds_no_drift() {
    use crate::maintenance::bin;
    let app = spawn_app_on_postgres().await;
    let url = app.database.clone().expect("a database");
    let api = app.api();
    let recording = Arc::new(AtomicBool::new(true));
    let load = {
        let (api, recording) = (api.clone(), recording.clone());
        tokio::spawn(async move {
            let mut n = 0u32;
            while recording.load(Ordering::SeqCst) {
                let claims = (0..8).map(|i| {
                    let born =
                        chrono::NaiveDate::from_ymd_opt(1970, 1, 1).unwrap() + chrono::Days::new(u64::from(n * 8 + i));
                    let person = id_number(&format!("330723{}001", born.format("%Y%m%d")));
                    let c = wy_qualification(
                        &format!("LIVE-{n}-{i}"),
                        &person,
                        "6-31-01-03",
                        "junior",
                        &format!("LIVE-{n}-{i}"),
                        "2020-06-01",
                    );
                    let api = api.clone();
                    async move { api.post_claim(&c).await.status }
                });
                assert!(join_all(claims).await.iter().all(|s| *s == 201));
                n += 1;
            }
            n
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..4 {
        let url = url.clone();
        let check =
            tokio::task::spawn_blocking(move || bin().args(["check", "--url", &url]).output().unwrap()).await.unwrap();
        assert!(
            check.status.success(),
            "{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
    }
    recording.store(false, Ordering::SeqCst);
    let rounds = load.await.unwrap();
    assert!(rounds > 4, "claims were recorded during the checks ({rounds} rounds of 8)");
}

/// A claim's writes and its `COMMIT` go out together: a write the database
/// refuses (here a trigger refuses the claim's yearly-usage row, the second
/// of its writes, after the claim's own row) leaves nothing of the claim,
/// the refusal itself is answered (it is not retried: the trigger ran once),
/// and the pool's only connection goes on serving the next claims: the same
/// database session, not left inside the failed transaction.
#[tokio::test]
async fn a_write_the_database_refuses_records_nothing_and_the_connection_goes_on() {
    let url = fresh_database().await;
    let app = spawn_app_with(|s| {
        use_postgres(s, &url);
        s.store.pool_size = 1;
    })
    .await;
    let api = app.api();
    let admin = subsidy_service::ledger::postgres::connect(&url).await.expect("the test database answers");
    admin
        .batch_execute(
            "CREATE SEQUENCE refusals;
             CREATE FUNCTION refuse_usage() RETURNS trigger LANGUAGE plpgsql AS $$
             BEGIN
                 IF NEW.claim_id = 'PGW-1' THEN
                     PERFORM nextval('refusals');
                     RAISE EXCEPTION 'usage of PGW-1 refused';
                 END IF;
                 RETURN NEW;
             END $$;
             CREATE TRIGGER refuse_usage BEFORE INSERT ON usage_counts
                 FOR EACH ROW EXECUTE FUNCTION refuse_usage();",
        )
        .await
        .expect("the trigger");
    // The service's one connection, once it has recorded a claim.
    let warm = wy_qualification(
        "PGW-0",
        &id_number("33072319900101030"),
        "6-31-01-03",
        "technician",
        "ZS-PGW-0",
        "2020-06-15",
    );
    assert_eq!(api.post_claim(&warm).await.status, 201);
    let session = || async {
        let backends: Vec<i32> = admin
            .query(
                "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()
                 AND backend_type = 'client backend'",
                &[],
            )
            .await
            .expect("the sessions")
            .iter()
            .map(|r| r.get(0))
            .collect();
        backends
    };
    let before = session().await;
    assert_eq!(before.len(), 1, "one pooled connection: {before:?}");

    let person = id_number("33072319900101031");
    let claim = wy_qualification("PGW-1", &person, "6-31-01-03", "senior_technician", "ZS-PGW-1", "2020-06-15");
    let refused = api.post_claim(&claim).await;
    assert_eq!(refused.status, 503, "{}", refused.body);
    assert_eq!(api.get("/v1/claims/PGW-1", PLATFORM).await.status, 404, "the claim's own row was not kept");
    assert_eq!(api.usage("wuyi", &person, 2020).await.body["used"], 0);
    for (table, rows) in [("claims", 1), ("usage_counts", 1), ("holders", 2), ("events", 0)] {
        let n: i64 = admin.query_one(&format!("SELECT count(*) FROM {table}"), &[]).await.unwrap().get(0);
        assert_eq!(n, rows, "{table}: only the first claim's rows");
    }
    let refusals: i64 = admin.query_one("SELECT last_value FROM refusals", &[]).await.unwrap().get(0);
    assert_eq!(refusals, 1, "the refusal is not a deadlock or serialisation failure: not tried again");

    // The same connection serves the next claims, and the refused one again.
    let other = id_number("33072319900101032");
    for (id, level, cert) in [("PGW-2", "senior_technician", "ZS-PGW-2"), ("PGW-3", "technician", "ZS-PGW-3")] {
        let c = wy_qualification(id, &other, "6-31-01-03", level, cert, "2020-06-15");
        let answer = api.post_claim(&c).await;
        assert_eq!(answer.status, 201, "{}", answer.body);
    }
    assert_eq!(api.usage("wuyi", &other, 2020).await.body["used"], 2);
    assert_eq!(session().await, before, "the same database session");
    admin.batch_execute("DROP TRIGGER refuse_usage ON usage_counts").await.expect("the trigger dropped");
    let recorded = api.post_claim(&claim).await;
    assert_eq!(recorded.status, 201, "{}", recorded.body);
    assert_eq!(api.usage("wuyi", &person, 2020).await.body["used"], 1);
}

/// `store.pool_size` is split among the HTTP workers (2 and 1 of 3 for
/// two): under 40 claims at once, a replica keeps at most its pool size of
/// connections to the database, and decides every claim.
#[tokio::test]
async fn a_replica_keeps_at_most_its_pool_size_of_connections_split_among_its_workers() {
    let url = fresh_database().await;
    let env = [
        ("SUBSIDY__STORE__BACKEND", "postgres"),
        ("SUBSIDY__STORE__URL", url.as_str()),
        ("SUBSIDY__STORE__POOL_SIZE", "3"),
        ("SUBSIDY__SERVER__WORKERS", "2"),
    ];
    let replica = BinaryApp::start_with_env(&env, None, std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).await;
    let api = base(&replica.address);
    let sent = (0..40).map(|i| {
        let claim = wy_qualification(
            &format!("PS-{i}"),
            &id_number(&format!("33072319860101{i:03}")),
            "6-31-01-03",
            "junior",
            &format!("PSC-{i}"),
            "2020-07-01",
        );
        let api = api.clone();
        async move { api.post_claim(&claim).await.status }
    });
    let statuses = join_all(sent).await;
    assert!(statuses.iter().all(|s| *s == 201), "{statuses:?}");
    let database = url.rsplit_once('/').map(|(_, d)| d.to_string()).unwrap();
    let admin = subsidy_service::ledger::postgres::connect(crate::helpers::postgres_cluster()).await.unwrap();
    let open: i64 =
        admin.query_one("SELECT count(*) FROM pg_stat_activity WHERE datname = $1", &[&database]).await.unwrap().get(0);
    assert!((1..=3).contains(&open), "{open} connections to the replica's database");
    replica.stop();
}

/// A lock table smaller than one process's full batches and pooled claims
/// may fill at once is named at start, with the `max_locks_per_transaction`
/// that would hold them; a large enough one is not.
#[tokio::test]
async fn a_lock_table_too_small_for_the_batches_is_named_at_start() {
    use subsidy_service::ledger::postgres::LOCKS_PER_CLAIM;
    let url = fresh_database().await;
    let admin = subsidy_service::ledger::postgres::connect(&url).await.unwrap();
    let setting = |name: &'static str| {
        let admin = &admin;
        async move {
            let row = admin.query_one(&format!("SELECT current_setting('{name}')::bigint"), &[]).await.unwrap();
            row.get::<_, i64>(0) as u64
        }
    };
    let per_transaction = setting("max_locks_per_transaction").await;
    let connections = setting("max_connections").await + setting("max_prepared_transactions").await;
    let table = per_transaction * connections;
    let dir = tempfile::tempdir().unwrap();
    // The smallest batch whose two at once (and the pool's 16) overfill the
    // table, and the largest that fits.
    let overfills = (table / LOCKS_PER_CLAIM - 16) / 2 + 1;
    for (batch, warned) in [(overfills - 1, false), (overfills, true)] {
        let log = dir.path().join(format!("batch-{batch}.log"));
        let batch = batch.to_string();
        let env = [
            ("SUBSIDY__STORE__BACKEND", "postgres"),
            ("SUBSIDY__STORE__URL", url.as_str()),
            ("SUBSIDY__STORE__POOL_SIZE", "16"),
            ("SUBSIDY__SERVER__MAX_BATCH_CLAIMS", batch.as_str()),
        ];
        let app = BinaryApp::start_with_env(&env, Some(&log), std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).await;
        app.stop();
        let lines: Vec<Value> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .filter(|l: &Value| l["message"].as_str().is_some_and(|m| m.contains("lock table")))
            .collect();
        if warned {
            assert_eq!(lines.len(), 1, "{lines:?}");
            let fields = &lines[0];
            assert_eq!(lines[0]["level"], "WARN");
            assert_eq!(fields["lock_table"], table);
            assert_eq!(fields["max_locks_per_transaction"], per_transaction);
            let needed = (2 * overfills + 16) * LOCKS_PER_CLAIM;
            assert_eq!(fields["enough"], needed.div_ceil(connections), "{fields}");
        } else {
            assert!(lines.is_empty(), "batches of {batch}: {lines:?}");
        }
    }
}
