// Where a generated stack finds the platform's resources: SSM parameters written by infra/
// (resolved by CloudFormation at deploy time), never IDs a person copies by hand.
import { Construct } from 'constructs';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import { parameterName, PlatformParameter } from './platform-names';

export { ENV_PATTERN, PARAMETERS, parameterName } from './platform-names';
export type { PlatformParameter } from './platform-names';

export function platformValue(scope: Construct, env: string, p: PlatformParameter): string {
  return ssm.StringParameter.valueForStringParameter(scope, parameterName(env, p));
}
