use crate::helpers::{answer, spawn_app, PLATFORM};

#[tokio::test]
async fn healthz_and_readyz_answer_200() {
    let app = spawn_app().await;
    let api = app.api();
    assert_eq!(api.get("/healthz", "").await.status, 200);
    let ready = api.get("/readyz", "").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
}

#[tokio::test]
async fn every_request_gets_a_request_id_and_a_given_one_is_echoed() {
    let app = spawn_app().await;
    let a = answer(app.client.get(app.api().url("/healthz"))).await;
    assert!(a.headers.get("x-request-id").is_some_and(|v| !v.is_empty()));
    let b = answer(app.client.get(app.api().url("/healthz")).header("x-request-id", "abc-123")).await;
    assert_eq!(b.headers.get("x-request-id").unwrap(), "abc-123");
}

#[tokio::test]
async fn metrics_count_requests_by_route_and_decisions_by_kind() {
    let app = spawn_app().await;
    let api = app.api();
    let claim = crate::helpers::wy_qualification(
        "M-1",
        &crate::helpers::id_number("33072319900101001"),
        "6-31-01-03",
        "junior",
        "M-CERT-1",
        "2020-06-15",
    );
    assert_eq!(api.post_claim(&claim).await.status, 201);
    // Twice, so that the second answer comes from the remembered static route.
    assert_eq!(api.post_claim(&claim).await.status, 200);
    assert_eq!(api.get("/v1/claims/M-1", PLATFORM).await.status, 200);
    assert_eq!(api.get("/v1/claims/M-2", PLATFORM).await.status, 404);
    // Any token is a method to HTTP; the label of one that is not standard is `other`.
    let brew = reqwest::Method::from_bytes(b"BREW").expect("a method token");
    let a = app.client.request(brew, api.url("/healthz")).send().await.expect("answered");
    assert_eq!(a.status(), 405);
    let m = api.get("/metrics", PLATFORM).await;
    assert_eq!(m.status, 200);
    let text = m.body.as_str().unwrap_or_default().to_string();
    assert!(
        text.contains("subsidy_http_requests_total{method=\"POST\",route=\"/v1/claims\",status=\"201\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("subsidy_http_requests_total{method=\"POST\",route=\"/v1/claims\",status=\"200\"} 1"),
        "{text}"
    );
    // Dynamic routes are labelled by their pattern, never by the concrete path.
    assert!(
        text.contains("subsidy_http_requests_total{method=\"GET\",route=\"/v1/claims/{claim_id}\",status=\"200\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("subsidy_http_requests_total{method=\"GET\",route=\"/v1/claims/{claim_id}\",status=\"404\"} 1"),
        "{text}"
    );
    assert!(!text.contains("M-1") && !text.contains("M-2"), "{text}");
    assert!(
        text.contains("subsidy_http_requests_total{method=\"other\",route=\"/healthz\",status=\"405\"} 1"),
        "{text}"
    );
    assert!(!text.contains("BREW"), "{text}");
    assert!(text.contains("subsidy_http_request_duration_seconds_bucket"), "{text}");
    assert!(
        text.contains("subsidy_decisions_total{county=\"wuyi\",kind=\"qualification_training\",status=\"approved\"} 1"),
        "{text}"
    );
    // The granted claim is in the ledger's state: its person-year and its two
    // unique keys (occupation-level, certificate); the commit was fsynced.
    let gauge =
        |name: &str| text.lines().find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok()).unwrap_or_default();
    assert!(gauge("subsidy_ledger_claims ") >= 1, "{text}");
    assert!(gauge("subsidy_ledger_usage_keys ") >= 1, "{text}");
    assert!(gauge("subsidy_ledger_unique_keys ") >= 2, "{text}");
    assert!(gauge("subsidy_ledger_state_bytes ") > 0, "{text}");
    assert!(gauge("subsidy_ledger_fsyncs ") >= 1, "{text}");
    assert!(!text.contains("subsidy_ledger_db_"), "no database, no connection gauges: {text}");
}

/// With `server.metrics_address`, `/metrics` is served on that listener
/// alone, without a key, and the API's listener no longer serves it; the
/// metrics listener serves nothing else.
#[tokio::test]
async fn metrics_on_a_listener_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut settings = crate::helpers::test_settings(&dir.path().join("store"));
    settings.server.metrics_address = "127.0.0.1:0".into();
    let app = subsidy_service::startup::Application::build(settings).expect("the application builds");
    let (port, metrics_port) = (app.port(), app.metrics_port().expect("a metrics listener"));
    assert_ne!(port, metrics_port);
    let server = tokio::spawn(app.run_until_stopped());
    let api = crate::helpers::base(&format!("http://127.0.0.1:{port}"));
    let metrics = crate::helpers::base(&format!("http://127.0.0.1:{metrics_port}"));
    assert_eq!(api.get("/healthz", "").await.status, 200);
    let m = metrics.get("/metrics", "").await;
    assert_eq!(m.status, 200, "{}", m.body);
    let text = m.body.as_str().unwrap_or_default();
    assert!(text.contains("subsidy_http_requests_total{method=\"GET\",route=\"/healthz\",status=\"200\"} 1"), "{text}");
    assert_eq!(api.get("/metrics", PLATFORM).await.status, 404);
    assert_eq!(metrics.get("/v1/policies", PLATFORM).await.status, 404);
    assert_eq!(metrics.get("/healthz", "").await.status, 404);
    server.abort();
}

/// The metrics listener, set through the environment, serves the real
/// binary's metrics and stops with it: SIGTERM ends the process, and the
/// metrics port is free again.
#[tokio::test]
async fn the_metrics_listener_stops_with_the_service() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let address = format!("127.0.0.1:{}", crate::helpers::free_port());
    let env =
        [("SUBSIDY__STORE__PATH", store.to_str().unwrap()), ("SUBSIDY__SERVER__METRICS_ADDRESS", address.as_str())];
    let app =
        crate::helpers::BinaryApp::start_with_env(&env, None, std::path::Path::new(env!("CARGO_MANIFEST_DIR"))).await;
    let m = crate::helpers::base(&format!("http://{address}")).get("/metrics", "").await;
    assert_eq!(m.status, 200, "{}", m.body);
    assert!(m.body.as_str().unwrap_or_default().contains("subsidy_http_requests_total"), "{}", m.body);
    assert!(app.stop_within(std::time::Duration::from_secs(20)), "SIGTERM stops the service and its metrics listener");
    assert!(std::net::TcpListener::bind(&address).is_ok(), "the metrics port is free again");
}
