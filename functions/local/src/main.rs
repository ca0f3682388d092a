//! The `busway` command: run the broker on this machine, and tools around it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use busway_local::eventlog::Fsync;
use busway_local::migrations::STORE;
use busway_local::objects::FolderObjectStore;
use busway_local::provisioning::{LocalStarter, Synth};
use busway_local::retention;
use busway_local::store::SqliteStore;
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
        /// Lambda Invoke API endpoint for LAMBDA subscriptions, e.g. the address
        /// `cargo lambda watch` serves (http://127.0.0.1:9000). Without it, LAMBDA
        /// subscriptions fail to deploy.
        #[arg(long)]
        lambda_endpoint: Option<String>,
        /// An SQS-API server (e.g. moto server) that SQS subscriptions send to with the AWS SDK
        /// (credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, else test/test). Without
        /// it, SQS subscriptions deliver to embedded queues.
        #[arg(long)]
        sqs_endpoint: Option<String>,
        /// Also run `cdk synth` of the CDK generators for every deployed deploy.json, keeping
        /// each template under DATA_DIR/synth/{deployment id}/ (needs Node and `npm ci` in
        /// the generators' folder, see --cdk-app). A document that does not synthesize fails
        /// its deployment, as it would on AWS.
        #[arg(long)]
        synth: bool,
        /// The CDK generators' folder for --synth.
        #[arg(long, default_value = "cdk-app", requires = "synth")]
        cdk_app: PathBuf,
        /// A `cdk synth` running longer is killed and its deployment fails (e.g. 90s, 5m).
        #[arg(long, default_value = "5m", value_parser = parse_duration, requires = "synth")]
        synth_timeout: Duration,
        /// How long the event log keeps events (e.g. 90m, 24h, 7d; at least 5m), which is also
        /// how long a repeated event_id is answered as a duplicate. An event that a
        /// subscription has not settled yet is kept whatever its age.
        #[arg(long, default_value = "24h", value_parser = parse_log_retention)]
        retention: Duration,
        /// When an accepted event is flushed to disk: `always` before its 200 (a power loss
        /// loses no answered event), or `interval=<ms>` at most that long after it (a power loss
        /// may lose that window; a killed busway loses nothing in either mode).
        #[arg(long, default_value = "always")]
        fsync: Fsync,
        /// How long dead letters are kept, as an SQS dead-letter queue's
        /// MessageRetentionPeriod (60s to 14d).
        #[arg(long, default_value = "4d", value_parser = parse_sqs_retention)]
        dead_letter_retention: Duration,
        /// How long messages wait in embedded queues, as an SQS queue's
        /// MessageRetentionPeriod (60s to 14d).
        #[arg(long, default_value = "4d", value_parser = parse_sqs_retention)]
        queue_retention: Duration,
        /// The largest event body the broker API accepts, in bytes; above it the answer is 413.
        /// The default is the broker's limit on AWS; at least 1024.
        #[arg(long, default_value_t = busway_injector::MAX_EVENT_BYTES, value_parser = bytes_at_least::<1024>)]
        max_event_bytes: usize,
        /// The bus entry limit in bytes, measured as EventBridge measures an entry: above it an
        /// event's data is stored under claim-checks/ in the schema backup bucket folder and the
        /// event carries a link. The default is EventBridge's limit (1 MB); 262144 is the older
        /// one that some accounts still have; at least 4096, which a claim-checked event's link
        /// and metadata need.
        #[arg(long, default_value_t = busway_core::claim_check::DEFAULT_MAX_ENTRY_BYTES, value_parser = bytes_at_least::<4096>)]
        max_entry_bytes: usize,
        /// Accept `http://` subscription targets on loopback although --portal-addr is not a
        /// loopback address (they are accepted anyway when it is).
        #[arg(long)]
        allow_loopback_targets: bool,
    },
    /// Read the embedded queues that SQS subscriptions deliver to.
    #[command(subcommand)]
    Queue(QueueCommand),
    /// Run the seed's full demo against a temporary broker and check every step.
    ///
    /// Creates scanned_parcel, waits for its deployment, subscribes a small HTTP consumer as
    /// target unit u2, publishes for u2 (delivered), for u3 (not delivered) and an invalid event
    /// (400 with reasons). Exits 0 only if every step behaved as the seed describes.
    Demo,
    /// EventBridge event-pattern tools.
    #[command(subcommand)]
    Pattern(PatternCommand),
    /// The schema registry.
    #[command(subcommand)]
    Registry(RegistryCommand),
    /// API keys: each belongs to a team and has a role. Works while `busway up` runs on the
    /// data dir; a new key is printed once, alone on the last line.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Copy a data dir, consistently, while `busway up` may serve it: its two SQLite files and
    /// its bucket folders into a new folder, which `busway up --data-dir` serves as it was.
    Backup {
        #[arg(long, default_value = "./.busway")]
        data_dir: PathBuf,
        /// A new (or empty) folder for the copy.
        #[arg(long)]
        to: PathBuf,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Make a key and print it (it is stored hashed: this is the only time it is shown).
    Create {
        #[arg(long, default_value = "./.busway")]
        data_dir: PathBuf,
        /// The team the key belongs to.
        #[arg(long)]
        team: String,
        /// platform-admin, owner, producer (needs --application) or consumer.
        #[arg(long)]
        role: String,
        /// The application a producer key publishes as.
        #[arg(long)]
        application: Option<String>,
        /// A producer key's rate limit: events a second on the broker (429 above it).
        #[arg(long, requires = "application")]
        rate_limit: Option<u32>,
        /// How many events above --rate-limit a burst may take (default: the rate).
        #[arg(long, requires = "rate_limit")]
        burst: Option<u32>,
    },
    /// List the keys (never their secrets) as JSON.
    List {
        #[arg(long, default_value = "./.busway")]
        data_dir: PathBuf,
    },
    /// Revoke a key by its id: it stops working within seconds.
    Revoke {
        #[arg(long, default_value = "./.busway")]
        data_dir: PathBuf,
        id: String,
    },
    /// Make a successor of a key and print it; the old key keeps working for 24 hours.
    Rotate {
        #[arg(long, default_value = "./.busway")]
        data_dir: PathBuf,
        id: String,
    },
}

#[derive(Subcommand)]
enum QueueCommand {
    /// Receive (and delete) messages from an embedded queue, printing one JSON body per line.
    Receive {
        /// The queue name: the last part of the SQS subscription's queue ARN.
        name: String,
        /// Portal of the running busway.
        #[arg(long, default_value = "http://127.0.0.1:4000")]
        portal: String,
        /// At most this many messages (1 to 100).
        #[arg(long, default_value_t = 10)]
        max: u32,
        /// A key of the team whose subscription delivers into the queue (or a platform admin's).
        #[arg(long)]
        key: String,
    },
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

#[derive(Subcommand)]
enum RegistryCommand {
    /// Rebuild the registry from the schema backup bucket (the seed's disaster recovery).
    ///
    /// Puts every version the event store knows back into the registry from
    /// DATA_DIR/buckets/local-event-schemas-backup-bucket/{event_type}/{version}/schema.json,
    /// skipping those already there. Prints the report as JSON; exits 1 when a version has no
    /// backup, a backup that differs from the stored schema, or was refused.
    Restore {
        /// The data dir of `busway up`; it may be running.
        #[arg(long, default_value = "./.busway")]
        data_dir: PathBuf,
    },
}

// The broker allocates a few small buffers per event; mimalloc handles that churn better than
// glibc's allocator across the runtime's threads.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Up {
            data_dir,
            portal_addr,
            broker_addr,
            lambda_endpoint,
            sqs_endpoint,
            synth,
            cdk_app,
            synth_timeout,
            retention,
            fsync,
            dead_letter_retention,
            queue_retention,
            max_event_bytes,
            max_entry_bytes,
            allow_loopback_targets,
        } => {
            init_logging();
            let mut config = Config::new(data_dir.clone(), portal_addr, broker_addr);
            config.max_event_bytes = max_event_bytes;
            config.max_entry_bytes = max_entry_bytes;
            config.allow_loopback_targets = allow_loopback_targets;
            config.delivery.lambda_endpoint = lambda_endpoint;
            config.delivery.sqs_endpoint = sqs_endpoint;
            config.retention.events = retention;
            config.fsync = fsync;
            config.retention.dead_letters = dead_letter_retention;
            config.retention.queue_messages = queue_retention;
            config.admin_key = std::env::var(ADMIN_KEY).ok().filter(|k| !k.is_empty());
            config.synth = synth.then(|| Synth {
                cdk_app,
                out: data_dir.join("synth"),
                timeout: synth_timeout,
            });
            report(runtime().and_then(|rt| rt.block_on(up(config))))
        }
        Command::Queue(QueueCommand::Receive {
            name,
            portal,
            max,
            key,
        }) => report(runtime().and_then(|rt| rt.block_on(receive(&portal, &name, max, &key)))),
        Command::Demo => report(runtime().and_then(|rt| rt.block_on(busway_local::demo::run()))),
        Command::Pattern(PatternCommand::Test { pattern, event }) => {
            let outcome = busway_pattern::test_files(&pattern, &event);
            println!("{outcome}");
            ExitCode::from(u8::try_from(outcome.exit_code()).unwrap_or(2))
        }
        Command::Keys(command) => report(runtime().and_then(|rt| rt.block_on(keys(command)))),
        Command::Backup { data_dir, to } => {
            report(busway_local::backup::run(&data_dir, &to).map(|written| {
                for path in written {
                    println!("{}", path.display());
                }
            }))
        }
        Command::Registry(RegistryCommand::Restore { data_dir }) => {
            match runtime().and_then(|rt| rt.block_on(restore_registry(&data_dir))) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => report(Err(e)),
            }
        }
    }
}

/// `90s`, `30m`, `24h`, `7d`.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration such as 90s, 30m, 24h or 7d"))?;
    let seconds = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => return Err(format!("{text:?}: the unit must be s, m, h or d")),
    };
    Ok(Duration::from_secs(number.saturating_mul(seconds)))
}

/// The log's retention is its deduplication window, which is never shorter than the bus port
/// promises.
/// A size flag: a number of bytes from `MIN`, below which every event would be refused.
fn bytes_at_least<const MIN: usize>(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(bytes) if bytes >= MIN => Ok(bytes),
        _ => Err(format!(
            "{text:?}: expected a number of bytes, at least {MIN}"
        )),
    }
}

fn parse_log_retention(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    let min = busway_core::ports::MIN_DEDUP_WINDOW;
    if d >= min {
        Ok(d)
    } else {
        Err(format!(
            "{text}: the log keeps events at least {}m, its window for repeated event_ids",
            min.as_secs() / 60
        ))
    }
}

fn parse_sqs_retention(text: &str) -> Result<Duration, String> {
    let d = parse_duration(text)?;
    if retention::SQS_RANGE.contains(&d) {
        Ok(d)
    } else {
        Err(format!("{text}: SQS keeps messages from 60s to 14d"))
    }
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Runtime::new()?)
}

fn report(result: anyhow::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("busway: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// A platform-admin key for `busway up` to accept, so scripts and tests can bootstrap.
const ADMIN_KEY: &str = "BUSWAY_ADMIN_KEY";

async fn up(config: Config) -> anyhow::Result<()> {
    let running = Running::start(config).await?;
    if let Some(key) = &running.new_admin_key {
        println!("a platform-admin key was made for this data dir; it is shown only now:");
        println!("admin key: {key}");
    }
    println!("portal: http://{}", running.portal_addr);
    println!("broker: http://{}", running.broker_addr);
    running.wait_for_signal().await
}

async fn receive(portal: &str, name: &str, max: u32, key: &str) -> anyhow::Result<()> {
    let url = format!(
        "{}/queues/{name}/messages?max={max}",
        portal.trim_end_matches('/')
    );
    let response = reqwest::Client::new()
        .get(&url)
        .bearer_auth(key)
        .send()
        .await
        .with_context(|| format!("reaching busway at {portal}"))?;
    let status = response.status();
    let text = response.text().await.context("reading the answer")?;
    if !status.is_success() {
        let error: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
        anyhow::bail!("{status}: {}", error["error"]["message"]);
    }
    // Bodies stay raw text, so each event prints with EventBridge's field order.
    #[derive(serde::Deserialize)]
    struct Message {
        body: Box<serde_json::value::RawValue>,
    }
    #[derive(serde::Deserialize)]
    struct Messages {
        messages: Vec<Message>,
    }
    let answer: Messages = serde_json::from_str(&text).context("reading the answer")?;
    for message in answer.messages {
        println!("{}", message.body.get());
    }
    Ok(())
}

/// The store of an existing data dir, which `busway up` may be serving. One of an older
/// release is refused rather than upgraded: the busway serving it may be that release, and
/// only `busway up` upgrades the whole data dir at once.
fn existing_store(data_dir: &Path) -> anyhow::Result<SqliteStore> {
    let db = data_dir.join("busway.db");
    // Opening would create an empty data dir where a mistyped path points.
    anyhow::ensure!(db.exists(), "no busway data in {}", data_dir.display());
    STORE.refuse_older(&db)?;
    SqliteStore::open(&db)
}

async fn keys(command: KeysCommand) -> anyhow::Result<()> {
    use busway_core::auth::{self, KeyStore, NewKey};
    let made = match command {
        KeysCommand::Create {
            data_dir,
            team,
            role,
            application,
            rate_limit,
            burst,
        } => {
            let store = existing_store(&data_dir)?;
            let mut new = NewKey::new(
                team.parse().map_err(|e| anyhow::anyhow!("--team: {e}"))?,
                role.parse().map_err(|e| anyhow::anyhow!("--role: {e}"))?,
                application
                    .map(|a| a.parse())
                    .transpose()
                    .map_err(|e| anyhow::anyhow!("--application: {e}"))?,
            )
            .map_err(|e| anyhow::anyhow!("{e}"))?;
            if let Some(rate) = rate_limit {
                let limit = auth::RateLimit::new(rate, burst.unwrap_or(rate))
                    .map_err(|e| anyhow::anyhow!("--rate-limit: {e}"))?;
                new = new
                    .with_rate_limit(limit)
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
            }
            auth::create_key(&store, new).await?
        }
        KeysCommand::List { data_dir } => {
            let keys = existing_store(&data_dir)?.list_keys().await?;
            println!("{}", serde_json::to_string_pretty(&keys)?);
            return Ok(());
        }
        KeysCommand::Revoke { data_dir, id } => {
            let key = auth::revoke_key(&existing_store(&data_dir)?, &id).await?;
            println!("{}", serde_json::to_string_pretty(&key)?);
            return Ok(());
        }
        KeysCommand::Rotate { data_dir, id } => {
            let store = existing_store(&data_dir)?;
            auth::rotate_key(&store, &id, auth::ROTATION_OVERLAP).await?
        }
    };
    let (key, secret) = made;
    println!("{}", serde_json::to_string_pretty(&key)?);
    println!("{secret}");
    Ok(())
}

/// Returns whether every version is in the registry.
async fn restore_registry(data_dir: &Path) -> anyhow::Result<bool> {
    let store = existing_store(data_dir)?;
    // Reading the backup bucket never starts provisioning, so nothing listens to the starter.
    let (starter, _) = LocalStarter::new();
    let objects = FolderObjectStore::new(data_dir.join("buckets"), Arc::new(starter))?;
    let report = busway_core::registry::restore(&objects, &store, &store).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report.is_complete())
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only on a terminal: a log file or a pipe gets plain `key=value` text to grep.
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
