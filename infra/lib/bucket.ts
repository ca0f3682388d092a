import { Duration, RemovalPolicy, Validations } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';

const SECURE: s3.BucketProps = {
  versioned: true,
  encryption: s3.BucketEncryption.S3_MANAGED,
  blockPublicAccess: s3.BlockPublicAccess.BLOCK_ALL,
  objectOwnership: s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
  enforceSSL: true,
  // Schemas and deploy.json files are the platform's record: a stack deletion never takes them.
  removalPolicy: RemovalPolicy.RETAIN,
};

/** The server access log bucket of a stack's buckets (SSE-S3: log delivery cannot use SSE-KMS). */
export function accessLogBucket(scope: Construct): s3.Bucket {
  const logs = new s3.Bucket(scope, 'AccessLogs', {
    ...SECURE,
    lifecycleRules: [{ expiration: Duration.days(365), noncurrentVersionExpiration: Duration.days(30) }],
  });
  Validations.of(logs).acknowledge({
    id: 'AwsSolutions-S1',
    reason: 'This is the access log bucket; logging its own log deliveries into itself would never end.',
  });
  return logs;
}

/** Versioned, SSE-S3, public access blocked, TLS only, access logs to `logs` under `{id}/`. */
export function secureBucket(scope: Construct, id: string, bucketName: string, logs: s3.IBucket): s3.Bucket {
  return new s3.Bucket(scope, id, { ...SECURE, bucketName, serverAccessLogsBucket: logs, serverAccessLogsPrefix: `${id}/` });
}
