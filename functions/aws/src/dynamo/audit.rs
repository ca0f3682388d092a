//! The audit trail on the table: one item per entry, under `AUDIT#ET#{event type}` (`-` for
//! changes of no event type, keys) sorted by time, so an event type's entries are one query; GSI1
//! `AUDIT` holds every entry and GSI2 `AUDIT#TEAM#{team}` a team's, both newest first by the
//! same sort key (`{unix nanoseconds, 20 digits}#{id}`). And each team's target accounts, one
//! item `TEAM#{team}` / `TARGETS`.

use async_trait::async_trait;
use busway_core::Team;
use busway_core::audit::{AuditEntry, AuditFilter, AuditLog};
use busway_core::page::{Page, PageRequest};
use busway_core::ports::StoreError;
use busway_core::targets::{TeamTargetStore, TeamTargets};

use super::item::{Item, decode, from_item, s, to_attributes, to_fields};
use super::keys::*;
use super::{DynamoStore, Index, QueryOf};
use crate::error::store_error;

const ALL_AUDIT: &str = "AUDIT";
const NONE: &str = "-";

fn event_type_pk(event_type: Option<&str>) -> String {
    format!("AUDIT#ET#{}", event_type.unwrap_or(NONE))
}

fn team_pk(team: Option<&str>) -> String {
    format!("AUDIT#TEAM#{}", team.unwrap_or(NONE))
}

/// The fields kept as JSON text: a version's entry holds its schema, which may nest deeper than
/// the 32 levels a map attribute allows or hold numbers outside DynamoDB's; those entries were
/// refused, and the change went unrecorded. Entries kept as maps before are read as they are.
const AS_TEXT: [&str; 2] = ["before", "after"];

fn audit_item(entry: &AuditEntry) -> Result<Item, StoreError> {
    let mut item = to_attributes(entry)?;
    for (name, value) in AS_TEXT.into_iter().zip([&entry.before, &entry.after]) {
        if !value.is_null() {
            let text = serde_json::to_string(value)
                .map_err(|e| StoreError::Unexpected(anyhow::anyhow!("encoding {name}: {e}")))?;
            item.insert(name.into(), s(text));
        }
    }
    let sort = format!("{:020}#{}", entry.at.unix_timestamp_nanos(), entry.id);
    let event_type = entry.event_type.as_ref().map(|e| e.to_string());
    let team = entry.team.as_ref().map(|t| t.to_string());
    item.insert(PK.into(), s(event_type_pk(event_type.as_deref())));
    item.insert(SK.into(), s(&sort));
    item.insert(GSI1PK.into(), s(ALL_AUDIT));
    item.insert(GSI1SK.into(), s(&sort));
    item.insert(GSI2PK.into(), s(team_pk(team.as_deref())));
    item.insert(GSI2SK.into(), s(sort));
    Ok(item)
}

fn decode_entry(item: &Item) -> Result<AuditEntry, StoreError> {
    let mut fields = to_fields(item)?;
    for name in AS_TEXT {
        // Text that is not JSON is a string kept as a plain attribute by an earlier release.
        if let Some(serde_json::Value::String(text)) = fields.get(name)
            && let Ok(value) = serde_json::from_str::<serde_json::Value>(text)
        {
            fields.insert(name.into(), value);
        }
    }
    decode(fields)
}

/// The narrowest key that holds the filter's entries; a team's entries are then filtered by
/// event type here (a page may hold fewer than its limit).
fn audit_query(filter: &AuditFilter) -> QueryOf {
    match (&filter.team, &filter.event_type) {
        (Some(team), _) => QueryOf::new(Index::Gsi2, team_pk(Some(team.as_str()))),
        (None, Some(event_type)) => {
            QueryOf::new(Index::Table, event_type_pk(Some(event_type.as_str())))
        }
        (None, None) => QueryOf::new(Index::Gsi1, ALL_AUDIT),
    }
    .newest_first()
}

#[async_trait]
impl AuditLog for DynamoStore {
    async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(audit_item(entry)?))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await
            .map_err(|e| store_error("PutItem", e))?;
        Ok(())
    }

    async fn page_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>, StoreError> {
        let (items, next) = self.page_of(&audit_query(filter), page).await?;
        let mut entries = Vec::new();
        for item in &items {
            let entry = decode_entry(item)?;
            if filter.accepts(&entry) {
                entries.push(entry);
            }
        }
        Ok(Page {
            items: entries,
            next,
        })
    }
}

const TARGETS_SK: &str = "TARGETS";

fn team_item_pk(team: &Team) -> String {
    format!("TEAM#{team}")
}

#[async_trait]
impl TeamTargetStore for DynamoStore {
    async fn team_targets(&self, team: &Team) -> Result<Option<TeamTargets>, StoreError> {
        self.get(team_item_pk(team), TARGETS_SK)
            .await?
            .map(|item| from_item(&item))
            .transpose()
    }

    async fn put_team_targets(&self, targets: &TeamTargets) -> Result<(), StoreError> {
        let mut item = to_attributes(targets)?;
        item.insert(PK.into(), s(team_item_pk(&targets.team)));
        item.insert(SK.into(), s(TARGETS_SK));
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(|e| store_error("PutItem", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use busway_core::auth::{Caller, Role};
    use serde_json::json;

    use super::*;

    fn entry() -> AuditEntry {
        let caller = Caller {
            key_id: "key_owner".into(),
            team: "platform".parse().expect("a team"),
            role: Role::Owner,
            application: None,
        };
        AuditEntry::new(&caller, "version.create", "scanned_parcel/2")
    }

    #[test]
    fn a_change_too_deep_or_with_numbers_dynamodb_cannot_hold_is_kept_as_json_text() {
        let mut schema = json!({"type": "number", "maximum": 1e200});
        for _ in 0..40 {
            schema = json!({"type": "object", "properties": {"x": schema}});
        }
        let mut change = entry();
        change.after = json!({"version": 2, "schema": schema});
        let item = audit_item(&change).expect("an item");
        assert_eq!(
            item["after"],
            s(serde_json::to_string(&change.after).expect("JSON"))
        );
        assert!(!item.contains_key("before"), "a null is left out");
        let read = decode_entry(&item).expect("read back");
        assert_eq!(read.after, change.after);
        assert_eq!(read.before, serde_json::Value::Null);
    }

    #[test]
    fn an_entry_kept_as_maps_before_is_read_as_it_was() {
        let mut change = entry();
        change.before = json!({"description": "old", "readers": ["platform"]});
        let kept = to_attributes(&change).expect("the earlier item");
        let read = decode_entry(&kept).expect("read");
        assert_eq!(read.before, change.before);
    }
}
