//! `subsidy`, the roster CLI, against the real service.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::Value;
use subsidy_client::{County, ListFilter};

use crate::helpers::{person, spawn, wy_claim, AUDITOR, INSTITUTION, INSTITUTION_CODE, PLATFORM};

/// Runs `subsidy` with `args` (and `env`) off the runtime's threads.
async fn subsidy(args: &[&str], env: &[(&str, &str)]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_subsidy"))
            .args(&args)
            .env_remove("SUBSIDY_URL")
            .env_remove("SUBSIDY_KEY")
            .envs(env)
            .output()
            .expect("subsidy runs")
    })
    .await
    .expect("joined")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The rows of a results CSV as maps of column to cell.
fn results(csv_text: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut r = csv::Reader::from_reader(csv_text.as_bytes());
    let header: Vec<String> = r.headers().expect("a header").iter().map(str::to_string).collect();
    r.records()
        .map(|rec| header.iter().cloned().zip(rec.expect("a row").iter().map(str::to_string)).collect())
        .collect()
}

/// The template's header and example row, and a writer of rows like it.
struct Template {
    header: Vec<String>,
    example: Vec<String>,
}

impl Template {
    async fn get(county: &str, kind: &str) -> Self {
        let out = subsidy(&["template", county, kind], &[]).await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        let mut r = csv::Reader::from_reader(out.stdout.as_slice());
        let header: Vec<String> = r.headers().expect("a header").iter().map(str::to_string).collect();
        let rows: Vec<csv::StringRecord> = r.records().map(|r| r.expect("a row")).collect();
        assert_eq!(rows.len(), 1, "one example row");
        Self { header, example: rows[0].iter().map(str::to_string).collect() }
    }

    /// The example row with some cells changed.
    fn row(&self, changes: &[(&str, String)]) -> Vec<String> {
        let mut row = self.example.clone();
        for (col, v) in changes {
            let i = self.header.iter().position(|h| h == col).unwrap_or_else(|| panic!("no column {col}"));
            row[i] = v.clone();
        }
        row
    }

    /// Writes rows as Excel does ("CSV UTF-8": with a byte-order mark).
    fn write(&self, path: &Path, rows: &[Vec<String>]) {
        let mut w = csv::Writer::from_writer(Vec::new());
        w.write_record(&self.header).unwrap();
        for r in rows {
            w.write_record(r).unwrap();
        }
        let mut bytes = "\u{feff}".as_bytes().to_vec();
        bytes.extend(w.into_inner().unwrap());
        std::fs::write(path, bytes).unwrap();
    }
}

/// The `n`th trainee of the demo institution's class.
fn trainee(n: usize) -> Vec<(&'static str, String)> {
    vec![
        ("claim_id", format!("DEMO-2020-{n:05}")),
        ("applicant.id_number", person(n)),
        ("applicant.name", format!("学员{n}")),
        ("details.certificate_number", format!("ZS2020{n:06}")),
        ("institution.credit_code", INSTITUTION_CODE.to_string()),
        ("institution.name", "武义县演示职业培训学校".to_string()),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_class_of_2000_from_the_template_is_recorded_and_a_second_run_changes_nothing() {
    let server = spawn().await;
    let template = Template::get("wuyi", "qualification_training").await;
    let rows: Vec<Vec<String>> = (0..2000).map(|n| template.row(&trainee(n))).collect();
    let roster = server.path("class.csv");
    template.write(&roster, &rows);

    let (first, second) = (server.path("results.csv"), server.path("results-again.csv"));
    let args = |out: &Path| {
        vec![
            "submit".to_string(),
            roster.display().to_string(),
            "--url".into(),
            server.address.clone(),
            "--key".into(),
            INSTITUTION.into(),
            "--out".into(),
            out.display().to_string(),
        ]
    };
    let a = args(&first);
    let out = subsidy(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("2000 rows: 2000 approved"), "{}", text(&out.stderr));
    let got = results(&std::fs::read_to_string(&first).unwrap());
    assert_eq!(got.len(), 2000);
    for (n, r) in got.iter().enumerate() {
        assert_eq!(r["claim_id"], format!("DEMO-2020-{n:05}"));
        assert_eq!(
            (r["status"].as_str(), r["amount"].as_str(), r["replayed"].as_str()),
            ("approved", "1000.00", "false")
        );
        assert_eq!(r["row"], (n + 2).to_string());
        assert!(r.contains_key("reasons"));
    }
    let auditor = server.client(AUDITOR);
    let report = serde_json::to_value(auditor.report(County::Wuyi, 2020).await.expect("a report")).unwrap();
    assert_eq!(report["granted"], 2000);
    assert_eq!(report["amount"], "2000000.00");

    // Again (as after an interruption): every claim replays, nothing changes.
    let a = args(&second);
    let out = subsidy(&a.iter().map(String::as_str).collect::<Vec<_>>(), &[]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("2000 of them already recorded"), "{}", text(&out.stderr));
    let again = results(&std::fs::read_to_string(&second).unwrap());
    assert_eq!(again.len(), 2000);
    for (a, b) in got.iter().zip(&again) {
        for col in ["claim_id", "status", "amount", "reasons", "row"] {
            assert_eq!(a[col], b[col], "{col}");
        }
        assert_eq!(b["replayed"], "true");
    }
    let report_again = serde_json::to_value(auditor.report(County::Wuyi, 2020).await.expect("a report")).unwrap();
    assert_eq!(report_again, report);
    let listed = server.client(PLATFORM).list_all(ListFilter { limit: Some(500), ..Default::default() }).await;
    assert_eq!(listed.expect("a list").len(), 2000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_with_bad_rows_is_refused_as_a_whole_naming_every_bad_row_and_field() {
    let server = spawn().await;
    let template = Template::get("wuyi", "qualification_training").await;
    let with = |n: usize, extra: &[(&'static str, &str)]| {
        let mut c = trainee(n);
        c.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
        template.row(&c)
    };
    let rows = vec![
        with(0, &[]),                                                               // row 2: good
        with(1, &[("applicant.id_number", "330723198501011231")]),                  // row 3
        with(2, &[("details.level", "grandmaster"), ("event_date", "2020-13-01")]), // row 4
        with(3, &[]),                                                               // row 5: good
        with(0, &[("applicant.id_number", &person(4))]),                            // row 6: same id as row 2
        with(5, &[("applicant.local_hukou", "maybe"), ("applicant.groups", "enterprise_employee;astronaut")]), // row 7
    ];
    let roster = server.path("bad.csv");
    template.write(&roster, &rows);
    let out_file = server.path("results.csv");

    let out = subsidy(
        &["submit", roster.to_str().unwrap(), "--out", out_file.to_str().unwrap()],
        &[("SUBSIDY_URL", &server.address), ("SUBSIDY_KEY", INSTITUTION)],
    )
    .await;
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("4 of 6 rows are not valid"), "{err}");
    assert!(err.contains("nothing was sent"), "{err}");
    for (row, field, code) in [
        (3, "/applicant/id_number", "invalid_checksum"),
        (4, "/details/level", "invalid_value"),
        (4, "/event_date", ""),
        (6, "/claim_id", "duplicate"),
        (7, "/applicant/local_hukou", "invalid_type"),
        (7, "/applicant/groups/1", ""),
    ] {
        let line = err.lines().find(|l| l.contains(&format!("row {row} ")) && l.contains(&format!(" {field} ")));
        let line = line.unwrap_or_else(|| panic!("row {row} {field} not named:\n{err}"));
        assert!(line.contains(code), "{line}");
    }
    assert!(!err.contains("row 2 ") && !err.contains("row 5 "), "{err}");
    assert!(!out_file.exists(), "no results: nothing was sent");
    let recorded = server.client(PLATFORM).list_all(ListFilter::default()).await.expect("a list");
    assert!(recorded.is_empty(), "nothing recorded");

    let out = subsidy(&["check", roster.to_str().unwrap()], &[]).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("row 3 "));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jsonl_claims_are_submitted_and_a_row_without_a_decision_fails_the_run() {
    let server = spawn().await;
    let jsonl: String = (0..3).map(|n| format!("{}\n", wy_claim("JL", n))).collect();
    let roster = server.path("claims.jsonl");
    std::fs::write(&roster, &jsonl).unwrap();
    let env = [("SUBSIDY_URL", server.address.as_str()), ("SUBSIDY_KEY", PLATFORM)];

    let out = subsidy(&["submit", roster.to_str().unwrap()], &env).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let got = results(&text(&out.stdout));
    let ids: Vec<&str> = got.iter().map(|r| r["claim_id"].as_str()).collect();
    assert_eq!(ids, ["JL-00000", "JL-00001", "JL-00002"]);
    assert!(got.iter().all(|r| r["status"] == "approved" && r["reasons"].contains("PUBLIC_NOTICE_REQUIRED")));

    // The same id with another body: the other rows are decided (replayed),
    // that row is an error, and the run fails.
    let mut changed: Value = wy_claim("JL", 1);
    changed["details"]["level"] = "senior".into();
    let lines = [wy_claim("JL", 0).to_string(), changed.to_string(), wy_claim("JL", 3).to_string()];
    let other = server.path("other.txt");
    std::fs::write(&other, lines.join("\n")).unwrap();
    let out = subsidy(&["submit", other.to_str().unwrap()], &env).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    let got = results(&text(&out.stdout));
    assert_eq!((got[0]["status"].as_str(), got[0]["replayed"].as_str()), ("approved", "true"));
    assert_eq!(got[1]["status"], "error");
    assert!(got[1]["error"].starts_with("CLAIM_ID_CONFLICT"), "{:?}", got[1]);
    assert_eq!((got[2]["status"].as_str(), got[2]["replayed"].as_str()), ("approved", "false"));
}
