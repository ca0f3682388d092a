//! What both test files share: the platform's bucket names and S3 notifications as S3 sends
//! them.

use busway_aws::BucketNames;
use busway_provisioner::Request;
use serde_json::json;

pub fn buckets() -> BucketNames {
    BucketNames {
        schema_backup: "dev-event-schemas-backup-bucket-123456789012".into(),
        publisher: "dev-publisher-components-bucket-123456789012".into(),
        subscriber: "dev-subscriber-components-bucket-123456789012".into(),
    }
}

/// An `ObjectCreated:Put` notification of one object, as S3 delivers it to Lambda.
pub fn s3_notification(bucket: &str, key: &str) -> Request {
    s3_notification_of(bucket, key, None)
}

/// The notification S3 sends for one object version (`versionId`, in a versioned bucket).
pub fn s3_notification_of(bucket: &str, key: &str, version: Option<&str>) -> Request {
    let mut object = json!({"key": key, "size": 1024, "eTag": "d41d8cd98f00b204e9800998ecf8427e", "sequencer": "0055AED6DCD90281E5"});
    if let Some(version) = version {
        object["versionId"] = json!(version);
    }
    serde_json::from_value(json!({"Records": [{
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": "eu-west-1",
        "eventTime": "2026-11-27T04:00:00.000Z",
        "eventName": "ObjectCreated:Put",
        "userIdentity": {"principalId": "AWS:AROAEXAMPLE:portal"},
        "requestParameters": {"sourceIPAddress": "10.0.0.1"},
        "responseElements": {"x-amz-request-id": "C3D13FE58DE4C810", "x-amz-id-2": "FMyUVURIY8"},
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": "deploy-json",
            "bucket": {
                "name": bucket,
                "ownerIdentity": {"principalId": "A3NL1KOZZKExample"},
                "arn": format!("arn:aws:s3:::{bucket}")
            },
            "object": object
        }
    }]}))
    .expect("an S3 notification")
}
