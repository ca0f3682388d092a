//! The AWS host's wiring, shared by the Lambda functions: SDK clients from the function's
//! environment and the adapters on them. Region and credentials come from the Lambda runtime;
//! `AWS_ENDPOINT_URL` points every client at an emulator (moto server in the tests and the
//! cold-start benchmark), which also needs path-style S3 addressing.

use std::sync::Arc;

use anyhow::Context;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};
use aws_credential_types::Credentials;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_smithy_http_client::tls;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use busway_core::claim_check::{ClaimChecks, DEFAULT_MAX_ENTRY_BYTES};
use busway_core::deploy::BusKind;
use busway_core::ports::{Bus, SubscriberControl};

use crate::config::Config;
use crate::custom_bus::CustomBus;
use crate::dedup::DeduplicatedBus;
use crate::eventbridge::EventBridgeBus;
use crate::schemas::EventBridgeSchemaRegistry;
use crate::subscribers::CustomBusSubscribers;
use crate::usage_plans::{GatewayKeys, USAGE_PLAN, UsagePlans};
use crate::{DynamoStore, S3ObjectStore};

/// Environment variables beyond `Config`'s, named as infra/lib/names.ts `ENV_VARS` names them.
pub const REGISTRY_NAME: &str = "BUSWAY_SCHEMA_REGISTRY";
pub const BUS_NAME: &str = "BUSWAY_BUS_NAME";
/// Which EventBridge bus the platform was installed with: `custom` (the second-generation Custom
/// Event Bus, PutEvents on `BUSWAY_BUS_ARN`) or `classic` (the custom bus with rules, PutEvents
/// on `BUSWAY_BUS_NAME`). Unset is `classic`, as every install before the choice existed.
pub const BUS_KIND: &str = "BUSWAY_BUS_KIND";
pub const BUS_ARN: &str = "BUSWAY_BUS_ARN";
/// How many days the Custom Event Bus keeps every event (its `RetentionPeriodInDays`): how far
/// back a replay may start. Unset is the infra default, 7.
pub const BUS_RETENTION_DAYS: &str = "BUSWAY_BUS_RETENTION_DAYS";
const DEFAULT_BUS_RETENTION_DAYS: u16 = 7;
/// The bus entry limit in bytes, above which events are claim-checked; unset is
/// `busway_core::claim_check::DEFAULT_MAX_ENTRY_BYTES` (1 MB). 262144 where EventBridge still
/// enforces 256 KB.
pub const MAX_ENTRY_BYTES: &str = "BUSWAY_MAX_ENTRY_BYTES";
/// How long the injectors deduplicate a producer's `event_id`, in seconds; unset is
/// `dedup::DEFAULT_WINDOW` (24 hours). At least `busway_core::ports::MIN_DEDUP_WINDOW`.
pub const DEDUP_WINDOW_SECONDS: &str = "BUSWAY_DEDUP_WINDOW_SECONDS";

pub struct Host {
    pub config: Config,
    sdk: SdkConfig,
    /// The variables only some functions need, checked when their adapter is made.
    bus_kind: Option<String>,
    bus_name: Option<String>,
    bus_arn: Option<String>,
    bus_retention_days: Option<String>,
    registry_name: Option<String>,
    max_entry_bytes: Option<String>,
    dedup_window: Option<String>,
    usage_plan: Option<String>,
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

fn required(name: &str, value: &Option<String>) -> anyhow::Result<String> {
    value.clone().with_context(|| format!("{name} is not set"))
}

impl Host {
    /// For commands run by a person: aws-config's default chains (environment, profile files,
    /// IMDS, container and web-identity credentials). No request is sent until an adapter is used.
    pub async fn from_env() -> anyhow::Result<Self> {
        Ok(Self {
            config: Config::from_env()?,
            sdk: aws_config::defaults(BehaviorVersion::latest())
                .http_client(https_client())
                .timeout_config(timeouts())
                .load()
                .await,
            bus_kind: env(BUS_KIND),
            bus_name: env(BUS_NAME),
            bus_arn: env(BUS_ARN),
            bus_retention_days: env(BUS_RETENTION_DAYS),
            registry_name: env(REGISTRY_NAME),
            max_entry_bytes: env(MAX_ENTRY_BYTES),
            dedup_window: env(DEDUP_WINDOW_SECONDS),
            usage_plan: env(USAGE_PLAN),
        })
    }

    /// In a Lambda function, whose runtime sets the region and the role's credentials as
    /// environment variables: only those are read, once (they hold for the execution
    /// environment's life). The default chains never apply there, and
    /// leaving them out keeps them (and the STS client they carry) out of every function binary.
    pub fn for_lambda() -> anyhow::Result<Self> {
        Self::for_lambda_from(env)
    }

    /// `for_lambda` with the variables from `lookup` (the tests give a function's environment).
    pub fn for_lambda_from(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let var = |name: &str| lookup(name).with_context(|| format!("{name} is not set"));
        let credentials = Credentials::new(
            var("AWS_ACCESS_KEY_ID")?,
            var("AWS_SECRET_ACCESS_KEY")?,
            lookup("AWS_SESSION_TOKEN"),
            None,
            "Lambda environment",
        );
        let mut sdk = SdkConfig::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(var("AWS_REGION")?))
            .credentials_provider(SharedCredentialsProvider::new(credentials))
            .http_client(https_client())
            .timeout_config(timeouts());
        if let Some(endpoint) = lookup("AWS_ENDPOINT_URL") {
            sdk = sdk.endpoint_url(endpoint);
        }
        Ok(Self {
            config: Config::from_lookup(&lookup)?,
            sdk: sdk.build(),
            bus_kind: lookup(BUS_KIND),
            bus_name: lookup(BUS_NAME),
            bus_arn: lookup(BUS_ARN),
            bus_retention_days: lookup(BUS_RETENTION_DAYS),
            registry_name: lookup(REGISTRY_NAME),
            max_entry_bytes: lookup(MAX_ENTRY_BYTES),
            dedup_window: lookup(DEDUP_WINDOW_SECONDS),
            usage_plan: lookup(USAGE_PLAN),
        })
    }

    /// The SDK configuration, for the clients only one function uses.
    pub fn sdk(&self) -> &SdkConfig {
        &self.sdk
    }

    pub fn store(&self) -> Arc<DynamoStore> {
        Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&self.sdk),
            self.config.table_name.clone(),
        ))
    }

    /// The platform's API keys, each with its API Gateway key in the broker stage's usage plan
    /// of its rate limit (`usage_plans`; the default plan named by `BUSWAY_BROKER_USAGE_PLAN`).
    pub fn keys(&self) -> anyhow::Result<Arc<GatewayKeys>> {
        Ok(Arc::new(GatewayKeys::new(
            self.store(),
            UsagePlans::new(
                aws_sdk_apigateway::Client::new(&self.sdk),
                required(USAGE_PLAN, &self.usage_plan)?,
            ),
        )))
    }

    pub fn objects(&self) -> Arc<S3ObjectStore> {
        let emulated = self.sdk.endpoint_url().is_some();
        let s3 = aws_sdk_s3::config::Builder::from(&self.sdk)
            .force_path_style(emulated)
            .build();
        Arc::new(S3ObjectStore::new(
            aws_sdk_s3::Client::from_conf(s3),
            self.config.buckets.clone(),
        ))
    }

    pub fn registry(&self) -> anyhow::Result<Arc<EventBridgeSchemaRegistry>> {
        Ok(Arc::new(EventBridgeSchemaRegistry::new(
            aws_sdk_schemas::Client::new(&self.sdk),
            required(REGISTRY_NAME, &self.registry_name)?,
        )))
    }

    /// The platform's bus of its kind (`BUSWAY_BUS_KIND`); entries too large for it go to the
    /// schema backup bucket as claim checks.
    pub fn bus(&self) -> anyhow::Result<Arc<dyn Bus>> {
        let max_entry_bytes = match &self.max_entry_bytes {
            None => DEFAULT_MAX_ENTRY_BYTES,
            Some(value) => value.parse().with_context(|| {
                format!("{MAX_ENTRY_BYTES} must be a number of bytes, not {value:?}")
            })?,
        };
        let claim_checks = ClaimChecks {
            objects: self.objects(),
            bucket_name: self.config.buckets.schema_backup.clone(),
            max_entry_bytes,
        };
        match self.bus_kind.as_deref() {
            None | Some("classic") => Ok(Arc::new(EventBridgeBus::new(
                &aws_sdk_eventbridge::Client::new(&self.sdk),
                required(BUS_NAME, &self.bus_name)?,
                claim_checks,
            ))),
            Some("custom") => Ok(Arc::new(CustomBus::new(
                &aws_sdk_eventbridgev2::Client::new(&self.sdk),
                required(BUS_ARN, &self.bus_arn)?,
                claim_checks,
            ))),
            Some(other) => anyhow::bail!("{BUS_KIND} must be custom or classic, not {other:?}"),
        }
    }
}

impl Host {
    /// The platform's bus kind (`BUSWAY_BUS_KIND`); absent, Classic: every install from before
    /// the choice.
    pub fn bus_kind(&self) -> anyhow::Result<BusKind> {
        match self.bus_kind.as_deref() {
            None => Ok(BusKind::Classic),
            Some(kind) => kind
                .parse()
                .map_err(|e: String| anyhow::anyhow!("{BUS_KIND}: {e}")),
        }
    }

    /// Pause and resume of subscriptions, which the Custom Event Bus offers on its subscribers;
    /// `None` on the Classic bus.
    pub fn subscriber_control(&self) -> anyhow::Result<Option<Arc<dyn SubscriberControl>>> {
        match self.bus_kind.as_deref() {
            None | Some("classic") => Ok(None),
            Some("custom") => {
                let days = match &self.bus_retention_days {
                    None => DEFAULT_BUS_RETENTION_DAYS,
                    Some(value) => value
                        .parse()
                        .ok()
                        .filter(|d| (1..=365).contains(d))
                        .with_context(|| {
                            format!("{BUS_RETENTION_DAYS} must be 1 to 365 days, not {value:?}")
                        })?,
                };
                Ok(Some(Arc::new(CustomBusSubscribers::new(
                    aws_sdk_eventbridgev2::Client::new(&self.sdk),
                    required(BUS_ARN, &self.bus_arn)?,
                    time::Duration::days(days.into()),
                ))))
            }
            Some(other) => anyhow::bail!("{BUS_KIND} must be custom or classic, not {other:?}"),
        }
    }

    /// The bus as the injectors put on it: the custom bus, each `event_id` once within the
    /// deduplication window, claimed on the platform table (`dedup`).
    pub fn deduplicated_bus(&self) -> anyhow::Result<Arc<DeduplicatedBus>> {
        let window = match &self.dedup_window {
            None => crate::dedup::DEFAULT_WINDOW,
            Some(value) => value
                .parse()
                .map(std::time::Duration::from_secs)
                .ok()
                .filter(|w| *w >= busway_core::ports::MIN_DEDUP_WINDOW)
                .with_context(|| {
                    format!(
                        "{DEDUP_WINDOW_SECONDS} must be a number of seconds of at least {}, not {value:?}",
                        busway_core::ports::MIN_DEDUP_WINDOW.as_secs()
                    )
                })?,
        };
        Ok(Arc::new(DeduplicatedBus::new(
            self.bus()?,
            aws_sdk_dynamodb::Client::new(&self.sdk),
            self.config.table_name.clone(),
            window,
        )))
    }
}

/// Every call of every client ends: an attempt after 5 s (connecting after 3 s), a call with
/// its retries after 20 s, so a stuck call fails with an error the function reports. A request
/// of the APIs' functions (10 s) may still outlast its function with a slow call or two: it is
/// answered 503 just before the function's time ends (`busway_http::lambda::run`).
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(std::time::Duration::from_secs(3))
        .operation_attempt_timeout(std::time::Duration::from_secs(5))
        .operation_timeout(std::time::Duration::from_secs(20))
        .build()
}

/// HTTPS on rustls with ring, for every client. The SDK's default client uses aws-lc-rs, which
/// would make each Lambda binary megabytes larger.
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new()
        .tls_provider(tls::Provider::Rustls(
            tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https()
}

/// Logs for CloudWatch: no colours, no timestamps (Lambda adds them), `RUST_LOG` filters
/// (default info).
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .without_time()
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lambda_env(name: &str) -> Option<String> {
        let value = match name {
            "AWS_REGION" => "eu-west-1",
            "AWS_ACCESS_KEY_ID" => "AKIDEXAMPLE",
            "AWS_SECRET_ACCESS_KEY" => "secret",
            crate::config::TABLE_NAME => "table",
            crate::config::SCHEMA_BACKUP_BUCKET => "backup",
            crate::config::PUBLISHER_BUCKET => "publisher",
            crate::config::SUBSCRIBER_BUCKET => "subscriber",
            _ => return None,
        };
        Some(value.to_string())
    }

    #[test]
    fn every_client_of_a_lambda_host_has_operation_and_attempt_timeouts() {
        let host = Host::for_lambda_from(lambda_env).expect("a host");
        let timeouts = host.sdk().timeout_config().expect("a timeout config");
        assert!(timeouts.operation_timeout().is_some());
        assert!(timeouts.operation_attempt_timeout().is_some());
        assert!(timeouts.connect_timeout().is_some());
    }

    #[test]
    fn a_lambda_host_names_the_variable_it_misses() {
        let host = Host::for_lambda_from(lambda_env).expect("the common variables are set");
        assert_eq!(host.sdk().region().map(|r| r.as_ref()), Some("eu-west-1"));
        assert_eq!(host.sdk().endpoint_url(), None);
        let no_bus = host.bus().err().expect("BUSWAY_BUS_NAME is missing");
        assert!(no_bus.to_string().contains(BUS_NAME), "{no_bus}");
        let bad_limit = Host::for_lambda_from(|name| match name {
            BUS_NAME => Some("bus".into()),
            MAX_ENTRY_BYTES => Some("1 MB".into()),
            _ => lambda_env(name),
        })
        .expect("the common variables are set")
        .bus()
        .err()
        .expect("the entry limit is not a number");
        assert!(
            bad_limit.to_string().contains(MAX_ENTRY_BYTES),
            "{bad_limit}"
        );
        let custom = |name: &str| match name {
            BUS_KIND => Some("custom".into()),
            BUS_NAME => Some("bus".into()),
            _ => lambda_env(name),
        };
        let no_arn = Host::for_lambda_from(custom)
            .expect("the common variables are set")
            .bus()
            .err()
            .expect("the Custom Event Bus is named by its ARN");
        assert!(no_arn.to_string().contains(BUS_ARN), "{no_arn}");
        let unknown = Host::for_lambda_from(|name| match name {
            BUS_KIND => Some("v3".into()),
            _ => custom(name),
        })
        .expect("the common variables are set")
        .bus()
        .err()
        .expect("an unknown bus kind");
        assert!(unknown.to_string().contains(BUS_KIND), "{unknown}");
        let kind = |value: Option<&str>| {
            Host::for_lambda_from(|n| match n {
                BUS_KIND => value.map(String::from),
                _ => custom(n),
            })
            .and_then(|h| h.bus_kind())
            .ok()
        };
        // The kind the portal writes into consumer documents; absent, the Classic bus.
        assert_eq!(kind(None), Some(BusKind::Classic));
        assert_eq!(kind(Some("custom")), Some(BusKind::Custom));
        assert_eq!(kind(Some("classic")), Some(BusKind::Classic));
        assert_eq!(kind(Some("v3")), None);
        for missing in ["AWS_REGION", "AWS_ACCESS_KEY_ID", crate::config::TABLE_NAME] {
            let err = Host::for_lambda_from(|name| (name != missing).then(|| lambda_env(name))?)
                .err()
                .expect("a variable is missing");
            assert!(err.to_string().contains(missing), "{err}");
        }
    }
}
