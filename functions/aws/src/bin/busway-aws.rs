//! `busway-aws registry restore`: rebuilds the platform's EventBridge Schema Registry from the
//! schema backup bucket, as `busway registry restore` does for a local data dir.
//!
//! `busway-aws keys create --team TEAM --role ROLE [--application APP] [--rate-limit N [--burst
//! N]]`: stores a key in the platform table, with its API Gateway key in the broker stage's usage
//! plan of its rate limit (busway_aws::usage_plans), and prints it once, alone on the last line,
//! as `busway keys create` does locally. It is how an environment gets its first platform-admin
//! key: both APIs take only keys, and the portal's `POST /keys` needs one.
//!
//! `busway-aws keys sync`: gives every valid key of the table that has none its API Gateway key
//! (keys made before API Gateway keys were, or whose making failed half-way), deletes those of
//! revoked and expired keys, and prints what it changed as JSON.
//!
//! Configured like the functions (infra/lib/names.ts `ENV_VARS`): `BUSWAY_TABLE_NAME`,
//! `BUSWAY_SCHEMA_BACKUP_BUCKET`, `BUSWAY_PUBLISHER_BUCKET`, `BUSWAY_SUBSCRIBER_BUCKET`,
//! `BUSWAY_SCHEMA_REGISTRY` (`keys` reads only the table's name and `BUSWAY_BROKER_USAGE_PLAN`,
//! the broker stage's default usage plan, `{env}-event-broker-api-default`); credentials and
//! region from the usual AWS chain.
//! `registry restore` prints the report as JSON and exits 1 when a version could not be
//! restored; all exit 2 on a usage error.

use std::process::ExitCode;

use anyhow::Context;
use busway_aws::dynamo::DynamoStore;
use busway_aws::host::{self, Host};
use busway_aws::usage_plans::{GatewayKeys, USAGE_PLAN, UsagePlans};
use busway_core::auth::{self, KeyStore, NewKey, RateLimit};

const USAGE: &str = "usage: busway-aws registry restore\n       busway-aws keys create --team TEAM --role ROLE [--application APP] [--rate-limit N [--burst N]]\n       busway-aws keys sync";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let done = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["registry", "restore"] => restore().await,
        ["keys", "sync"] => sync().await,
        ["keys", "create", flags @ ..] => match new_key(flags) {
            Some(new) => create_key(new).await,
            None => {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            }
        },
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    match done {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("busway-aws: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// The key `--team`, `--role`, `--application`, `--rate-limit` and `--burst` describe; `None`
/// on a usage error.
fn new_key(flags: &[&str]) -> Option<anyhow::Result<NewKey>> {
    let (mut team, mut role, mut application, mut rate, mut burst) = (None, None, None, None, None);
    for pair in flags.chunks(2) {
        match pair {
            ["--team", v] => team = Some(*v),
            ["--role", v] => role = Some(*v),
            ["--application", v] => application = Some(*v),
            ["--rate-limit", v] => rate = Some(*v),
            ["--burst", v] => burst = Some(*v),
            _ => return None,
        }
    }
    let (team, role) = (team?, role?);
    if burst.is_some() && rate.is_none() {
        return None;
    }
    Some((|| {
        let key = NewKey::new(
            team.parse().map_err(|e| anyhow::anyhow!("--team: {e}"))?,
            role.parse().map_err(|e| anyhow::anyhow!("--role: {e}"))?,
            application
                .map(str::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--application: {e}"))?,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
        let Some(rate) = rate else { return Ok(key) };
        let number =
            |flag: &str, v: &str| v.parse::<u32>().map_err(|e| anyhow::anyhow!("{flag}: {e}"));
        let rate = number("--rate-limit", rate)?;
        let burst = burst.map_or(Ok(rate), |b| number("--burst", b))?;
        let limit =
            RateLimit::new(rate, burst).map_err(|e| anyhow::anyhow!("--rate-limit: {e}"))?;
        key.with_rate_limit(limit)
            .map_err(|e| anyhow::anyhow!("{e}"))
    })())
}

/// The table's keys with their API Gateway keys: needs only `BUSWAY_TABLE_NAME` and
/// `BUSWAY_BROKER_USAGE_PLAN` (and credentials).
async fn keys() -> anyhow::Result<GatewayKeys> {
    let var = |name: &str| std::env::var(name).with_context(|| format!("{name} is not set"));
    let (table, plan) = (var(busway_aws::config::TABLE_NAME)?, var(USAGE_PLAN)?);
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(host::https_client())
        .timeout_config(host::timeouts())
        .load()
        .await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    Ok(GatewayKeys::new(
        std::sync::Arc::new(store),
        UsagePlans::new(aws_sdk_apigateway::Client::new(&sdk), plan),
    ))
}

async fn create_key(new: anyhow::Result<NewKey>) -> anyhow::Result<bool> {
    let new = new?;
    let (key, secret) = auth::create_key(&keys().await?, new).await?;
    println!("{}", serde_json::to_string_pretty(&key)?);
    println!("{secret}");
    Ok(true)
}

async fn sync() -> anyhow::Result<bool> {
    let keys = keys().await?;
    let synced = keys.plans().sync(&keys.list_keys().await?).await?;
    println!("{}", serde_json::to_string_pretty(&synced)?);
    Ok(true)
}

/// Returns whether every version is in the registry.
async fn restore() -> anyhow::Result<bool> {
    let host = Host::from_env().await?;
    let (store, objects, registry) = (host.store(), host.objects(), host.registry()?);
    let report =
        busway_core::registry::restore(objects.as_ref(), store.as_ref(), registry.as_ref()).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(report.is_complete())
}
