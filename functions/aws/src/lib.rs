//! busway's AWS adapters of the ports in `busway_core::ports`: the event store and the
//! deployment store on one DynamoDB table, the object store on S3, the bus on EventBridge (the
//! Classic custom bus with rules, or the second-generation Custom Event Bus with subscribers).
//! They hold the SDK clients they are given; vendor errors leave them as `StoreError` variants (a
//! failed condition as `AlreadyExists`, `NotFound` or `Conflict`, throttling and timeouts as
//! `Unavailable`).

pub mod config;
pub mod dynamo;
mod error;
pub mod s3;

pub use config::{BucketNames, Config};
pub use dynamo::DynamoStore;
pub use s3::S3ObjectStore;
pub mod codebuild;
pub mod custom_bus;
pub mod dedup;
pub mod emf;
pub mod eventbridge;
pub mod host;
mod put_events;
pub mod schemas;
pub mod sfn;
pub mod subscribers;
pub mod usage_plans;
