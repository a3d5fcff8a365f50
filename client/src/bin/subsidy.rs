//! `subsidy`: the roster CLI for partner institutions.
//!
//! - `subsidy template <county> <kind>` prints a CSV template: the header and
//!   one valid example row.
//! - `subsidy check <FILE>` checks a roster with the service's own parser.
//! - `subsidy submit <FILE> --url <BASE> --key <KEY> [--out results.csv]`
//!   checks every row, sends nothing if any row is bad, else submits in
//!   batches and writes one result per row. Safe to run again: recorded
//!   claims replay.
//!
//! Exit status: 0 when every row got a decision (or the check passed); 1
//! when the file is refused or some row got no decision; 2 on bad arguments.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use subsidy_client::roster::{self, Row};
use subsidy_client::{BatchItem, Client, County, Kind, Status, MAX_BATCH};

#[derive(Parser)]
#[command(
    name = "subsidy",
    version,
    about = "Roster CLI of subsidy-service: CSV templates, checks and batch submission"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print a CSV template of a county and kind: the header and one valid example row.
    Template {
        /// `wuyi` or `changxing`.
        county: String,
        /// The kind of subsidy, e.g. `qualification_training`.
        kind: String,
    },
    /// Check a roster (CSV or JSONL) with the service's own parser; sends nothing.
    Check {
        /// The roster: CSV in the template's layout, or JSONL claims.
        file: PathBuf,
    },
    /// Check a roster, then submit it in batches and write one result per row.
    Submit {
        /// The roster: CSV in the template's layout (UTF-8, with or without
        /// a byte-order mark), or JSONL claims (`.jsonl`, or a file starting with `{`).
        file: PathBuf,
        /// The service's root URL, e.g. `https://subsidy.example.gov.cn`.
        #[arg(long, env = "SUBSIDY_URL")]
        url: String,
        /// The API key.
        #[arg(long, env = "SUBSIDY_KEY", hide_env_values = true)]
        key: String,
        /// Where to write the results CSV (default: standard output).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Claims per request (1..=1000).
        #[arg(long, default_value_t = MAX_BATCH)]
        batch_size: usize,
        /// Retries of a request on timeouts, lost connections and 503.
        #[arg(long, default_value_t = 6)]
        retries: u32,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Template { county, kind } => template(&county, &kind),
        Command::Check { file } => match read_checked(&file) {
            Ok(rows) => {
                eprintln!("{}: {} rows, all valid", file.display(), rows.len());
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Submit { file, url, key, out, batch_size, retries } => {
            let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            };
            runtime.block_on(submit(&file, &url, &key, out.as_deref(), batch_size, retries))
        }
    }
}

fn template(county: &str, kind: &str) -> ExitCode {
    let Some(c) = County::parse(county) else {
        eprintln!("error: no county `{county}`; counties: wuyi, changxing");
        return ExitCode::from(2);
    };
    let kinds = roster::kinds_of(c);
    match Kind::parse(kind).and_then(|k| roster::template(c, k)) {
        Some(csv) => {
            print!("{csv}");
            ExitCode::SUCCESS
        }
        None => {
            let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            eprintln!("error: no kind `{kind}` in {county}; its kinds: {}", names.join(", "));
            ExitCode::from(2)
        }
    }
}

/// Reads and checks a roster; on any bad row lists every bad row and field.
fn read_checked(file: &Path) -> Result<Vec<Row>, ExitCode> {
    let mut rows = roster::read(file).map_err(|e| {
        eprintln!("error: {e}");
        ExitCode::FAILURE
    })?;
    if rows.is_empty() {
        eprintln!("error: {}: no claims in the file", file.display());
        return Err(ExitCode::FAILURE);
    }
    roster::check(&mut rows);
    let bad: Vec<&Row> = rows.iter().filter(|r| !r.problems.is_empty()).collect();
    if bad.is_empty() {
        return Ok(rows);
    }
    let fields: usize = bad.iter().map(|r| r.problems.len()).sum();
    eprintln!(
        "{}: {} of {} rows are not valid ({fields} problems); nothing was sent:",
        file.display(),
        bad.len(),
        rows.len()
    );
    for r in bad {
        for p in &r.problems {
            let field = if p.field.is_empty() { "/" } else { &p.field };
            let id = r.claim_id().map(|id| format!(" ({id})")).unwrap_or_default();
            eprintln!("  row {}{id}: {field} {}: {}", r.row, p.code, p.message);
        }
    }
    Err(ExitCode::FAILURE)
}

/// What became of one row.
enum Outcome {
    Decided { status: Status, amount: String, reasons: String, replayed: bool },
    Failed(String),
    NotSent,
}

async fn submit(file: &Path, url: &str, key: &str, out: Option<&Path>, batch_size: usize, retries: u32) -> ExitCode {
    let rows = match read_checked(file) {
        Ok(r) => r,
        Err(code) => return code,
    };
    let client = match Client::builder(url, key).batch_size(batch_size).max_retries(retries).build() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let bar = ProgressBar::new(rows.len() as u64);
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{bar:40}] {pos}/{len} claims {msg} ({elapsed})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let mut outcomes: Vec<Outcome> = Vec::with_capacity(rows.len());
    let mut stopped = None;
    for chunk in rows.chunks(batch_size) {
        let claims: Vec<&serde_json::Value> = chunk.iter().map(|r| &r.claim).collect();
        match client.batch(&claims).await {
            Ok(items) => outcomes.extend(items.into_iter().map(outcome)),
            Err(e) => {
                stopped = Some(e);
                break;
            }
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    outcomes.resize_with(rows.len(), || Outcome::NotSent);

    if let Err(e) = write_results(out, &rows, &outcomes) {
        eprintln!("error: writing the results: {e}");
        return ExitCode::FAILURE;
    }
    let count = |f: &dyn Fn(&Outcome) -> bool| outcomes.iter().filter(|o| f(o)).count();
    let approved = count(&|o| matches!(o, Outcome::Decided { status: Status::Approved, .. }));
    let rejected = count(&|o| matches!(o, Outcome::Decided { status: Status::Rejected, .. }));
    let revoked = count(&|o| matches!(o, Outcome::Decided { status: Status::Revoked, .. }));
    let replayed = count(&|o| matches!(o, Outcome::Decided { replayed: true, .. }));
    let failed = count(&|o| matches!(o, Outcome::Failed(_)));
    let not_sent = count(&|o| matches!(o, Outcome::NotSent));
    eprintln!(
        "{} rows: {approved} approved, {rejected} rejected, {revoked} revoked; {replayed} of them already recorded (replayed); {failed} refused, {not_sent} not sent",
        rows.len()
    );
    if let Some(e) = stopped {
        eprintln!("error: stopped: {e}");
        if e.status().is_none_or(|s| s >= 500) {
            eprintln!("Run the same command again: recorded claims replay, the rest are submitted.");
        }
    }
    if failed > 0 {
        eprintln!("{failed} rows got no decision; see the `error` column of the results");
    }
    if failed + not_sent == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn outcome(item: BatchItem) -> Outcome {
    match (item.decision, item.error) {
        (Some(d), _) => Outcome::Decided {
            status: d.status,
            amount: d.amount,
            reasons: d.reasons.iter().map(|r| r.code.as_str()).collect::<Vec<_>>().join(";"),
            replayed: item.replayed,
        },
        (None, Some(p)) => {
            let mut s = format!("{}: {}", p.code.as_str(), p.detail);
            for f in &p.errors {
                s.push_str(&format!("; {} {}: {}", f.field, f.code, f.message));
            }
            Outcome::Failed(s)
        }
        (None, None) => Outcome::Failed("the service gave no result for this claim".into()),
    }
}

/// `claim_id,status,amount,reasons,replayed,row,error`: one line per row, in
/// the file's order (`status` is `error` or `not_sent` for a row without a decision).
fn write_results(out: Option<&Path>, rows: &[Row], outcomes: &[Outcome]) -> std::io::Result<()> {
    let sink: Box<dyn Write> = match out {
        Some(p) => Box::new(std::fs::File::create(p)?),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut w = csv::Writer::from_writer(sink);
    w.write_record(["claim_id", "status", "amount", "reasons", "replayed", "row", "error"])?;
    for (r, o) in rows.iter().zip(outcomes) {
        let id = r.claim_id().unwrap_or_default();
        let line = r.row.to_string();
        match o {
            Outcome::Decided { status, amount, reasons, replayed } => w.write_record([
                id,
                status.as_str(),
                amount,
                reasons,
                if *replayed { "true" } else { "false" },
                &line,
                "",
            ])?,
            Outcome::Failed(e) => w.write_record([id, "error", "", "", "false", &line, e])?,
            Outcome::NotSent => w.write_record([id, "not_sent", "", "", "false", &line, ""])?,
        }
    }
    w.flush()
}
