// Where a generated stack finds the platform's resources: SSM parameters written by infra/
// (resolved by CloudFormation at deploy time), never IDs a person copies by hand.
import { Construct } from 'constructs';
import * as ssm from 'aws-cdk-lib/aws-ssm';

export const PARAMETERS = {
  brokerApiId: 'broker-api/id',
  brokerApiRootResourceId: 'broker-api/root-resource-id',
  brokerApiStage: 'broker-api/stage',
  injectorFunctionArn: 'injector/function-arn',
  injectorSqsFunctionArn: 'injector-sqs/function-arn',
  injectorSqsRoleArn: 'injector-sqs/role-arn',
  busName: 'bus/name',
  busArn: 'bus/arn',
} as const;

export type PlatformParameter = keyof typeof PARAMETERS;

/** `/busway/{env}/{name}`: the one naming rule infra/ and the generators share. */
export function parameterName(env: string, p: PlatformParameter): string {
  return `/busway/${env}/${PARAMETERS[p]}`;
}

export function platformValue(scope: Construct, env: string, p: PlatformParameter): string {
  return ssm.StringParameter.valueForStringParameter(scope, parameterName(env, p));
}

export const ENV_PATTERN = /^[a-z][a-z0-9]{0,15}$/;
