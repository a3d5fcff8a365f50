//! `subsidy-service` runs the service; `subsidy-service openapi` prints the
//! OpenAPI document; `check`, `export` and `import` maintain a stopped store.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context};
use subsidy_service::configuration::get_settings;
use subsidy_service::ledger::{self, Store};
use subsidy_service::startup::Application;
use subsidy_service::telemetry;

const USAGE: &str = "usage:
  subsidy-service [serve]                 run the service (config/, SUBSIDY_ENV, SUBSIDY__*)
  subsidy-service openapi                 print the OpenAPI document
  subsidy-service check  --store PATH     recount every ledger counter and key from the decisions; exit 1 on drift
  subsidy-service export --store PATH     write decisions, events and directories as JSON lines to stdout
  subsidy-service import --store PATH     restore JSON lines from stdin into an empty store";

/// mimalloc instead of the system allocator: the ledger writer and sled
/// allocate and free node copies at a high rate (scripts/bench.d/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("serve") => serve(),
        Some("openapi") => openapi(),
        Some("check") => store_arg(&args).and_then(check),
        Some("export") => store_arg(&args).and_then(export),
        Some("import") => store_arg(&args).and_then(import),
        Some("-h" | "--help" | "help") => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        Some(other) => Err(anyhow::anyhow!("unknown command `{other}`\n{USAGE}")),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("subsidy-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn store_arg(args: &[String]) -> anyhow::Result<PathBuf> {
    match args.iter().position(|a| a == "--store") {
        Some(i) => args.get(i + 1).map(PathBuf::from).context("--store needs a path"),
        None => bail!("--store PATH is required\n{USAGE}"),
    }
}

fn open(path: &std::path::Path) -> anyhow::Result<Store> {
    if !path.exists() {
        bail!("no store at {}", path.display());
    }
    Store::open(path, 64 << 20)
}

fn openapi() -> anyhow::Result<ExitCode> {
    println!("{}", subsidy_service::openapi::document().to_pretty_json()?);
    Ok(ExitCode::SUCCESS)
}

fn check(path: PathBuf) -> anyhow::Result<ExitCode> {
    let store = open(&path)?;
    let drift = ledger::check(&store)?;
    if drift.is_empty() {
        println!("ok: every counter, key, index and report total matches the stored decisions");
        Ok(ExitCode::SUCCESS)
    } else {
        for d in &drift {
            println!("drift: {d}");
        }
        println!("{} drift(s) found", drift.len());
        Ok(ExitCode::from(1))
    }
}

fn export(path: PathBuf) -> anyhow::Result<ExitCode> {
    let store = open(&path)?;
    let stdout = std::io::stdout();
    let n = ledger::export(&store, &mut std::io::BufWriter::new(stdout.lock()))?;
    eprintln!("exported {n} records");
    Ok(ExitCode::SUCCESS)
}

fn import(path: PathBuf) -> anyhow::Result<ExitCode> {
    let store = Store::open(&path, 64 << 20)?;
    let n = ledger::import(&store, std::io::stdin().lock())?;
    eprintln!("imported {n} records");
    Ok(ExitCode::SUCCESS)
}

fn serve() -> anyhow::Result<ExitCode> {
    let settings = get_settings()?;
    telemetry::init(&settings.telemetry);
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings)?;
        tracing::info!(port = app.port(), "listening");
        app.run_until_stopped().await
    })?;
    Ok(ExitCode::SUCCESS)
}
