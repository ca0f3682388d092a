// Where a generated stack finds the platform's resources: SSM parameters written by infra/
// (resolved by CloudFormation at deploy time), never IDs a person copies by hand.
import { DefaultStackSynthesizer, StackProps } from 'aws-cdk-lib';
import { Construct } from 'constructs';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import { generatorsQualifier, parameterName, PlatformParameter } from './platform-names';

export { ENV_PATTERN, PARAMETERS, parameterName } from './platform-names';
export type { PlatformParameter } from './platform-names';

export function platformValue(scope: Construct, env: string, p: PlatformParameter): string {
  return ssm.StringParameter.valueForStringParameter(scope, parameterName(env, p));
}

/** A generated stack's props: deployed through the generators' own bootstrap (`generatorsQualifier`). */
export function generatedStackProps<P extends StackProps>(env: string, props: P): P {
  return { ...props, synthesizer: new DefaultStackSynthesizer({ qualifier: generatorsQualifier(env) }) };
}
