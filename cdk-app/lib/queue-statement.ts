// One statement in a queue the subscribing team owns: CloudFormation's AWS::SQS::QueuePolicy and
// AWS::SQS::QueueInlinePolicy each set a queue's whole policy, so two subscriptions on one queue
// would overwrite each other, deleting one would break the other, and the team's own statements
// would be gone. This custom resource adds its statement by Sid and removes only that one.
import * as fs from 'fs';
import * as path from 'path';
import { CustomResource, Duration, Stack, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

export interface QueueStatementProps {
  queueArn: string;
  queueUrl: string;
  /** Unique per owner of the statement (alphanumeric): what a delete removes. */
  sid: string;
  statement: iam.PolicyStatement;
}

export class QueueStatement extends Construct {
  readonly resource: CustomResource;

  constructor(scope: Construct, id: string, props: QueueStatementProps) {
    super(scope, id);
    const logGroup = new logs.LogGroup(this, 'Logs', { retention: logs.RetentionDays.ONE_MONTH });
    const role = new iam.Role(this, 'Role', {
      assumedBy: new iam.ServicePrincipal('lambda.amazonaws.com'),
      description: `edits statement ${props.sid} of one queue policy, and nothing else`,
    });
    role.addToPolicy(new iam.PolicyStatement({
      actions: ['sqs:GetQueueAttributes', 'sqs:SetQueueAttributes'],
      resources: [props.queueArn],
    }));
    logGroup.grantWrite(role);
    const fn = new lambda.Function(this, 'Handler', {
      runtime: lambda.Runtime.NODEJS_24_X,
      handler: 'index.handler',
      code: lambda.Code.fromInline(fs.readFileSync(path.join(__dirname, 'queue-statement-handler.js'), 'utf8')),
      timeout: Duration.minutes(2),
      role,
      logGroup,
    });
    this.resource = new CustomResource(this, 'Statement', {
      serviceToken: fn.functionArn,
      resourceType: 'Custom::QueueStatement',
      properties: {
        QueueUrl: props.queueUrl,
        Sid: props.sid,
        Statement: Stack.of(this).toJsonString({ ...props.statement.toStatementJson(), Sid: props.sid }),
      },
    });
  }
}
