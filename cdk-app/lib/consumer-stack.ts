// Consumer stacks: one per subscription (stack `busway-consumer-{subscription_id}`), so a second
// target unit of an event version never replaces the first. On the Classic bus the stack holds a
// rule with the consumer rule pattern (README: Contracts) exactly as the deploy.json states it; on
// the Custom Event Bus it holds a subscriber whose DATA filter is that pattern's `detail`, with the
// `source` and `detail-type` it names expressed by the metadata the broker writes into every event.
import { CfnOutput, Duration, Stack, StackProps, Validations } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import * as events from 'aws-cdk-lib/aws-events';
import * as eventsv2 from 'aws-cdk-lib/aws-eventsv2';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { ConsumerDeploy } from './deploy-config';
import { generatedStackProps, platformValue } from './platform';
import { BusKind } from './platform-names';
import { QueueStatement } from './queue-statement';

export interface ConsumerProps extends StackProps {
  doc: ConsumerDeploy;
  platformEnv: string;
  busKind: BusKind;
}

export class ConsumerStack extends Stack {
  constructor(scope: Construct, id: string, props: ConsumerProps) {
    super(scope, id, props);
    const { doc, platformEnv, busKind } = props;
    const dlq = new sqs.Queue(this, 'DeadLetters', {
      queueName: `${doc.rule_name}-dlq`,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    Validations.of(dlq).acknowledge({ id: 'AwsSolutions-SQS3', reason: 'This queue is the dead-letter queue of the subscription rule target.' });
    if (busKind === 'custom') this.subscriber(doc, platformEnv, dlq);
    else if (doc.replay_from !== undefined) throw new Error(`deploy.json of ${doc.subscription_id} replays from ${doc.replay_from}: only a Custom Event Bus subscriber starts at a point in time`);
    else this.rule(doc, platformEnv, dlq);
    this.alarms(doc, platformEnv, busKind, dlq);
    new CfnOutput(this, 'BusKind', { value: busKind, description: 'the EventBridge bus this stack is built for' });
    this.claimCheckReader(doc, platformEnv);
  }

  /**
   * The subscription's alarms: an event in its dead-letter queue (both buses); on the Classic bus
   * also its rule's failed and throttled invocations and events that could not reach the DLQ
   * (AWS/Events, by bus and rule name). A subscriber of the Custom Event Bus reports its failures
   * through its DLQ.
   */
  private alarms(doc: ConsumerDeploy, platformEnv: string, busKind: BusKind, dlq: sqs.Queue): void {
    const period = Duration.minutes(1);
    const alarm = (id: string, suffix: string, metric: cloudwatch.IMetric, description: string) => new cloudwatch.Alarm(this, id, {
      alarmName: `${doc.rule_name}-${suffix}`,
      alarmDescription: `${doc.event_type} v${doc.version} to ${doc.target_unit} (${doc.subscription_id}): ${description}`,
      metric,
      threshold: 1,
      comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
      evaluationPeriods: 1,
      treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
    });
    alarm('DeadLettersAlarm', 'dead-letters', dlq.metricApproximateNumberOfMessagesVisible({ period, statistic: 'Maximum' }),
      'events that exhausted the retry policy wait in the dead-letter queue');
    if (busKind === 'custom') return;
    const rule = (metricName: string) => new cloudwatch.Metric({
      namespace: 'AWS/Events', metricName, statistic: 'Sum', period,
      dimensionsMap: { EventBusName: platformValue(this, platformEnv, 'busName'), RuleName: doc.rule_name },
    });
    alarm('FailedInvocationsAlarm', 'failed-invocations', rule('FailedInvocations'), 'the rule failed to invoke its target for good');
    alarm('ThrottledRulesAlarm', 'throttled', rule('ThrottledRules'), 'the rule was throttled');
    alarm('DlqFailuresAlarm', 'dlq-failures', rule('InvocationsFailedToBeSentToDlq'), 'failed events could not be sent to the dead-letter queue');
  }

  /** Classic: a rule on the custom bus, its target reached through resource policies. */
  private rule(doc: ConsumerDeploy, platformEnv: string, dlq: sqs.Queue): void {
    const busName = platformValue(this, platformEnv, 'busName');
    const ruleArn = `arn:${this.partition}:events:${this.region}:${this.account}:rule/${busName}/${doc.rule_name}`;
    dlq.addToResourcePolicy(new iam.PolicyStatement({
      actions: ['sqs:SendMessage'],
      principals: [new iam.ServicePrincipal('events.amazonaws.com')],
      resources: [dlq.queueArn],
      conditions: { ArnEquals: { 'aws:SourceArn': ruleArn } },
    }));

    const { arn, roleArn, inputTransformer } = this.target(doc, platformEnv, ruleArn, dlq);
    const target: events.CfnRule.TargetProperty = {
      id: 'Target',
      arn,
      roleArn,
      inputTransformer,
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
  }

  /**
   * Custom Event Bus: a subscriber that delivers through its own role, which may reach exactly
   * its one target and its dead-letter queue, so no team's queue or function policy is edited.
   * After a replay (`replay_from`) it is a new subscriber, `{rule_name}-r{unix seconds}`, that
   * starts at that point in time: a subscriber's starting position is set only when it is made,
   * and the new name has CloudFormation make it before it deletes the one it replaces.
   */
  private subscriber(doc: ConsumerDeploy, platformEnv: string, dlq: sqs.Queue): void {
    const role = new iam.Role(this, 'DeliveryRole', {
      assumedBy: new iam.ServicePrincipal('events.amazonaws.com', { conditions: { StringEquals: { 'aws:SourceAccount': this.account } } }),
      description: `delivers busway subscription ${doc.subscription_id} to its one target`,
    });
    const target = this.subscriberTarget(doc, platformEnv);
    role.addToPolicy(new iam.PolicyStatement({ actions: [target.action], resources: [target.arn] }));
    role.addToPolicy(new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [dlq.queueArn] }));
    const replay = doc.replay_from === undefined ? {} : {
      startingPosition: 'POINT_IN_TIME',
      pointInTimeConfiguration: { pointType: 'TIMESTAMP', startingPoint: doc.replay_from },
    };
    new eventsv2.CfnSubscriber(this, 'Subscriber', {
      name: subscriberName(doc),
      ...replay,
      eventBusArn: platformValue(this, platformEnv, 'busArn'),
      description: `${doc.event_type} v${doc.version} to ${doc.target_unit} (${doc.subscription_id})`,
      filterConfiguration: { filters: [{ scope: 'DATA', pattern: JSON.stringify(doc.event_pattern) }] },
      invokeConfiguration: { targetArn: target.arn, roleArn: role.roleArn, ...target.parameters },
      retryPolicy: {
        maxRetryAttempts: doc.retry_policy.maximum_retry_attempts,
        maxEventAgeInSeconds: doc.retry_policy.maximum_event_age_seconds,
      },
      onFailureConfiguration: { arn: dlq.queueArn },
      // RAW delivers an event's data, which for an event put with PutEvents is its whole
      // envelope: what a Classic rule delivers (WITH_METADATA would wrap it in `Data`).
      transformer: target.transformer ?? { type: 'RAW' },
      state: 'RUNNING',
    });
  }

  /** The subscriber's target and the one action its delivery role may take on it. */
  private subscriberTarget(doc: ConsumerDeploy, platformEnv: string): {
    arn: string; action: string; parameters: Partial<eventsv2.CfnSubscriber.InvokeConfigurationProperty>; transformer?: eventsv2.CfnSubscriber.TransformerProperty;
  } {
    switch (doc.connection_type) {
      case 'LAMBDA':
        return { arn: doc.connection_string, action: 'lambda:InvokeFunction', parameters: { lambdaParameters: { invocationType: 'EVENT' } } };
      case 'SQS':
        return { arn: doc.connection_string, action: 'sqs:SendMessage', parameters: {} };
      case 'HTTPS':
        // The platform's delivery function signs and posts. Invoked synchronously, so that a
        // retryable answer (the function fails) is retried by this subscriber's retry policy and
        // ends in its dead-letter queue, as any target's failure does. A JSONata expression sees
        // the event as `$events`; its `Data` is the envelope PutEvents published.
        return {
          arn: platformValue(this, platformEnv, 'deliveryFunctionArn'),
          action: 'lambda:InvokeFunction',
          parameters: { lambdaParameters: { invocationType: 'REQUEST_RESPONSE' } },
          transformer: { type: 'JSONATA', jsonataConfiguration: { expression: `{% {"subscription_id": ${JSON.stringify(doc.subscription_id)}, "event": $events.Data} %}` } },
        };
    }
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

  /**
   * Classic: a rule invokes Lambda asynchronously, so its retry policy covers the invocation only;
   * a failed delivery (the function fails on a retryable answer) is retried by Lambda. This
   * subscription's alias of the shared delivery function carries that retry policy (as far as
   * Lambda allows: at most 2 retries and 6 h of age) and sends what is given up to this
   * subscription's dead-letter queue, as a Lambda invocation record whose requestPayload is the
   * `{subscription_id, event}` input.
   */
  private deliveryAlias(doc: ConsumerDeploy, platformEnv: string, dlq: sqs.Queue): lambda.CfnAlias {
    const functionName = platformValue(this, platformEnv, 'deliveryFunctionArn');
    const alias = new lambda.CfnAlias(this, 'DeliveryAlias', {
      functionName,
      functionVersion: '$LATEST',
      name: doc.rule_name,
      description: `busway subscription ${doc.subscription_id}: its retries and dead-letter queue`,
    });
    const config = new lambda.CfnEventInvokeConfig(this, 'DeliveryRetries', {
      functionName,
      qualifier: doc.rule_name,
      maximumRetryAttempts: Math.min(doc.retry_policy.maximum_retry_attempts, ASYNC_MAX_RETRIES),
      maximumEventAgeInSeconds: Math.min(doc.retry_policy.maximum_event_age_seconds, ASYNC_MAX_EVENT_AGE_SECONDS),
      destinationConfig: { onFailure: { destination: dlq.queueArn } },
    });
    config.addResourceDependency(alias);
    return alias;
  }

  /** The target's ARN, with the permission that lets the rule reach it. */
  private target(doc: ConsumerDeploy, platformEnv: string, ruleArn: string, dlq: sqs.Queue): {
    arn: string; roleArn?: string; inputTransformer?: events.CfnRule.InputTransformerProperty;
  } {
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
        const alias = this.deliveryAlias(doc, platformEnv, dlq);
        new lambda.CfnPermission(this, 'RuleInvoke', {
          action: 'lambda:InvokeFunction',
          functionName: alias.ref,
          principal: 'events.amazonaws.com',
          sourceArn: ruleArn,
        });
        // `{subscription_id, event}`: the delivery function's input, the event with its envelope.
        return {
          arn: alias.ref,
          inputTransformer: { inputPathsMap: {}, inputTemplate: `{"subscription_id": ${JSON.stringify(doc.subscription_id)}, "event": <aws.events.event.json>}` },
        };
      }
    }
  }
}

/** The subscriber's name: the rule name, and after a replay the second it starts from. */
export function subscriberName(doc: ConsumerDeploy): string {
  return doc.replay_from === undefined ? doc.rule_name : `${doc.rule_name}-r${doc.replay_from}`;
}

/**
 * Lambda's bounds on an asynchronous invocation's retries and event age (its minimum age, 60 s,
 * is the subscription's too).
 */
const ASYNC_MAX_RETRIES = 2;
const ASYNC_MAX_EVENT_AGE_SECONDS = 21600;

export function addConsumerStack(scope: Construct, doc: ConsumerDeploy, platformEnv: string, busKind: BusKind, props: StackProps = {}): ConsumerStack {
  return new ConsumerStack(scope, doc.stack_name, generatedStackProps(platformEnv, { ...props, stackName: doc.stack_name, doc, platformEnv, busKind }));
}
