// Seed step 4: the self-service portal (table, schema registry, portal function and its API).
import { ArnFormat, CfnOutput, Duration, Stack, StackProps, Validations } from 'aws-cdk-lib';
import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as eventschemas from 'aws-cdk-lib/aws-eventschemas';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as s3 from 'aws-cdk-lib/aws-s3';
import { Construct } from 'constructs';
import { AUTHORIZER_CACHE, AUTHORIZER_IDENTITY_SOURCE, stageOptions, unauthorizedResponse } from './api';
import { RustFunction } from './function';
import { BusStack } from './bus';
import { acknowledgeWildcards, objects, tableAndIndexes } from './iam';
import { ENV_VARS, Names, STAGES, TABLE_INDEXES } from './names';

export interface PortalProps extends StackProps {
  lambdaAssets: string;
  bus: BusStack;
  schemaBackup: s3.IBucket;
  publisher: s3.IBucket;
  subscriber: s3.IBucket;
}

export class PortalStack extends Stack {
  readonly table: dynamodb.Table;
  readonly registryName: string;
  /** The REQUEST authorizer of both APIs: an API key to the caller (team, role, application). */
  readonly authorizer: RustFunction;

  constructor(scope: Construct, names: Names, props: PortalProps) {
    super(scope, names.stack('portal'), { ...props, stackName: names.stack('portal') });
    this.table = new dynamodb.Table(this, 'Events', {
      tableName: names.tableName,
      partitionKey: { name: 'PK', type: dynamodb.AttributeType.STRING },
      sortKey: { name: 'SK', type: dynamodb.AttributeType.STRING },
      billingMode: dynamodb.BillingMode.PAY_PER_REQUEST,
      pointInTimeRecoverySpecification: { pointInTimeRecoveryEnabled: true },
      encryption: dynamodb.TableEncryption.AWS_MANAGED,
      deletionProtection: true,
      // The injectors' event_id claims expire (functions/aws/src/dedup.rs EXPIRES_AT).
      timeToLiveAttribute: 'expires_at',
    });
    for (const indexName of TABLE_INDEXES) {
      this.table.addGlobalSecondaryIndex({
        indexName,
        partitionKey: { name: `${indexName}PK`, type: dynamodb.AttributeType.STRING },
        sortKey: { name: `${indexName}SK`, type: dynamodb.AttributeType.STRING },
      });
    }

    const registry = new eventschemas.CfnRegistry(this, 'Registry', {
      registryName: names.registryName,
      description: 'busway event types: the enveloped JSON Schema (draft 4) of every version',
    });
    this.registryName = registry.attrRegistryName;

    // Built from its name, as the provisioning stack does: that stack deploys after this one.
    const stateMachineArn = this.formatArn({
      service: 'states', resource: 'stateMachine', resourceName: names.stateMachineName, arnFormat: ArnFormat.COLON_RESOURCE_NAME,
    });
    const portal = new RustFunction(this, 'Portal', {
      name: 'portal',
      names,
      lambdaAssets: props.lambdaAssets,
      timeout: Duration.seconds(10),
      environment: {
        [ENV_VARS.tableName]: this.table.tableName,
        [ENV_VARS.schemaBackupBucket]: props.schemaBackup.bucketName,
        [ENV_VARS.publisherBucket]: props.publisher.bucketName,
        [ENV_VARS.subscriberBucket]: props.subscriber.bucketName,
        [ENV_VARS.registryName]: this.registryName,
        [ENV_VARS.stateMachineArn]: stateMachineArn,
        // Each key's API Gateway key goes into this plan or one made from it. By name: the broker
        // API stack deploys after this one.
        [ENV_VARS.brokerUsagePlan]: names.brokerUsagePlanName,
        // Pause and resume reach the Custom Event Bus's subscribers; the Classic bus has none.
        [ENV_VARS.busKind]: props.bus.kind,
        // A replay starts within what the Custom Event Bus keeps.
        ...(props.bus.kind === 'custom'
          ? { [ENV_VARS.busArn]: props.bus.busArn, [ENV_VARS.busRetentionDays]: String(props.bus.retentionDays) }
          : {}),
      },
    });
    portal.role.addToPolicy(new iam.PolicyStatement({
      actions: ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'dynamodb:ConditionCheckItem'],
      resources: tableAndIndexes(this.table),
    }));
    // The portal writes deploy.json files (which start provisioning) and schema backups, and
    // nothing else: keys are `.../deploy.json` and `{event_type}/{version}/schema.json`.
    const deployJsons = [objects(this, names, 'publisher-components-bucket', '*/deploy.json'), objects(this, names, 'subscriber-components-bucket', '*/deploy.json')];
    const backups = objects(this, names, 'event-schemas-backup-bucket', '*/schema.json');
    portal.role.addToPolicy(new iam.PolicyStatement({ actions: ['s3:PutObject'], resources: deployJsons.map((o) => o.arn) }));
    portal.role.addToPolicy(new iam.PolicyStatement({ actions: ['s3:PutObject'], resources: [backups.arn] }));
    // `POST /deployments/{id}/retry` provisions a written deploy.json again: it reads the
    // document's current version and starts the execution of the retried attempt.
    portal.role.addToPolicy(new iam.PolicyStatement({ actions: ['s3:GetObject'], resources: deployJsons.map((o) => o.arn) }));
    portal.role.addToPolicy(new iam.PolicyStatement({ actions: ['states:StartExecution'], resources: [stateMachineArn] }));
    // When StartExecution fails or times out, the retry asks whether the execution started after
    // all (functions/aws/src/sfn.rs) before it fails the job.
    const executions = this.formatArn({
      service: 'states', resource: 'execution', resourceName: `${names.stateMachineName}:*`, arnFormat: ArnFormat.COLON_RESOURCE_NAME,
    });
    portal.role.addToPolicy(new iam.PolicyStatement({ actions: ['states:DescribeExecution'], resources: [executions] }));
    acknowledgeWildcards(portal.role, [`Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:${names.stateMachineName}:*`],
      'Execution names are made at run time from each deploy.json version; the wildcard is the executions of the one provisioning state machine.');
    // ListSchemaVersions serves the registry port's list of versions.
    const schemas = `schema/${names.registryName}/*`;
    portal.role.addToPolicy(new iam.PolicyStatement({
      actions: ['schemas:CreateSchema', 'schemas:UpdateSchema', 'schemas:DescribeSchema', 'schemas:ListSchemaVersions'],
      resources: [`arn:${this.partition}:schemas:${this.region}:${this.account}:${schemas}`],
    }));
    // `POST /subscriptions/{id}/pause` and `/resume`: the subscription's subscriber is found by
    // name on the bus and stopped or started (functions/aws/src/subscribers.rs).
    const subscribers = `event-busv2/${names.busName}/*`;
    if (props.bus.kind === 'custom') {
      portal.role.addToPolicy(new iam.PolicyStatement({ actions: ['events:ListSubscribers'], resources: [props.bus.busArn] }));
      portal.role.addToPolicy(new iam.PolicyStatement({
        actions: ['events:UpdateSubscriber'],
        resources: [`arn:${this.partition}:events:${this.region}:${this.account}:${subscribers}`],
      }));
      acknowledgeWildcards(portal.role, [`Resource::arn:<AWS::Partition>:events:<AWS::Region>:<AWS::AccountId>:${subscribers}`],
        'A subscriber\'s ARN is made by the bus when its consumer stack creates it; the wildcard is the platform bus\'s own subscribers.');
    }
    // Keys made, rotated and revoked through the portal have their API Gateway key in a usage plan
    // of the broker stage (functions/aws/src/usage_plans.rs): plans are listed (also by key) and
    // made, keys listed, made, put in a plan, taken out of it and deleted. API Gateway's IAM
    // resources are paths; its key and plan ids are made by API Gateway.
    const apigateway = (path: string) => `arn:${this.partition}:apigateway:${this.region}::${path}`;
    portal.role.addToPolicy(new iam.PolicyStatement({
      actions: ['apigateway:GET'],
      resources: [apigateway('/usageplans'), apigateway('/usageplans/*/keys'), apigateway('/apikeys')],
    }));
    portal.role.addToPolicy(new iam.PolicyStatement({
      actions: ['apigateway:POST'],
      resources: [apigateway('/usageplans'), apigateway('/usageplans/*/keys'), apigateway('/apikeys')],
    }));
    portal.role.addToPolicy(new iam.PolicyStatement({
      actions: ['apigateway:DELETE'],
      resources: [apigateway('/usageplans/*/keys/*'), apigateway('/apikeys/*')],
    }));
    acknowledgeWildcards(portal.role, ['/usageplans/*/keys', '/usageplans/*/keys/*', '/apikeys/*'].map((path) => `Resource::arn:<AWS::Partition>:apigateway:<AWS::Region>::${path}`),
      'API Gateway names usage plans and API keys by ids it makes when the portal creates them; each wildcard is one kind of resource (a plan\'s keys, an API key).');
    acknowledgeWildcards(portal.role, [...deployJsons, backups].map((o) => o.finding).concat(`Resource::arn:<AWS::Partition>:schemas:<AWS::Region>:<AWS::AccountId>:${schemas}`),
      'Keys and schema names are made at run time from validated names; each wildcard is one key shape (`*/deploy.json`, `*/schema.json`) or busway\'s own registry.');

    // The keys live in this stack's table (functions/aws/src/dynamo/api_keys.rs): one GetItem of
    // `KEY#{sha256}` per key, and nothing else of the table.
    this.authorizer = new RustFunction(this, 'Authorizer', {
      name: 'authorizer',
      names,
      lambdaAssets: props.lambdaAssets,
      timeout: Duration.seconds(5),
      environment: {
        [ENV_VARS.tableName]: this.table.tableName,
        [ENV_VARS.schemaBackupBucket]: props.schemaBackup.bucketName,
        [ENV_VARS.publisherBucket]: props.publisher.bucketName,
        [ENV_VARS.subscriberBucket]: props.subscriber.bucketName,
      },
    });
    this.authorizer.role.addToPolicy(new iam.PolicyStatement({
      actions: ['dynamodb:GetItem'],
      resources: [this.table.tableArn],
      conditions: { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['KEY#*'] } },
    }));
    const authorizer = new apigw.RequestAuthorizer(this, 'PortalAuthorizer', {
      handler: this.authorizer.fn,
      identitySources: [AUTHORIZER_IDENTITY_SOURCE],
      resultsCacheTtl: AUTHORIZER_CACHE,
    });

    const api = new apigw.LambdaRestApi(this, 'PortalApi', {
      restApiName: names.portalApiName,
      handler: portal.fn,
      proxy: true,
      endpointTypes: [apigw.EndpointType.REGIONAL],
      // Callers send `Authorization: Bearer <key>`; the authorizer hands their team, role and
      // application to the portal in the request context (busway_http::lambda::with_caller).
      defaultMethodOptions: { authorizationType: apigw.AuthorizationType.CUSTOM, authorizer },
      // API Gateway's account-level logging role: this stack deploys before the broker API's.
      cloudWatchRole: true,
      deployOptions: stageOptions(this, STAGES.portal),
    });
    unauthorizedResponse(api);
    Validations.of(api).acknowledge({
      id: 'AwsSolutions-APIG2',
      reason: 'The portal validates every body itself and answers with the README\'s JSON error body; an API Gateway validator would answer with another shape.',
    });
    Validations.of(api).acknowledge({
      id: 'AwsSolutions-APIG3',
      reason: 'No WAF: every call carries an API key the authorizer checks, and the AWS common rule set blocks bodies over 8 KB, below the schemas the portal takes.',
    });
    Validations.of(api).acknowledge({
      id: 'AwsSolutions-COG4',
      reason: 'The portal\'s callers are teams with API keys, checked by busway\'s Lambda REQUEST authorizer, not Cognito users.',
    });
    Validations.of(api).acknowledge({
      id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonAPIGatewayPushToCloudWatchLogs]',
      reason: 'API Gateway\'s account-level CloudWatch role uses AmazonAPIGatewayPushToCloudWatchLogs, the policy AWS documents for it.',
    });
    new CfnOutput(this, 'PortalUrl', { value: api.url, description: 'the self-service portal API (Authorization: Bearer <key>)' });
  }
}
