//! The `todo-service` binary: parse settings, start telemetry, build the app, run it.

use std::process::ExitCode;

use clap::Parser;
use todo_service::app::{App, Exit};
use todo_service::config::{Cli, Command};
use todo_service::{db, healthcheck, shutdown, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(Command::Healthcheck { url }) = &cli.command {
        return healthcheck::probe(url);
    }
    let guard = match telemetry::init(&cli.settings.telemetry) {
        Ok(guard) => guard,
        Err(e) => {
            eprintln!("todo-service: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = match cli.command {
        Some(Command::Migrate) => migrate(&cli.settings).await,
        _ => serve(cli.settings).await,
    };
    guard.shutdown();
    result.unwrap_or_else(|e| {
        tracing::error!(error.message = %e, error.cause_chain = ?e, "todo-service failed");
        eprintln!("todo-service: {e:#}");
        ExitCode::FAILURE
    })
}

async fn serve(settings: todo_service::config::Settings) -> anyhow::Result<ExitCode> {
    let app = App::build(settings).await?;
    Ok(
        match app.run_until_stopped(shutdown::shutdown_signal()).await? {
            Exit::Clean => ExitCode::SUCCESS,
            Exit::MeltedDown => ExitCode::from(3),
        },
    )
}

/// Needs only the database settings: a migration Job gets the serving ConfigMap but not
/// the secrets only serving needs (JWT keys, admin token), and must not fail for them.
async fn migrate(settings: &todo_service::config::Settings) -> anyhow::Result<ExitCode> {
    let mut pg = settings.db.pg_config().map_err(anyhow::Error::msg)?;
    let tls = db::tls(&mut pg, settings.db.ca_file.as_deref())?;
    let applied = db::migrate(&pg, &tls).await?;
    tracing::info!(?applied, "migrations applied");
    Ok(ExitCode::SUCCESS)
}
