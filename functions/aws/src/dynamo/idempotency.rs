//! The answers kept for the portal's `Idempotency-Key`s: one item per caller-scoped key,
//! `IDEMPOTENCY#{key}`, which DynamoDB's TTL (`expires_at`, infra's `timeToLiveAttribute`)
//! deletes some time after it expires; until then an expired item counts as absent.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::delete_item::DeleteItemError;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use aws_sdk_dynamodb::operation::update_item::UpdateItemError;
use aws_sdk_dynamodb::types::ReturnValuesOnConditionCheckFailure;
use busway_core::idempotency::{Answer, IdempotencyStore, Record};
use busway_core::ports::StoreError;

use super::DynamoStore;
use super::item::{from_item, n, s, to_attributes};
use super::keys::{PK, SK};
use crate::dedup::EXPIRES_AT;
use crate::error::store_error;

const ITEM_SK: &str = "IDEMPOTENCY";

fn pk(key: &str) -> String {
    format!("IDEMPOTENCY#{key}")
}

/// The item's fields beside its keys.
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    fingerprint: String,
    token: String,
    #[serde(default)]
    status: Option<u16>,
    #[serde(default)]
    body: Option<String>,
    expires_at: i64,
}

impl Stored {
    fn of(record: &Record) -> Self {
        Self {
            fingerprint: record.fingerprint.clone(),
            token: record.token.clone(),
            status: record.answer.as_ref().map(|a| a.status),
            body: record.answer.as_ref().map(|a| a.body.clone()),
            expires_at: record.expires_at,
        }
    }

    fn record(self, key: &str) -> Record {
        Record {
            key: key.to_string(),
            fingerprint: self.fingerprint,
            token: self.token,
            answer: self
                .status
                .zip(self.body)
                .map(|(status, body)| Answer { status, body }),
            expires_at: self.expires_at,
        }
    }
}

#[async_trait]
impl IdempotencyStore for DynamoStore {
    async fn claim(&self, claim: &Record, now: i64) -> Result<Option<Record>, StoreError> {
        let mut item = to_attributes(&Stored::of(claim))?;
        item.insert(PK.into(), s(pk(&claim.key)));
        item.insert(SK.into(), s(ITEM_SK));
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(PK) OR #expires < :now")
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_values(":now", n(now))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::AllOld)
            .send()
            .await;
        match put {
            Ok(_) => Ok(None),
            Err(e) => match e.as_service_error() {
                Some(PutItemError::ConditionalCheckFailedException(failed)) => {
                    let found = failed.item().ok_or_else(|| {
                        StoreError::Unexpected(anyhow::anyhow!(
                            "a refused idempotency claim returned no item"
                        ))
                    })?;
                    Ok(Some(from_item::<Stored>(found)?.record(&claim.key)))
                }
                _ => Err(store_error("PutItem", e)),
            },
        }
    }

    async fn complete(&self, done: &Record) -> Result<(), StoreError> {
        let Some(answer) = &done.answer else {
            return Err(StoreError::Unexpected(anyhow::anyhow!(
                "an idempotency record completed without an answer"
            )));
        };
        let sent = self
            .client
            .update_item()
            .table_name(&self.table)
            .key(PK, s(pk(&done.key)))
            .key(SK, s(ITEM_SK))
            .update_expression("SET #status = :status, body = :body, #expires = :expires")
            .condition_expression("#token = :token")
            .expression_attribute_names("#status", "status")
            .expression_attribute_names("#expires", EXPIRES_AT)
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":status", n(answer.status))
            .expression_attribute_values(":body", s(answer.body.clone()))
            .expression_attribute_values(":expires", n(done.expires_at))
            .expression_attribute_values(":token", s(done.token.clone()))
            .send()
            .await;
        match sent {
            // Another request took the key over after this one's lease: its claim stands.
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(UpdateItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(store_error("UpdateItem", e)),
            Ok(_) => Ok(()),
        }
    }

    async fn release(&self, key: &str, token: &str) -> Result<(), StoreError> {
        let sent = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key(PK, s(pk(key)))
            .key(SK, s(ITEM_SK))
            .condition_expression("#token = :token")
            .expression_attribute_names("#token", "token")
            .expression_attribute_values(":token", s(token))
            .send()
            .await;
        match sent {
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(DeleteItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Ok(())
            }
            Err(e) => Err(store_error("DeleteItem", e)),
            Ok(_) => Ok(()),
        }
    }
}
