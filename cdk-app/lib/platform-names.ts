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
  schemaBackupBucket: 'schema-backup/bucket-name',
} as const;

/**
 * The API Gateway stages: infra/ deploys both APIs to them, and each producer stack redeploys the
 * broker's to make its route live. The functions route the same under any stage name.
 */
export const STAGES = { portal: 'api', broker: 'live' } as const;

export type PlatformParameter = keyof typeof PARAMETERS;

/** `/busway/{env}/{name}`: the one naming rule infra/ and the generators share. */
export function parameterName(env: string, p: PlatformParameter): string {
  return `/busway/${env}/${PARAMETERS[p]}`;
}

export const ENV_PATTERN = /^[a-z][a-z0-9]{0,15}$/;
