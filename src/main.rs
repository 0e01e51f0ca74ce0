//! The `tidings` binary: parses the command line and wires the library.

use std::{process::ExitCode, time::Duration};

use anyhow::Context;
use clap::Parser;
use migration::{Migrator, MigratorTrait};
use tidings::{
    Application,
    auth::JwtKeys,
    config::{Cli, Command, resolve_keys},
    store, telemetry,
};

/// jemalloc as the global allocator (Cargo feature `jemalloc`, on by
/// default): it held an idle stream in about a fifth less memory than
/// glibc's malloc at no more CPU (BENCHMARKS.md, "Allocators"). Tuned at
/// run time by `_RJEM_MALLOC_CONF` (docs/operations.md, "Memory").
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// mimalloc as the global allocator (Cargo feature `mimalloc`), measured
/// against jemalloc and glibc in BENCHMARKS.md ("Allocators"). jemalloc
/// wins if both features are on, so `--all-features` still builds.
#[cfg(all(feature = "mimalloc", not(feature = "jemalloc")))]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json_logs = match &cli.command {
        None => cli.serve.log_format == "json",
        Some(Command::Serve(args)) => args.log_format == "json",
        _ => false,
    };
    telemetry::init(if json_logs { telemetry::LogFormat::Json } else { telemetry::LogFormat::Text });
    let outcome = match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(args)) => serve(*args).await,
        Some(Command::Migrate(args)) => migrate(&args.database_url).await,
        Some(Command::Token(args)) => token(args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: tidings::config::ServeArgs) -> anyhow::Result<()> {
    let open_files = tidings::limits::raise_open_files();
    tracing::debug!(open_files, "open-file limit");
    let app = Application::build(args.into_settings()?).await?;
    tracing::info!(address = %app.local_addr(), "listening");
    if let Some(demo) = app.demo() {
        println!("{demo}");
    }
    app.run_until_stopped(stop_signal()).await
}

async fn migrate(database_url: &str) -> anyhow::Result<()> {
    let db = store::connect(database_url).await.context("connecting to the database")?;
    Migrator::up(&db, None).await.context("applying migrations")?;
    tracing::info!("migrations applied");
    Ok(())
}

fn token(args: tidings::config::TokenArgs) -> anyhow::Result<()> {
    let keys = resolve_keys(&args.keys, &args.database.database_url)?;
    let keys = JwtKeys::new(&keys.source, args.keys.jwt_audience.as_deref())?;
    let topics = (!args.topics.is_empty()).then_some(args.topics);
    let token = keys.mint_with(&args.sub, args.scope.as_deref(), topics, Duration::from_secs(args.ttl))?;
    println!("{token}");
    Ok(())
}

/// Completes on Ctrl-C or SIGTERM.
async fn stop_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("stopping");
}
