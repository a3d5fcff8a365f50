//! `subsidy-service` runs the service; `subsidy-service openapi` prints the
//! OpenAPI document; `check`, `export` and `import` maintain a stopped store.

use secrecy::ExposeSecret;
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
  subsidy-service migrate [--url URL]     create or migrate the PostgreSQL ledger's schema (URL: store.url)
  subsidy-service check  --store PATH | --url URL
                                          recheck every record and recount what they hold; exit 1 on drift
  subsidy-service export --store PATH | --url URL
                                          write records, events and directories as JSON lines to stdout
  subsidy-service import --store PATH | --url URL
                                          restore JSON lines (an export of either backend, layout v1 or v2) from
                                          stdin into an empty ledger
                                          (--store: the embedded sled store; --url: a PostgreSQL ledger)
  subsidy-service import --store PATH --from V1_PATH
                                          move a stopped store of layout v1 into an empty layout-v2 store
  subsidy-service simulate --store PATH --county COUNTY --changes FILE
                  [--from DATE] [--to DATE] [--sample N] [--json OUT] [--csv OUT]
                                          replay a stopped store's recorded claims under the policy in force and
                                          under the changes in FILE (a JSON list of changes, or a whole
                                          POST /v1/simulations body); print the comparison, and write it as
                                          JSON (everything) or CSV (the totals side by side)";

/// mimalloc instead of the system allocator: the ledger writer and sled
/// allocate and free node copies at a high rate (scripts/bench.d/RESULTS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("serve") => serve(),
        Some("openapi") => openapi(),
        Some("migrate") => migrate(&args),
        Some("check") => ledger_arg(&args).and_then(check),
        Some("export") => ledger_arg(&args).and_then(export),
        Some("import") => ledger_arg(&args).and_then(|l| import(l, &args)),
        Some("simulate") => store_arg(&args).and_then(|p| simulate(p, &args)),
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

/// Creates or migrates the PostgreSQL schema (the service also does it at start).
fn migrate(args: &[String]) -> anyhow::Result<ExitCode> {
    use subsidy_service::ledger::postgres;
    let url = match flag(args, "--url")? {
        Some(u) => u.to_string(),
        None => get_settings()?.store.url.expose_secret().to_string(),
    };
    if url.is_empty() {
        bail!("no database: give --url URL or set store.url (SUBSIDY__STORE__URL)");
    }
    let applied = postgres::on_own_runtime(async move {
        let mut client = postgres::connect(&url).await?;
        postgres::migrate(&mut client).await
    })?;
    match applied.as_slice() {
        [] => println!("the schema is up to date"),
        v => println!("applied schema migrations {v:?}"),
    }
    Ok(ExitCode::SUCCESS)
}

/// The value after `--name`, if the flag is given.
fn flag<'a>(args: &'a [String], name: &str) -> anyhow::Result<Option<&'a str>> {
    match args.iter().position(|a| a == name) {
        Some(i) => Ok(Some(args.get(i + 1).map(String::as_str).with_context(|| format!("{name} needs a value"))?)),
        None => Ok(None),
    }
}

/// The ledger a maintenance command works on.
enum Ledger {
    Sled(PathBuf),
    Postgres(String),
}

fn ledger_arg(args: &[String]) -> anyhow::Result<Ledger> {
    match flag(args, "--url")? {
        Some(url) => Ok(Ledger::Postgres(url.to_string())),
        None => store_arg(args).map(Ledger::Sled),
    }
}

fn store_arg(args: &[String]) -> anyhow::Result<PathBuf> {
    match args.iter().position(|a| a == "--store") {
        Some(i) => args.get(i + 1).map(PathBuf::from).context("--store needs a path"),
        None => bail!("--store PATH is required\n{USAGE}"),
    }
}

fn open(path: &std::path::Path) -> anyhow::Result<Store> {
    // A directory without sled's files is not a store: nothing is created in it.
    if !path.join("db").exists() {
        bail!("no store at {}", path.display());
    }
    Store::open(path, 64 << 20)
}

/// Prints the document with its object keys sorted, so that the checked-in
/// copy is the same text on every run (a few JSON Schema keywords live in
/// utoipa's extension maps, whose order is not fixed).
fn openapi() -> anyhow::Result<ExitCode> {
    let document = serde_json::to_value(subsidy_service::openapi::document())?;
    println!("{}", serde_json::to_string_pretty(&document)?);
    Ok(ExitCode::SUCCESS)
}

fn check(target: Ledger) -> anyhow::Result<ExitCode> {
    let drift = match target {
        Ledger::Sled(path) => ledger::check(&open(&path)?)?,
        Ledger::Postgres(url) => ledger::postgres::check(&url)?,
    };
    if drift.is_empty() {
        println!("ok: every record decodes and agrees with itself; no key is held twice, no year over its limit");
        Ok(ExitCode::SUCCESS)
    } else {
        for d in &drift {
            println!("drift: {d}");
        }
        println!("{} drift(s) found", drift.len());
        Ok(ExitCode::from(1))
    }
}

fn export(target: Ledger) -> anyhow::Result<ExitCode> {
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let n = match target {
        Ledger::Sled(path) => ledger::export(&open(&path)?, &mut out)?,
        Ledger::Postgres(url) => ledger::postgres::export(&url, &mut out)?,
    };
    eprintln!("exported {n} records");
    Ok(ExitCode::SUCCESS)
}

fn import(target: Ledger, args: &[String]) -> anyhow::Result<ExitCode> {
    let path = match target {
        Ledger::Sled(path) => path,
        Ledger::Postgres(url) => {
            if args.iter().any(|a| a == "--from") {
                bail!("--from moves a layout-v1 store into a new sled store; import that into PostgreSQL afterwards");
            }
            let n = ledger::postgres::import(&url, std::io::stdin().lock())?;
            eprintln!("imported {n} records");
            return Ok(ExitCode::SUCCESS);
        }
    };
    let from = match args.iter().position(|a| a == "--from") {
        Some(i) => Some(args.get(i + 1).map(PathBuf::from).context("--from needs the path of a layout-v1 store")?),
        None => None,
    };
    let n = match from {
        Some(old) => {
            if old == path {
                bail!("--from and --store must differ: layout v2 is written to a new store");
            }
            let v1 = Store::open_v1(&old)?;
            let store = Store::open(&path, 64 << 20)?;
            ledger::import_v1_store(&store, &v1)?
        }
        None => {
            let store = Store::open(&path, 64 << 20)?;
            ledger::import(&store, std::io::stdin().lock())?
        }
    };
    eprintln!("imported {n} records");
    Ok(ExitCode::SUCCESS)
}

fn simulate(path: PathBuf, args: &[String]) -> anyhow::Result<ExitCode> {
    use subsidy_service::ledger::ReplayFilter;
    use subsidy_service::privacy::{Pseudonymizer, Sealer};
    use subsidy_service::simulation::{check_request, Checked, Simulation};

    let body = simulation_body(args)?;
    let settings = get_settings()?;
    let policy = settings.policy.load()?;
    // Every bad field named at once, as over HTTP (the settings and the
    // policy first: the changes are checked against it).
    let Checked { county, sample, from, to, simulated } = match check_request(&body, &policy) {
        Ok(checked) => checked,
        Err(errors) => return Ok(refused(errors)),
    };
    let baseline = policy.county(county);
    let store = std::sync::Arc::new(open(&path)?);
    let directory = store.directory(county)?.to_directory();
    let filter = ReplayFilter { county, from, to };
    let secret = settings.privacy.id_hash_secret.expose_secret();
    let started = std::time::Instant::now();
    let comparison = Simulation {
        baseline,
        simulated: &simulated,
        directory: &directory,
        from: filter.from,
        to: filter.to,
        sample,
        // A stopped store keeps no running totals to size the scratch ledgers
        // by: every record it holds is the most the window can grant.
        grants: usize::try_from(store.record_count()?).unwrap_or(usize::MAX),
    }
    .run(
        ledger::replay_store(&store, filter),
        &Sealer::new(secret),
        &Pseudonymizer::new(secret),
        &Default::default(),
    )?;
    print!("{}", comparison.table());
    eprintln!("replayed in {:.2} s", started.elapsed().as_secs_f64());
    if let Some(out) = flag(args, "--json")? {
        let f = std::fs::File::create(out).with_context(|| format!("creating {out}"))?;
        serde_json::to_writer_pretty(std::io::BufWriter::new(f), &comparison)?;
    }
    if let Some(out) = flag(args, "--csv")? {
        let f = std::fs::File::create(out).with_context(|| format!("creating {out}"))?;
        comparison.write_csv(std::io::BufWriter::new(f))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The simulation request of `simulate`: the `--changes` file (a list of
/// changes or a whole request) with `--county`, `--from`, `--to` and
/// `--sample` laid over it.
fn simulation_body(args: &[String]) -> anyhow::Result<serde_json::Value> {
    use serde_json::{json, Value};
    let file = flag(args, "--changes")?.context("--changes FILE is required")?;
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {file}"))?;
    let given: Value = serde_json::from_str(&text).with_context(|| format!("{file} is not JSON"))?;
    let mut body = match given {
        Value::Array(changes) => json!({ "changes": changes }),
        Value::Object(o) => Value::Object(o),
        _ => bail!("{file} holds neither a list of changes nor a simulation request"),
    };
    for name in ["county", "from", "to"] {
        if let Some(v) = flag(args, &format!("--{name}"))? {
            body[name] = v.into();
        }
    }
    if let Some(n) = flag(args, "--sample")? {
        body["sample"] = n.parse::<u64>().map_or_else(|_| Value::from(n), Value::from);
    }
    Ok(body)
}

/// Prints why a request was refused; exit status 2.
fn refused(errors: Vec<subsidy_service::domain::FieldError>) -> ExitCode {
    for e in errors {
        eprintln!("{}: {} ({})", e.field, e.message, e.code);
    }
    ExitCode::from(2)
}

fn serve() -> anyhow::Result<ExitCode> {
    let settings = get_settings()?;
    telemetry::init(&settings.telemetry);
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings)?;
        tracing::info!(port = app.port(), metrics_port = app.metrics_port(), "listening");
        app.run_until_stopped().await
    })?;
    Ok(ExitCode::SUCCESS)
}
