//! `tidings-bench`: the benchmark harness of Tidings, also able to measure
//! any SSE hub described by URL templates (Nchan, a better-sse hub, ...).
//!
//! Modules, from the command line inwards:
//!
//! - [`cli`]: the arguments;
//! - [`target`]: the hub under test and how to subscribe and publish to it;
//! - [`scenarios`]: `idle`, `notify`, `fanout`, `topic`, `announce`, `ingest`, `catchup`, and
//!   the Tidings-only `batch`, `webhook`, `chat` and `storm`;
//! - [`fleet`] / [`worker`] / [`protocol`]: connection worker processes
//!   (several, each under the open-file limit, each from its own 127.0.0.x)
//!   and how the coordinator talks to them;
//! - [`sse`]: opening one SSE connection (parsed by eventsource-stream);
//! - [`publisher`]: publishing at a rate or a concurrency;
//! - [`stamp`]: what each message carries to be identified and timed;
//! - [`metrics`]: latency histograms and the delivery tally;
//! - [`procstat`]: the server's memory and CPU from /proc;
//! - [`report`]: result tables and the side-by-side comparison.

mod cli;
mod fleet;
mod metrics;
mod procstat;
mod protocol;
mod publisher;
mod report;
mod scenarios;
mod sse;
mod stamp;
mod target;
mod worker;

use std::process::ExitCode;

use clap::{Args, Parser};

use crate::{
    cli::{Cli, Command, Run, TableArgs},
    report::Report,
    scenarios::Ctx,
    target::Target,
};

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Worker => worker::main().map(|()| ExitCode::SUCCESS),
        Command::Table(args) => table(&args),
        Command::Idle(run) => scenario(run, |ctx, args| Box::pin(async move { scenarios::idle::run(ctx, args).await })),
        Command::Notify(run) => scenario(run, |ctx, args| Box::pin(async move { scenarios::notify::run(ctx, args).await })),
        Command::Fanout(run) => scenario(run, |ctx, args| Box::pin(async move { scenarios::fanout::run(ctx, args).await })),
        Command::Topic(run) => scenario(run, |ctx, args| Box::pin(async move { scenarios::topic::run(ctx, args).await })),
        Command::Announce(run) => scenario(run, |ctx, args| Box::pin(async move { scenarios::announce::run(ctx, args).await })),
        Command::Ingest(run) => scenario(run, |ctx, args| Box::pin(async move { scenarios::ingest::run(ctx, args).await })),
        Command::Catchup(run) => scenario(run, |ctx, args| Box::pin(async move { scenarios::catchup::run(ctx, args).await })),
        Command::Batch(run) => scenario(run, |ctx, args| Box::pin(async move { scenarios::batch::run(ctx, args).await })),
        Command::Webhook(run) => scenario(run, |ctx, args| Box::pin(async move { scenarios::webhook::run(ctx, args).await })),
        Command::Chat(run) => scenario(run, |ctx, args| Box::pin(async move { scenarios::chat::run(ctx, args).await })),
        Command::Storm(run) => scenario(run, |ctx, args| Box::pin(async move { scenarios::storm::run(ctx, args).await })),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tidings-bench: {e:#}");
            ExitCode::from(2)
        }
    }
}

type ScenarioFuture<'a> = std::pin::Pin<Box<dyn Future<Output = anyhow::Result<Report>> + 'a>>;

/// Runs one scenario, prints its table, saves it if asked, and turns
/// correctness problems into exit status 1 under `--strict`.
fn scenario<S: Args>(run: Run<S>, body: impl for<'a> FnOnce(&'a Ctx, &'a S) -> ScenarioFuture<'a>) -> anyhow::Result<ExitCode> {
    let target = Target::from_args(&run.target)?;
    let strict = run.output.strict;
    let json = run.output.json.clone();
    let ctx = Ctx::new(target, run.load, run.output);
    // The coordinator only publishes and reads a few streams; the workers,
    // in their own processes, hold the bulk of the connections.
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let report = runtime.block_on(body(&ctx, &run.scenario))?;
    print!("{}", report.render());
    if let Some(path) = json {
        report.save(&path)?;
    }
    Ok(if strict && !report.problems.is_empty() { ExitCode::from(1) } else { ExitCode::SUCCESS })
}

/// `table`: reports of one scenario side by side.
fn table(args: &TableArgs) -> anyhow::Result<ExitCode> {
    let reports = args.reports.iter().map(|p| Report::load(p)).collect::<anyhow::Result<Vec<_>>>()?;
    if let Some(other) = reports.iter().find(|r| r.scenario != reports[0].scenario) {
        anyhow::bail!("reports of different scenarios: {} and {}", reports[0].scenario, other.scenario);
    }
    let (text, markdown) = report::side_by_side(&reports);
    print!("{text}");
    if let Some(path) = &args.markdown {
        std::fs::write(path, markdown)?;
    }
    Ok(ExitCode::SUCCESS)
}
