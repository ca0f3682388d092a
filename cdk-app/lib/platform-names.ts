// The names the platform (infra/) writes and the generators read: one file, imported by both apps.
// Dependency-free so that infra/ can import it without loading cdk-app's node_modules.

export const PARAMETERS = {
  brokerApiId: 'broker-api/id',
  brokerApiRootResourceId: 'broker-api/root-resource-id',
  injectorFunctionArn: 'injector/function-arn',
  injectorSqsFunctionArn: 'injector-sqs/function-arn',
  injectorSqsRoleArn: 'injector-sqs/role-arn',
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
