// The names the platform (infra/) writes and the generators read: one file, imported by both apps.
// Dependency-free (Node's own modules only) so that infra/ can import it without loading
// cdk-app's node_modules.
import { createHash } from 'crypto';

export const PARAMETERS = {
  brokerApiId: 'broker-api/id',
  brokerApiRootResourceId: 'broker-api/root-resource-id',
  /** The broker API's REQUEST authorizer (the `authorizer` function): every event route uses it. */
  brokerApiAuthorizerId: 'broker-api/authorizer-id',
  injectorFunctionArn: 'injector/function-arn',
  injectorSqsFunctionArn: 'injector-sqs/function-arn',
  injectorSqsRoleArn: 'injector-sqs/role-arn',
  /** The delivery function (functions/delivery): every HTTPS subscription's target, on both buses. */
  deliveryFunctionArn: 'delivery/function-arn',
  busName: 'bus/name',
  busArn: 'bus/arn',
  busKind: 'bus/kind',
  schemaBackupBucket: 'schema-backup/bucket-name',
} as const;

/**
 * The API Gateway stages: infra/ deploys both APIs to them, and each producer stack redeploys the
 * broker's to make its route live. The functions route the same under any stage name.
 */
export const STAGES = { portal: 'api', broker: 'live' } as const;

/**
 * The EventBridge bus a platform is installed with: `custom`, the second-generation Custom Event
 * Bus (a subscriber per subscription, retention, replay, pause), or `classic`, the custom bus with
 * a rule per subscription. New installs get `custom`; an install keeps its kind.
 */
export const BUS_KINDS = ['custom', 'classic'] as const;
export type BusKind = (typeof BUS_KINDS)[number];
export const DEFAULT_BUS_KIND: BusKind = 'custom';

export function busKind(value: unknown, fallback: BusKind): BusKind {
  if (value === undefined || value === null || value === '') return fallback;
  if (!(BUS_KINDS as readonly unknown[]).includes(value)) throw new Error(`bus kind ${value} must be one of ${BUS_KINDS.join(', ')}`);
  return value as BusKind;
}

export type PlatformParameter = keyof typeof PARAMETERS;

/** `/busway/{env}/{name}`: the one naming rule infra/ and the generators share. */
export function parameterName(env: string, p: PlatformParameter): string {
  return `/busway/${env}/${PARAMETERS[p]}`;
}

export const ENV_PATTERN = /^[a-z][a-z0-9]{0,15}$/;

/**
 * The generators deploy through a CDK bootstrap of their own, not the account's default one: its
 * CloudFormation execution role has only the policy infra/ makes for what they create
 * (`generatorsExecutionPolicyName`), where the default bootstrap's is AdministratorAccess.
 * Qualifiers are at most 10 characters of `[a-z0-9]` in bucket names, so the env is hashed.
 */
export function generatorsQualifier(env: string): string {
  return `bw${createHash('sha256').update(env).digest('hex').slice(0, 8)}`;
}

/** The toolkit stack of the generators' bootstrap (one per environment, beside the default CDKToolkit). */
export function generatorsToolkitStackName(env: string): string {
  return `${env}-busway-generators-toolkit`;
}

/** The managed policy of the generators' CloudFormation execution role. */
export function generatorsExecutionPolicyName(env: string): string {
  return `${env}-busway-generators-execution`;
}

/** The permissions boundary of every role a generated stack creates; the execution policy creates no role without it. */
export function generatedRolesBoundaryName(env: string): string {
  return `${env}-busway-generated-roles-boundary`;
}
