// Physical names of the platform, per environment: the seed's names where it gave one
// (the seed's steps 1-4), `{env}-busway-*` for what the seed did not have.
import { ENV_PATTERN } from '../../cdk-app/lib/platform-names';

export { BUS_KINDS, busKind, DEFAULT_BUS_KIND, ENV_PATTERN, PARAMETERS, parameterName, STAGES } from '../../cdk-app/lib/platform-names';
export type { BusKind, PlatformParameter } from '../../cdk-app/lib/platform-names';

/** The Lambda functions (busway_core::tasks::FUNCTIONS): binary name = logical name = `--bin`. */
export const FUNCTIONS = ['portal', 'injector', 'injector-sqs', 'provisioner', 'authorizer', 'delivery'] as const;
export type FunctionName = (typeof FUNCTIONS)[number];

/** Environment variables the functions read (`Config::from_env()` of the AWS host). */
export const ENV_VARS = {
  tableName: 'BUSWAY_TABLE_NAME',
  schemaBackupBucket: 'BUSWAY_SCHEMA_BACKUP_BUCKET',
  publisherBucket: 'BUSWAY_PUBLISHER_BUCKET',
  subscriberBucket: 'BUSWAY_SUBSCRIBER_BUCKET',
  registryName: 'BUSWAY_SCHEMA_REGISTRY',
  busKind: 'BUSWAY_BUS_KIND',
  busName: 'BUSWAY_BUS_NAME',
  busArn: 'BUSWAY_BUS_ARN',
  /** busway_aws::host::BUS_RETENTION_DAYS: how far back a replay on the Custom Event Bus may start. */
  busRetentionDays: 'BUSWAY_BUS_RETENTION_DAYS',
  stateMachineArn: 'BUSWAY_STATE_MACHINE_ARN',
  /** busway_aws::usage_plans::USAGE_PLAN: the broker stage's default usage plan, by name. */
  brokerUsagePlan: 'BUSWAY_BROKER_USAGE_PLAN',
  metricsNamespace: 'BUSWAY_METRICS_NAMESPACE',
} as const;

/**
 * The table's indexes, keyed `{index}PK`/`{index}SK` (strings), as the AWS host's DynamoDB adapter
 * queries them: GSI1 lists every record of a kind (event types, subscriptions, deployments), GSI2
 * the records of one owner (a target unit's subscriptions, an event type's deployments).
 */
export const TABLE_INDEXES = ['GSI1', 'GSI2'] as const;

/** busway_core::ports::Bucket::base_name of the three buckets. */
export type BucketBase = 'event-schemas-backup-bucket' | 'publisher-components-bucket' | 'subscriber-components-bucket';

export class Names {
  constructor(readonly env: string) {
    if (!ENV_PATTERN.test(env)) throw new Error(`platform env ${env} must match ${ENV_PATTERN}`);
  }

  stack(step: 'backup' | 'storage' | 'bus' | 'brokerApi' | 'portal' | 'provisioning' | 'monitoring'): string {
    const base = {
      backup: 'event-schemas-backup-service',
      storage: 'components-configuration-storage-service',
      bus: 'event-broker-bus',
      brokerApi: 'event-broker-api-service',
      portal: 'self-service-portal',
      provisioning: 'provisioning-service',
      monitoring: 'busway-monitoring',
    }[step];
    return `${this.env}-${base}`;
  }

  /**
   * The seed's bucket names (busway_core::ports::Bucket::base_name) with the account id appended:
   * bucket names are global, so the seed's bare names would collide between two accounts.
   */
  bucket(base: BucketBase, account: string): string {
    return `${this.env}-${base}-${account}`;
  }

  get busName(): string { return `${this.env}.custom.events.bus`; }
  get brokerApiName(): string { return `${this.env}-event-broker-api`; }
  /** The broker stage's default usage plan; the plans of rate limits are named after it (busway_aws::usage_plans). */
  get brokerUsagePlanName(): string { return `${this.brokerApiName}-default`; }
  get portalApiName(): string { return `${this.env}-self-service-portal-api`; }
  get tableName(): string { return `${this.env}-self-service-events-table`; }
  get registryName(): string { return `${this.env}.busway.schemas`; }
  get stateMachineName(): string { return `${this.env}-busway-provisioning`; }
  /** Where the functions write their CloudWatch metrics (EMF, busway_aws::emf). */
  get metricsNamespace(): string { return `busway/${this.env}`; }
  function(name: FunctionName): string { return `${this.env}-busway-${name}`; }
  buildProject(kind: 'producer' | 'consumer'): string { return `${this.env}-busway-${kind}-build`; }
}
