//! Targets a team owns: the AWS accounts (and, if set, the function and queue name prefixes)
//! where a team's LAMBDA and SQS subscriptions may deliver, registered by a platform admin, so a
//! team cannot make the platform invoke another team's function or fill its queue.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::ports::StoreError;
use crate::subscription::ConsumerConnection;
use crate::{Team, Timestamp, ValidationErrors};

/// A team's registration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TeamTargets {
    pub team: Team,
    /// 12-digit account ids; at least one.
    pub accounts: Vec<String>,
    /// When not empty, a function's or queue's name must start with one of them.
    #[serde(default)]
    pub name_prefixes: Vec<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: Timestamp,
}

pub const MAX_ENTRIES: usize = 100;

impl TeamTargets {
    /// `{"accounts": [...], "name_prefixes": [...]}` of `PUT /teams/{team}/targets`.
    pub fn from_json(team: Team, body: &Value) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let Some(map) = body.as_object() else {
            errors.push("/", "body must be a JSON object");
            return Err(errors);
        };
        for key in map
            .keys()
            .filter(|k| !["accounts", "name_prefixes"].contains(&k.as_str()))
        {
            errors.push(key.as_str(), "unknown field");
        }
        let mut list = |name: &str, valid: fn(&str) -> bool, what: &str| -> Vec<String> {
            let items = match map.get(name) {
                None | Some(Value::Null) => return Vec::new(),
                Some(Value::Array(items)) if items.len() <= MAX_ENTRIES => items,
                Some(_) => {
                    errors.push(
                        name,
                        format!("must be an array of at most {MAX_ENTRIES} {what}"),
                    );
                    return Vec::new();
                }
            };
            let strings: Vec<String> = items
                .iter()
                .filter_map(|i| i.as_str().filter(|s| valid(s)).map(str::to_string))
                .collect();
            if strings.len() != items.len() {
                errors.push(name, format!("each entry must be {what}"));
            }
            strings
        };
        let accounts = list(
            "accounts",
            |a| a.len() == 12 && a.bytes().all(|b| b.is_ascii_digit()),
            "a 12-digit account id",
        );
        let name_prefixes = list(
            "name_prefixes",
            |p| {
                (1..=64).contains(&p.len())
                    && p.bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            },
            "a name prefix of 1 to 64 letters, digits, - or _",
        );
        if accounts.is_empty() && !errors.0.iter().any(|e| e.field == "accounts") {
            errors.push("accounts", "is required: at least one account id");
        }
        errors.into_result(Self {
            team,
            accounts,
            name_prefixes,
            updated_at: crate::now(),
        })
    }

    /// Why the team may not deliver to `connection_string`, or `None` when it may.
    pub fn refuses(
        &self,
        connection: ConsumerConnection,
        connection_string: &str,
    ) -> Option<String> {
        let (account, name) = connection.target_in_account(connection_string)?;
        if !self.accounts.iter().any(|a| a == account) {
            return Some(format!(
                "account {account} is not among team {}'s target accounts ({})",
                self.team,
                self.accounts.join(", ")
            ));
        }
        if !self.name_prefixes.is_empty()
            && !self
                .name_prefixes
                .iter()
                .any(|p| name.starts_with(p.as_str()))
        {
            return Some(format!(
                "{name} does not start with one of team {}'s name prefixes ({})",
                self.team,
                self.name_prefixes.join(", ")
            ));
        }
        None
    }
}

#[async_trait]
pub trait TeamTargetStore: Send + Sync + 'static {
    async fn team_targets(&self, team: &Team) -> Result<Option<TeamTargets>, StoreError>;
    /// Replaces the team's registration.
    async fn put_team_targets(&self, targets: &TeamTargets) -> Result<(), StoreError>;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn logistics(body: Value) -> Result<TeamTargets, ValidationErrors> {
        TeamTargets::from_json("logistics".parse().expect("a team"), &body)
    }

    #[test]
    fn a_target_must_be_in_a_registered_account_and_start_with_a_prefix_when_some_are_set() {
        let any_name = logistics(json!({"accounts": ["123456789012"]})).expect("valid");
        let lambda = "arn:aws:lambda:eu-west-1:123456789012:function:orders-handler";
        let queue = "arn:aws:sqs:eu-west-1:210987654321:orders";
        assert_eq!(any_name.refuses(ConsumerConnection::Lambda, lambda), None);
        assert!(any_name.refuses(ConsumerConnection::Sqs, queue).is_some());
        let prefixed = logistics(json!({"accounts": ["123456789012", "210987654321"],
                                        "name_prefixes": ["logistics-"]}))
        .expect("valid");
        assert!(
            prefixed
                .refuses(ConsumerConnection::Lambda, lambda)
                .is_some()
        );
        let ours = "arn:aws:lambda:eu-west-1:123456789012:function:logistics-orders:live";
        assert_eq!(prefixed.refuses(ConsumerConnection::Lambda, ours), None);
        assert_eq!(
            prefixed.refuses(ConsumerConnection::Https, "https://example.com/"),
            None
        );
    }

    #[test]
    fn a_registration_names_at_least_one_valid_account_and_no_unknown_field() {
        for (body, field) in [
            (json!({}), "accounts"),
            (json!({"accounts": ["12345"]}), "accounts"),
            (
                json!({"accounts": ["123456789012"], "name_prefixes": ["a b"]}),
                "name_prefixes",
            ),
            (json!({"accounts": ["123456789012"], "teams": []}), "teams"),
        ] {
            let errors = logistics(body.clone()).expect_err("invalid");
            assert!(
                errors.0.iter().any(|e| e.field == field),
                "{body}: {errors:?}"
            );
        }
    }
}
