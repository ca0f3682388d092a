// Consumer stacks: one per subscription (stack `busway-consumer-{subscription_id}`), so a second
// target unit of an event version never replaces the first. The rule carries the consumer rule pattern (README: Contracts)
// exactly as the deploy.json states it, on the platform's custom bus.
import { CfnOutput, Duration, Stack, StackProps, Validations } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { ConsumerDeploy } from './deploy-config';
import { generatedStackProps, platformValue } from './platform';
import { QueueStatement } from './queue-statement';

export interface ConsumerProps extends StackProps {
  doc: ConsumerDeploy;
  platformEnv: string;
}

export class ConsumerStack extends Stack {
  constructor(scope: Construct, id: string, props: ConsumerProps) {
    super(scope, id, props);
    const { doc, platformEnv } = props;
    const busName = platformValue(this, platformEnv, 'busName');
    const ruleArn = `arn:${this.partition}:events:${this.region}:${this.account}:rule/${busName}/${doc.rule_name}`;

    const dlq = new sqs.Queue(this, 'DeadLetters', {
      queueName: `${doc.rule_name}-dlq`,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    Validations.of(dlq).acknowledge({ id: 'AwsSolutions-SQS3', reason: 'This queue is the dead-letter queue of the subscription rule target.' });
    dlq.addToResourcePolicy(new iam.PolicyStatement({
      actions: ['sqs:SendMessage'],
      principals: [new iam.ServicePrincipal('events.amazonaws.com')],
      resources: [dlq.queueArn],
      conditions: { ArnEquals: { 'aws:SourceArn': ruleArn } },
    }));

    const { arn, roleArn } = this.target(doc, ruleArn);
    const target: events.CfnRule.TargetProperty = {
      id: 'Target',
      arn,
      roleArn,
      retryPolicy: {
        maximumRetryAttempts: doc.retry_policy.maximum_retry_attempts,
        maximumEventAgeInSeconds: doc.retry_policy.maximum_event_age_seconds,
      },
      deadLetterConfig: { arn: dlq.queueArn },
    };
    new events.CfnRule(this, 'Rule', {
      name: doc.rule_name,
      eventBusName: busName,
      description: `${doc.event_type} v${doc.version} to ${doc.target_unit} (${doc.subscription_id})`,
      eventPattern: doc.event_pattern,
      state: 'ENABLED',
      targets: [target],
    });
    this.claimCheckReader(doc, platformEnv);
  }

  /**
   * The policy the subscriber attaches to the role that consumes its events (the Lambda
   * function's, or the one reading its queue): it may open the claim checks of this event
   * version (busway_core::claim_check::PREFIX, `{detail_type}/`) and nothing else.
   */
  private claimCheckReader(doc: ConsumerDeploy, platformEnv: string): void {
    const bucket = platformValue(this, platformEnv, 'schemaBackupBucket');
    const keys = `claim-checks/${doc.detail_type}/*`;
    const policy = new iam.ManagedPolicy(this, 'ClaimCheckReader', {
      managedPolicyName: `${doc.rule_name}-claim-checks`,
      description: `reads the claim-checked data of ${doc.detail_type} events (busway subscription ${doc.subscription_id})`,
      statements: [new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: [`arn:${this.partition}:s3:::${bucket}/${keys}`] })],
    });
    const bucketRef = (this.resolve(bucket) as { Ref: string }).Ref;
    Validations.of(policy).acknowledge({
      id: `AwsSolutions-IAM5[Resource::arn:<AWS::Partition>:s3:::<${bucketRef}>/${keys}]`,
      reason: 'One object per claim-checked event, under the prefix of this event version only.',
    });
    new CfnOutput(this, 'ClaimCheckReaderPolicyArn', { value: policy.managedPolicyArn });
  }

  /** The target's ARN, with the permission that lets the rule reach it. */
  private target(doc: ConsumerDeploy, ruleArn: string): { arn: string; roleArn?: string } {
    switch (doc.connection_type) {
      case 'LAMBDA':
        new lambda.CfnPermission(this, 'RuleInvoke', {
          action: 'lambda:InvokeFunction',
          functionName: doc.connection_string,
          principal: 'events.amazonaws.com',
          sourceArn: ruleArn,
        });
        return { arn: doc.connection_string };
      case 'SQS': {
        const queue = sqs.Queue.fromQueueArn(this, 'TargetQueue', doc.connection_string);
        // The team's queue keeps its policy: this subscription adds its own statement and
        // removes only that one (lib/queue-statement.ts).
        new QueueStatement(this, 'TargetQueueStatement', {
          queueArn: doc.connection_string,
          queueUrl: queue.queueUrl,
          sid: `busway${doc.subscription_id.replace(/[^A-Za-z0-9]/g, '')}`,
          statement: new iam.PolicyStatement({
            actions: ['sqs:SendMessage'],
            principals: [new iam.ServicePrincipal('events.amazonaws.com')],
            resources: [doc.connection_string],
            conditions: { ArnEquals: { 'aws:SourceArn': ruleArn } },
          }),
        });
        return { arn: doc.connection_string };
      }
      case 'HTTPS': {
        const connection = new events.CfnConnection(this, 'Connection', {
          name: doc.rule_name,
          description: `busway subscription ${doc.subscription_id}`,
          authorizationType: 'API_KEY',
          // EventBridge requires an authorization; the subscription id tells the consumer which
          // subscription calls it. Consumer secrets are not part of the deploy.json contract yet.
          authParameters: { apiKeyAuthParameters: { apiKeyName: 'x-busway-subscription', apiKeyValue: doc.subscription_id } },
        });
        const destination = new events.CfnApiDestination(this, 'ApiDestination', {
          name: doc.rule_name,
          connectionArn: connection.attrArn,
          invocationEndpoint: doc.connection_string,
          httpMethod: 'POST',
          invocationRateLimitPerSecond: 100,
        });
        const role = new iam.Role(this, 'InvokeApiDestination', {
          assumedBy: new iam.ServicePrincipal('events.amazonaws.com'),
          description: `lets rule ${doc.rule_name} call its API destination, and nothing else`,
        });
        role.addToPolicy(new iam.PolicyStatement({
          actions: ['events:InvokeApiDestination'],
          resources: [destination.attrArn],
        }));
        return { arn: destination.attrArn, roleArn: role.roleArn };
      }
    }
  }
}

export function addConsumerStack(scope: Construct, doc: ConsumerDeploy, platformEnv: string, props: StackProps = {}): ConsumerStack {
  return new ConsumerStack(scope, doc.stack_name, generatedStackProps(platformEnv, { ...props, stackName: doc.stack_name, doc, platformEnv }));
}
