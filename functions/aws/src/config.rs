//! What the AWS host reads from its environment: the names infra gives the table and the
//! buckets (`ENV_VARS` in infra/lib/names.ts).

use anyhow::Context;
use busway_core::ports::Bucket;

pub const TABLE_NAME: &str = "BUSWAY_TABLE_NAME";
pub const SCHEMA_BACKUP_BUCKET: &str = "BUSWAY_SCHEMA_BACKUP_BUCKET";
pub const PUBLISHER_BUCKET: &str = "BUSWAY_PUBLISHER_BUCKET";
pub const SUBSCRIBER_BUCKET: &str = "BUSWAY_SUBSCRIBER_BUCKET";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub table_name: String,
    pub buckets: BucketNames,
}

impl Config {
    pub fn from_env() -> anyhow::Result<Self> {
        Self::from_lookup(|key| std::env::var(key).ok())
    }

    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> anyhow::Result<Self> {
        let get = |key: &str| lookup(key).with_context(|| format!("{key} is not set"));
        Ok(Self {
            table_name: get(TABLE_NAME)?,
            buckets: BucketNames {
                schema_backup: get(SCHEMA_BACKUP_BUCKET)?,
                publisher: get(PUBLISHER_BUCKET)?,
                subscriber: get(SUBSCRIBER_BUCKET)?,
            },
        })
    }
}

/// The real bucket of each of the seed's three buckets: names are global on S3, so infra
/// appends the account to the seed's names and the adapter is told the result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketNames {
    pub schema_backup: String,
    pub publisher: String,
    pub subscriber: String,
}

impl BucketNames {
    pub fn name(&self, bucket: Bucket) -> &str {
        match bucket {
            Bucket::SchemaBackup => &self.schema_backup,
            Bucket::Publisher => &self.publisher,
            Bucket::Subscriber => &self.subscriber,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_bucket_has_its_configured_name_and_a_missing_one_is_named() {
        let env = |key: &str| match key {
            TABLE_NAME => Some("dev-self-service-events-table".to_string()),
            SCHEMA_BACKUP_BUCKET => Some("b".to_string()),
            PUBLISHER_BUCKET => Some("p".to_string()),
            SUBSCRIBER_BUCKET => Some("s".to_string()),
            _ => None,
        };
        let config = Config::from_lookup(env).expect("complete");
        let names: Vec<&str> = Bucket::ALL
            .into_iter()
            .map(|b| config.buckets.name(b))
            .collect();
        assert_eq!(names, ["b", "p", "s"]);
        let err = Config::from_lookup(|key| (key != PUBLISHER_BUCKET).then(|| env(key)).flatten())
            .expect_err("incomplete");
        assert!(err.to_string().contains(PUBLISHER_BUCKET), "{err}");
    }
}
