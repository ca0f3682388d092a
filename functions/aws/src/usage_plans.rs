//! API Gateway's part of a busway key on AWS: a producer key's rate limit holds where API Gateway
//! enforces it, in the throttle of a usage plan on the broker API's stage. Every busway key has an
//! API Gateway key named by its id, of the value the authorizer answers as `usageIdentifierKey`
//! (`auth::usage_identifier`); the broker API's event routes require one (`apiKeyRequired`), so a
//! busway key without it is refused by API Gateway.
//!
//! A key without a rate limit is in the broker stage's default plan (infra, named by
//! `BUSWAY_BROKER_USAGE_PLAN`); a key with one is in the plan of that limit,
//! `{default plan}-rate-{per_second}-{burst}`, made with the default plan's stages when the first
//! key of that limit is made and shared by every key of that limit: API Gateway throttles each key
//! of a plan on its own, and an account has few plans (its quota), so a plan per limit, not per
//! key. Plans are kept when their last key goes: deleting one means removing its stages first,
//! and `UpdateUsagePlan` takes one call per 20 seconds per account.
//!
//! `GatewayKeys` puts this beside any key store: a key's API Gateway key is made before its record
//! is stored (so a stored producer key is never refused for want of one) and deleted before a
//! revocation is stored. `sync` makes what is missing for keys made before this existed, and
//! deletes what revoked or expired keys left.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_apigateway::types::{ThrottleSettings, UsagePlan};
use busway_core::auth::{self, ApiKey, KeyStore, RateLimit};
use busway_core::ports::StoreError;
use serde::Serialize;

use crate::error::store_error;

/// The broker stage's default usage plan, by name (infra/lib/broker-api.ts).
pub const USAGE_PLAN: &str = "BUSWAY_BROKER_USAGE_PLAN";

/// API Gateway's largest page of keys or plans.
const PAGE: i32 = 500;

/// The usage plans of the broker stage and the API Gateway keys of busway keys.
pub struct UsagePlans {
    client: aws_sdk_apigateway::Client,
    default_plan: String,
}

/// What `UsagePlans::sync` changed: busway key ids.
#[derive(Debug, Default, PartialEq, Serialize)]
pub struct Synced {
    /// Valid keys that got their API Gateway key, or were put back into their plan.
    pub made: Vec<String>,
    /// Revoked or expired keys whose API Gateway key was deleted.
    pub deleted: Vec<String>,
}

impl UsagePlans {
    pub fn new(client: aws_sdk_apigateway::Client, default_plan: impl Into<String>) -> Self {
        Self {
            client,
            default_plan: default_plan.into(),
        }
    }

    /// The name of the plan whose throttle is `limit`.
    pub fn plan_name(&self, limit: Option<RateLimit>) -> String {
        match limit {
            None => self.default_plan.clone(),
            Some(l) => format!("{}-rate-{}-{}", self.default_plan, l.per_second, l.burst),
        }
    }

    fn is_ours(&self, plan: &UsagePlan) -> bool {
        plan.name().is_some_and(|name| {
            name == self.default_plan || name.starts_with(&format!("{}-rate-", self.default_plan))
        })
    }

    /// Every usage plan of the region.
    async fn plans(&self, key_id: Option<&str>) -> Result<Vec<UsagePlan>, StoreError> {
        let mut plans = Vec::new();
        let mut position = None;
        loop {
            let page = self
                .client
                .get_usage_plans()
                .set_key_id(key_id.map(str::to_string))
                .limit(PAGE)
                .set_position(position)
                .send()
                .await
                .map_err(|e| store_error("GetUsagePlans", e))?;
            plans.extend(page.items().iter().cloned());
            position = page.position().map(str::to_string);
            if position.is_none() || page.items().is_empty() {
                return Ok(plans);
            }
        }
    }

    /// The id of the plan of `limit`, made from the default plan's stages when missing.
    async fn plan_for(&self, limit: Option<RateLimit>) -> Result<String, StoreError> {
        let plans = self.plans(None).await?;
        let named = |name: &str| plans.iter().find(|p| p.name() == Some(name));
        let no_id = |name: &str| {
            StoreError::Unexpected(anyhow::anyhow!(
                "the broker API's usage plan {name} does not exist (infra's broker API stack makes it)"
            ))
        };
        let default = named(&self.default_plan).ok_or_else(|| no_id(&self.default_plan))?;
        let Some(limit) = limit else {
            return default
                .id()
                .map(str::to_string)
                .ok_or_else(|| no_id(&self.default_plan));
        };
        let name = self.plan_name(Some(limit));
        if let Some(id) = named(&name).and_then(UsagePlan::id) {
            return Ok(id.to_string());
        }
        let throttle = ThrottleSettings::builder()
            .rate_limit(f64::from(limit.per_second))
            .burst_limit(i32::try_from(limit.burst).unwrap_or(i32::MAX))
            .build();
        let made = self
            .client
            .create_usage_plan()
            .name(&name)
            .description(format!(
                "busway producer keys limited to {} requests a second, bursts of {}",
                limit.per_second, limit.burst
            ))
            .throttle(throttle)
            .set_api_stages(Some(default.api_stages().to_vec()))
            .send()
            .await
            .map_err(|e| store_error("CreateUsagePlan", e))?;
        made.id().map(str::to_string).ok_or_else(|| no_id(&name))
    }

    /// `(name, id)` of the API Gateway keys named `name`, or of all (the name query matches by
    /// prefix, so names are compared here).
    async fn gateway_keys(&self, name: Option<&str>) -> Result<Vec<(String, String)>, StoreError> {
        let mut keys = Vec::new();
        let mut position = None;
        loop {
            let page = self
                .client
                .get_api_keys()
                .set_name_query(name.map(str::to_string))
                .limit(PAGE)
                .set_position(position)
                .send()
                .await
                .map_err(|e| store_error("GetApiKeys", e))?;
            keys.extend(page.items().iter().filter_map(|k| {
                let (key_name, id) = (k.name()?, k.id()?);
                name.is_none_or(|n| n == key_name)
                    .then(|| (key_name.to_string(), id.to_string()))
            }));
            position = page.position().map(str::to_string);
            if position.is_none() || page.items().is_empty() {
                return Ok(keys);
            }
        }
    }

    /// Makes `key`'s API Gateway key in the plan of its limit (again: a key already made is
    /// taken, a key already in the plan stays).
    pub async fn attach(&self, key: &ApiKey) -> Result<(), StoreError> {
        let plan = self.plan_for(key.rate_limit).await?;
        let made = self
            .client
            .create_api_key()
            .name(&key.id)
            .value(auth::usage_identifier(&key.id))
            .enabled(true)
            .description(format!("busway {} key of team {}", key.role, key.team))
            .send()
            .await;
        let gateway_key = match made {
            Ok(made) => made.id().map(str::to_string),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conflict_exception()) =>
            {
                self.gateway_keys(Some(&key.id))
                    .await?
                    .into_iter()
                    .next()
                    .map(|(_, id)| id)
            }
            Err(e) => return Err(store_error("CreateApiKey", e)),
        }
        .ok_or_else(|| StoreError::Unexpected(anyhow::anyhow!("no API key for {}", key.id)))?;
        self.add_to_plan(&plan, &gateway_key).await
    }

    async fn add_to_plan(&self, plan: &str, gateway_key: &str) -> Result<(), StoreError> {
        match self
            .client
            .create_usage_plan_key()
            .usage_plan_id(plan)
            .key_id(gateway_key)
            .key_type("API_KEY")
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_conflict_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(store_error("CreateUsagePlanKey", e)),
        }
    }

    /// Deletes the API Gateway key of busway key `key_id`, out of its plans first.
    pub async fn detach(&self, key_id: &str) -> Result<(), StoreError> {
        for (_, gateway_key) in self.gateway_keys(Some(key_id)).await? {
            self.delete(&gateway_key).await?;
        }
        Ok(())
    }

    async fn delete(&self, gateway_key: &str) -> Result<(), StoreError> {
        for plan in self.plans(Some(gateway_key)).await? {
            let Some(plan) = plan.id() else { continue };
            match self
                .client
                .delete_usage_plan_key()
                .usage_plan_id(plan)
                .key_id(gateway_key)
                .send()
                .await
            {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|e| e.is_not_found_exception()) => {}
                Err(e) => return Err(store_error("DeleteUsagePlanKey", e)),
            }
        }
        match self
            .client
            .delete_api_key()
            .api_key(gateway_key)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|e| e.is_not_found_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(store_error("DeleteApiKey", e)),
        }
    }

    /// Brings API Gateway in line with `keys`: a valid key without its API Gateway key, or
    /// whose API Gateway key is in none of the broker's plans, gets it; a revoked or expired
    /// key's API Gateway key is deleted. API Gateway keys of no key in `keys` are left alone
    /// (they may be another environment's).
    pub async fn sync(&self, keys: &[ApiKey]) -> Result<Synced, StoreError> {
        let now = busway_core::now();
        let gateway: HashMap<String, String> = self.gateway_keys(None).await?.into_iter().collect();
        let mut planned = HashSet::new();
        for plan in self.plans(None).await? {
            let Some(id) = plan.id().filter(|_| self.is_ours(&plan)) else {
                continue;
            };
            planned.extend(self.plan_keys(id).await?);
        }
        let mut synced = Synced::default();
        for key in keys {
            let gateway_key = gateway.get(&key.id);
            if key.is_valid_at(now) {
                if gateway_key.is_none_or(|k| !planned.contains(k)) {
                    self.attach(key).await?;
                    synced.made.push(key.id.clone());
                }
            } else if let Some(gateway_key) = gateway_key {
                self.delete(gateway_key).await?;
                synced.deleted.push(key.id.clone());
            }
        }
        Ok(synced)
    }

    /// The ids of the API Gateway keys in plan `id`.
    async fn plan_keys(&self, id: &str) -> Result<Vec<String>, StoreError> {
        let mut keys = Vec::new();
        let mut position = None;
        loop {
            let page = self
                .client
                .get_usage_plan_keys()
                .usage_plan_id(id)
                .limit(PAGE)
                .set_position(position)
                .send()
                .await
                .map_err(|e| store_error("GetUsagePlanKeys", e))?;
            keys.extend(
                page.items()
                    .iter()
                    .filter_map(|k| k.id().map(str::to_string)),
            );
            position = page.position().map(str::to_string);
            if position.is_none() || page.items().is_empty() {
                return Ok(keys);
            }
        }
    }
}

/// A key store whose keys have their API Gateway key and usage plan (module docs).
pub struct GatewayKeys {
    keys: Arc<dyn KeyStore>,
    plans: UsagePlans,
}

impl GatewayKeys {
    pub fn new(keys: Arc<dyn KeyStore>, plans: UsagePlans) -> Self {
        Self { keys, plans }
    }

    pub fn plans(&self) -> &UsagePlans {
        &self.plans
    }
}

#[async_trait]
impl KeyStore for GatewayKeys {
    async fn put_key(&self, key: &ApiKey, hash: &str) -> Result<(), StoreError> {
        self.plans.attach(key).await?;
        if let Err(e) = self.keys.put_key(key, hash).await {
            // A key that was never stored needs no API Gateway key; `sync` deletes none of a
            // key it does not know, so this is the one chance.
            if let Err(undo) = self.plans.detach(&key.id).await {
                tracing::warn!(key = %key.id, error = %undo, "the API Gateway key of a key that was not stored is left");
            }
            return Err(e);
        }
        Ok(())
    }

    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError> {
        self.keys.key_by_hash(hash).await
    }

    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError> {
        self.keys.get_key(id).await
    }

    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError> {
        self.keys.list_keys().await
    }

    /// A revocation deletes the key's API Gateway key first: if storing it then fails, the key
    /// is refused by API Gateway until the revocation is tried again. A rotated key keeps its
    /// own until `sync` finds it expired (the authorizer refuses it from then on anyway).
    async fn update_key(&self, key: &ApiKey) -> Result<(), StoreError> {
        if key.revoked_at.is_some() {
            self.plans.detach(&key.id).await?;
        }
        self.keys.update_key(key).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_limited_key_is_in_the_plan_of_its_limit() {
        let client = aws_sdk_apigateway::Client::from_conf(
            aws_sdk_apigateway::Config::builder()
                .behavior_version(aws_sdk_apigateway::config::BehaviorVersion::latest())
                .build(),
        );
        let plans = UsagePlans::new(client, "dev-event-broker-api-default");
        assert_eq!(plans.plan_name(None), "dev-event-broker-api-default");
        let limit = RateLimit::new(5, 10).expect("a limit");
        assert_eq!(
            plans.plan_name(Some(limit)),
            "dev-event-broker-api-default-rate-5-10"
        );
        let plan = |name: &str| UsagePlan::builder().name(name).build();
        assert!(plans.is_ours(&plan("dev-event-broker-api-default-rate-5-10")));
        assert!(!plans.is_ours(&plan("prod-event-broker-api-default")));
    }
}
