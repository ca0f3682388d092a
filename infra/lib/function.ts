import * as fs from 'fs';
import * as path from 'path';
import { Duration } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import { ENV_VARS, FunctionName, Names } from './names';

export interface RustFunctionProps {
  name: FunctionName;
  names: Names;
  /** cargo-lambda's output: `{dir}/{name}/bootstrap.zip` or `{dir}/{name}/bootstrap`. */
  lambdaAssets: string;
  environment: Record<string, string>;
  timeout: Duration;
}

/**
 * One of busway's Rust Lambda functions with a role of its own that starts with nothing but
 * writing to the function's log group (no AWSLambdaBasicExecutionRole: it allows every log group).
 */
export class RustFunction extends Construct {
  readonly fn: lambda.Function;
  readonly role: iam.Role;

  constructor(scope: Construct, id: string, props: RustFunctionProps) {
    super(scope, id);
    const dir = path.resolve(props.lambdaAssets, props.name);
    const zip = path.join(dir, 'bootstrap.zip');
    const code = fs.existsSync(zip) ? zip : dir;
    if (code === dir && !fs.existsSync(path.join(dir, 'bootstrap'))) {
      throw new Error(`no Lambda asset for ${props.name}: build it first (cargo lambda build --release --arm64), or pass -c lambdaAssets=DIR; looked for ${zip} and ${dir}/bootstrap`);
    }
    const logGroup = new logs.LogGroup(this, 'Logs', { retention: logs.RetentionDays.THREE_MONTHS });
    this.role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `busway ${props.name} (${props.names.env}): least privilege`,
    });
    this.role.addToPolicy(new iam.PolicyStatement({
      actions: ['logs:CreateLogStream', 'logs:PutLogEvents'],
      resources: [logGroup.logGroupArn],
    }));
    this.fn = new lambda.Function(this, 'Function', {
      functionName: props.names.function(props.name),
      runtime: lambda.Runtime.PROVIDED_AL2023,
      architecture: lambda.Architecture.ARM_64,
      handler: 'bootstrap',
      code: lambda.Code.fromAsset(code),
      memorySize: 256,
      timeout: props.timeout,
      role: this.role,
      logGroup,
      environment: { RUST_LOG: 'info', [ENV_VARS.metricsNamespace]: props.names.metricsNamespace, ...props.environment },
    });
  }
}
