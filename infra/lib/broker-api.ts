// Seed step 3, second half: the broker REST API and the injectors. The generators of cdk-app/ add
// one route per event version to this API and deploy its stage; they find everything here through
// the SSM parameters written below.
import { CfnOutput, Duration, Stack, StackProps, Validations } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as lambda from 'aws-cdk-lib/aws-lambda';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import { Construct } from 'constructs';
import { BusStack } from './bus';
import { AUTHORIZER_CACHE, AUTHORIZER_IDENTITY_SOURCE, stageOptions, unauthorizedResponse } from './api';
import { RustFunction } from './function';
import { acknowledgeWildcards, objects, tableAndIndexes } from './iam';
import { ENV_VARS, Names, parameterName, PlatformParameter, STAGES } from './names';

/** The consumer stacks' dead-letter queues (`{rule_name}-dlq`, rule names `busway-{subscription_id}`). */
export const DEAD_LETTER_QUEUES = 'busway-*-dlq';

/** The default usage plan's throttle per key: API Gateway's account defaults (a key without a limit is limited by the account only). */
export const DEFAULT_PRODUCER_THROTTLE = { rateLimit: 10000, burstLimit: 5000 };

export interface BrokerApiProps extends StackProps {
  lambdaAssets: string;
  bus: BusStack;
  table: dynamodb.ITable;
  schemaBackup: s3.IBucket;
  publisher: s3.IBucket;
  subscriber: s3.IBucket;
  /** The authorizer function of the portal stack, shared by both APIs. */
  authorizer: lambda.IFunction;
}

export class BrokerApiStack extends Stack {
  constructor(scope: Construct, names: Names, props: BrokerApiProps) {
    super(scope, names.stack('brokerApi'), { ...props, stackName: names.stack('brokerApi') });
    const injector = this.injector('injector', names, props, Duration.seconds(10));
    // SQS producers' batches: the generators' queues have a visibility timeout of 6 x this.
    const injectorSqs = this.injector('injector-sqs', names, props, Duration.seconds(30));

    const api = new apigw.RestApi(this, 'BrokerApi', {
      restApiName: names.brokerApiName,
      description: 'busway broker: POST /{event_type}/{version}, one route per deployed event version (cdk-app/), and GET /openapi.json',
      endpointTypes: [apigw.EndpointType.REGIONAL],
      cloudWatchRole: false,
      deployOptions: stageOptions(this, STAGES.broker),
      // The usage plans identify a caller by the busway key the authorizer found
      // (`usageIdentifierKey`, functions/authorizer), never by an x-api-key header.
      apiKeySourceType: apigw.ApiKeySourceType.AUTHORIZER,
    });
    // A producer key's limit on AWS is the throttle of the usage plan its API Gateway key is in.
    // This plan is the broker stage's default one, of every key without a limit; the portal and
    // `busway-aws keys` make each busway key's API Gateway key in it, or in the plan of the key's
    // limit that they make from it (functions/aws/src/usage_plans.rs; infra/README.md: "Rate
    // limits"). The event routes require an API key (cdk-app/ producer stacks).
    const plan = api.addUsagePlan('DefaultProducerPlan', {
      name: names.brokerUsagePlanName,
      description: 'busway producer keys without a rate limit of their own',
      throttle: DEFAULT_PRODUCER_THROTTLE,
      apiStages: [{ api, stage: api.deploymentStage }],
    });
    // A REST API deploys only with a method; this one also answers load balancers and smoke tests.
    const health = api.root.addResource('health').addMethod('GET', new apigw.MockIntegration({
      requestTemplates: { 'application/json': '{"statusCode": 200}' },
      passthroughBehavior: apigw.PassthroughBehavior.NEVER,
      integrationResponses: [{ statusCode: '200', responseTemplates: { 'application/json': '{"status":"ok"}' } }],
    }), { authorizationType: apigw.AuthorizationType.NONE, methodResponses: [{ statusCode: '200' }] });
    Validations.of(health).acknowledge({
      id: 'AwsSolutions-APIG4',
      reason: 'GET /health is a MOCK returning a constant: it reaches no backend and reads no input. Event routes use the key authorizer (cdk-app/).',
    });
    Validations.of(health).acknowledge({ id: 'AwsSolutions-COG4', reason: 'Same MOCK health check: no caller identity to check.' });
    Validations.of(api).acknowledge({
      id: 'AwsSolutions-APIG2',
      reason: 'Each event route gets its own body validator and JSON Schema model from the producer generator (cdk-app/); /health has no input.',
    });
    Validations.of(api).acknowledge({
      id: 'AwsSolutions-APIG3',
      reason: 'No WAF: producers send API keys the authorizer checks, and the AWS common rule set blocks bodies over 8 KB, while events go up to 3,000,000 bytes.',
    });

    // The event routes are the generators' (cdk-app/), so the authorizer is declared here and named
    // to them by its id; CDK's RequestAuthorizer would refuse to synthesize without a method of
    // this stack using it.
    const authorizer = new apigw.CfnAuthorizer(this, 'BrokerAuthorizer', {
      restApiId: api.restApiId,
      name: `${names.brokerApiName}-keys`,
      type: 'REQUEST',
      identitySource: AUTHORIZER_IDENTITY_SOURCE,
      authorizerResultTtlInSeconds: AUTHORIZER_CACHE.toSeconds(),
      authorizerUri: `arn:${this.partition}:apigateway:${this.region}:lambda:path/2015-03-31/functions/${props.authorizer.functionArn}/invocations`,
    });
    new lambda.CfnPermission(this, 'AuthorizerInvoke', {
      action: 'lambda:InvokeFunction',
      functionName: props.authorizer.functionArn,
      principal: 'apigateway.amazonaws.com',
      sourceArn: `arn:${this.partition}:execute-api:${this.region}:${this.account}:${api.restApiId}/authorizers/${authorizer.ref}`,
    });
    unauthorizedResponse(api);

    // GET /openapi.json: the broker's OpenAPI document, which the injector builds from the event
    // store's active versions (busway_injector::openapi), behind the same key authorizer as the
    // event routes.
    const openapi = api.root.addResource('openapi.json').addMethod('GET', new apigw.LambdaIntegration(injector.fn), {
      authorizationType: apigw.AuthorizationType.CUSTOM,
      authorizer: { authorizerId: authorizer.ref, authorizationType: apigw.AuthorizationType.CUSTOM },
    });
    Validations.of(openapi).acknowledge({
      id: 'AwsSolutions-COG4',
      reason: 'Callers are teams with busway API keys checked by the Lambda authorizer, not Cognito users.',
    });

    const delivery = this.delivery(names, props);

    const parameters: [PlatformParameter, string][] = [
      ['brokerApiId', api.restApiId],
      ['brokerApiRootResourceId', api.restApiRootResourceId],
      ['brokerApiAuthorizerId', authorizer.ref],
      ['injectorFunctionArn', injector.fn.functionArn],
      ['injectorSqsFunctionArn', injectorSqs.fn.functionArn],
      // The SQS producer stacks grant this role the consumption of their own queue.
      ['injectorSqsRoleArn', injectorSqs.role.roleArn],
      // Every HTTPS subscription's rule or subscriber targets it (cdk-app/ consumer stacks).
      ['deliveryFunctionArn', delivery.fn.functionArn],
    ];
    for (const [p, stringValue] of parameters) {
      new ssm.StringParameter(this, `${p}Parameter`, { parameterName: parameterName(names.env, p), stringValue });
    }
    new CfnOutput(this, 'DefaultProducerUsagePlanId', { value: plan.usagePlanId, description: 'the broker stage\'s default usage plan (producer keys without a rate limit)' });
    new CfnOutput(this, 'BrokerUrl', { value: api.url, description: 'the broker API: POST {url}{event_type}/{version} (Authorization: Bearer <producer key>)' });
  }

  /**
   * The delivery function of HTTPS subscriptions (functions/delivery): it signs with the
   * subscription's secrets and posts. It reads a subscription's record and its signing secrets
   * (both under `SUBSCRIPTION#{id}`), nothing else of the table, and on the Classic bus it sends
   * the events it gave up on to the subscription's dead-letter queue (the on-failure destination
   * of the subscription's alias, cdk-app/ consumer stacks): `busway-{id}-dlq`.
   */
  private delivery(names: Names, props: BrokerApiProps): RustFunction {
    const f = new RustFunction(this, 'Delivery', {
      name: 'delivery',
      names,
      lambdaAssets: props.lambdaAssets,
      // The target has 5 s (busway_delivery::TIMEOUT), after the table reads and the DNS check.
      timeout: Duration.seconds(10),
      environment: {
        [ENV_VARS.tableName]: props.table.tableName,
        // The AWS host's configuration names all three buckets; the role touches none.
        [ENV_VARS.schemaBackupBucket]: props.schemaBackup.bucketName,
        [ENV_VARS.publisherBucket]: props.publisher.bucketName,
        [ENV_VARS.subscriberBucket]: props.subscriber.bucketName,
      },
    });
    f.role.addToPolicy(new iam.PolicyStatement({
      actions: ['dynamodb:GetItem'],
      resources: [props.table.tableArn],
      conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['SUBSCRIPTION#*'] } },
    }));
    const deadLetters = `arn:${this.partition}:sqs:${this.region}:${this.account}:${DEAD_LETTER_QUEUES}`;
    f.role.addToPolicy(new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [deadLetters] }));
    acknowledgeWildcards(f.role, [`Resource::arn:<AWS::Partition>:sqs:<AWS::Region>:<AWS::AccountId>:${DEAD_LETTER_QUEUES}`],
      'Lambda sends a Classic subscription\'s failed deliveries to its dead-letter queue with this role; the queues are made per subscription by the consumer stacks, named busway-{id}-dlq.');
    return f;
  }

  /** An injector: PutEvents on the platform bus, and reads of the event types it routes. */
  private injector(name: 'injector' | 'injector-sqs', names: Names, props: BrokerApiProps, timeout: Duration): RustFunction {
    const f = new RustFunction(this, name === 'injector' ? 'Injector' : 'InjectorSqs', {
      name,
      names,
      lambdaAssets: props.lambdaAssets,
      timeout,
      environment: {
        [ENV_VARS.busKind]: props.bus.kind,
        // The Classic bus is named in PutEvents, the Custom Event Bus by its ARN.
        ...(props.bus.kind === 'custom' ? { [ENV_VARS.busArn]: props.bus.busArn } : { [ENV_VARS.busName]: props.bus.busName }),
        [ENV_VARS.tableName]: props.table.tableName,
        // The AWS host's configuration names all three buckets; the role limits what is touched.
        [ENV_VARS.schemaBackupBucket]: props.schemaBackup.bucketName,
        [ENV_VARS.publisherBucket]: props.publisher.bucketName,
        [ENV_VARS.subscriberBucket]: props.subscriber.bucketName,
      },
    });
    f.role.addToPolicy(new iam.PolicyStatement({ actions: ['events:PutEvents'], resources: [props.bus.busArn] }));
    // The data of an event above the bus entry limit (1 MB) is stored as a claim check and the bus
    // event carries its location (busway_core::claim_check::PREFIX).
    const claimChecks = objects(this, names, 'event-schemas-backup-bucket', 'claim-checks/*');
    f.role.addToPolicy(new iam.PolicyStatement({ actions: ['s3:PutObject'], resources: [claimChecks.arn] }));
    acknowledgeWildcards(f.role, [claimChecks.finding], 'Claim checks are written under their own prefix, one object per oversized event.');
    // The bus Source is the application as registered, and an SQS batch is validated against its
    // version's schema: both are read from the event store, never taken from the payload.
    f.role.addToPolicy(new iam.PolicyStatement({
      actions: ['dynamodb:GetItem', 'dynamodb:Query'],
      resources: tableAndIndexes(props.table),
    }));
    // A producer's event_id is put on the bus once within the deduplication window: the injector
    // claims it with a conditional write of its own items only (functions/aws/src/dedup.rs).
    f.role.addToPolicy(new iam.PolicyStatement({
      actions: ['dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'],
      resources: [props.table.tableArn],
      conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['EVENT_ID#*'] } },
    }));
    return f;
  }
}
