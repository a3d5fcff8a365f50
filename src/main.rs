//! Runs the service (`subsidy-service`), prints the OpenAPI document
//! (`subsidy-service openapi`).

use std::process::ExitCode;

use subsidy_service::configuration::get_settings;
use subsidy_service::startup::Application;
use subsidy_service::telemetry;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        None | Some("serve") => serve(),
        Some("openapi") => openapi(),
        Some(other) => Err(anyhow::anyhow!(
            "unknown command `{other}`; commands: serve, openapi"
        )),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("subsidy-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn openapi() -> anyhow::Result<()> {
    println!("{}", subsidy_service::openapi::document().to_pretty_json()?);
    Ok(())
}

fn serve() -> anyhow::Result<()> {
    let settings = get_settings()?;
    telemetry::init(&settings.telemetry);
    actix_web::rt::System::new().block_on(async move {
        let app = Application::build(settings)?;
        tracing::info!(port = app.port(), "listening");
        app.run_until_stopped().await
    })
}
