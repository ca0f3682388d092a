//! deploy.json: what the portal writes for the pipeline and the generators read. One JSON
//! Schema per kind lives in `functions/core/schemas/`; keys never collide (README: Contracts).

use std::sync::LazyLock;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::event::{ProducerConnection, detail_type, source_of};
use crate::format::{self, DEPLOY_FORMAT};
use crate::subscription::{ConsumerConnection, DeliverySettings, RetryPolicy, Subscription};
use crate::{Application, EventTypeName, TargetUnit, ValidationErrors, Version};

pub const PRODUCER_SCHEMA: &str = include_str!("../schemas/producer-deploy.schema.json");
pub const CONSUMER_SCHEMA: &str = include_str!("../schemas/consumer-deploy.schema.json");

/// The two configuration buckets of the seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployKind {
    Producer,
    Consumer,
}

impl DeployKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeployAction {
    Deploy,
    Destroy,
}

/// The EventBridge bus a consumer stack is built for: a subscriber on the Custom Event Bus, or
/// a rule on the Classic custom bus (the consumer JSON Schema's `bus_kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    Custom,
    Classic,
}

impl std::str::FromStr for BusKind {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "custom" => Ok(Self::Custom),
            "classic" => Ok(Self::Classic),
            other => Err(format!("a bus kind is custom or classic, not {other:?}")),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProducerDeploy {
    /// Absent in documents of the first release (`crate::format`).
    #[serde(default = "format::first_format")]
    pub format_version: u32,
    pub kind: DeployKind,
    pub action: DeployAction,
    pub deployment_id: String,
    pub application: Application,
    pub event_type: EventTypeName,
    pub version: Version,
    pub description: String,
    pub connection_type: ProducerConnection,
    pub source: String,
    pub detail_type: String,
    pub stack_name: String,
    pub schema: Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConsumerDeploy {
    /// Absent in documents of the first release (`crate::format`).
    #[serde(default = "format::first_format")]
    pub format_version: u32,
    pub kind: DeployKind,
    pub action: DeployAction,
    pub deployment_id: String,
    pub subscription_id: String,
    pub application: Application,
    pub event_type: EventTypeName,
    pub version: Version,
    pub target_unit: TargetUnit,
    pub connection_type: ConsumerConnection,
    pub connection_string: String,
    pub retry_policy: RetryPolicy,
    /// Absent in documents written before delivery settings existed: the defaults.
    #[serde(default)]
    pub delivery: DeliverySettings,
    pub source: String,
    pub detail_type: String,
    pub event_pattern: Value,
    pub rule_name: String,
    pub stack_name: String,
    /// Absent: the platform's bus, as the consumer build gives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bus_kind: Option<BusKind>,
    /// Unix seconds: the subscription's latest replay start, where its Custom Event Bus
    /// subscriber starts (`POINT_IN_TIME`). Absent: it starts at the newest event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replay_from: Option<i64>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DeployDoc {
    Producer(ProducerDeploy),
    Consumer(ConsumerDeploy),
}

impl DeployDoc {
    /// Where this document belongs in its bucket.
    pub fn key(&self) -> String {
        match self {
            Self::Producer(p) => producer_key(&p.event_type, p.version),
            Self::Consumer(c) => {
                consumer_key_of(&c.event_type, c.version, &c.target_unit, &c.subscription_id)
            }
        }
    }

    pub fn action(&self) -> DeployAction {
        match self {
            Self::Producer(p) => p.action,
            Self::Consumer(c) => c.action,
        }
    }

    pub fn kind(&self) -> DeployKind {
        match self {
            Self::Producer(_) => DeployKind::Producer,
            Self::Consumer(_) => DeployKind::Consumer,
        }
    }

    pub fn stack_name(&self) -> &str {
        match self {
            Self::Producer(p) => &p.stack_name,
            Self::Consumer(c) => &c.stack_name,
        }
    }

    pub fn to_json(&self) -> Vec<u8> {
        let value = match self {
            Self::Producer(p) => serde_json::to_value(p),
            Self::Consumer(c) => serde_json::to_value(c),
        };
        // Both are plain structs of strings and JSON values: serialization cannot fail.
        serde_json::to_vec_pretty(&value.unwrap_or(Value::Null)).unwrap_or_default()
    }
}

pub fn producer_key(event_type: &EventTypeName, version: Version) -> String {
    format!("{event_type}/{version}/deploy.json")
}

pub fn consumer_key(s: &Subscription) -> String {
    consumer_key_of(&s.event_type, s.version, &s.target_unit, &s.id)
}

fn consumer_key_of(
    event_type: &EventTypeName,
    version: Version,
    target_unit: &TargetUnit,
    subscription_id: &str,
) -> String {
    format!("{event_type}/{version}/{target_unit}/{subscription_id}/deploy.json")
}

/// What a key in a configuration bucket names, recovered from the key alone, so a deployment
/// of a hand-broken file can still be filed under its event type.
#[derive(Debug, Clone, PartialEq)]
pub struct KeyParts {
    pub event_type: EventTypeName,
    pub version: Version,
    pub target_unit: Option<TargetUnit>,
    pub subscription_id: Option<String>,
}

pub fn parse_key(kind: DeployKind, key: &str) -> Option<KeyParts> {
    let parts: Vec<&str> = key.split('/').collect();
    match (kind, parts.as_slice()) {
        (DeployKind::Producer, [et, v, "deploy.json"]) => Some(KeyParts {
            event_type: et.parse().ok()?,
            version: v.parse().ok()?,
            target_unit: None,
            subscription_id: None,
        }),
        (DeployKind::Consumer, [et, v, unit, id, "deploy.json"]) if is_uuid(id) => Some(KeyParts {
            event_type: et.parse().ok()?,
            version: v.parse().ok()?,
            target_unit: Some(unit.parse().ok()?),
            subscription_id: Some((*id).to_string()),
        }),
        _ => None,
    }
}

pub fn is_uuid(s: &str) -> bool {
    uuid::Uuid::parse_str(s).is_ok_and(|u| u.hyphenated().to_string() == s)
}

/// CloudFormation stack names allow `[A-Za-z][-A-Za-z0-9]*`; names never contain `-`, so mapping
/// `_` to `-` keeps them unique.
pub fn producer_stack_name(event_type: &EventTypeName, version: Version) -> String {
    format!(
        "busway-producer-{}-v{version}",
        event_type.as_str().replace('_', "-")
    )
}

/// The buffering queue of an SQS producer (created by cdk-app's SqsProducerStack with this name).
pub fn producer_queue_name(event_type: &EventTypeName, version: Version) -> String {
    format!(
        "busway-{}-v{version}",
        event_type.as_str().replace('_', "-")
    )
}

/// The event version whose producer queue is `queue` (the last part of the queue's ARN or URL).
/// Reversible because names hold no `-`.
pub fn parse_producer_queue_name(queue: &str) -> Option<(EventTypeName, Version)> {
    let rest = queue.strip_prefix("busway-")?;
    let (name, version) = rest.rsplit_once("-v")?;
    Some((name.replace('-', "_").parse().ok()?, version.parse().ok()?))
}

pub fn consumer_stack_name(subscription_id: &str) -> String {
    format!("busway-consumer-{subscription_id}")
}

pub fn rule_name(subscription_id: &str) -> String {
    format!("busway-{subscription_id}")
}

/// The consumer rule pattern (README: Contracts).
pub fn event_pattern(application: &Application, s: &Subscription) -> Value {
    json!({
        "source": [source_of(application)],
        "detail-type": [detail_type(&s.event_type, s.version)],
        "detail": {"metadata": {"event_attributes": {"target": [s.target_unit.as_str()]}}}
    })
}

pub fn consumer_deploy(
    action: DeployAction,
    deployment_id: &str,
    application: &Application,
    s: &Subscription,
    bus_kind: Option<BusKind>,
) -> ConsumerDeploy {
    ConsumerDeploy {
        format_version: DEPLOY_FORMAT,
        kind: DeployKind::Consumer,
        action,
        deployment_id: deployment_id.to_string(),
        subscription_id: s.id.clone(),
        application: application.clone(),
        event_type: s.event_type.clone(),
        version: s.version,
        target_unit: s.target_unit.clone(),
        connection_type: s.connection_type,
        connection_string: s.connection_string.clone(),
        retry_policy: s.retry_policy,
        delivery: s.delivery,
        source: source_of(application),
        detail_type: detail_type(&s.event_type, s.version),
        event_pattern: event_pattern(application, s),
        rule_name: rule_name(&s.id),
        stack_name: consumer_stack_name(&s.id),
        bus_kind,
        replay_from: s.replay_from.map(time::OffsetDateTime::unix_timestamp),
    }
}

static PRODUCER_VALIDATOR: LazyLock<Result<jsonschema::Validator, String>> =
    LazyLock::new(|| compile_document_schema(PRODUCER_SCHEMA));
static CONSUMER_VALIDATOR: LazyLock<Result<jsonschema::Validator, String>> =
    LazyLock::new(|| compile_document_schema(CONSUMER_SCHEMA));

fn compile_document_schema(text: &str) -> Result<jsonschema::Validator, String> {
    let schema: Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
    jsonschema::draft7::new(&schema).map_err(|e| e.to_string())
}

/// Parses a deploy.json of `kind`: JSON first, then its JSON Schema, then the internal
/// consistency the schema cannot express (derived names match the fields they derive from).
pub fn parse(kind: DeployKind, bytes: &[u8]) -> Result<DeployDoc, ValidationErrors> {
    let doc = parse_fields(kind, bytes)?;
    let errors = derived_errors(&doc);
    errors.into_result(doc)
}

/// [`parse`] without the derived names: a provisioner that checks the document against its
/// records first names a hand-edited field before the names derived from it.
pub fn parse_fields(kind: DeployKind, bytes: &[u8]) -> Result<DeployDoc, ValidationErrors> {
    let mut errors = ValidationErrors::default();
    let value: Value = match serde_json::from_slice(bytes) {
        Ok(v) => v,
        Err(e) => {
            errors.push("/", format!("not valid JSON: {e}"));
            return Err(errors);
        }
    };
    let validator = match kind {
        DeployKind::Producer => &*PRODUCER_VALIDATOR,
        DeployKind::Consumer => &*CONSUMER_VALIDATOR,
    };
    let validator = match validator {
        Ok(v) => v,
        Err(e) => {
            errors.push(
                "/",
                format!("the {} deploy schema does not compile: {e}", kind.as_str()),
            );
            return Err(errors);
        }
    };
    crate::schema::validate(validator, &value)?;
    let doc = match kind {
        DeployKind::Producer => serde_json::from_value(value).map(DeployDoc::Producer),
        DeployKind::Consumer => serde_json::from_value(value).map(DeployDoc::Consumer),
    };
    doc.map_err(|e| ValidationErrors(vec![crate::FieldError::new("/", e.to_string())]))
}

/// Each derived name of `doc` that is not what its fields make.
pub fn derived_errors(doc: &DeployDoc) -> ValidationErrors {
    let mut errors = ValidationErrors::default();
    let mut expect = |field: &str, actual: &str, expected: String| {
        if actual != expected {
            errors.push(format!("/{field}"), format!("must be {expected:?}"));
        }
    };
    match doc {
        DeployDoc::Producer(p) => {
            expect("source", &p.source, source_of(&p.application));
            expect(
                "detail_type",
                &p.detail_type,
                detail_type(&p.event_type, p.version),
            );
            expect(
                "stack_name",
                &p.stack_name,
                producer_stack_name(&p.event_type, p.version),
            );
        }
        DeployDoc::Consumer(c) => {
            expect("source", &c.source, source_of(&c.application));
            expect(
                "detail_type",
                &c.detail_type,
                detail_type(&c.event_type, c.version),
            );
            expect("rule_name", &c.rule_name, rule_name(&c.subscription_id));
            expect(
                "stack_name",
                &c.stack_name,
                consumer_stack_name(&c.subscription_id),
            );
            if let Err(e) = c
                .connection_type
                .check_connection_string(&c.connection_string)
            {
                errors.push("/connection_string", e);
            }
            let pattern = json!({
                "source": [c.source],
                "detail-type": [c.detail_type],
                "detail": {"metadata": {"event_attributes": {"target": [c.target_unit.as_str()]}}}
            });
            if c.event_pattern != pattern {
                errors.push(
                    "/event_pattern",
                    format!("must be {pattern}, made of source, detail_type and target_unit"),
                );
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::subscription::SubscriptionState;

    fn subscription() -> Subscription {
        Subscription {
            id: "0b8f5a52-1c1e-4a5e-9a55-6a3c2b1d0e9f".into(),
            event_type: "scanned_parcel".parse().expect("name"),
            version: Version::FIRST,
            target_unit: "u2".parse().expect("unit"),
            connection_type: ConsumerConnection::Https,
            connection_string: "https://example.com/hook".into(),
            retry_policy: RetryPolicy::default(),
            delivery: DeliverySettings::default(),
            state: SubscriptionState::Active,
            created_at: crate::now(),
            team: None,
            replay_from: None,
        }
    }

    #[test]
    fn a_producer_queue_name_gives_back_its_event_version() {
        let name: EventTypeName = "scanned_parcel_v2".parse().expect("name");
        let queue = producer_queue_name(&name, Version::new(12).expect("version"));
        assert_eq!(queue, "busway-scanned-parcel-v2-v12");
        assert_eq!(
            parse_producer_queue_name(&queue),
            Some((name, Version::new(12).expect("version")))
        );
        assert_eq!(parse_producer_queue_name("orders"), None);
        assert_eq!(parse_producer_queue_name("busway-orders-vx"), None);
    }

    #[test]
    fn a_consumer_document_round_trips_through_its_schema() {
        let app: Application = "demo".parse().expect("app");
        let doc = DeployDoc::Consumer(consumer_deploy(
            DeployAction::Deploy,
            "6f1c1f5e-7b1a-4f59-8f0e-2b2f1f0e4c11",
            &app,
            &subscription(),
            None,
        ));
        assert_eq!(parse(DeployKind::Consumer, &doc.to_json()), Ok(doc));
        for kind in [BusKind::Custom, BusKind::Classic] {
            let doc = DeployDoc::Consumer(consumer_deploy(
                DeployAction::Deploy,
                "6f1c1f5e-7b1a-4f59-8f0e-2b2f1f0e4c11",
                &app,
                &subscription(),
                Some(kind),
            ));
            assert_eq!(parse(DeployKind::Consumer, &doc.to_json()), Ok(doc));
        }
    }

    #[test]
    fn documents_carry_their_format_and_the_schemas_know_it() {
        let app: Application = "demo".parse().expect("app");
        let doc = consumer_deploy(
            DeployAction::Deploy,
            "6f1c1f5e-7b1a-4f59-8f0e-2b2f1f0e4c11",
            &app,
            &subscription(),
            None,
        );
        let mut value = serde_json::to_value(&doc).expect("json");
        assert_eq!(value[format::FORMAT_FIELD], DEPLOY_FORMAT);
        for text in [PRODUCER_SCHEMA, CONSUMER_SCHEMA] {
            let schema: Value = serde_json::from_str(text).expect("a schema");
            assert_eq!(
                schema["properties"][format::FORMAT_FIELD]["maximum"],
                DEPLOY_FORMAT,
                "a schema's newest format is the one written"
            );
        }

        // A document of the first release has no format_version: it is format 1.
        value
            .as_object_mut()
            .map(|o| o.remove(format::FORMAT_FIELD));
        let DeployDoc::Consumer(first) =
            parse(DeployKind::Consumer, value.to_string().as_bytes()).expect("still valid")
        else {
            panic!("a consumer document");
        };
        assert_eq!(first.format_version, format::FIRST_FORMAT);

        value[format::FORMAT_FIELD] = json!(DEPLOY_FORMAT + 1);
        let errors = parse(DeployKind::Consumer, value.to_string().as_bytes())
            .expect_err("a newer format is refused")
            .0;
        assert_eq!(errors[0].field, "/format_version", "{errors:?}");
    }

    #[test]
    fn a_replayed_subscription_carries_its_start_in_unix_seconds() {
        let app: Application = "demo".parse().expect("app");
        let start = time::OffsetDateTime::from_unix_timestamp(1_790_000_000).expect("a time");
        let s = Subscription {
            replay_from: Some(start),
            ..subscription()
        };
        let doc = consumer_deploy(
            DeployAction::Deploy,
            "6f1c1f5e-7b1a-4f59-8f0e-2b2f1f0e4c11",
            &app,
            &s,
            Some(BusKind::Custom),
        );
        let text = DeployDoc::Consumer(doc.clone()).to_json();
        let value: Value = serde_json::from_slice(&text).expect("json");
        assert_eq!(value["replay_from"], json!(1_790_000_000));
        assert_eq!(
            parse(DeployKind::Consumer, &text).expect("valid"),
            DeployDoc::Consumer(doc)
        );
        let never = consumer_deploy(
            DeployAction::Deploy,
            "6f1c1f5e-7b1a-4f59-8f0e-2b2f1f0e4c11",
            &app,
            &subscription(),
            None,
        );
        assert!(
            serde_json::to_value(&never)
                .expect("json")
                .get("replay_from")
                .is_none()
        );
    }

    #[test]
    fn broken_documents_name_every_problem() {
        assert!(parse(DeployKind::Consumer, b"{not json").is_err());
        let app: Application = "demo".parse().expect("app");
        let doc = consumer_deploy(
            DeployAction::Deploy,
            "6f1c1f5e-7b1a-4f59-8f0e-2b2f1f0e4c11",
            &app,
            &subscription(),
            None,
        );
        let mut value = serde_json::to_value(&doc).expect("json");
        value["target_unit"] = json!("../etc");
        value["action"] = json!("explode");
        let errors = parse(DeployKind::Consumer, value.to_string().as_bytes())
            .expect_err("invalid")
            .0;
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert!(
            fields.contains(&"/target_unit") && fields.contains(&"/action"),
            "{fields:?}"
        );

        let mut value = serde_json::to_value(&doc).expect("json");
        value["connection_string"] = json!("http://example.com/");
        value["rule_name"] = json!("other");
        let errors = parse(DeployKind::Consumer, value.to_string().as_bytes())
            .expect_err("invalid")
            .0;
        let fields: Vec<&str> = errors.iter().map(|e| e.field.as_str()).collect();
        assert_eq!(fields, ["/rule_name", "/connection_string"]);
    }

    #[test]
    fn keys_never_collide_and_parse_back() {
        let s = subscription();
        let key = consumer_key(&s);
        assert_eq!(key, format!("scanned_parcel/1/u2/{}/deploy.json", s.id));
        let parts = parse_key(DeployKind::Consumer, &key).expect("parses");
        assert_eq!(parts.subscription_id.as_deref(), Some(s.id.as_str()));
        assert!(parse_key(DeployKind::Producer, "scanned_parcel/1/deploy.json").is_some());
        assert!(parse_key(DeployKind::Producer, "../1/deploy.json").is_none());
        assert!(parse_key(DeployKind::Consumer, "a_b/1/u2/not-a-uuid/deploy.json").is_none());
        assert_eq!(
            producer_stack_name(&"scanned_parcel".parse().expect("n"), Version::FIRST),
            "busway-producer-scanned-parcel-v1"
        );
    }
}
