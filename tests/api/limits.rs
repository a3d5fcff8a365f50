//! Rate limits, body timeouts and batch size limits.

use std::io::{Read, Write};

use serde_json::json;
use subsidy_service::configuration::Bucket;

use crate::helpers::{spawn_app_with, AUDITOR, PLATFORM};

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_others_are_untouched() {
    let app = spawn_app_with(|s| {
        s.rate_limit.enabled = true;
        s.rate_limit.auditor = Bucket { per_second: 1, burst: 2 };
    })
    .await;
    let api = app.api();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(api.get("/v1/claims?limit=1", AUDITOR).await);
    }
    let limited: Vec<_> = statuses.iter().filter(|a| a.status == 429).collect();
    assert!(!limited.is_empty(), "the auditor's bucket of 2 ran dry");
    assert_eq!(limited[0].body["code"], "RATE_LIMITED");
    assert!(limited[0].headers.get("retry-after").is_some());
    for _ in 0..20 {
        assert_eq!(api.get("/v1/claims?limit=1", PLATFORM).await.status, 200, "the platform is not throttled");
    }
}

#[tokio::test]
async fn a_body_that_never_finishes_gets_408_and_frees_the_worker() {
    let app = spawn_app_with(|s| s.server.body_timeout_ms = 300).await;
    let addr = app.address.trim_start_matches("http://").to_string();
    let handle = std::thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
        write!(s, "POST /v1/claims HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PLATFORM}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"claim").unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).unwrap_or(0);
        String::from_utf8_lossy(&buf[..n]).to_string()
    });
    let head = tokio::task::spawn_blocking(move || handle.join().unwrap()).await.unwrap();
    assert!(head.starts_with("HTTP/1.1 408"), "{head}");
    assert!(head.contains("application/problem+json"), "{head}");
    assert_eq!(app.api().get("/healthz", "").await.status, 200);
}

/// Batches sent slowly do not hold up others: a batch takes its place among
/// the two parsed at once only with its whole body in hand.
#[tokio::test]
async fn slow_batch_bodies_do_not_hold_up_other_batches() {
    let app = spawn_app_with(|s| s.server.body_timeout_ms = 20_000).await;
    let addr = app.address.trim_start_matches("http://").to_string();
    // Three batches whose bodies never finish (more than there are permits).
    let mut slow = Vec::new();
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        write!(s, "POST /v1/claims/batch HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {PLATFORM}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{{\"claims\": [").unwrap();
        slow.push(s);
    }
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let claim = crate::helpers::wy_qualification(
        "SLOW-1",
        &crate::helpers::id_number("33072319900101077"),
        "6-31-01-03",
        "junior",
        "SLOW-C1",
        "2020-06-15",
    );
    let started = std::time::Instant::now();
    let batch = app.api().post("/v1/claims/batch", PLATFORM, &json!({"claims": [claim]})).await;
    assert_eq!(batch.status, 200, "{}", batch.body);
    // Answered long before the slow bodies' 20 s run out (it waited for them before).
    assert!(started.elapsed() < std::time::Duration::from_secs(10), "waited {:?}", started.elapsed());
    drop(slow);
}

#[tokio::test]
async fn an_unknown_field_in_a_batch_body_is_422() {
    let app = spawn_app_with(|_| {}).await;
    let a = app.api().post("/v1/claims/batch", PLATFORM, &json!({"claims": [{}], "extra": 1, "a/b~c": 2})).await;
    assert_eq!(a.status, 422);
    assert!(a.error_fields().contains(&"/extra".to_string()));
    assert!(a.error_fields().contains(&"/a~1b~0c".to_string()), "a name escaped as RFC 6901 asks: {}", a.body);
}
