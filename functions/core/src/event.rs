//! Event types and their versions.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::{Application, EventTypeName, Team, Timestamp, Version};

/// How a producer hands events to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProducerConnection {
    /// `POST /{event_type}/{version}` on the broker API.
    #[serde(rename = "HTTPS")]
    Https,
    /// A producer queue drained by the injector.
    #[serde(rename = "SQS")]
    Sqs,
}

impl ProducerConnection {
    pub fn parse(value: &str) -> Result<Self, String> {
        match value {
            "HTTPS" => Ok(Self::Https),
            "SQS" => Ok(Self::Sqs),
            other => Err(format!(
                "unknown connection_type {other:?}: expected one of HTTPS, SQS"
            )),
        }
    }
}

/// A registered event type.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventType {
    pub event_type: EventTypeName,
    pub application: Application,
    pub description: String,
    pub connection_type: ProducerConnection,
    /// The highest version ever created; never reused, even after a delete.
    pub latest_version: Version,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    /// The owning team; `None` for event types registered before ownership, which only
    /// platform admins change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<Team>,
    /// Applications whose producer keys may publish, besides `application` itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub writers: Vec<Application>,
    /// Teams that may subscribe; `None`: every team.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub readers: Option<Vec<Team>>,
}

impl EventType {
    /// Whether a producer key of `application` may publish to this event type.
    pub fn is_writer(&self, application: &Application) -> bool {
        self.application == *application || self.writers.contains(application)
    }

    /// Whether a key of `team` may subscribe.
    pub fn is_reader(&self, team: &Team) -> bool {
        self.team.as_ref() == Some(team) || self.readers.as_ref().is_none_or(|r| r.contains(team))
    }
}

pub fn source_of(application: &Application) -> String {
    format!("busway.{application}")
}

/// EventBridge `DetailType` of one version's events (the seed's format).
pub fn detail_type(event_type: &EventTypeName, version: Version) -> String {
    format!("{event_type}.{version}")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VersionState {
    Active,
    /// Deleted through the portal; kept so its number is never reused.
    Deleted,
}

/// One version of an event type with its enveloped draft-4 schema.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventVersion {
    pub event_type: EventTypeName,
    pub version: Version,
    pub description: String,
    /// The full event schema (envelope + data) that the broker validates against.
    pub schema: Value,
    pub state: VersionState,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
}

impl EventVersion {
    pub fn is_active(&self) -> bool {
        self.state == VersionState::Active
    }
}
