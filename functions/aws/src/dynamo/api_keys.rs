//! API keys on the table: one item per key under `KEY#{sha256 of the secret}`, so the authorizer
//! finds a key with one GetItem; GSI1 lists them, GSI2 finds one by its id. And the signing
//! secrets of each subscription, an item beside the subscription's.

use async_trait::async_trait;
use aws_sdk_dynamodb::operation::put_item::PutItemError;
use busway_core::auth::{ApiKey, KeyStore};
use busway_core::ports::StoreError;
use busway_core::webhook::{SigningSecret, SigningSecrets};

use super::item::{Item, from_item, s, to_attribute, to_attributes};
use super::keys::*;
use super::{DynamoStore, Index, QueryOf};
use crate::error::store_error;

pub const KEY_SK: &str = "KEY";
pub const ALL_KEYS: &str = "KEYS";

pub fn key_pk(hash: &str) -> String {
    format!("KEY#{hash}")
}

fn key_id_pk(id: &str) -> String {
    format!("KEYID#{id}")
}

/// The item of a key: its record, its hash and its index keys.
fn key_item(key: &ApiKey, hash: &str) -> Result<Item, StoreError> {
    let mut item = to_attributes(key)?;
    item.insert(PK.into(), s(key_pk(hash)));
    item.insert(SK.into(), s(KEY_SK));
    item.insert("hash".into(), s(hash));
    item.insert(GSI1PK.into(), s(ALL_KEYS));
    item.insert(
        GSI1SK.into(),
        s(format!(
            "{}#{}",
            key.created_at.unix_timestamp_nanos(),
            key.id
        )),
    );
    item.insert(GSI2PK.into(), s(key_id_pk(&key.id)));
    item.insert(GSI2SK.into(), s(KEY_SK));
    Ok(item)
}

impl DynamoStore {
    /// The hash a key's item is stored under, from the id index.
    async fn key_item_by_id(&self, id: &str) -> Result<Option<Item>, StoreError> {
        Ok(self
            .query(QueryOf::new(Index::Gsi2, key_id_pk(id)))
            .await?
            .into_iter()
            .next())
    }
}

#[async_trait]
impl KeyStore for DynamoStore {
    async fn put_key(&self, key: &ApiKey, hash: &str) -> Result<(), StoreError> {
        let sent = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(key_item(key, hash)?))
            .condition_expression("attribute_not_exists(PK)")
            .send()
            .await;
        match sent {
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Err(StoreError::AlreadyExists(format!("key {}", key.id)))
            }
            Err(e) => Err(store_error("PutItem", e)),
            Ok(_) => Ok(()),
        }
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        self.get(key_pk(hash), KEY_SK)
            .await?
            .map(|item| from_item(&item))
            .transpose()
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        self.key_item_by_id(id)
            .await?
            .map(|item| from_item(&item))
            .transpose()
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.query(QueryOf::new(Index::Gsi1, ALL_KEYS))
            .await?
            .iter()
            .map(from_item)
            .collect()
    }

    async fn update_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        let Some(item) = self.key_item_by_id(&key.id).await? else {
            return Err(StoreError::NotFound(format!("key {}", key.id)));
        };
        let Some(hash) = item.get("hash").and_then(|h| h.as_s().ok()) else {
            return Err(anyhow::anyhow!("the item of key {} has no hash", key.id).into());
        };
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(key_item(key, hash)?))
            .condition_expression("attribute_exists(PK)")
            .send()
            .await
            .map_err(|e| store_error("PutItem", e))?;
        Ok(())
    }
}

pub const SIGNING_SECRETS_SK: &str = "SIGNING_SECRETS";

#[async_trait]
impl SigningSecrets for DynamoStore {
    async fn signing_secrets(&self, id: &str) -> Result<Vec<SigningSecret>, StoreError> {
        let Some(item) = self.get(subscription_pk(id), SIGNING_SECRETS_SK).await? else {
            return Ok(Vec::new());
        };
        #[derive(serde::Deserialize)]
        struct Secrets {
            secrets: Vec<SigningSecret>,
        }
        Ok(from_item::<Secrets>(&item)?.secrets)
    }

    async fn put_signing_secrets(
        &self,
        id: &str,
        read: &[SigningSecret],
        secrets: &[SigningSecret],
    ) -> Result<(), StoreError> {
        let mut item = to_attributes(&serde_json::json!({}))?;
        item.insert(PK.into(), s(subscription_pk(id)));
        item.insert(SK.into(), s(SIGNING_SECRETS_SK));
        let list = serde_json::to_value(secrets).map_err(|e| StoreError::Unexpected(e.into()))?;
        item.insert("secrets".into(), to_attribute(list));
        // Every write puts a new secret first, so the first one read tells whether another
        // writer came between the read and this write.
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let put = match read.first() {
            None => put.condition_expression("attribute_not_exists(PK)"),
            Some(newest) => put
                .condition_expression("#secrets[0].#secret = :newest")
                .expression_attribute_names("#secrets", "secrets")
                .expression_attribute_names("#secret", "secret")
                .expression_attribute_values(":newest", s(&newest.secret)),
        };
        match put.send().await {
            Err(e)
                if matches!(
                    e.as_service_error(),
                    Some(PutItemError::ConditionalCheckFailedException(_))
                ) =>
            {
                Err(StoreError::Conflict(format!(
                    "the signing secrets of subscription {id} changed since they were read"
                )))
            }
            Err(e) => Err(store_error("PutItem", e)),
            Ok(_) => Ok(()),
        }
    }
}
