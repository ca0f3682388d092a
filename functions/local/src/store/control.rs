//! Paused subscriptions (table `paused_subscriptions`): a paused subscription has no worker, so
//! its cursor and its retry schedule wait where they are until it is resumed.

use busway_core::ports::StoreError;
use rusqlite::{OptionalExtension, params};
use serde_json::Value;

use super::{SqliteStore, from_json, sql};

impl SqliteStore {
    pub async fn is_paused(&self, subscription_id: &str) -> Result<bool, StoreError> {
        let id = subscription_id.to_string();
        self.run(move |conn| {
            conn.query_row(
                "SELECT 1 FROM paused_subscriptions WHERE subscription_id = ?1",
                params![id],
                |_| Ok(()),
            )
            .optional()
            .map(|found| found.is_some())
            .map_err(sql)
        })
        .await
    }

    /// Marks the subscription paused or running; false when it already was.
    pub async fn set_paused(
        &self,
        subscription_id: &str,
        paused: bool,
    ) -> Result<bool, StoreError> {
        let id = subscription_id.to_string();
        self.run(move |conn| {
            let changed =
                if paused {
                    conn.execute(
                    "INSERT INTO paused_subscriptions (subscription_id, paused_at) VALUES (?1, ?2)
                     ON CONFLICT (subscription_id) DO NOTHING",
                    params![id, busway_core::envelope::eventbridge_time(busway_core::now())],
                )
                } else {
                    conn.execute(
                        "DELETE FROM paused_subscriptions WHERE subscription_id = ?1",
                        params![id],
                    )
                };
            changed.map(|n| n == 1).map_err(sql)
        })
        .await
    }

    /// A deployed rule's consumer deploy.json.
    pub async fn rule(&self, subscription_id: &str) -> Result<Option<Value>, StoreError> {
        let id = subscription_id.to_string();
        self.run(move |conn| {
            conn.query_row(
                "SELECT doc FROM rules WHERE subscription_id = ?1",
                params![id],
                |r| from_json(&r.get::<_, String>(0)?),
            )
            .optional()
            .map_err(sql)
        })
        .await
    }
}
