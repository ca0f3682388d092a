//! The schema registry on AWS: the EventBridge Schema Registry. One registry schema per event
//! type, named as the event type, of type `JSONSchemaDraft4`; busway version `n` is the
//! registry's `SchemaVersion` `n`. CreateSchema makes version 1 and each UpdateSchema the next
//! one, so versions are put in order and a registry version is never rewritten.

use anyhow::{Context, bail};
use async_trait::async_trait;
use aws_sdk_schemas::Client;
use aws_sdk_schemas::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_schemas::types::Type;
use busway_core::ports::SchemaRegistry;
use busway_core::{EventTypeName, Version};
use serde_json::Value;
use tracing::instrument;

/// Calls are retried by the client's own retry policy (throttling, 5xx, timeouts); what is left
/// after it reaches the caller as an error naming the call.
pub struct EventBridgeSchemaRegistry {
    client: Client,
    registry: String,
}

/// The registry's answer for a schema or a version that does not exist.
fn is_not_found<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .is_some_and(|se| se.code() == Some("NotFoundException"))
}

/// CreateSchema's answer when the schema exists: a concurrent writer created it first.
fn is_conflict<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> bool {
    e.as_service_error()
        .is_some_and(|se| se.code() == Some("ConflictException"))
}

/// A described registry version.
struct Described {
    version: u32,
    content: Value,
}

impl EventBridgeSchemaRegistry {
    pub fn new(client: Client, registry: impl Into<String>) -> Self {
        Self {
            client,
            registry: registry.into(),
        }
    }

    /// The given version, or the latest when `version` is `None`; `None` when absent.
    async fn describe(
        &self,
        event_type: &EventTypeName,
        version: Option<Version>,
    ) -> anyhow::Result<Option<Described>> {
        let answer = self
            .client
            .describe_schema()
            .registry_name(&self.registry)
            .schema_name(event_type.as_str())
            .set_schema_version(version.map(|v| v.to_string()))
            .send()
            .await;
        let out = match answer {
            Ok(out) => out,
            Err(e) if is_not_found(&e) => return Ok(None),
            Err(e) => {
                return Err(e)
                    .with_context(|| format!("DescribeSchema {event_type} version {version:?}"));
            }
        };
        let version = parse_version(out.schema_version())?;
        let content = serde_json::from_str(out.content().unwrap_or_default())
            .with_context(|| format!("registry schema {event_type} version {version}"))?;
        Ok(Some(Described { version, content }))
    }

    /// Creates version 1 or adds the next version; returns the registry's version number.
    async fn append(
        &self,
        event_type: &EventTypeName,
        first: bool,
        content: String,
    ) -> anyhow::Result<Option<u32>> {
        let description = format!("busway event type {event_type}");
        let version = if first {
            match self
                .client
                .create_schema()
                .registry_name(&self.registry)
                .schema_name(event_type.as_str())
                .r#type(Type::JsonSchemaDraft4)
                .description(description)
                .content(content)
                .send()
                .await
            {
                Ok(out) => out.schema_version().map(str::to_string),
                Err(e) if is_conflict(&e) => return Ok(None),
                Err(e) => return Err(e).with_context(|| format!("CreateSchema {event_type}")),
            }
        } else {
            self.client
                .update_schema()
                .registry_name(&self.registry)
                .schema_name(event_type.as_str())
                .r#type(Type::JsonSchemaDraft4)
                .description(description)
                .content(content)
                .send()
                .await
                .with_context(|| format!("UpdateSchema {event_type}"))?
                .schema_version()
                .map(str::to_string)
        };
        parse_version(version.as_deref()).map(Some)
    }
}

fn parse_version(version: Option<&str>) -> anyhow::Result<u32> {
    let text = version.context("the registry answered without a schema version")?;
    text.parse()
        .with_context(|| format!("registry schema version {text:?} is not a number"))
}

#[async_trait]
impl SchemaRegistry for EventBridgeSchemaRegistry {
    /// Idempotent for the same content. Unlike the embedded registry it cannot replace a
    /// version's content (the registry never rewrites one), and version `n` needs versions
    /// `1..n` in the registry first; both are reported as errors.
    #[instrument(skip(self, schema), fields(registry = %self.registry))]
    async fn put_schema(
        &self,
        event_type: &EventTypeName,
        version: Version,
        schema: &Value,
    ) -> anyhow::Result<()> {
        // One more round when CreateSchema lost a race to another writer of the same version.
        for _ in 0..2 {
            if let Some(found) = self.describe(event_type, Some(version)).await? {
                if found.content == *schema {
                    return Ok(());
                }
                bail!(
                    "registry {} holds another schema as {event_type} version {version}; a registry version cannot be changed",
                    self.registry
                );
            }
            let latest = self
                .describe(event_type, None)
                .await?
                .map_or(0, |d| d.version);
            if version.get() != latest + 1 {
                bail!(
                    "registry {} has {event_type} up to version {latest}, so version {version} cannot be added (versions go in order; `busway-aws registry restore` puts them so)",
                    self.registry
                );
            }
            let Some(added) = self
                .append(event_type, latest == 0, schema.to_string())
                .await?
            else {
                continue;
            };
            if added != version.get() {
                bail!(
                    "registry {} made {event_type} version {added} where {version} was meant; another writer added a version",
                    self.registry
                );
            }
            return Ok(());
        }
        bail!("CreateSchema {event_type}: the schema exists but its version {version} does not")
    }

    #[instrument(skip(self), fields(registry = %self.registry))]
    async fn get_schema(
        &self,
        event_type: &EventTypeName,
        version: Version,
    ) -> anyhow::Result<Option<Value>> {
        Ok(self
            .describe(event_type, Some(version))
            .await?
            .map(|d| d.content))
    }

    #[instrument(skip(self), fields(registry = %self.registry))]
    async fn list_schema_versions(
        &self,
        event_type: &EventTypeName,
    ) -> anyhow::Result<Vec<Version>> {
        let mut versions = Vec::new();
        let mut token = None;
        loop {
            let page = match self
                .client
                .list_schema_versions()
                .registry_name(&self.registry)
                .schema_name(event_type.as_str())
                .set_next_token(token)
                .send()
                .await
            {
                Ok(page) => page,
                Err(e) if is_not_found(&e) => return Ok(Vec::new()),
                Err(e) => {
                    return Err(e).with_context(|| format!("ListSchemaVersions {event_type}"));
                }
            };
            for summary in page.schema_versions() {
                versions.push(Version::new(parse_version(summary.schema_version())?)?);
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        versions.sort();
        Ok(versions)
    }
}
