//! The audit trail: every change made through the portal, with who made it (the key, its team and
//! role), what it changed (an action, the resource, its JSON before and after), and when. Both
//! hosts keep it (`busway.db` locally, the platform table on AWS) and `GET /audit` pages through
//! it, newest first: platform admins read every entry, a team's owners the entries of what their
//! team owns.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::auth::{Caller, Role};
use crate::page::{Page, PageRequest};
use crate::ports::StoreError;
use crate::{EventTypeName, Team, Timestamp};

/// One change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    pub id: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: Timestamp,
    /// Who: the key that made the change, its team and its role.
    pub key_id: String,
    pub caller_team: Team,
    pub role: Role,
    /// What: `event_type.create`, `version.create`, `version.delete`, `subscription.create`,
    /// `subscription.delete`, `subscription.pause`, `subscription.resume`,
    /// `subscription.replay`, `subscription.redrive`, `subscription.secret.rotate`,
    /// `deployment.retry`, `key.create`, `key.revoke`, `key.rotate`, `team.targets.put`.
    pub action: String,
    /// The id or name of what changed.
    pub resource: String,
    /// The team the changed resource belongs to: its owners read the entry. `None` for what no
    /// team owns (records from before ownership).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<Team>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event_type: Option<EventTypeName>,
    /// The resource as it was, and as it is after the change (`null` where it did not or no
    /// longer exists). Secrets are never part of either. A store may leave a null out.
    #[serde(default)]
    pub before: Value,
    #[serde(default)]
    pub after: Value,
}

impl AuditEntry {
    /// The entry of `caller`'s change, made now.
    pub fn new(caller: &Caller, action: &str, resource: impl Into<String>) -> Self {
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            at: crate::now(),
            key_id: caller.key_id.clone(),
            caller_team: caller.team.clone(),
            role: caller.role,
            action: action.to_string(),
            resource: resource.into(),
            team: None,
            event_type: None,
            before: Value::Null,
            after: Value::Null,
        }
    }

    pub fn of_team(mut self, team: Option<&Team>) -> Self {
        self.team = team.cloned();
        self
    }

    pub fn of_event_type(mut self, event_type: &EventTypeName) -> Self {
        self.event_type = Some(event_type.clone());
        self
    }

    pub fn change(mut self, before: impl Serialize, after: impl Serialize) -> Self {
        self.before = serde_json::to_value(before).unwrap_or(Value::Null);
        self.after = serde_json::to_value(after).unwrap_or(Value::Null);
        self
    }
}

/// Which entries a page holds: each given field must match.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct AuditFilter {
    pub event_type: Option<EventTypeName>,
    pub team: Option<Team>,
}

impl AuditFilter {
    pub fn accepts(&self, entry: &AuditEntry) -> bool {
        self.event_type
            .as_ref()
            .is_none_or(|e| entry.event_type.as_ref() == Some(e))
            && self
                .team
                .as_ref()
                .is_none_or(|t| entry.team.as_ref() == Some(t))
    }
}

#[async_trait]
pub trait AuditLog: Send + Sync + 'static {
    async fn record(&self, entry: &AuditEntry) -> Result<(), StoreError>;
    /// Newest first; a page may hold fewer than `limit` entries and still have a next one.
    async fn page_audit(
        &self,
        filter: &AuditFilter,
        page: &PageRequest,
    ) -> Result<Page<AuditEntry>, StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_takes_entries_whose_given_fields_match() {
        let caller = Caller {
            key_id: "key_1".into(),
            team: "logistics".parse().expect("a team"),
            role: Role::Owner,
            application: None,
        };
        let parcel: EventTypeName = "scanned_parcel".parse().expect("a name");
        let entry = AuditEntry::new(&caller, "version.create", "scanned_parcel/2")
            .of_team(Some(&caller.team))
            .of_event_type(&parcel);
        assert!(AuditFilter::default().accepts(&entry));
        let mut filter = AuditFilter {
            event_type: Some(parcel),
            team: Some(caller.team.clone()),
        };
        assert!(filter.accepts(&entry));
        filter.team = Some("billing".parse().expect("a team"));
        assert!(!filter.accepts(&entry));
    }
}
