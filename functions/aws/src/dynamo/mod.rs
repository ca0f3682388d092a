//! The event store and the deployment store on one DynamoDB table. The key design, and which
//! query serves which portal call, is in functions/aws/README.md.
//!
//! Every write of several items is one `TransactWriteItems`; the SDK fills its
//! `ClientRequestToken`, so the SDK's own retries of a transaction apply it once. Uniqueness and
//! optimistic locking are conditions on the items written; when a condition fails, the adapter
//! reads what is there (strongly consistent) to say why, as the embedded store does.

mod api_keys;
mod audit;
mod idempotency;
mod item;
mod keys;

use std::collections::HashMap;

use anyhow::{Context, anyhow};
use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, Delete, GlobalSecondaryIndex, KeySchemaElement, KeyType,
    Projection, ProjectionType, Put, ScalarAttributeType, TransactWriteItem, Update,
};
use busway_core::deployment::{Deployment, failure_cause};
use busway_core::event::{EventType, EventVersion, VersionState};
use busway_core::format::{FORMAT_FIELD, RECORD_FORMAT};
use busway_core::page::{Page, PageRequest};
use busway_core::ports::{DeploymentStore, EventStore, StoreError};
use busway_core::subscription::{Subscription, SubscriptionFilter, SubscriptionState};
use busway_core::{EventTypeName, Version};
use serde::Serialize;
use serde_json::{Value, json};
use tracing::instrument;

use crate::error::{TRANSIENT_CANCELLATIONS, store_error};
use item::{Item, n, s};
use keys::*;

/// Counts a version's active subscriptions, so deleting the version and subscribing to it
/// cannot both succeed: each write is conditional on the other's attribute of the same item.
const ACTIVE_SUBSCRIPTIONS: &str = "active_subscriptions";
const NOT_EXISTS: &str = "attribute_not_exists(PK)";

/// The event store and deployment store on `table`. Cheap to clone.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    page_size: Option<i32>,
}

impl DynamoStore {
    pub fn new(client: Client, table: impl Into<String>) -> Self {
        Self {
            client,
            table: table.into(),
            page_size: None,
        }
    }

    /// Caps the items of each Query page. DynamoDB pages at 1 MB by itself; a small cap lets a
    /// test prove that every page is read.
    pub fn with_page_size(mut self, items: i32) -> Self {
        self.page_size = Some(items);
        self
    }

    /// Creates the table with the keys and indexes this adapter needs, as the platform's
    /// infrastructure declares them. Tests create their tables on an emulator with it.
    pub async fn create_table(client: &Client, table: &str) -> anyhow::Result<()> {
        let key = |name: &str, kind| {
            KeySchemaElement::builder()
                .attribute_name(name)
                .key_type(kind)
                .build()
        };
        let index = |name: &str, pk: &str, sk: &str| -> anyhow::Result<GlobalSecondaryIndex> {
            Ok(GlobalSecondaryIndex::builder()
                .index_name(name)
                .key_schema(key(pk, KeyType::Hash)?)
                .key_schema(key(sk, KeyType::Range)?)
                .projection(
                    Projection::builder()
                        .projection_type(ProjectionType::All)
                        .build(),
                )
                .build()?)
        };
        let mut request = client
            .create_table()
            .table_name(table)
            .billing_mode(BillingMode::PayPerRequest)
            .key_schema(key(PK, KeyType::Hash)?)
            .key_schema(key(SK, KeyType::Range)?)
            .global_secondary_indexes(index(GSI1, GSI1PK, GSI1SK)?)
            .global_secondary_indexes(index(GSI2, GSI2PK, GSI2SK)?);
        for name in [PK, SK, GSI1PK, GSI1SK, GSI2PK, GSI2SK] {
            request = request.attribute_definitions(
                AttributeDefinition::builder()
                    .attribute_name(name)
                    .attribute_type(ScalarAttributeType::S)
                    .build()?,
            );
        }
        request
            .send()
            .await
            .with_context(|| format!("creating table {table}"))?;
        Ok(())
    }

    async fn get(&self, pk: String, sk: &str) -> Result<Option<Item>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .consistent_read(true)
            .send()
            .await
            .map_err(|e| store_error("GetItem", e))?;
        Ok(out.item)
    }

    /// Every item of a partition (whose sort key starts with `prefix`), page after page.
    async fn query(&self, q: QueryOf) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start = None;
        loop {
            let (page, next) = self.query_page(&q, self.page_size, start).await?;
            items.extend(page);
            match next {
                Some(key) => start = Some(key),
                None => return Ok(items),
            }
        }
    }

    /// One Query call: up to `limit` items after `start`, and the key to continue from.
    async fn query_page(
        &self,
        q: &QueryOf,
        limit: Option<i32>,
        start: Option<Item>,
    ) -> Result<(Vec<Item>, Option<Item>), StoreError> {
        let (pk_name, sk_name, index) = match q.index {
            Index::Table => (PK, SK, None),
            Index::Gsi1 => (GSI1PK, GSI1SK, Some(GSI1)),
            Index::Gsi2 => (GSI2PK, GSI2SK, Some(GSI2)),
        };
        let mut request = self
            .client
            .query()
            .table_name(&self.table)
            .set_index_name(index.map(str::to_string))
            // Global secondary indexes are eventually consistent only; the table is read
            // consistently.
            .set_consistent_read(index.is_none().then_some(true))
            .expression_attribute_names("#pk", pk_name)
            .expression_attribute_values(":pk", s(&q.pk))
            .scan_index_forward(!q.newest_first)
            .set_limit(limit)
            .set_exclusive_start_key(start);
        request = match &q.prefix {
            Some(prefix) => request
                .key_condition_expression("#pk = :pk AND begins_with(#sk, :prefix)")
                .expression_attribute_names("#sk", sk_name)
                .expression_attribute_values(":prefix", s(prefix)),
            None => request.key_condition_expression("#pk = :pk"),
        };
        let page = request.send().await.map_err(|e| store_error("Query", e))?;
        let next = page.last_evaluated_key.filter(|key| !key.is_empty());
        Ok((page.items.unwrap_or_default(), next))
    }

    /// One page of a list for the portal: one Query of `page.limit` items from the position
    /// a previous page gave (its last evaluated key, as JSON of its string attributes).
    async fn page_of(
        &self,
        q: &QueryOf,
        page: &PageRequest,
    ) -> Result<(Vec<Item>, Option<String>), StoreError> {
        let start = page
            .after
            .as_deref()
            .map(|position| decode_position(position, q))
            .transpose()?;
        let limit = i32::try_from(page.limit).unwrap_or(i32::MAX);
        let (items, next) = self.query_page(q, Some(limit), start).await?;
        Ok((items, next.map(|key| encode_position(&key))))
    }

    /// Writes all of `writes` or none. `Ok(Err(_))` says which conditions failed.
    async fn transact(
        &self,
        what: &str,
        writes: Vec<TransactWriteItem>,
    ) -> Result<Result<(), FailedConditions>, StoreError> {
        let sent = self
            .client
            .transact_write_items()
            .set_transact_items(Some(writes))
            .send()
            .await;
        let Err(err) = sent else {
            return Ok(Ok(()));
        };
        if let Some(TransactWriteItemsError::TransactionCanceledException(cancelled)) =
            err.as_service_error()
        {
            let codes: Vec<&str> = cancelled
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None"))
                .collect();
            if codes.contains(&"ConditionalCheckFailed") {
                return Ok(Err(FailedConditions(
                    codes
                        .iter()
                        .map(|c| *c == "ConditionalCheckFailed")
                        .collect(),
                )));
            }
            if codes.iter().any(|c| TRANSIENT_CANCELLATIONS.contains(c)) {
                return Err(StoreError::Unavailable(format!(
                    "{what}: transaction cancelled ({})",
                    codes.join(", ")
                )));
            }
        }
        Err(store_error(what, err))
    }

    fn put(&self, item: Item, condition: Option<&str>) -> Result<TransactWriteItem, StoreError> {
        let put = Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .set_condition_expression(condition.map(str::to_string))
            .build()
            .context("a transaction Put")?;
        Ok(TransactWriteItem::builder().put(put).build())
    }

    fn delete(&self, pk: String, sk: String) -> Result<TransactWriteItem, StoreError> {
        let delete = Delete::builder()
            .table_name(&self.table)
            .key(PK, s(pk))
            .key(SK, s(sk))
            .build()
            .context("a transaction Delete")?;
        Ok(TransactWriteItem::builder().delete(delete).build())
    }

    fn update(&self, u: UpdateOf) -> Result<TransactWriteItem, StoreError> {
        let update = Update::builder()
            .table_name(&self.table)
            .key(PK, s(u.pk))
            .key(SK, s(u.sk))
            .update_expression(u.expression)
            .set_condition_expression(u.condition)
            .set_expression_attribute_names((!u.names.is_empty()).then_some(u.names))
            .set_expression_attribute_values((!u.values.is_empty()).then_some(u.values))
            .build()
            .context("a transaction Update")?;
        Ok(TransactWriteItem::builder().update(update).build())
    }

    fn record_deployment(&self, d: &Deployment) -> Result<TransactWriteItem, StoreError> {
        self.update(deployment_update(d)?)
    }

    async fn active_subscribers(
        &self,
        event_type: &EventTypeName,
        version: Version,
    ) -> Result<Vec<Subscription>, StoreError> {
        self.list_subscriptions(&SubscriptionFilter {
            event_type: Some(event_type.clone()),
            version: Some(version),
            target_unit: None,
        })
        .await
    }
}

enum Index {
    Table,
    Gsi1,
    Gsi2,
}

struct QueryOf {
    index: Index,
    pk: String,
    prefix: Option<String>,
    newest_first: bool,
}

impl QueryOf {
    fn new(index: Index, pk: impl Into<String>) -> Self {
        Self {
            index,
            pk: pk.into(),
            prefix: None,
            newest_first: false,
        }
    }

    fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = Some(prefix.into());
        self
    }

    fn newest_first(mut self) -> Self {
        self.newest_first = true;
        self
    }
}

fn encode_position(key: &Item) -> String {
    let strings: std::collections::BTreeMap<&str, &str> = key
        .iter()
        .filter_map(|(name, value)| Some((name.as_str(), value.as_s().ok()?.as_str())))
        .collect();
    serde_json::to_string(&strings).unwrap_or_default()
}

/// DynamoDB's limits on a key attribute's value: a partition key of at most 2048 bytes, a sort key
/// of at most 1024, neither empty.
const MAX_PARTITION_KEY_BYTES: usize = 2048;
const MAX_SORT_KEY_BYTES: usize = 1024;

/// The key `q` reads from a position a page of the same list gave: the JSON of the last evaluated
/// key's string attributes, which for a Query of the table are `PK` and `SK`, and of an index
/// those plus the index's own key. DynamoDB refuses an `ExclusiveStartKey` of other attributes
/// ("The provided starting key is invalid"), of another partition than the Query's ("outside
/// query boundaries"), whose sort key the Query's condition does not take ("does not match the
/// range key predicate"), or with a key value it could not store, each a ValidationException,
/// so such a position is `BadPosition` here rather than a failed Query. A key of that shape
/// that names no item is fine: the Query starts after where it would be.
fn decode_position(position: &str, q: &QueryOf) -> Result<Item, StoreError> {
    let bad = || StoreError::BadPosition("not a position of this list".into());
    let strings: std::collections::HashMap<String, String> =
        serde_json::from_str(position).map_err(|_| bad())?;
    let (pk_name, sk_name) = match q.index {
        Index::Table => (PK, SK),
        Index::Gsi1 => (GSI1PK, GSI1SK),
        Index::Gsi2 => (GSI2PK, GSI2SK),
    };
    let mut names = vec![(PK, MAX_PARTITION_KEY_BYTES), (SK, MAX_SORT_KEY_BYTES)];
    if !matches!(q.index, Index::Table) {
        names.extend([
            (pk_name, MAX_PARTITION_KEY_BYTES),
            (sk_name, MAX_SORT_KEY_BYTES),
        ]);
    }
    if strings.len() != names.len() {
        return Err(bad());
    }
    for (name, max_bytes) in names {
        match strings.get(name) {
            Some(value) if !value.is_empty() && value.len() <= max_bytes => {}
            _ => return Err(bad()),
        }
    }
    if strings[pk_name] != q.pk {
        return Err(bad());
    }
    if let Some(prefix) = &q.prefix
        && !strings[sk_name].starts_with(prefix.as_str())
    {
        return Err(bad());
    }
    Ok(strings
        .into_iter()
        .map(|(name, value)| (name, s(&value)))
        .collect())
}

/// Only active subscriptions carry index keys; the narrowest index answers, the filter does the
/// rest.
fn subscriptions_query(filter: &SubscriptionFilter) -> QueryOf {
    match (&filter.event_type, &filter.target_unit) {
        (Some(event_type), _) => QueryOf::new(Index::Gsi1, ALL_SUBSCRIPTIONS)
            .prefix(subscriptions_prefix(event_type, filter.version)),
        (None, Some(unit)) => QueryOf::new(Index::Gsi2, unit_pk(unit)),
        (None, None) => QueryOf::new(Index::Gsi1, ALL_SUBSCRIPTIONS),
    }
}

/// An `UpdateItem`, alone or in a transaction.
struct UpdateOf {
    pk: String,
    sk: String,
    expression: String,
    condition: Option<String>,
    names: HashMap<String, String>,
    values: Item,
}

impl UpdateOf {
    fn new(pk: String, sk: impl Into<String>, expression: impl Into<String>) -> Self {
        Self {
            pk,
            sk: sk.into(),
            expression: expression.into(),
            condition: None,
            names: HashMap::new(),
            values: Item::new(),
        }
    }

    fn condition(mut self, condition: &str) -> Self {
        self.condition = Some(condition.to_string());
        self
    }

    fn name(mut self, placeholder: &str, name: &str) -> Self {
        self.names.insert(placeholder.to_string(), name.to_string());
        self
    }

    fn value(mut self, placeholder: &str, value: aws_sdk_dynamodb::types::AttributeValue) -> Self {
        self.values.insert(placeholder.to_string(), value);
        self
    }
}

/// Which writes of a cancelled transaction had a failing condition, by position.
struct FailedConditions(Vec<bool>);

impl FailedConditions {
    fn at(&self, position: usize) -> bool {
        self.0.get(position).copied().unwrap_or(false)
    }
}

/// A serde enum's string (`ACTIVE`, `DELETED`), as the records store it.
fn variant<T: Serialize>(value: &T) -> Result<aws_sdk_dynamodb::types::AttributeValue, StoreError> {
    match serde_json::to_value(value).context("encoding a state")? {
        Value::String(text) => Ok(s(text)),
        other => Err(anyhow!("a state must encode as a string, not {other}").into()),
    }
}

fn version_item(v: &EventVersion) -> Result<Item, StoreError> {
    let mut item = item::to_attributes(v)?;
    // As JSON text: a schema may nest deeper than the 32 levels a map attribute allows, and
    // its numbers must come back exactly as written.
    item.insert(
        "schema".into(),
        s(serde_json::to_string(&v.schema).context("encoding a schema")?),
    );
    item.insert(PK.into(), s(event_pk(&v.event_type)));
    item.insert(SK.into(), s(version_sk(v.version)));
    Ok(item)
}

fn decode_version(item: &Item) -> Result<EventVersion, StoreError> {
    let mut fields = item::to_fields(item)?;
    if let Some(Value::String(text)) = fields.get("schema") {
        let schema: Value = serde_json::from_str(text).context("decoding a stored schema")?;
        fields.insert("schema".into(), schema);
    }
    item::decode(fields)
}

fn subscription_item(sub: &Subscription) -> Result<Item, StoreError> {
    let order = order(&sub.id);
    let mut item = item::to_attributes(sub)?;
    item.extend([
        (PK.to_string(), s(subscription_pk(&sub.id))),
        (SK.to_string(), s(SUBSCRIPTION_SK)),
        (GSI1PK.to_string(), s(ALL_SUBSCRIPTIONS)),
        (GSI1SK.to_string(), s(subscription_gsi1sk(sub, &order))),
        (GSI2PK.to_string(), s(unit_pk(&sub.target_unit))),
        (GSI2SK.to_string(), s(order)),
    ]);
    Ok(item)
}

/// The deployment record as the state machine writes it (statemachines/README.md): every
/// field an attribute, `cause` as the JSON failure `{"Error": ..., "Cause": ...}`. An upsert,
/// so the list position (the index sort keys) stays that of the first write.
fn deployment_update(d: &Deployment) -> Result<UpdateOf, StoreError> {
    let mut update = UpdateOf::new(deployment_pk(&d.id), DEPLOYMENT_SK, "");
    let (mut set, mut remove) = (Vec::new(), Vec::new());
    for (i, (field, value)) in item::fields(d)?.into_iter().enumerate() {
        let (name, placeholder) = (format!("#f{i}"), format!(":f{i}"));
        let value = match field.as_str() {
            "cause" if !value.is_null() => {
                Value::String(json!({"Error": d.error, "Cause": d.cause}).to_string())
            }
            _ => value,
        };
        update = update.name(&name, &field);
        if value.is_null() {
            remove.push(name);
        } else {
            set.push(format!("{name} = {placeholder}"));
            update = update.value(&placeholder, item::to_attribute(value));
        }
    }
    let now = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .context("formatting the time")?;
    set.extend([
        format!("{FORMAT_FIELD} = :format"),
        "updated_at = :now".to_string(),
        format!("{GSI1PK} = :all"),
        format!("{GSI1SK} = if_not_exists({GSI1SK}, :order)"),
    ]);
    update = update
        .value(":format", n(RECORD_FORMAT))
        .value(":now", s(now))
        .value(":all", s(ALL_DEPLOYMENTS))
        .value(":order", s(order(&d.id)));
    match &d.event_type {
        Some(event_type) => {
            set.extend([
                format!("{GSI2PK} = :owner"),
                format!("{GSI2SK} = if_not_exists({GSI2SK}, :order)"),
            ]);
            update = update.value(":owner", s(deployments_of(event_type)));
        }
        None => remove.extend([GSI2PK.to_string(), GSI2SK.to_string()]),
    }
    update.expression = format!("SET {}", set.join(", "));
    if !remove.is_empty() {
        update.expression += &format!(" REMOVE {}", remove.join(", "));
    }
    Ok(update)
}

fn decode_deployment(item: &Item) -> Result<Deployment, StoreError> {
    let mut fields = item::to_fields(item)?;
    if let Some(Value::String(failure)) = fields.get("cause") {
        let cause = failure_cause(failure).map_or(Value::Null, Value::String);
        fields.insert("cause".into(), cause);
    }
    item::decode(fields)
}

fn version_conflict(name: &EventTypeName, version: Version) -> StoreError {
    StoreError::Conflict(format!(
        "event type {name} changed while version {version} was being added; retry"
    ))
}

#[async_trait]
impl EventStore for DynamoStore {
    #[instrument(skip_all, fields(event_type = %event.event_type))]
    async fn create_event_type(
        &self,
        event: &EventType,
        first: &EventVersion,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let mut event_item = item::to_attributes(event)?;
        event_item.extend([
            (PK.to_string(), s(event_pk(&event.event_type))),
            (SK.to_string(), s(EVENT_SK)),
            (GSI1PK.to_string(), s(ALL_EVENT_TYPES)),
            (GSI1SK.to_string(), s(event.event_type.as_str())),
        ]);
        let writes = vec![
            self.put(event_item, Some(NOT_EXISTS))?,
            self.put(version_item(first)?, Some(NOT_EXISTS))?,
            self.record_deployment(deployment)?,
        ];
        match self.transact("creating an event type", writes).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(StoreError::AlreadyExists(format!(
                "event type {}",
                event.event_type
            ))),
        }
    }

    #[instrument(skip_all, fields(event_type = %version.event_type, version = %version.version))]
    async fn add_version(
        &self,
        version: &EventVersion,
        expected_latest: Version,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let name = &version.event_type;
        if version.version != expected_latest.next() {
            return Err(version_conflict(name, version.version));
        }
        // The lock: the event type's latest version must still be the one the caller read.
        let lock = UpdateOf::new(event_pk(name), EVENT_SK, "SET #latest = :new")
            .condition("#latest = :expected")
            .name("#latest", "latest_version")
            .value(":new", n(version.version.get()))
            .value(":expected", n(expected_latest.get()));
        let writes = vec![
            self.update(lock)?,
            self.put(version_item(version)?, Some(NOT_EXISTS))?,
            self.record_deployment(deployment)?,
        ];
        match self.transact("adding a version", writes).await? {
            Ok(()) => Ok(()),
            Err(_) if self.get_event_type(name).await?.is_none() => {
                Err(StoreError::NotFound(format!("event type {name}")))
            }
            Err(_) => Err(version_conflict(name, version.version)),
        }
    }

    #[instrument(skip_all, fields(event_type = %event_type, version = %version))]
    async fn delete_version(
        &self,
        event_type: &EventTypeName,
        version: Version,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let delete = UpdateOf::new(
            event_pk(event_type),
            version_sk(version),
            "SET #state = :deleted",
        )
        .condition("#state = :active AND (attribute_not_exists(#subs) OR #subs = :none)")
        .name("#state", "state")
        .name("#subs", ACTIVE_SUBSCRIPTIONS)
        .value(":deleted", variant(&VersionState::Deleted)?)
        .value(":active", variant(&VersionState::Active)?)
        .value(":none", n(0));
        let writes = vec![self.update(delete)?, self.record_deployment(deployment)?];
        if self.transact("deleting a version", writes).await?.is_ok() {
            return Ok(());
        }
        let active = self
            .get_version(event_type, version)
            .await?
            .is_some_and(|v| v.is_active());
        if !active {
            return Err(StoreError::NotFound(format!(
                "version {version} of event type {event_type}"
            )));
        }
        let ids: Vec<String> = self
            .active_subscribers(event_type, version)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        // The index may lag the counter by a moment: then the ids are not known yet.
        let which = if ids.is_empty() {
            String::new()
        } else {
            format!(": {}", ids.join(", "))
        };
        Err(StoreError::Conflict(format!(
            "version {version} of event type {event_type} has active subscription(s){which}; delete them first"
        )))
    }

    async fn get_event_type(&self, name: &EventTypeName) -> Result<Option<EventType>, StoreError> {
        self.get(event_pk(name), EVENT_SK)
            .await?
            .map(|item| item::from_item(&item))
            .transpose()
    }

    async fn list_event_types(&self) -> Result<Vec<EventType>, StoreError> {
        self.query(QueryOf::new(Index::Gsi1, ALL_EVENT_TYPES))
            .await?
            .iter()
            .map(item::from_item)
            .collect()
    }

    async fn page_event_types(&self, page: &PageRequest) -> Result<Page<EventType>, StoreError> {
        let (items, next) = self
            .page_of(&QueryOf::new(Index::Gsi1, ALL_EVENT_TYPES), page)
            .await?;
        Ok(Page {
            items: items
                .iter()
                .map(item::from_item)
                .collect::<Result<_, _>>()?,
            next,
        })
    }

    async fn list_versions(&self, name: &EventTypeName) -> Result<Vec<EventVersion>, StoreError> {
        self.query(QueryOf::new(Index::Table, event_pk(name)).prefix(VERSION_PREFIX))
            .await?
            .iter()
            .map(decode_version)
            .collect()
    }

    async fn get_version(
        &self,
        name: &EventTypeName,
        version: Version,
    ) -> Result<Option<EventVersion>, StoreError> {
        self.get(event_pk(name), &version_sk(version))
            .await?
            .map(|item| decode_version(&item))
            .transpose()
    }

    #[instrument(skip_all, fields(event_type = %subscription.event_type, version = %subscription.version))]
    async fn create_subscription(
        &self,
        subscription: &Subscription,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let sub = subscription;
        let name = &sub.event_type;
        let count = UpdateOf::new(event_pk(name), version_sk(sub.version), "ADD #subs :one")
            .condition("#state = :active")
            .name("#subs", ACTIVE_SUBSCRIPTIONS)
            .name("#state", "state")
            .value(":one", n(1))
            .value(":active", variant(&VersionState::Active)?);
        let target = HashMap::from([
            (PK.to_string(), s(event_pk(name))),
            (SK.to_string(), s(target_sk(sub))),
            ("subscription_id".to_string(), s(&sub.id)),
        ]);
        let writes = vec![
            self.update(count)?,
            self.put(target, Some(NOT_EXISTS))?,
            self.put(subscription_item(sub)?, Some(NOT_EXISTS))?,
            self.record_deployment(deployment)?,
        ];
        let failed = match self.transact("subscribing", writes).await? {
            Ok(()) => return Ok(()),
            Err(failed) => failed,
        };
        if failed.at(0) {
            return Err(StoreError::NotFound(format!(
                "version {} of event type {name}",
                sub.version
            )));
        }
        if failed.at(1) {
            let existing = self.get(event_pk(name), &target_sk(sub)).await?;
            let id = existing
                .as_ref()
                .and_then(|item| item::get_s(item, "subscription_id"))
                .unwrap_or("already deleted");
            return Err(StoreError::AlreadyExists(format!(
                "a subscription to the same target ({id}; delete it and subscribe again to change its policy)"
            )));
        }
        Err(StoreError::AlreadyExists(format!(
            "subscription {}",
            sub.id
        )))
    }

    async fn get_subscription(&self, id: &str) -> Result<Option<Subscription>, StoreError> {
        self.get(subscription_pk(id), SUBSCRIPTION_SK)
            .await?
            .map(|item| item::from_item(&item))
            .transpose()
    }

    async fn list_subscriptions(
        &self,
        filter: &SubscriptionFilter,
    ) -> Result<Vec<Subscription>, StoreError> {
        // Only active subscriptions carry index keys; the narrowest index answers, the filter
        // does the rest.
        let mut found = Vec::new();
        for item in self.query(subscriptions_query(filter)).await? {
            let sub: Subscription = item::from_item(&item)?;
            if sub.state == SubscriptionState::Active && filter.accepts(&sub) {
                let order = item::get_s(&item, GSI2SK).unwrap_or_default().to_string();
                found.push((order, sub));
            }
        }
        // Oldest first, whichever index answered.
        found.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(found.into_iter().map(|(_, sub)| sub).collect())
    }

    async fn page_subscriptions(
        &self,
        filter: &SubscriptionFilter,
        page: &PageRequest,
    ) -> Result<Page<Subscription>, StoreError> {
        let (items, next) = self.page_of(&subscriptions_query(filter), page).await?;
        let mut found = Vec::new();
        for item in items {
            let sub: Subscription = item::from_item(&item)?;
            if sub.state == SubscriptionState::Active && filter.accepts(&sub) {
                found.push(sub);
            }
        }
        Ok(Page { items: found, next })
    }

    #[instrument(skip_all, fields(subscription = %id))]
    async fn replay_subscription(
        &self,
        id: &str,
        from: busway_core::Timestamp,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let from = from
            .format(&time::format_description::well_known::Rfc3339)
            .context("formatting the replay start")?;
        // The record is of this release's format once it has a field only this format knows.
        let mark = UpdateOf::new(
            subscription_pk(id),
            SUBSCRIPTION_SK,
            "SET #from = :from, #format = :format",
        )
        .condition("#state = :active")
        .name("#from", "replay_from")
        .name("#format", FORMAT_FIELD)
        .name("#state", "state")
        .value(":from", s(from))
        .value(":format", n(RECORD_FORMAT))
        .value(":active", variant(&SubscriptionState::Active)?);
        let writes = vec![self.update(mark)?, self.record_deployment(deployment)?];
        match self.transact("replaying", writes).await? {
            Ok(()) => Ok(()),
            Err(_) => Err(StoreError::NotFound(format!("subscription {id}"))),
        }
    }

    #[instrument(skip_all, fields(subscription = %id))]
    async fn delete_subscription(
        &self,
        id: &str,
        deployment: &Deployment,
    ) -> Result<(), StoreError> {
        let not_found = || StoreError::NotFound(format!("subscription {id}"));
        let sub = self
            .get_subscription(id)
            .await?
            .filter(|s| s.state == SubscriptionState::Active)
            .ok_or_else(not_found)?;
        let remove = [GSI1PK, GSI1SK, GSI2PK, GSI2SK].join(", ");
        let mark = UpdateOf::new(
            subscription_pk(id),
            SUBSCRIPTION_SK,
            format!("SET #state = :deleted REMOVE {remove}"),
        )
        .condition("#state = :active")
        .name("#state", "state")
        .value(":deleted", variant(&SubscriptionState::Deleted)?)
        .value(":active", variant(&SubscriptionState::Active)?);
        let uncount = UpdateOf::new(
            event_pk(&sub.event_type),
            version_sk(sub.version),
            "ADD #subs :minus_one",
        )
        .name("#subs", ACTIVE_SUBSCRIPTIONS)
        .value(":minus_one", n(-1));
        let writes = vec![
            self.update(mark)?,
            self.delete(event_pk(&sub.event_type), target_sk(&sub))?,
            self.update(uncount)?,
            self.record_deployment(deployment)?,
        ];
        match self.transact("unsubscribing", writes).await? {
            Ok(()) => Ok(()),
            // Another call deleted it first.
            Err(_) => Err(not_found()),
        }
    }
}

#[async_trait]
impl DeploymentStore for DynamoStore {
    #[instrument(skip_all, fields(deployment = %deployment.id, status = deployment.status.as_str()))]
    async fn put_deployment(&self, deployment: &Deployment) -> Result<(), StoreError> {
        let u = deployment_update(deployment)?;
        self.client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(u.pk))
            .key(SK, s(u.sk))
            .update_expression(u.expression)
            .set_expression_attribute_names(Some(u.names))
            .set_expression_attribute_values(Some(u.values))
            .send()
            .await
            .map_err(|e| store_error("UpdateItem", e))?;
        Ok(())
    }

    #[instrument(skip_all, fields(deployment = %deployment.id, status = deployment.status.as_str()))]
    async fn replace_deployment(
        &self,
        deployment: &Deployment,
        read: &Deployment,
    ) -> Result<(), StoreError> {
        let mut u = deployment_update(deployment)?
            .name("#c_status", "status")
            .name("#c_history", "history")
            .name("#c_execution", "execution")
            .value(":c_status", s(read.status.as_str()))
            .value(":c_len", n(read.history.len() as i64));
        let mut condition = "#c_status = :c_status AND size(#c_history) = :c_len".to_string();
        match &read.execution {
            Some(execution) => {
                condition += " AND #c_execution = :c_execution";
                u = u.value(":c_execution", s(execution.clone()));
            }
            None => condition += " AND attribute_not_exists(#c_execution)",
        }
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(u.pk))
            .key(SK, s(u.sk))
            .update_expression(u.expression)
            .condition_expression(condition)
            .set_expression_attribute_names(Some(u.names))
            .set_expression_attribute_values(Some(u.values))
            .send()
            .await;
        match sent {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conditional_check_failed_exception()) =>
            {
                Err(StoreError::Conflict(format!(
                    "deployment {} changed since it was read",
                    deployment.id
                )))
            }
            Err(e) => Err(store_error("UpdateItem", e)),
        }
    }

    async fn get_deployment(&self, id: &str) -> Result<Option<Deployment>, StoreError> {
        self.get(deployment_pk(id), DEPLOYMENT_SK)
            .await?
            .map(|item| decode_deployment(&item))
            .transpose()
    }

    async fn list_deployments(
        &self,
        event_type: Option<&EventTypeName>,
    ) -> Result<Vec<Deployment>, StoreError> {
        self.query(deployments_query(event_type))
            .await?
            .iter()
            .map(decode_deployment)
            .collect()
    }

    async fn page_deployments(
        &self,
        event_type: Option<&EventTypeName>,
        page: &PageRequest,
    ) -> Result<Page<Deployment>, StoreError> {
        let (items, next) = self.page_of(&deployments_query(event_type), page).await?;
        Ok(Page {
            items: items
                .iter()
                .map(decode_deployment)
                .collect::<Result<_, _>>()?,
            next,
        })
    }
}

/// Newest first.
fn deployments_query(event_type: Option<&EventTypeName>) -> QueryOf {
    match event_type {
        Some(event_type) => QueryOf::new(Index::Gsi2, deployments_of(event_type)),
        None => QueryOf::new(Index::Gsi1, ALL_DEPLOYMENTS),
    }
    .newest_first()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event_type(name: &str) -> EventTypeName {
        name.parse().expect("an event type name")
    }

    /// A position as `page_of` gives it, from a last evaluated key of these string attributes.
    fn position(key: &[(&str, &str)]) -> String {
        let key: Item = key
            .iter()
            .map(|(name, value)| (name.to_string(), s(*value)))
            .collect();
        encode_position(&key)
    }

    fn is_bad(result: Result<Item, StoreError>) -> bool {
        matches!(result, Err(StoreError::BadPosition(_)))
    }

    fn event_types() -> QueryOf {
        QueryOf::new(Index::Gsi1, ALL_EVENT_TYPES)
    }

    /// The last evaluated key of a page of `GET /events`.
    fn event_types_key() -> Vec<(&'static str, &'static str)> {
        vec![
            (PK, "EVENT#scanned_parcel"),
            (SK, EVENT_SK),
            (GSI1PK, ALL_EVENT_TYPES),
            (GSI1SK, "scanned_parcel"),
        ]
    }

    #[test]
    fn a_position_of_the_list_is_the_key_it_was_made_of() {
        let key = event_types_key();
        let decoded = decode_position(&position(&key), &event_types()).expect("a position");
        let expected: Item = key.iter().map(|(n, v)| (n.to_string(), s(*v))).collect();
        assert_eq!(decoded, expected);

        // The table's Query (an event type's audit entries) has the table's key only.
        let audit = QueryOf::new(Index::Table, "AUDIT#ET#scanned_parcel").newest_first();
        let key = [
            (PK, "AUDIT#ET#scanned_parcel"),
            (SK, "00000000000000000001#a"),
        ];
        assert!(decode_position(&position(&key), &audit).is_ok());

        // GSI2: a target unit's subscriptions.
        let unit = QueryOf::new(Index::Gsi2, "UNIT#u2");
        let key = [
            (PK, "SUBSCRIPTION#s-1"),
            (SK, SUBSCRIPTION_SK),
            (GSI2PK, "UNIT#u2"),
            (GSI2SK, "00000000000000000001#s-1"),
        ];
        assert!(decode_position(&position(&key), &unit).is_ok());
    }

    #[test]
    fn a_key_of_the_right_shape_that_names_no_item_is_a_position() {
        // DynamoDB starts after where such an item would be.
        let key = [
            (PK, "EVENT#nothing_here"),
            (SK, EVENT_SK),
            (GSI1PK, ALL_EVENT_TYPES),
            (GSI1SK, "nothing_here"),
        ];
        assert!(decode_position(&position(&key), &event_types()).is_ok());
    }

    #[test]
    fn text_that_is_not_an_object_of_strings_is_a_bad_position() {
        for garbage in [
            "",
            "not a position",
            "[]",
            "{}",
            "null",
            r#"{"PK": 1, "SK": "EVENT", "GSI1PK": "EVENT_TYPES", "GSI1SK": "a"}"#,
            r#"{"PK": {"S": "x"}, "SK": "EVENT", "GSI1PK": "EVENT_TYPES", "GSI1SK": "a"}"#,
        ] {
            assert!(
                is_bad(decode_position(garbage, &event_types())),
                "{garbage:?}"
            );
        }
    }

    #[test]
    fn a_key_of_other_attributes_than_the_queried_key_is_a_bad_position() {
        let full = event_types_key();
        // The table's key alone, for an index Query.
        assert!(is_bad(decode_position(
            &position(&full[..2]),
            &event_types()
        )));
        // The index's key without the table's.
        assert!(is_bad(decode_position(
            &position(&full[2..]),
            &event_types()
        )));
        // One attribute more.
        let mut more = full.clone();
        more.push(("extra", "x"));
        assert!(is_bad(decode_position(&position(&more), &event_types())));
        // Another index's key names.
        let gsi2 = [full[0], full[1], (GSI2PK, ALL_EVENT_TYPES), (GSI2SK, "a")];
        assert!(is_bad(decode_position(&position(&gsi2), &event_types())));
        // An index key, for a Query of the table.
        let audit = QueryOf::new(Index::Table, "AUDIT#ET#scanned_parcel");
        let key = [
            (PK, "AUDIT#ET#scanned_parcel"),
            (SK, "1#a"),
            (GSI1PK, "AUDIT"),
            (GSI1SK, "1#a"),
        ];
        assert!(is_bad(decode_position(&position(&key), &audit)));
        // Names differing only in case.
        let lower = [
            ("pk", "EVENT#a"),
            ("sk", EVENT_SK),
            ("gsi1pk", ALL_EVENT_TYPES),
            ("gsi1sk", "a"),
        ];
        assert!(is_bad(decode_position(&position(&lower), &event_types())));
    }

    #[test]
    fn a_key_of_another_partition_or_outside_the_prefix_is_a_bad_position() {
        // A position of `GET /deployments` given to `GET /events`.
        let mut other = event_types_key();
        other[2] = (GSI1PK, ALL_DEPLOYMENTS);
        assert!(is_bad(decode_position(&position(&other), &event_types())));
        // Of one event type's deployments given to another's.
        let deployments = deployments_query(Some(&event_type("scanned_parcel")));
        let key = [
            (PK, "DEPLOYMENT#d-1"),
            (SK, DEPLOYMENT_SK),
            (GSI2PK, "DEPLOYMENTS#other_type"),
            (GSI2SK, "00000000000000000001#d-1"),
        ];
        assert!(is_bad(decode_position(&position(&key), &deployments)));
        // All subscriptions' position given to one event type's subscriptions.
        let of_type = subscriptions_query(&SubscriptionFilter {
            event_type: Some(event_type("scanned_parcel")),
            version: None,
            target_unit: None,
        });
        let mut key = [
            (PK, "SUBSCRIPTION#s-1"),
            (SK, SUBSCRIPTION_SK),
            (GSI1PK, ALL_SUBSCRIPTIONS),
            (GSI1SK, "other_type#0000000001#00000000000000000001#s-1"),
        ];
        assert!(is_bad(decode_position(&position(&key), &of_type)));
        key[3].1 = "scanned_parcel#0000000001#00000000000000000001#s-1";
        assert!(decode_position(&position(&key), &of_type).is_ok());
    }

    #[test]
    fn a_key_value_dynamodb_could_not_store_is_a_bad_position() {
        let mut empty = event_types_key();
        empty[1] = (SK, "");
        assert!(is_bad(decode_position(&position(&empty), &event_types())));

        let long_sort = "a".repeat(MAX_SORT_KEY_BYTES + 1);
        let mut key = event_types_key();
        key[3] = (GSI1SK, &long_sort);
        assert!(is_bad(decode_position(&position(&key), &event_types())));
        let at_limit = "a".repeat(MAX_SORT_KEY_BYTES);
        key[3] = (GSI1SK, &at_limit);
        assert!(decode_position(&position(&key), &event_types()).is_ok());

        let long_partition = format!("EVENT#{}", "a".repeat(MAX_PARTITION_KEY_BYTES));
        let mut key = event_types_key();
        key[0] = (PK, &long_partition);
        assert!(is_bad(decode_position(&position(&key), &event_types())));
    }
}
