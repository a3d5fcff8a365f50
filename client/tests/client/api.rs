//! The client crate against the real service.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use subsidy_client::{Client, County, ErrorCode, ListFilter, Status, TryStreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::{person, spawn, wy_claim, AUDITOR, INSTITUTION, PLATFORM};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submit_replays_the_same_claim_and_refuses_another_body_under_its_id() {
    let server = spawn().await;
    let client = server.client(PLATFORM);
    let claim = wy_claim("C-SUB", 1);

    let first = client.submit(&claim).await.expect("a decision");
    assert_eq!(first.decision.status, Status::Approved);
    assert_eq!(first.decision.amount, "1000.00");
    assert!(first.decision.recorded);
    assert!(!first.replayed);

    let again = client.submit(&claim).await.expect("a replay");
    assert!(again.replayed);
    assert_eq!(again.decision, first.decision);
    assert_eq!(client.get("C-SUB-00001").await.expect("stored"), first.decision);

    let mut other = claim.clone();
    other["details"]["level"] = json!("senior");
    let e = client.submit(&other).await.expect_err("another body under the same id");
    assert_eq!(e.code(), Some(ErrorCode::ClaimIdConflict));
    assert_eq!(e.status(), Some(409));

    let evaluated = client.evaluate(&wy_claim("C-SUB", 2)).await.expect("an evaluation");
    assert!(!evaluated.recorded);
    let e = client.get("C-SUB-00002").await.expect_err("an evaluation records nothing");
    assert_eq!(e.code(), Some(ErrorCode::NotFound));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_past_1000_is_split_and_answered_in_order_and_listed_page_by_page() {
    let server = spawn().await;
    let client = server.client(PLATFORM);
    let claims: Vec<_> = (0..2500).map(|n| wy_claim("C-BATCH", n)).collect();

    let results = client.batch(&claims).await.expect("three requests");
    assert_eq!(results.len(), 2500);
    for (n, r) in results.iter().enumerate() {
        let id = format!("C-BATCH-{n:05}");
        assert_eq!(r.claim_id.as_deref(), Some(id.as_str()));
        let d = r.decision.as_ref().unwrap_or_else(|| panic!("{id}: {:?}", r.error));
        assert_eq!((d.claim_id.as_str(), d.status), (id.as_str(), Status::Approved));
        assert!(!r.replayed);
    }
    // Again: every claim replays.
    let again = client.batch(&claims[..1200]).await.expect("a replay");
    assert!(again.iter().all(|r| r.replayed && r.decision.is_some()));

    // Pagination: 500 a page, in recording order, nothing twice.
    let filter = ListFilter { county: Some(County::Wuyi), limit: Some(500), ..Default::default() };
    let page = client.list_page(&filter, None).await.expect("a page");
    assert_eq!(page.claims.len(), 500);
    assert!(page.next_cursor.is_some());
    let listed: Vec<String> = client.list(filter).map_ok(|c| c.claim_id).try_collect().await.expect("every page");
    let expected: Vec<String> = (0..2500).map(|n| format!("C-BATCH-{n:05}")).collect();
    assert_eq!(listed, expected);
    let rejected = ListFilter { status: Some(Status::Rejected), ..Default::default() };
    assert!(client.list_all(rejected).await.expect("an empty list").is_empty());

    // The report counts what was granted.
    let report = server.client(AUDITOR).report(County::Wuyi, 2020).await.expect("a report");
    assert_eq!(report.granted, 2500);
    assert_eq!(report.amount, "2500000.00");
    let kind = report.by_kind.iter().find(|k| k.kind == "qualification_training").expect("the kind's line");
    assert_eq!(kind.granted, 2500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_releases_the_grant_and_usage_shows_it() {
    let server = spawn().await;
    let client = server.client(PLATFORM);
    client.submit(&wy_claim("C-REV", 7)).await.expect("a decision");

    let usage = client.usage(County::Wuyi, &person(7), 2020).await.expect("usage");
    assert_eq!((usage.used, usage.limit, usage.remaining), (1, 3, 2));
    assert_eq!(usage.claims[0].claim_id, "C-REV-00007");

    let revoked = client.revoke("C-REV-00007", "objection during the public notice").await.expect("revoked");
    assert_eq!(revoked.status, Status::Revoked);
    let again = client.revoke("C-REV-00007", "objection during the public notice").await.expect("harmless");
    assert_eq!(again.status, Status::Revoked);
    assert_eq!(client.get("C-REV-00007").await.expect("stored").status, Status::Revoked);
    let usage = client.usage(County::Wuyi, &person(7), 2020).await.expect("usage");
    assert_eq!((usage.used, usage.remaining), (0, 3));

    // A rejected claim cannot be revoked.
    let mut pensioner = wy_claim("C-REV", 8);
    pensioner["applicant"]["receives_monthly_pension"] = json!(true);
    let d = client.submit(&pensioner).await.expect("a decision").decision;
    assert_eq!(d.status, Status::Rejected);
    let e = client.revoke("C-REV-00008", "mistake").await.expect_err("nothing to revoke");
    assert_eq!(e.code(), Some(ErrorCode::ClaimNotRevocable));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn problems_are_typed_errors_with_their_code_and_fields() {
    let server = spawn().await;
    let client = server.client(PLATFORM);

    let mut bad = wy_claim("C-ERR", 1);
    bad["applicant"]["id_number"] = json!("330723198501011231");
    bad["details"]["level"] = json!("grandmaster");
    bad["bogus"] = json!(1);
    let e = client.submit(&bad).await.expect_err("not a valid claim");
    assert_eq!(e.code(), Some(ErrorCode::ValidationFailed));
    assert_eq!(e.status(), Some(422));
    let fields: Vec<(&str, &str)> = e.field_errors().iter().map(|f| (f.field.as_str(), f.code.as_str())).collect();
    assert!(fields.contains(&("/applicant/id_number", "invalid_checksum")), "{fields:?}");
    assert!(fields.contains(&("/details/level", "invalid_value")), "{fields:?}");
    assert!(fields.contains(&("/bogus", "unknown_field")), "{fields:?}");
    assert!(e.to_string().contains("/applicant/id_number"), "{e}");

    // A batch names the bad item and decides the others.
    let results = client.batch(&[wy_claim("C-ERR", 2), bad.clone()]).await.expect("an answer");
    assert!(results[0].decision.is_some());
    let p = results[1].error.as_ref().expect("a problem");
    assert_eq!(p.code, ErrorCode::ValidationFailed);
    assert!(p.errors.iter().any(|f| f.field == "/claims/1/applicant/id_number"));

    let stranger = server.client("not-a-key");
    let e = stranger.get("C-ERR-00002").await.expect_err("no valid key");
    assert_eq!((e.code(), e.status()), (Some(ErrorCode::Unauthenticated), Some(401)));

    let e = server.client(INSTITUTION).report(County::Wuyi, 2020).await.expect_err("institutions read no reports");
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));
    let e = server.client(INSTITUTION).submit(&wy_claim("C-ERR", 3)).await.expect_err("not its claim");
    assert_eq!(e.code(), Some(ErrorCode::Forbidden));

    assert!(matches!(Client::new("not a url", PLATFORM), Err(subsidy_client::Error::Invalid(_))));
}

/// What a scripted connection of [`flaky_proxy`] does.
#[derive(Clone, Copy)]
enum Conn {
    /// Reads the request and answers `503 STORE_UNAVAILABLE`.
    Unavailable,
    /// Reads the request and never answers.
    Hang,
}

/// A proxy to `upstream` whose first connections follow `script`; the rest
/// are passed through. Returns its address and how many it accepted.
async fn flaky_proxy(upstream: &str, script: Vec<Conn>) -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("a port");
    let address = format!("http://{}", listener.local_addr().expect("an address"));
    let upstream = upstream.trim_start_matches("http://").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            let upstream = upstream.clone();
            let mode = script.get(n).copied();
            tokio::spawn(async move {
                match mode {
                    Some(Conn::Unavailable) => {
                        read_request(&mut conn).await;
                        let body = r#"{"type":"urn:subsidy-service:problem:store_unavailable","title":"The decision store is unavailable","status":503,"detail":"Retry later","code":"STORE_UNAVAILABLE"}"#;
                        let head = format!(
                            "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 0\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
                            body.len()
                        );
                        let _ = conn.write_all(format!("{head}{body}").as_bytes()).await;
                        let _ = conn.shutdown().await;
                    }
                    Some(Conn::Hang) => {
                        read_request(&mut conn).await;
                        tokio::time::sleep(Duration::from_secs(30)).await;
                    }
                    None => {
                        if let Ok(mut up) = TcpStream::connect(&upstream).await {
                            let _ = tokio::io::copy_bidirectional(&mut conn, &mut up).await;
                        }
                    }
                }
            });
        }
    });
    (address, accepted)
}

/// Reads one request's head and body (by `content-length`).
async fn read_request(conn: &mut TcpStream) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 8192];
    loop {
        let Ok(n) = conn.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let length: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if buf.len() >= end + 4 + length {
                return;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_503_and_a_timeout_are_retried_with_the_same_claim() {
    let server = spawn().await;
    let (proxy, accepted) = flaky_proxy(&server.address, vec![Conn::Unavailable, Conn::Hang, Conn::Unavailable]).await;
    let client = Client::builder(proxy, PLATFORM)
        .timeout(Duration::from_millis(800))
        .backoff(Duration::from_millis(20), Duration::from_millis(100))
        .build()
        .expect("a client");
    let answer = client.submit(&wy_claim("C-RETRY", 1)).await.expect("a decision after three failures");
    assert_eq!(answer.decision.status, Status::Approved);
    assert!(!answer.replayed, "the failed tries never reached the service");
    assert!(accepted.load(Ordering::SeqCst) >= 4);
    let results = client.batch(&[wy_claim("C-RETRY", 1), wy_claim("C-RETRY", 2)]).await.expect("answers");
    assert!(results[0].replayed && !results[1].replayed);

    // Without retries the 503 is the caller's, as a typed error.
    let (proxy, _) = flaky_proxy(&server.address, vec![Conn::Unavailable]).await;
    let once = Client::builder(proxy, PLATFORM).max_retries(0).build().expect("a client");
    let e = once.submit(&wy_claim("C-RETRY", 3)).await.expect_err("no retry");
    assert_eq!((e.code(), e.status()), (Some(ErrorCode::StoreUnavailable), Some(503)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_connection_is_retried_until_the_service_is_up() {
    let dir = tempfile::tempdir().expect("temp dir");
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let client = Client::builder(format!("http://127.0.0.1:{port}"), PLATFORM)
        .backoff(Duration::from_millis(50), Duration::from_millis(200))
        .max_retries(40)
        .build()
        .expect("a client");
    let store = dir.path().join("store");
    let starter = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(700)).await;
        let app = subsidy_service::startup::Application::build(crate::helpers::settings(&store, port))
            .expect("the application builds");
        tokio::spawn(app.run_until_stopped());
    });
    let answer = client.submit(&wy_claim("C-LATE", 1)).await.expect("a decision once the service is up");
    assert_eq!(answer.decision.status, Status::Approved);
    starter.await.expect("started");
}
