//! busway's AWS adapters of the ports in `busway_core::ports`: the event store and the
//! deployment store on one DynamoDB table, the object store on S3. They hold the SDK clients
//! they are given; vendor errors leave them as `StoreError` variants (a failed condition as
//! `AlreadyExists`, `NotFound` or `Conflict`, throttling and timeouts as `Unavailable`).

pub mod config;
pub mod dynamo;
mod error;
pub mod s3;

pub use config::{BucketNames, Config};
pub use dynamo::DynamoStore;
pub use s3::S3ObjectStore;
pub mod codebuild;
pub mod dedup;
pub mod eventbridge;
pub mod host;
pub mod schemas;
pub mod sfn;
