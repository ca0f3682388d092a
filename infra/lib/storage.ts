// Seed steps 1 and 2: the schema backup bucket, and the configuration buckets the portal writes
// deploy.json files to (their notifications to the provisioner live in the provisioning stack,
// which imports them, so that this stack never depends on a later one).
import { Duration, Stack, StackProps } from 'aws-cdk-lib';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import { Construct } from 'constructs';
import { accessLogBucket, secureBucket } from './bucket';
import { Names, parameterName } from './names';

/** Where the broker stores the data of events above the bus entry limit (busway_core::claim_check::PREFIX). */
export const CLAIM_CHECK_PREFIX = 'claim-checks/';
/** How long a claim check is kept (busway_core::claim_check::RETENTION_DAYS): a dead letter redriven within the 14 days its queue keeps it still opens. */
export const CLAIM_CHECK_RETENTION_DAYS = 14;

export class SchemaBackupStack extends Stack {
  readonly bucket: s3.Bucket;

  constructor(scope: Construct, names: Names, props: StackProps = {}) {
    super(scope, names.stack('backup'), { ...props, stackName: names.stack('backup') });
    const logs = accessLogBucket(this);
    this.bucket = secureBucket(this, 'SchemaBackup', names.bucket('event-schemas-backup-bucket', this.account), logs);
    // Schemas are kept; claim checks expire. The bucket is versioned: expiry leaves a delete
    // marker and a noncurrent version, which the next day removes, then the marker goes too.
    this.bucket.addLifecycleRule({
      id: 'ExpireClaimChecks',
      prefix: CLAIM_CHECK_PREFIX,
      expiration: Duration.days(CLAIM_CHECK_RETENTION_DAYS),
      noncurrentVersionExpiration: Duration.days(1),
    });
    this.bucket.addLifecycleRule({ id: 'RemoveExpiredClaimCheckMarkers', prefix: CLAIM_CHECK_PREFIX, expiredObjectDeleteMarker: true });
    // Consumer stacks scope their claim-check reader policy to this bucket.
    new ssm.StringParameter(this, 'SchemaBackupBucketParameter', {
      parameterName: parameterName(names.env, 'schemaBackupBucket'),
      stringValue: this.bucket.bucketName,
    });
  }
}

export class ConfigStorageStack extends Stack {
  readonly publisher: s3.Bucket;
  readonly subscriber: s3.Bucket;

  constructor(scope: Construct, names: Names, props: StackProps = {}) {
    super(scope, names.stack('storage'), { ...props, stackName: names.stack('storage') });
    const logs = accessLogBucket(this);
    this.publisher = secureBucket(this, 'Publisher', names.bucket('publisher-components-bucket', this.account), logs);
    this.subscriber = secureBucket(this, 'Subscriber', names.bucket('subscriber-components-bucket', this.account), logs);
  }
}
