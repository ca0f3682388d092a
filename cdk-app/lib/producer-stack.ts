// Producer stacks: the broker API route of one event version (HTTPS) or the buffering queue of one
// event version (SQS). An event type's own resource `/{event_type}` lives in a stack of its own, so
// version 2 deploys beside version 1 and destroying one version never touches the other.
import { CfnOutput, Duration, Stack, StackProps, Validations } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { Construct } from 'constructs';
import { createHash } from 'crypto';
import { ProducerDeploy } from './deploy-config';
import { generatedStackProps, platformValue } from './platform';
import { STAGES } from './platform-names';

export interface ProducerProps extends StackProps {
  doc: ProducerDeploy;
  /** The platform environment whose SSM parameters name the broker API, the injector and the bus. */
  platformEnv: string;
}

/** `busway-producer-{event-type}`: the API resource `/{event_type}`, shared by every version. */
export function eventTypeStackName(eventType: string): string {
  return `busway-producer-${eventType.replace(/_/g, '-')}`;
}

function pascal(name: string): string {
  return name.split('_').map((w) => w.charAt(0).toUpperCase() + w.slice(1)).join('');
}

export class EventTypeResourceStack extends Stack {
  readonly resourceId: string;

  constructor(scope: Construct, id: string, props: StackProps & { eventType: string; platformEnv: string }) {
    super(scope, id, props);
    const resource = new apigw.CfnResource(this, 'EventTypeResource', {
      restApiId: platformValue(this, props.platformEnv, 'brokerApiId'),
      parentId: platformValue(this, props.platformEnv, 'brokerApiRootResourceId'),
      pathPart: props.eventType,
    });
    this.resourceId = resource.ref;
  }
}

export class HttpsProducerStack extends Stack {
  constructor(scope: Construct, id: string, props: ProducerProps & { eventTypeResourceId: string }) {
    super(scope, id, props);
    const { doc, platformEnv } = props;
    const restApiId = platformValue(this, platformEnv, 'brokerApiId');
    const injectorArn = platformValue(this, platformEnv, 'injectorFunctionArn');

    const model = new apigw.CfnModel(this, 'EventModel', {
      restApiId,
      name: `${pascal(doc.event_type)}V${doc.version}`,
      contentType: 'application/json',
      description: `${doc.event_type} version ${doc.version}: the enveloped draft-04 schema`,
      schema: doc.schema,
    });
    const validator = new apigw.CfnRequestValidator(this, 'BodyValidator', {
      restApiId,
      name: `${doc.event_type}-v${doc.version}-body`,
      validateRequestBody: true,
      validateRequestParameters: false,
    });
    const resource = new apigw.CfnResource(this, 'VersionResource', {
      restApiId,
      parentId: props.eventTypeResourceId,
      pathPart: String(doc.version),
    });
    const method = new apigw.CfnMethod(this, 'PostEvent', {
      restApiId,
      resourceId: resource.ref,
      httpMethod: 'POST',
      // Producers send their key; the platform's authorizer names the key's team and application to
      // the injector (the seed's open route is one of its defects).
      authorizationType: 'CUSTOM',
      authorizerId: platformValue(this, platformEnv, 'brokerApiAuthorizerId'),
      // The API key is the one the authorizer names for the caller's key (the broker API's
      // apiKeySource is AUTHORIZER), so API Gateway applies the throttle of that key's usage plan
      // (infra/README.md: "Rate limits"); a key without an API Gateway key is refused here.
      apiKeyRequired: true,
      requestValidatorId: validator.ref,
      requestModels: { 'application/json': model.ref },
      integration: {
        type: 'AWS_PROXY',
        integrationHttpMethod: 'POST',
        uri: `arn:${this.partition}:apigateway:${this.region}:lambda:path/2015-03-31/functions/${injectorArn}/invocations`,
      },
    });
    Validations.of(method).acknowledge({
      id: 'AwsSolutions-COG4',
      reason: 'Producers are services, not users: the route takes busway API keys checked by the platform\'s Lambda authorizer, not Cognito tokens.',
    });
    new lambda.CfnPermission(this, 'InjectorInvoke', {
      action: 'lambda:InvokeFunction',
      functionName: injectorArn,
      principal: 'apigateway.amazonaws.com',
      sourceArn: `arn:${this.partition}:execute-api:${this.region}:${this.account}:${restApiId}/*/POST/${doc.event_type}/${doc.version}`,
    });
    // A new deployment of the stage makes the new route live; its logical id changes with the route's
    // definition so that CloudFormation deploys the stage again whenever the route changes.
    const fingerprint = createHash('sha256')
      // apiKeyRequired: a route built before it gets a new deployment, which makes it live.
      .update(JSON.stringify({ schema: doc.schema, version: doc.version, event_type: doc.event_type, apiKeyRequired: true }))
      .digest('hex')
      .slice(0, 8);
    const deployment = new apigw.CfnDeployment(this, `StageDeployment${fingerprint}`, {
      restApiId,
      stageName: STAGES.broker,
      description: `${doc.event_type} v${doc.version} (${doc.deployment_id})`,
    });
    deployment.addResourceDependency(method);
    new CfnOutput(this, 'Route', { value: `POST /${doc.event_type}/${doc.version}` });
  }
}

export class SqsProducerStack extends Stack {
  constructor(scope: Construct, id: string, props: ProducerProps) {
    super(scope, id, props);
    const { doc, platformEnv } = props;
    // busway_core::deploy::producer_queue_name: the injector reads the event version from it.
    const base = `busway-${doc.event_type.replace(/_/g, '-')}-v${doc.version}`;
    const dlq = new sqs.Queue(this, 'DeadLetters', {
      queueName: `${base}-dlq`,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      retentionPeriod: Duration.days(14),
    });
    Validations.of(dlq).acknowledge({ id: 'AwsSolutions-SQS3', reason: 'This queue is the dead-letter queue of the producer queue.' });
    const queue = new sqs.Queue(this, 'Events', {
      queueName: base,
      encryption: sqs.QueueEncryption.SQS_MANAGED,
      enforceSSL: true,
      // SQS's largest message: the injector claim-checks what the bus entry cannot carry.
      maxMessageSizeBytes: 1024 * 1024,
      visibilityTimeout: Duration.seconds(180),
      deadLetterQueue: { queue: dlq, maxReceiveCount: 5 },
    });
    const mapping = new lambda.CfnEventSourceMapping(this, 'ToInjector', {
      functionName: platformValue(this, platformEnv, 'injectorSqsFunctionArn'),
      eventSourceArn: queue.queueArn,
      batchSize: 10,
      functionResponseTypes: ['ReportBatchItemFailures'],
    });
    // The injector's SQS role may read this queue and no other.
    const role = iam.Role.fromRoleArn(this, 'InjectorSqsRole', platformValue(this, platformEnv, 'injectorSqsRoleArn'));
    // Lambda checks that the role may receive from the queue when the mapping is created, so
    // the grant's policy must exist first (CloudFormation would create both at once).
    queue.grantConsumeMessages(role).applyBefore(mapping);
    new CfnOutput(this, 'QueueUrl', { value: queue.queueUrl });
  }
}

/** The stacks of one producer deploy.json: the event type's resource (HTTPS only) and the version. */
export function addProducerStacks(scope: Construct, doc: ProducerDeploy, platformEnv: string, props: StackProps = {}): Stack[] {
  if (doc.connection_type === 'SQS') {
    return [new SqsProducerStack(scope, doc.stack_name, generatedStackProps(platformEnv, { ...props, stackName: doc.stack_name, doc, platformEnv }))];
  }
  const typeName = eventTypeStackName(doc.event_type);
  const existing = scope.node.tryFindChild(typeName) as EventTypeResourceStack | undefined;
  const typeStack = existing ?? new EventTypeResourceStack(scope, typeName, generatedStackProps(platformEnv, { ...props, stackName: typeName, eventType: doc.event_type, platformEnv }));
  const version = new HttpsProducerStack(scope, doc.stack_name, generatedStackProps(platformEnv, {
    ...props,
    stackName: doc.stack_name,
    doc,
    platformEnv,
    eventTypeResourceId: typeStack.resourceId,
  }));
  return [typeStack, version];
}
