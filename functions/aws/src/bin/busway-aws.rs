//! `busway-aws registry restore`: rebuilds the platform's EventBridge Schema Registry from the
//! schema backup bucket, as `busway registry restore` does for a local data dir.
//!
//! Configured like the functions (infra/lib/names.ts `ENV_VARS`): `BUSWAY_TABLE_NAME`,
//! `BUSWAY_SCHEMA_BACKUP_BUCKET`, `BUSWAY_PUBLISHER_BUCKET`, `BUSWAY_SUBSCRIBER_BUCKET`,
//! `BUSWAY_SCHEMA_REGISTRY`; credentials and region from the usual AWS chain. Prints the report
//! as JSON and exits 1 when a version could not be restored, 2 on a usage error.

use std::process::ExitCode;

use busway_aws::host::Host;

const USAGE: &str = "usage: busway-aws registry restore";

#[tokio::main]
async fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args != ["registry", "restore"] {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    }
    match restore().await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("busway-aws: {e:#}");
            ExitCode::FAILURE
        }
    }
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
