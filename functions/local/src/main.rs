//! The `busway` command: run the broker on this machine, and tools around it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use busway_local::{Config, Running};
use clap::{Parser, Subcommand};

/// busway: a self-service event broker on Amazon EventBridge, and the same broker on one machine.
#[derive(Parser)]
#[command(
    version,
    after_help = "Start with `busway up`, then see the README for the seed's demo as curl calls."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the portal API and the broker API on this machine, with state under --data-dir.
    ///
    /// Register event types and subscriptions on the portal; deploy.json files land in
    /// DATA_DIR/buckets and are provisioned at once; producers POST events to the broker.
    Up {
        /// Where state lives (SQLite files and the bucket folders); kept across restarts.
        #[arg(long, default_value = "./.busway")]
        data_dir: PathBuf,
        /// Address of the portal REST API (event types, subscriptions, deployments).
        #[arg(long, default_value = "127.0.0.1:4000")]
        portal_addr: SocketAddr,
        /// Address of the broker API (POST /{event_type}/{version}).
        #[arg(long, default_value = "127.0.0.1:4001")]
        broker_addr: SocketAddr,
    },
    /// EventBridge event-pattern tools.
    #[command(subcommand)]
    Pattern(PatternCommand),
}

#[derive(Subcommand)]
enum PatternCommand {
    /// Test an event against an event pattern, like EventBridge's TestEventPattern.
    ///
    /// Prints `match`, `no match`, or why the pattern is invalid. Exits 0 on a match, 1 on no
    /// match, 2 on an invalid pattern or unreadable input.
    Test {
        /// File holding the event pattern (JSON).
        #[arg(long)]
        pattern: PathBuf,
        /// File holding the event (JSON, EventBridge's event structure).
        #[arg(long)]
        event: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up {
            data_dir,
            portal_addr,
            broker_addr,
        } => {
            init_logging();
            match up(Config::new(data_dir, portal_addr, broker_addr)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("busway: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Pattern(PatternCommand::Test { pattern, event }) => {
            let outcome = busway_pattern::test_files(&pattern, &event);
            println!("{outcome}");
            ExitCode::from(u8::try_from(outcome.exit_code()).unwrap_or(2))
        }
    }
}

fn up(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let running = Running::start(config).await?;
        println!("portal: http://{}", running.portal_addr);
        println!("broker: http://{}", running.broker_addr);
        running.wait_for_signal().await
    })
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
