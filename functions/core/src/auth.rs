//! Who is calling: API keys with a team and a role, stored by their SHA-256 only, and the one
//! `Caller` every request to either API becomes on both hosts.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::portal::PortalError;
use crate::ports::StoreError;
use crate::{Application, Team, Timestamp, ValidationErrors};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Everything, for every team.
    PlatformAdmin,
    /// A team's admin: changes what the team owns and subscribes for it.
    Owner,
    /// Publishes as its one application.
    Producer,
    /// Subscribes for its team and reads the team's subscriptions.
    Consumer,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::PlatformAdmin,
        Role::Owner,
        Role::Producer,
        Role::Consumer,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PlatformAdmin => "platform-admin",
            Self::Owner => "owner",
            Self::Producer => "producer",
            Self::Consumer => "consumer",
        }
    }

    /// "a producer key", "an owner key": how a refusal names the caller's key.
    pub fn a_key(self) -> &'static str {
        match self {
            Self::PlatformAdmin => "a platform-admin key",
            Self::Owner => "an owner key",
            Self::Producer => "a producer key",
            Self::Consumer => "a consumer key",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown role {s:?}: expected one of platform-admin, owner, producer, consumer"
                )
            })
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The identity of a request, built by each host from its key (locally) or from the API
/// Gateway authorizer's context (on AWS). Handlers see only this.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Caller {
    pub key_id: String,
    pub team: Team,
    pub role: Role,
    /// The application a producer key publishes as; `None` for the other roles.
    pub application: Option<Application>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.role == Role::PlatformAdmin
    }

    /// Platform admins, and the owners of `team`, change what `team` owns. What no team owns
    /// (records from before ownership) only platform admins change.
    pub fn manages(&self, team: Option<&Team>) -> bool {
        self.is_admin() || (self.role == Role::Owner && team == Some(&self.team))
    }

    /// Platform admins and any key of `team` read what `team` owns in full.
    pub fn belongs_to(&self, team: Option<&Team>) -> bool {
        self.is_admin() || team == Some(&self.team)
    }

    /// `Forbidden` naming `what` unless `allowed`.
    pub fn require(&self, allowed: bool, what: impl FnOnce() -> String) -> Result<(), PortalError> {
        if allowed {
            Ok(())
        } else {
            Err(PortalError::Forbidden(format!(
                "{} of team {} may not {}",
                self.role.a_key(),
                self.team,
                what()
            )))
        }
    }
}

/// The names a Lambda authorizer gives the caller under in API Gateway's request context.
pub const CONTEXT_KEY_ID: &str = "key_id";
pub const CONTEXT_TEAM: &str = "team";
pub const CONTEXT_ROLE: &str = "role";
pub const CONTEXT_APPLICATION: &str = "application";

impl Caller {
    /// The caller as the authorizer's context: string values only, as API Gateway passes them.
    pub fn to_context(&self) -> Vec<(&'static str, String)> {
        let mut context = vec![
            (CONTEXT_KEY_ID, self.key_id.clone()),
            (CONTEXT_TEAM, self.team.to_string()),
            (CONTEXT_ROLE, self.role.to_string()),
        ];
        if let Some(application) = &self.application {
            context.push((CONTEXT_APPLICATION, application.to_string()));
        }
        context
    }

    /// The caller an authorizer's context names; `None` when a part is missing or invalid.
    pub fn from_context(get: impl Fn(&str) -> Option<String>) -> Option<Self> {
        Some(Self {
            key_id: get(CONTEXT_KEY_ID)?,
            team: get(CONTEXT_TEAM)?.parse().ok()?,
            role: get(CONTEXT_ROLE)?.parse().ok()?,
            application: match get(CONTEXT_APPLICATION) {
                Some(a) if !a.is_empty() => Some(a.parse().ok()?),
                _ => None,
            },
        })
    }
}

/// A stored API key, without its secret: the store keeps only the secret's SHA-256 beside it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub team: Team,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub application: Option<Application>,
    #[serde(with = "time::serde::rfc3339")]
    pub created_at: Timestamp,
    /// When a rotated key stops working.
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires_at: Option<Timestamp>,
    #[serde(
        default,
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub revoked_at: Option<Timestamp>,
    /// How fast a producer key may publish; `None`: as fast as the broker takes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
}

/// A token bucket: `per_second` tokens a second, at most `burst` saved up; a publish takes one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub per_second: u32,
    pub burst: u32,
}

impl RateLimit {
    pub fn new(per_second: u32, burst: u32) -> Result<Self, String> {
        if per_second == 0 || burst == 0 {
            return Err("per_second and burst must be at least 1".into());
        }
        Ok(Self { per_second, burst })
    }
}

impl ApiKey {
    pub fn is_valid_at(&self, now: Timestamp) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| now < at)
    }

    pub fn caller(&self) -> Caller {
        Caller {
            key_id: self.id.clone(),
            team: self.team.clone(),
            role: self.role,
            application: self.application.clone(),
        }
    }
}

/// The value of the API Gateway key that stands for busway key `key_id` on AWS, and what the
/// authorizer names as the request's `usageIdentifierKey`: API Gateway takes key values of 20 to
/// 128 alphanumeric characters, and a key id (`key_` and 16 hex digits) has an underscore. It is
/// no secret: the broker API takes its API key from the authorizer only, never from a header.
pub fn usage_identifier(key_id: &str) -> String {
    let digits: String = key_id.chars().filter(char::is_ascii_alphanumeric).collect();
    format!("busway{digits}")
}

/// Keys begin with it, so a leaked one is recognisable (secret scanners, logs).
pub const KEY_PREFIX: &str = "bwk_";

/// How long a rotated key keeps working beside its successor.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 3600);

/// The hex SHA-256 of a key: what is stored and looked up. Keys are 256 random bits, so an
/// unsalted fast hash is enough (no dictionary to try), and lookups stay one index read.
pub fn hash_key(secret: &str) -> String {
    digest_hex(&key_digest(secret))
}

/// The SHA-256 of a key, whose hex is [`hash_key`]: a cache of looked-up keys holds this
/// instead of the secret, and spells it out with [`digest_hex`] only to ask the store.
pub fn key_digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// The stored hash of a key whose [`key_digest`] is `digest`.
pub fn digest_hex(digest: &[u8; 32]) -> String {
    hex::encode(digest)
}

/// `n` bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes<const N: usize>() -> anyhow::Result<[u8; N]> {
    let mut bytes = [0; N];
    getrandom::fill(&mut bytes)
        .map_err(|e| anyhow::anyhow!("the system's random source failed: {e}"))?;
    Ok(bytes)
}

/// The keys a team and role may have.
#[derive(Debug, Clone, PartialEq)]
pub struct NewKey {
    pub team: Team,
    pub role: Role,
    pub application: Option<Application>,
    /// Producer keys only.
    pub rate_limit: Option<RateLimit>,
}

impl NewKey {
    /// A producer key names its application; no other key does.
    pub fn new(
        team: Team,
        role: Role,
        application: Option<Application>,
    ) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        match (role, &application) {
            (Role::Producer, None) => {
                errors.push("application", "a producer key names its application")
            }
            (Role::Producer, Some(_)) | (_, None) => {}
            (_, Some(_)) => errors.push("application", "only producer keys name an application"),
        }
        errors.into_result(Self {
            team,
            role,
            application,
            rate_limit: None,
        })
    }

    /// The key with a rate limit, which only producer keys have.
    pub fn with_rate_limit(mut self, limit: RateLimit) -> Result<Self, ValidationErrors> {
        if self.role != Role::Producer {
            let mut errors = ValidationErrors::default();
            errors.push("rate_limit", "only producer keys have a rate limit");
            return Err(errors);
        }
        self.rate_limit = Some(limit);
        Ok(self)
    }

    /// `{"team", "role", "application"}` of `POST /keys`.
    pub fn from_json(body: &serde_json::Value) -> Result<Self, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        let Some(map) = body.as_object() else {
            errors.push("/", "body must be a JSON object");
            return Err(errors);
        };
        for key in map
            .keys()
            .filter(|k| !["team", "role", "application", "rate_limit"].contains(&k.as_str()))
        {
            errors.push(key.as_str(), "unknown field");
        }
        let mut field = |name: &str, required: bool| match map.get(name) {
            None | Some(serde_json::Value::Null) => {
                if required {
                    errors.push(name, "is required");
                }
                None
            }
            Some(serde_json::Value::String(s)) => Some(s.clone()),
            Some(_) => {
                errors.push(name, "must be a string");
                None
            }
        };
        let (team, role, application) = (
            field("team", true),
            field("role", true),
            field("application", false),
        );
        let team = team.and_then(|t| errors.check("team", t.parse::<Team>()));
        let role = role.and_then(|r| errors.check("role", r.parse::<Role>()));
        let application =
            application.and_then(|a| errors.check("application", a.parse::<Application>()));
        let rate_limit = map
            .get("rate_limit")
            .filter(|v| !v.is_null())
            .and_then(|v| {
                let number = |name: &str| v.get(name).and_then(serde_json::Value::as_u64);
                let limit = match (number("per_second"), number("burst")) {
                    (Some(rate), Some(burst)) => RateLimit::new(
                        u32::try_from(rate).unwrap_or(u32::MAX),
                        u32::try_from(burst).unwrap_or(u32::MAX),
                    ),
                    _ => {
                        Err("must be {\"per_second\": n, \"burst\": n} with integers from 1".into())
                    }
                };
                errors.check("rate_limit", limit)
            });
        match (team, role) {
            (Some(team), Some(role)) if errors.is_empty() => {
                let key = Self::new(team, role, application)?;
                match rate_limit {
                    Some(limit) => key.with_rate_limit(limit),
                    None => Ok(key),
                }
            }
            _ => Err(errors),
        }
    }
}

/// API keys. Secrets never reach the store: it holds each key's record beside the SHA-256 of
/// its secret.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    /// Returns `AlreadyExists` when a key with this id or hash exists.
    async fn put_key(&self, key: &ApiKey, hash: &str) -> Result<(), StoreError>;
    async fn key_by_hash(&self, hash: &str) -> Result<Option<ApiKey>, StoreError>;
    async fn get_key(&self, id: &str) -> Result<Option<ApiKey>, StoreError>;
    /// Every key, revoked and expired ones included, oldest first.
    async fn list_keys(&self) -> Result<Vec<ApiKey>, StoreError>;
    /// Replaces the record of `key.id`, keeping its hash; `NotFound` for an unknown id.
    async fn update_key(&self, key: &ApiKey) -> Result<(), StoreError>;
}

/// Makes a key; returns its record and the secret, which exists nowhere else from then on.
pub async fn create_key(
    store: &dyn KeyStore,
    new: NewKey,
) -> Result<(ApiKey, String), PortalError> {
    let id = format!("key_{}", hex::encode(random_bytes::<8>()?));
    let secret = format!("{KEY_PREFIX}{}", hex::encode(random_bytes::<32>()?));
    let key = ApiKey {
        id,
        team: new.team,
        role: new.role,
        application: new.application,
        created_at: crate::now(),
        expires_at: None,
        revoked_at: None,
        rate_limit: new.rate_limit,
    };
    store.put_key(&key, &hash_key(&secret)).await?;
    Ok((key, secret))
}

/// The team of the platform-admin key that `busway up` makes or takes.
pub const PLATFORM_TEAM: &str = "platform";

/// The shortest key `BUSWAY_ADMIN_KEY` may be: a short one could be guessed.
pub const MIN_GIVEN_KEY: usize = 32;

/// The bootstrap of a host: the platform-admin key `given` is stored when it is not yet (so it
/// works from then on); without one, a platform-admin key is made when no valid one exists, and
/// its secret returned to be shown once.
pub async fn bootstrap_admin(
    store: &dyn KeyStore,
    given: Option<&str>,
) -> Result<Option<String>, PortalError> {
    let team = Team::new(PLATFORM_TEAM).map_err(|e| PortalError::Unexpected(e.into()))?;
    if let Some(secret) = given {
        if secret.len() < MIN_GIVEN_KEY {
            let mut errors = ValidationErrors::default();
            errors.push(
                "BUSWAY_ADMIN_KEY",
                format!("must be at least {MIN_GIVEN_KEY} characters"),
            );
            return Err(PortalError::Invalid(errors));
        }
        let hash = hash_key(secret);
        if store.key_by_hash(&hash).await?.is_none() {
            let key = ApiKey {
                id: format!("key_{}", hex::encode(random_bytes::<8>()?)),
                team,
                role: Role::PlatformAdmin,
                application: None,
                created_at: crate::now(),
                expires_at: None,
                revoked_at: None,
                rate_limit: None,
            };
            store.put_key(&key, &hash).await?;
        }
        return Ok(None);
    }
    let now = crate::now();
    let has_admin = store
        .list_keys()
        .await?
        .iter()
        .any(|k| k.role == Role::PlatformAdmin && k.is_valid_at(now));
    if has_admin {
        return Ok(None);
    }
    let (_, secret) = create_key(store, NewKey::new(team, Role::PlatformAdmin, None)?).await?;
    Ok(Some(secret))
}

pub async fn revoke_key(store: &dyn KeyStore, id: &str) -> Result<ApiKey, PortalError> {
    let mut key = existing_key(store, id).await?;
    key.revoked_at.get_or_insert_with(crate::now);
    store.update_key(&key).await?;
    Ok(key)
}

/// A new key with the same team, role and application; the old one keeps working for
/// `overlap`, so its users can switch without an outage.
pub async fn rotate_key(
    store: &dyn KeyStore,
    id: &str,
    overlap: Duration,
) -> Result<(ApiKey, String), PortalError> {
    let mut old = existing_key(store, id).await?;
    if !old.is_valid_at(crate::now()) {
        return Err(PortalError::Conflict(format!(
            "key {id} is revoked or expired; create a new one"
        )));
    }
    let new = NewKey {
        team: old.team.clone(),
        role: old.role,
        application: old.application.clone(),
        rate_limit: old.rate_limit,
    };
    let made = create_key(store, new).await?;
    let ends = crate::now() + overlap;
    old.expires_at = Some(old.expires_at.map_or(ends, |at| at.min(ends)));
    store.update_key(&old).await?;
    Ok(made)
}

async fn existing_key(store: &dyn KeyStore, id: &str) -> Result<ApiKey, PortalError> {
    store
        .get_key(id)
        .await?
        .ok_or_else(|| PortalError::NotFound(format!("key {id}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(role: Role, team: &str) -> Caller {
        Caller {
            key_id: "key_1".into(),
            team: team.parse().expect("a team"),
            role,
            application: None,
        }
    }

    #[test]
    fn a_refusal_names_the_key_in_english() {
        let refused = caller(Role::Owner, "billing")
            .require(false, || "delete it".into())
            .expect_err("refused");
        assert_eq!(
            refused.to_string(),
            "an owner key of team billing may not delete it"
        );
    }

    #[test]
    fn only_owners_of_the_team_and_platform_admins_manage_it() {
        let logistics: Team = "logistics".parse().expect("a team");
        assert!(caller(Role::Owner, "logistics").manages(Some(&logistics)));
        assert!(caller(Role::PlatformAdmin, "platform").manages(Some(&logistics)));
        assert!(!caller(Role::Owner, "billing").manages(Some(&logistics)));
        assert!(!caller(Role::Consumer, "logistics").manages(Some(&logistics)));
        assert!(!caller(Role::Owner, "logistics").manages(None));
    }

    #[test]
    fn a_producer_key_names_its_application_and_no_other_key_does() {
        let team: Team = "logistics".parse().expect("a team");
        let app: Application = "demo".parse().expect("an application");
        assert!(NewKey::new(team.clone(), Role::Producer, None).is_err());
        assert!(NewKey::new(team.clone(), Role::Producer, Some(app.clone())).is_ok());
        assert!(NewKey::new(team.clone(), Role::Owner, Some(app)).is_err());
        assert!(NewKey::new(team, Role::Consumer, None).is_ok());
    }

    #[test]
    fn a_usage_identifier_is_an_api_gateway_key_value() {
        let value = usage_identifier("key_0123456789abcdef");
        assert_eq!(value, "buswaykey0123456789abcdef");
        assert!((20..=128).contains(&value.len()));
        assert!(value.chars().all(|c| c.is_ascii_alphanumeric()));
    }

    #[test]
    fn the_stored_hash_is_the_sha256_of_the_key() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hash_key("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
