//! `busway-aws registry restore`: rebuilds the platform's EventBridge Schema Registry from the
//! schema backup bucket, as `busway registry restore` does for a local data dir.
//!
//! `busway-aws keys create --team TEAM --role ROLE [--application APP]`: stores a key in the
//! platform table and prints it once, alone on the last line, as `busway keys create` does
//! locally. It is how an environment gets its first platform-admin key: both APIs take only
//! keys, and the portal's `POST /keys` needs one.
//!
//! Configured like the functions (infra/lib/names.ts `ENV_VARS`): `BUSWAY_TABLE_NAME`,
//! `BUSWAY_SCHEMA_BACKUP_BUCKET`, `BUSWAY_PUBLISHER_BUCKET`, `BUSWAY_SUBSCRIBER_BUCKET`,
//! `BUSWAY_SCHEMA_REGISTRY` (`keys create` reads only the table's name); credentials and
//! region from the usual AWS chain.
//! `registry restore` prints the report as JSON and exits 1 when a version could not be
//! restored; both exit 2 on a usage error.

use std::process::ExitCode;

use anyhow::Context;
use busway_aws::dynamo::DynamoStore;
use busway_aws::host::{self, Host};
use busway_core::auth::{self, NewKey};

const USAGE: &str = "usage: busway-aws registry restore\n       busway-aws keys create --team TEAM --role ROLE [--application APP]";

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

/// The key `--team`, `--role` and `--application` describe; `None` on a usage error.
fn new_key(flags: &[&str]) -> Option<anyhow::Result<NewKey>> {
    let (mut team, mut role, mut application) = (None, None, None);
    for pair in flags.chunks(2) {
        match pair {
            ["--team", v] => team = Some(*v),
            ["--role", v] => role = Some(*v),
            ["--application", v] => application = Some(*v),
            _ => return None,
        }
    }
    let (team, role) = (team?, role?);
    Some((|| {
        NewKey::new(
            team.parse().map_err(|e| anyhow::anyhow!("--team: {e}"))?,
            role.parse().map_err(|e| anyhow::anyhow!("--role: {e}"))?,
            application
                .map(str::parse)
                .transpose()
                .map_err(|e| anyhow::anyhow!("--application: {e}"))?,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
    })())
}

/// Needs only `BUSWAY_TABLE_NAME` (and credentials): keys live in the table alone.
async fn create_key(new: anyhow::Result<NewKey>) -> anyhow::Result<bool> {
    let new = new?;
    let table = std::env::var(busway_aws::config::TABLE_NAME)
        .with_context(|| format!("{} is not set", busway_aws::config::TABLE_NAME))?;
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(host::https_client())
        .timeout_config(host::timeouts())
        .load()
        .await;
    let store = DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), table);
    let (key, secret) = auth::create_key(&store, new).await?;
    println!("{}", serde_json::to_string_pretty(&key)?);
    println!("{secret}");
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
