// The platform app, synthesized offline with a dummy bootstrap per function. Template.fromStack
// runs cdk-nag's AWS Solutions checks (a validation plugin on every stack), so every template
// asserted here is also nag-clean: an unacknowledged finding makes it throw (tested below).
import { after, test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { App } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as s3assets from 'aws-cdk-lib/aws-s3-assets';
import { DEFAULT_PRODUCER_THROTTLE } from '../lib/broker-api';
import { BusSettings, DEFAULT_RETENTION_DAYS } from '../lib/bus';
import { DEFAULT_BUS_KIND, ENV_VARS, FUNCTIONS, PARAMETERS, parameterName, PlatformParameter, STAGES } from '../lib/names';
import { platform } from '../lib/platform';
import { EMF_METRICS } from '../lib/monitoring';
import { ASL_FILE, SUBSTITUTIONS_FILE } from '../lib/provisioning';
import { generatedRolesBoundaryName, generatorsExecutionPolicyName, generatorsQualifier, generatorsToolkitStackName } from '../../cdk-app/lib/platform-names';
import { CLAIM_CHECK_PREFIX, CLAIM_CHECK_RETENTION_DAYS } from '../lib/storage';

const CDK_CONTEXT = JSON.parse(fs.readFileSync(path.join(__dirname, '..', 'cdk.json'), 'utf8')).context;

/** What cargo-lambda leaves: `{dir}/{name}/bootstrap` (a zip for one of them, as `--output-format zip` gives). */
function dummyAssets(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'busway-lambda-'));
  for (const name of FUNCTIONS) {
    fs.mkdirSync(path.join(dir, name));
    fs.writeFileSync(path.join(dir, name, name === 'portal' ? 'bootstrap.zip' : 'bootstrap'), '#!/bin/sh\n');
  }
  return dir;
}

function newApp(): App {
  return new App({ context: CDK_CONTEXT });
}

const assets = dummyAssets();
after(() => fs.rmSync(assets, { recursive: true, force: true }));
// What bin/app.ts gives a new install: the Custom Event Bus, 7 days' retention.
const SETTINGS: BusSettings = { kind: DEFAULT_BUS_KIND, retentionDays: DEFAULT_RETENTION_DAYS };
const CLASSIC: BusSettings = { ...SETTINGS, kind: 'classic' };
const p = platform(newApp(), 'dev', assets, SETTINGS);
// The same platform installed with the Classic bus: only the bus, the portal's and the injectors'
// environment, the portal's subscriber permissions and the consumer build's bus kind differ.
const c = platform(newApp(), 'dev', assets, CLASSIC);
const classic = { bus: Template.fromStack(c.bus), portal: Template.fromStack(c.portal), brokerApi: Template.fromStack(c.brokerApi), provisioning: Template.fromStack(c.provisioning) };
const t = {
  backup: Template.fromStack(p.backup),
  storage: Template.fromStack(p.storage),
  bus: Template.fromStack(p.bus),
  portal: Template.fromStack(p.portal),
  brokerApi: Template.fromStack(p.brokerApi),
  provisioning: Template.fromStack(p.provisioning),
  monitoring: Template.fromStack(p.monitoring),
};
const all = Object.values(t);

/** An intrinsic as readable text: `<Logical.Attr>`, `<import:Export>`, joins concatenated. */
function render(v: any): string {
  if (typeof v === 'string') return v;
  if (v.Ref) return `<${v.Ref}>`;
  if (v['Fn::GetAtt']) return `<${v['Fn::GetAtt'].join('.')}>`;
  if (v['Fn::ImportValue']) return `<import:${v['Fn::ImportValue']}>`;
  if (v['Fn::Join']) return v['Fn::Join'][1].map(render).join(v['Fn::Join'][0]);
  if (v['Fn::Sub']) return v['Fn::Sub'];
  return JSON.stringify(v);
}

type Statement = { actions: string[]; resources: string[] };

/** The statements of every policy attached to the one role whose logical id starts with `rolePrefix`. */
function statements(tpl: Template, rolePrefix: string): Statement[] {
  const roles = Object.keys(tpl.findResources('AWS::IAM::Role')).filter((id) => id.startsWith(rolePrefix));
  assert.equal(roles.length, 1, `roles ${rolePrefix}*: ${roles}`);
  return Object.values(tpl.findResources('AWS::IAM::Policy'))
    .filter((r: any) => r.Properties.Roles.some((x: any) => x.Ref === roles[0]))
    .flatMap((r: any) => r.Properties.PolicyDocument.Statement)
    .map((s: any) => {
      assert.equal(s.Effect, 'Allow');
      return { actions: [s.Action].flat(), resources: [s.Resource].flat().map(render) };
    });
}

/** Exactly these statements, in order: the same actions, each resource matching its pattern. */
function assertStatements(actual: Statement[], expected: [string[], RegExp[]][]): void {
  assert.equal(actual.length, expected.length, `statements: ${JSON.stringify(actual, null, 1)}`);
  expected.forEach(([actions, resources], i) => {
    assert.deepEqual(actual[i].actions, actions);
    assert.equal(actual[i].resources.length, resources.length, `resources of ${actions}: ${actual[i].resources}`);
    resources.forEach((re, j) => assert.match(actual[i].resources[j], re));
  });
}

const LOGS = ['logs:CreateLogStream', 'logs:PutLogEvents'];
const TABLE = /^<import:dev-self-service-portal:ExportsOutputFnGetAttEvents\w+Arn\w+>$/;
const INDEX = (i: string) => new RegExp(`^<import:dev-self-service-portal:ExportsOutputFnGetAttEvents\\w+Arn\\w+>/index/${i}$`);
const TABLE_AND_INDEXES = [TABLE, INDEX('GSI1'), INDEX('GSI2')];
const ARN = (service: string, rest: string) => new RegExp(`^arn:<AWS::Partition>:${service}:<AWS::Region>:<AWS::AccountId>:${rest}$`);
const APIGW = (path: string) => new RegExp(`^arn:<AWS::Partition>:apigateway:<AWS::Region>::${path.replace(/[*]/g, '\\$&')}$`);
const OBJECTS = (bucket: string, keys: string) => new RegExp(`^arn:<AWS::Partition>:s3:::dev-${bucket}-<AWS::AccountId>/${keys.replace(/[.*]/g, '\\$&')}$`);

test('the three buckets are versioned, SSE-S3 encrypted, private, TLS only and log their access', () => {
  const cases: [Template, string][] = [
    [t.backup, 'dev-event-schemas-backup-bucket'],
    [t.storage, 'dev-publisher-components-bucket'],
    [t.storage, 'dev-subscriber-components-bucket'],
  ];
  for (const [tpl, name] of cases) {
    tpl.hasResource('AWS::S3::Bucket', {
      DeletionPolicy: 'Retain',
      Properties: {
        BucketName: { 'Fn::Join': ['', [`${name}-`, { Ref: 'AWS::AccountId' }]] },
        VersioningConfiguration: { Status: 'Enabled' },
        BucketEncryption: { ServerSideEncryptionConfiguration: [{ ServerSideEncryptionByDefault: { SSEAlgorithm: 'AES256' } }] },
        PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
        OwnershipControls: { Rules: [{ ObjectOwnership: 'BucketOwnerEnforced' }] },
        LoggingConfiguration: { DestinationBucketName: { Ref: Match.stringLikeRegexp('^AccessLogs') }, LogFilePrefix: Match.stringLikeRegexp('/$') },
      },
    });
  }
  for (const tpl of [t.backup, t.storage]) {
    // Every bucket of the stack, the access log bucket included, refuses plain HTTP.
    const buckets = Object.keys(tpl.findResources('AWS::S3::Bucket'));
    const policies = Object.values(tpl.findResources('AWS::S3::BucketPolicy')) as any[];
    for (const b of buckets) {
      const policy = policies.find((x) => x.Properties.Bucket.Ref === b);
      assert.ok(policy, `${b} has no bucket policy`);
      assert.ok(policy.Properties.PolicyDocument.Statement.some((s: any) =>
        s.Effect === 'Deny' && s.Action === 's3:*' && s.Condition?.Bool?.['aws:SecureTransport'] === 'false'), `${b} accepts plain HTTP`);
    }
    tpl.hasResourceProperties('AWS::S3::Bucket', {
      VersioningConfiguration: { Status: 'Enabled' },
      LoggingConfiguration: Match.absent(),
      PublicAccessBlockConfiguration: { BlockPublicAcls: true, BlockPublicPolicy: true, IgnorePublicAcls: true, RestrictPublicBuckets: true },
    });
    // Log delivery is granted by bucket policy (the bucket owner enforces ownership: no ACLs).
    tpl.hasResourceProperties('AWS::S3::BucketPolicy', {
      PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({ Principal: { Service: 'logging.s3.amazonaws.com' }, Action: 's3:PutObject' })]) },
    });
  }
});

test('claim checks expire after busway_core\'s retention, and schema backups never do', () => {
  const rust = fs.readFileSync(path.join(__dirname, '..', '..', 'functions', 'core', 'src', 'claim_check.rs'), 'utf8');
  assert.equal(Number(rust.match(/pub const RETENTION_DAYS: u64 = (\d+);/)?.[1]), CLAIM_CHECK_RETENTION_DAYS);
  assert.equal(rust.match(/pub const PREFIX: &str = "([^"]+)";/)?.[1], CLAIM_CHECK_PREFIX);
  const buckets = Object.values(t.backup.findResources('AWS::S3::Bucket')) as any[];
  const backup = buckets.find((b) => render(b.Properties.BucketName ?? '').startsWith('dev-event-schemas-backup-bucket'));
  assert.ok(backup, 'the schema backup bucket');
  assert.deepEqual(backup.Properties.LifecycleConfiguration.Rules, [
    { Id: 'ExpireClaimChecks', Prefix: 'claim-checks/', Status: 'Enabled', ExpirationInDays: 14, NoncurrentVersionExpiration: { NoncurrentDays: 1 } },
    { Id: 'RemoveExpiredClaimCheckMarkers', Prefix: 'claim-checks/', Status: 'Enabled', ExpiredObjectDeleteMarker: true },
  ]);
});

test('the events table: PK/SK strings, on demand, point-in-time recovery, encrypted, GSI1 and GSI2 for the AWS host\'s list queries', () => {
  t.portal.hasResource('AWS::DynamoDB::Table', {
    DeletionPolicy: 'Retain',
    Properties: {
      TableName: 'dev-self-service-events-table',
      KeySchema: [{ AttributeName: 'PK', KeyType: 'HASH' }, { AttributeName: 'SK', KeyType: 'RANGE' }],
      AttributeDefinitions: Match.arrayWith([{ AttributeName: 'PK', AttributeType: 'S' }, { AttributeName: 'SK', AttributeType: 'S' }]),
      BillingMode: 'PAY_PER_REQUEST',
      PointInTimeRecoverySpecification: { PointInTimeRecoveryEnabled: true },
      SSESpecification: { SSEEnabled: true },
      DeletionProtectionEnabled: true,
      GlobalSecondaryIndexes: ['GSI1', 'GSI2'].map((i) => ({
        IndexName: i,
        KeySchema: [{ AttributeName: `${i}PK`, KeyType: 'HASH' }, { AttributeName: `${i}SK`, KeyType: 'RANGE' }],
        Projection: { ProjectionType: 'ALL' },
      })),
    },
  });
});

test('a new install has the Custom Event Bus under the seed name, keeping every event 7 days; the retention is a setting of 1 to 365 days', () => {
  assert.equal(SETTINGS.kind, 'custom');
  t.bus.hasResourceProperties('AWS::EventsV2::EventBus', { Name: 'dev.custom.events.bus', StorageConfiguration: { RetentionPeriodInDays: 7 } });
  t.bus.resourceCountIs('AWS::EventsV2::EventBus', 1);
  t.bus.resourceCountIs('AWS::Events::EventBus', 0);
  t.bus.resourceCountIs('AWS::Events::Archive', 0);
  const year = Template.fromStack(platform(newApp(), 'dev', assets, { kind: 'custom', retentionDays: 365 }).bus);
  year.hasResourceProperties('AWS::EventsV2::EventBus', { StorageConfiguration: { RetentionPeriodInDays: 365 } });
  for (const days of [0, 366, 1.5, Number.NaN]) {
    assert.throws(() => platform(newApp(), 'dev', assets, { kind: 'custom', retentionDays: days }), /bus retention/);
  }
});

test('the Classic bus keeps the seed name and archives busway events; the schema registry exists', () => {
  classic.bus.resourceCountIs('AWS::EventsV2::EventBus', 0);
  classic.bus.hasResourceProperties('AWS::Events::EventBus', { Name: 'dev.custom.events.bus' });
  classic.bus.hasResourceProperties('AWS::Events::Archive', {
    SourceArn: { 'Fn::GetAtt': [Match.stringLikeRegexp('^Bus'), 'Arn'] },
    EventPattern: { source: [{ prefix: 'busway.' }] },
    RetentionDays: 30,
  });
  t.portal.hasResourceProperties('AWS::EventSchemas::Registry', { RegistryName: 'dev.busway.schemas' });
});

// busway_aws::Config names all three buckets.
const BUCKETS = [ENV_VARS.schemaBackupBucket, ENV_VARS.publisherBucket, ENV_VARS.subscriberBucket];

test('every function is a Rust bootstrap on provided.al2023 arm64 with exactly the environment it reads', () => {
  const expected: Record<string, [Template, string[]]> = {
    portal: [t.portal, [ENV_VARS.tableName, ...BUCKETS, ENV_VARS.registryName, ENV_VARS.stateMachineArn, ENV_VARS.brokerUsagePlan, ENV_VARS.busKind, ENV_VARS.busArn, ENV_VARS.busRetentionDays]],
    injector: [t.brokerApi, [ENV_VARS.busKind, ENV_VARS.busArn, ENV_VARS.tableName, ...BUCKETS]],
    'injector-sqs': [t.brokerApi, [ENV_VARS.busKind, ENV_VARS.busArn, ENV_VARS.tableName, ...BUCKETS]],
    provisioner: [t.provisioning, [ENV_VARS.tableName, ...BUCKETS, ENV_VARS.stateMachineArn]],
    authorizer: [t.portal, [ENV_VARS.tableName, ...BUCKETS]],
    delivery: [t.brokerApi, [ENV_VARS.tableName, ...BUCKETS]],
  };
  assert.deepEqual(Object.keys(expected).sort(), [...FUNCTIONS].sort());
  for (const [name, [tpl, vars]] of Object.entries(expected)) {
    const fns = Object.values(tpl.findResources('AWS::Lambda::Function', { Properties: { FunctionName: `dev-busway-${name}` } })) as any[];
    assert.equal(fns.length, 1, name);
    const props = fns[0].Properties;
    assert.equal(props.Runtime, 'provided.al2023');
    assert.deepEqual(props.Architectures, ['arm64']);
    assert.equal(props.Handler, 'bootstrap');
    assert.match(props.LoggingConfig.LogGroup.Ref, new RegExp(`^${name.split('-').map((w) => w[0].toUpperCase() + w.slice(1)).join('')}Logs`), `${name} logs to its own group`);
    assert.deepEqual(Object.keys(props.Environment.Variables).sort(), [...vars, 'RUST_LOG', ENV_VARS.metricsNamespace].sort(), name);
  }
  t.portal.hasResourceProperties('AWS::Lambda::Function', {
    FunctionName: 'dev-busway-portal',
    Environment: { Variables: Match.objectLike({
      [ENV_VARS.tableName]: { Ref: Match.stringLikeRegexp('^Events') },
      [ENV_VARS.registryName]: { 'Fn::GetAtt': [Match.stringLikeRegexp('^Registry'), 'RegistryName'] },
      [ENV_VARS.stateMachineArn]: { 'Fn::Join': ['', Match.arrayWith([':stateMachine:dev-busway-provisioning'])] },
    }) },
  });
  t.portal.hasResourceProperties('AWS::Lambda::Function', {
    FunctionName: 'dev-busway-portal',
    Environment: { Variables: Match.objectLike({ [ENV_VARS.busKind]: 'custom', [ENV_VARS.busArn]: { 'Fn::ImportValue': Match.stringLikeRegexp('EventBusArn') } }) },
  });
  const classicPortal = Object.values(classic.portal.findResources('AWS::Lambda::Function', { Properties: { FunctionName: 'dev-busway-portal' } }))[0] as any;
  assert.deepEqual(Object.keys(classicPortal.Properties.Environment.Variables).sort(),
    [ENV_VARS.tableName, ...BUCKETS, ENV_VARS.registryName, ENV_VARS.stateMachineArn, ENV_VARS.brokerUsagePlan, ENV_VARS.busKind, 'RUST_LOG', ENV_VARS.metricsNamespace].sort());
  assert.equal(classicPortal.Properties.Environment.Variables[ENV_VARS.busKind], 'classic');
  for (const name of ['injector', 'injector-sqs']) {
    t.brokerApi.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: `dev-busway-${name}`,
      Environment: { Variables: Match.objectLike({ [ENV_VARS.busKind]: 'custom', [ENV_VARS.busArn]: { 'Fn::ImportValue': Match.stringLikeRegexp('EventBusArn') } }) },
    });
    const fn = Object.values(classic.brokerApi.findResources('AWS::Lambda::Function', { Properties: { FunctionName: `dev-busway-${name}` } }))[0] as any;
    assert.deepEqual(Object.keys(fn.Properties.Environment.Variables).sort(), [ENV_VARS.busKind, ENV_VARS.busName, ENV_VARS.tableName, ...BUCKETS, 'RUST_LOG', ENV_VARS.metricsNamespace].sort());
    assert.equal(fn.Properties.Environment.Variables[ENV_VARS.busKind], 'classic');
  }
  t.provisioning.hasResourceProperties('AWS::Lambda::Function', {
    FunctionName: 'dev-busway-provisioner',
    Environment: { Variables: Match.objectLike({
      [ENV_VARS.stateMachineArn]: { 'Fn::Join': ['', Match.arrayWith([':stateMachine:dev-busway-provisioning'])] },
    }) },
  });
});

test('the portal may read and write the table, put deploy.json files and schema backups, manage the registry\'s schemas, provision a retried deployment (and see whether its execution started), pause its bus\'s subscribers and manage API Gateway keys and usage plans only', () => {
  const common: [string[], RegExp[]][] = [
    [LOGS, [/^<PortalLogs\w+\.Arn>$/]],
    [['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem', 'dynamodb:ConditionCheckItem'], [/^<Events\w+\.Arn>$/, /^<Events\w+\.Arn>\/index\/GSI1$/, /^<Events\w+\.Arn>\/index\/GSI2$/]],
    [['s3:PutObject'], [OBJECTS('publisher-components-bucket', '*/deploy.json'), OBJECTS('subscriber-components-bucket', '*/deploy.json')]],
    [['s3:PutObject'], [OBJECTS('event-schemas-backup-bucket', '*/schema.json')]],
    [['s3:GetObject'], [OBJECTS('publisher-components-bucket', '*/deploy.json'), OBJECTS('subscriber-components-bucket', '*/deploy.json')]],
    [['states:StartExecution'], [ARN('states', 'stateMachine:dev-busway-provisioning')]],
    [['states:DescribeExecution'], [ARN('states', 'execution:dev-busway-provisioning:\\*')]],
    [['schemas:CreateSchema', 'schemas:UpdateSchema', 'schemas:DescribeSchema', 'schemas:ListSchemaVersions'], [ARN('schemas', 'schema/dev\\.busway\\.schemas/\\*')]],
  ];
  // The API Gateway key of each key in a usage plan of the broker stage (functions/aws/src/usage_plans.rs):
  // GET, POST and DELETE on API keys, usage plans and their keys, nothing else of API Gateway.
  const gateway: [string[], RegExp[]][] = [
    [['apigateway:GET'], [APIGW('/usageplans'), APIGW('/usageplans/*/keys'), APIGW('/apikeys')]],
    [['apigateway:POST'], [APIGW('/usageplans'), APIGW('/usageplans/*/keys'), APIGW('/apikeys')]],
    [['apigateway:DELETE'], [APIGW('/usageplans/*/keys/*'), APIGW('/apikeys/*')]],
  ];
  assertStatements(statements(t.portal, 'PortalRole'), [
    ...common,
    [['events:ListSubscribers'], [/^<import:dev-event-broker-bus:ExportsOutputFnGetAttBusEventBusArn\w+>$/]],
    [['events:UpdateSubscriber'], [ARN('events', 'event-busv2/dev\\.custom\\.events\\.bus/\\*')]],
    ...gateway,
  ]);
  assertStatements(statements(classic.portal, 'PortalRole'), [...common, ...gateway]);
});

test('the injectors may put events on the platform bus, write claim checks, read the event store and claim event ids, nothing else', () => {
  for (const [tpl, role, busArn] of [
    [t.brokerApi, 'InjectorRole', /^<import:dev-event-broker-bus:ExportsOutputFnGetAttBusEventBusArn\w+>$/],
    [t.brokerApi, 'InjectorSqsRole', /^<import:dev-event-broker-bus:ExportsOutputFnGetAttBusEventBusArn\w+>$/],
    [classic.brokerApi, 'InjectorRole', /^<import:dev-event-broker-bus:ExportsOutputFnGetAttBus\w+Arn\w+>$/],
  ] as [Template, string, RegExp][]) {
    assertStatements(statements(tpl, role), [
      [LOGS, [new RegExp(`^<${role.replace('Role', 'Logs')}\\w+\\.Arn>$`)]],
      [['events:PutEvents'], [busArn]],
      [['s3:PutObject'], [OBJECTS('event-schemas-backup-bucket', 'claim-checks/*')]],
      [['dynamodb:GetItem', 'dynamodb:Query'], TABLE_AND_INDEXES],
      [['dynamodb:PutItem', 'dynamodb:UpdateItem', 'dynamodb:DeleteItem'], [TABLE]],
    ]);
    // The writes reach the event_id claims only (functions/aws/src/dedup.rs).
    const claims = Object.values(tpl.findResources('AWS::IAM::Policy'))
      .flatMap((r: any) => r.Properties.PolicyDocument.Statement)
      .filter((s: any) => [s.Action].flat().includes('dynamodb:PutItem'));
    assert.ok(claims.length > 0);
    for (const s of claims) {
      assert.deepEqual(s.Condition, { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['EVENT_ID#*'] } });
    }
  }
});

test('the authorizer may read API keys from the table, one GetItem of a KEY# item, nothing else', () => {
  assertStatements(statements(t.portal, 'AuthorizerRole'), [
    [LOGS, [/^<AuthorizerLogs\w+\.Arn>$/]],
    [['dynamodb:GetItem'], [/^<Events\w+\.Arn>$/]],
  ]);
  const reads = Object.values(t.portal.findResources('AWS::IAM::Policy'))
    .filter((r: any) => r.Properties.Roles.some((x: any) => String(x.Ref).startsWith('AuthorizerRole')))
    .flatMap((r: any) => r.Properties.PolicyDocument.Statement)
    .filter((s: any) => [s.Action].flat().includes('dynamodb:GetItem'));
  assert.equal(reads.length, 1);
  assert.deepEqual(reads[0].Condition, { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['KEY#*'] } });
});

test('the delivery function may read subscriptions and their signing secrets, one GetItem of a SUBSCRIPTION# item, and send to the consumer stacks\' DLQs, nothing else', () => {
  for (const tpl of [t.brokerApi, classic.brokerApi]) {
    assertStatements(statements(tpl, 'DeliveryRole'), [
      [LOGS, [/^<DeliveryLogs\w+\.Arn>$/]],
      [['dynamodb:GetItem'], [TABLE]],
      [['sqs:SendMessage'], [ARN('sqs', 'busway-\\*-dlq')]],
    ]);
    const reads = Object.values(tpl.findResources('AWS::IAM::Policy'))
      .filter((r: any) => r.Properties.Roles.some((x: any) => String(x.Ref).startsWith('DeliveryRole')))
      .flatMap((r: any) => r.Properties.PolicyDocument.Statement)
      .filter((s: any) => [s.Action].flat().includes('dynamodb:GetItem'));
    assert.equal(reads.length, 1);
    // busway_aws's subscription_pk: the subscription record and its SIGNING_SECRETS item.
    assert.deepEqual(reads[0].Condition, { 'ForAllValues:StringLike': { 'dynamodb:LeadingKeys': ['SUBSCRIPTION#*'] } });
  }
});

test('both APIs authorize with the key authorizer, cached per Authorization header, and answer 401 with the challenge and busway\'s error body', () => {
  const authorizerFn = Object.keys(t.portal.findResources('AWS::Lambda::Function', { Properties: { FunctionName: 'dev-busway-authorizer' } }));
  assert.equal(authorizerFn.length, 1);
  const invokes = (uri: any) => render(uri);
  // The portal API: its own REQUEST authorizer on every method.
  const portalAuthorizers = Object.entries(t.portal.findResources('AWS::ApiGateway::Authorizer')) as [string, any][];
  assert.equal(portalAuthorizers.length, 1);
  const [portalAuthorizerId, portalAuthorizer] = portalAuthorizers[0];
  assert.equal(portalAuthorizer.Properties.Type, 'REQUEST');
  assert.equal(portalAuthorizer.Properties.IdentitySource, 'method.request.header.Authorization');
  assert.equal(portalAuthorizer.Properties.AuthorizerResultTtlInSeconds, 300);
  assert.match(invokes(portalAuthorizer.Properties.AuthorizerUri), new RegExp(`<${authorizerFn[0]}\\.Arn>/invocations$`));
  for (const m of Object.values(t.portal.findResources('AWS::ApiGateway::Method')) as any[]) {
    assert.equal(m.Properties.AuthorizationType, 'CUSTOM');
    assert.deepEqual(m.Properties.AuthorizerId, { Ref: portalAuthorizerId });
  }
  t.portal.hasResourceProperties('AWS::Lambda::Permission', {
    Principal: 'apigateway.amazonaws.com', FunctionName: { 'Fn::GetAtt': [authorizerFn[0], 'Arn'] },
    SourceArn: Match.objectLike({ 'Fn::Join': Match.arrayWith([Match.arrayWith(['/authorizers/', { Ref: portalAuthorizerId }])]) }),
  });
  // The broker API: the same function, named to the generators' routes by its id (cdk-app/).
  const brokerAuthorizers = Object.entries(t.brokerApi.findResources('AWS::ApiGateway::Authorizer')) as [string, any][];
  assert.equal(brokerAuthorizers.length, 1);
  const [brokerAuthorizerId, brokerAuthorizer] = brokerAuthorizers[0];
  assert.equal(brokerAuthorizer.Properties.Type, 'REQUEST');
  assert.equal(brokerAuthorizer.Properties.IdentitySource, 'method.request.header.Authorization');
  assert.equal(brokerAuthorizer.Properties.AuthorizerResultTtlInSeconds, 300);
  assert.match(invokes(brokerAuthorizer.Properties.AuthorizerUri), /<import:dev-self-service-portal:ExportsOutputFnGetAttAuthorizer\w+Arn\w+>\/invocations$/);
  t.brokerApi.hasResourceProperties('AWS::Lambda::Permission', {
    Principal: 'apigateway.amazonaws.com',
    SourceArn: Match.objectLike({ 'Fn::Join': Match.arrayWith([Match.arrayWith(['/authorizers/', { Ref: brokerAuthorizerId }])]) }),
  });
  const parameter = Object.values(t.brokerApi.findResources('AWS::SSM::Parameter', { Properties: { Name: '/busway/dev/broker-api/authorizer-id' } })) as any[];
  assert.deepEqual(parameter[0].Properties.Value, { Ref: brokerAuthorizerId });
  for (const tpl of [t.portal, t.brokerApi]) {
    tpl.hasResourceProperties('AWS::ApiGateway::GatewayResponse', {
      ResponseType: 'UNAUTHORIZED',
      StatusCode: '401',
      ResponseParameters: { 'gatewayresponse.header.WWW-Authenticate': '\'Bearer realm="busway"\'' },
      ResponseTemplates: { 'application/json': Match.serializedJson({ error: Match.objectLike({ code: 'unauthorized' }) }) },
    });
  }
});

test('the table expires the injectors\' event_id claims by their expires_at attribute', () => {
  t.portal.hasResourceProperties('AWS::DynamoDB::Table', {
    TimeToLiveSpecification: { AttributeName: 'expires_at', Enabled: true },
  });
});

test('the provisioner may start the state machine and see whether its executions run, read deploy.json files and list their buckets, write deployment records and describe builds', () => {
  assertStatements(statements(t.provisioning, 'ProvisionerRole'), [
    [LOGS, [/^<ProvisionerLogs\w+\.Arn>$/]],
    [['states:StartExecution'], [ARN('states', 'stateMachine:dev-busway-provisioning')]],
    [['states:DescribeExecution'], [ARN('states', 'execution:dev-busway-provisioning:\\*')]],
    [['s3:GetObject', 's3:GetObjectVersion'], [OBJECTS('publisher-components-bucket', '*/deploy.json'), OBJECTS('subscriber-components-bucket', '*/deploy.json')]],
    [['s3:ListBucket'], [/^<import:dev-components-configuration-storage-service:ExportsOutputFnGetAttPublisher\w+Arn\w+>$/, /^<import:dev-components-configuration-storage-service:ExportsOutputFnGetAttSubscriber\w+Arn\w+>$/]],
    [['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:PutItem', 'dynamodb:UpdateItem'], TABLE_AND_INDEXES],
    [['codebuild:BatchGetBuilds'], [/^<ProducerBuild\w+\.Arn>$/, /^<ConsumerBuild\w+\.Arn>$/]],
  ]);
});

test('the state machine role: status writes, the provisioner, the two builds and the .sync rule; Resource "*" only where AWS requires it', () => {
  assertStatements(statements(t.provisioning, 'StateMachineRole'), [
    [['dynamodb:UpdateItem'], [TABLE]],
    [['lambda:InvokeFunction'], [/^<ProvisionerFunction\w+\.Arn>$/]],
    [['codebuild:StartBuild', 'codebuild:StopBuild', 'codebuild:BatchGetBuilds'], [/^<ProducerBuild\w+\.Arn>$/, /^<ConsumerBuild\w+\.Arn>$/]],
    [['events:PutTargets', 'events:PutRule', 'events:DescribeRule'], [ARN('events', 'rule/StepFunctionsGetEventForCodeBuildStartBuildRule')]],
    // Log delivery to CloudWatch Logs and X-Ray tracing: these actions take no resource ARN.
    [['logs:CreateLogDelivery', 'logs:GetLogDelivery', 'logs:UpdateLogDelivery', 'logs:DeleteLogDelivery', 'logs:ListLogDeliveries',
      'logs:PutResourcePolicy', 'logs:DescribeResourcePolicies', 'logs:DescribeLogGroups'], [/^\*$/]],
    [['xray:PutTraceSegments', 'xray:PutTelemetryRecords', 'xray:GetSamplingRules', 'xray:GetSamplingTargets'], [/^\*$/]],
  ]);
});

test('each build role may assume the generators\' bootstrap roles only, read its own kind of deploy.json in any version, its deployment record and this env\'s parameters', () => {
  for (const [kind, bucket] of [['Producer', 'publisher-components-bucket'], ['Consumer', 'subscriber-components-bucket']]) {
    const ours = statements(t.provisioning, `${kind}BuildRole`).slice(-4);
    assertStatements(ours, [
      [['sts:AssumeRole'], [new RegExp(`^arn:<AWS::Partition>:iam::<AWS::AccountId>:role/cdk-${generatorsQualifier('dev')}-\\*$`)]],
      [['s3:GetObject', 's3:GetObjectVersion'], [OBJECTS(bucket, '*/deploy.json')]],
      [['dynamodb:GetItem'], [/^<import:dev-self-service-portal:ExportsOutputFnGetAttEvents\w+Arn\w+>$/]],
      [['ssm:GetParameter', 'ssm:GetParameters'], [ARN('ssm', 'parameter/busway/dev/\\*')]],
    ]);
  }
});

/** The statements of the managed policy named `name`, each as {sid, actions, resources, conditions}. */
function managedPolicy(tpl: Template, name: string): { sid?: string; actions: string[]; resources: string[]; conditions?: any }[] {
  const found = Object.values(tpl.findResources('AWS::IAM::ManagedPolicy')).filter((r: any) => r.Properties.ManagedPolicyName === name) as any[];
  assert.equal(found.length, 1, name);
  return found[0].Properties.PolicyDocument.Statement.map((st: any) => {
    assert.equal(st.Effect, 'Allow');
    return { sid: st.Sid, actions: [st.Action].flat(), resources: [st.Resource].flat().map(render), conditions: st.Condition };
  });
}

test('the generators deploy with an execution policy limited to what they create, and create roles only under the boundary', () => {
  const policy = managedPolicy(t.provisioning, generatorsExecutionPolicyName('dev'));
  const bySid = Object.fromEntries(policy.map((st) => [st.sid, st]));
  const services = new Set(policy.flatMap((st) => st.actions.map((a) => a.split(':')[0])));
  assert.deepEqual([...services].sort(), ['apigateway', 'events', 'iam', 'lambda', 'logs', 'secretsmanager', 'sqs', 'ssm']);
  for (const st of policy) {
    for (const a of st.actions) assert.ok(!a.includes('*'), `wildcard action ${a}`);
    // Nothing of the platform itself: no table, bucket, state machine, build project or bus change.
    for (const a of st.actions) assert.ok(!/^(dynamodb|s3|states|codebuild|cloudformation):/.test(a) && a !== 'events:PutEvents', a);
  }
  // Resource "*" once, for the one action that takes no ARN, held to the SQS injector.
  const star = policy.filter((st) => st.resources.includes('*'));
  assert.deepEqual(star.map((st) => st.sid), ['ProducerQueueMappings']);
  assert.equal(render(star[0].conditions.StringEquals['lambda:FunctionArn']), 'arn:<AWS::Partition>:lambda:<AWS::Region>:<AWS::AccountId>:function:dev-busway-injector-sqs');
  assert.deepEqual(bySid.InvokePermissions.conditions, { StringEquals: { 'lambda:Principal': ['events.amazonaws.com', 'apigateway.amazonaws.com'] } });
  assert.deepEqual(bySid.ConsumerRules.resources, ['arn:<AWS::Partition>:events:<AWS::Region>:<AWS::AccountId>:rule/dev.custom.events.bus/busway-*']);
  assert.deepEqual(bySid.ConsumerSubscribers.resources, ['arn:<AWS::Partition>:events:<AWS::Region>:<AWS::AccountId>:event-busv2/dev.custom.events.bus/*']);
  // The delivery function's aliases (one per Classic HTTPS subscription), never its code or configuration.
  assert.deepEqual(bySid.DeliveryAliases.resources, [
    'arn:<AWS::Partition>:lambda:<AWS::Region>:<AWS::AccountId>:function:dev-busway-delivery',
    'arn:<AWS::Partition>:lambda:<AWS::Region>:<AWS::AccountId>:function:dev-busway-delivery:busway-*',
  ]);
  assert.ok(bySid.DeliveryAliases.actions.every((a: string) => /Alias$|EventInvokeConfig$/.test(a)));
  assert.match(bySid.BrokerRoutes.resources[1], /^arn:<AWS::Partition>:apigateway:<AWS::Region>::\/restapis\/<SsmParameterValuebuswaydevbrokerapiid\w+>\/\*$/);
  // Every action that makes a role or widens one requires the boundary; the rest only reads or deletes.
  const roleWrites = ['iam:CreateRole', 'iam:PutRolePolicy', 'iam:AttachRolePolicy', 'iam:DetachRolePolicy', 'iam:PutRolePermissionsBoundary'];
  assert.deepEqual(bySid.RolesUnderBoundary.actions, roleWrites);
  assert.equal(render(bySid.RolesUnderBoundary.conditions.StringEquals['iam:PermissionsBoundary']), `<${Object.keys(t.provisioning.findResources('AWS::IAM::ManagedPolicy')).find((id) => id.includes('RolesBoundary'))}>`);
  for (const st of policy.filter((x) => x.sid !== 'RolesUnderBoundary')) {
    for (const a of st.actions.filter((x) => roleWrites.includes(x))) {
      // The SQS injector's role gets each SQS producer's queue grant; it is infra's, not a generated role.
      assert.equal(st.sid, 'InjectorSqsQueueGrants', `${a} without the boundary in ${st.sid}`);
      assert.equal(st.resources.length, 1);
      assert.match(st.resources[0], /^<SsmParameterValuebuswaydevinjectorsqsrolearn\w+>$/);
    }
  }
  assert.ok(!policy.some((st) => st.actions.some((a) => ['iam:DeleteRolePermissionsBoundary', 'iam:CreateUser', 'iam:CreateAccessKey', 'iam:SetDefaultPolicyVersion'].includes(a))));
  assert.deepEqual(bySid.PassGeneratedRoles.conditions, { StringEquals: { 'iam:PassedToService': ['lambda.amazonaws.com', 'events.amazonaws.com'] } });
  for (const sid of ['RolesUnderBoundary', 'GeneratedRoles', 'PassGeneratedRoles']) {
    assert.deepEqual(bySid[sid].resources, ['arn:<AWS::Partition>:iam::<AWS::AccountId>:role/busway-consumer-*']);
  }

  const cap = managedPolicy(t.provisioning, generatedRolesBoundaryName('dev'));
  assert.deepEqual(cap.map((st) => st.actions), [
    ['sqs:GetQueueAttributes', 'sqs:SetQueueAttributes'], ['logs:CreateLogStream', 'logs:PutLogEvents'], ['events:InvokeApiDestination'],
    ['lambda:InvokeFunction'], ['sqs:SendMessage'],
  ]);

  // deploy.sh bootstraps the generators with these.
  t.provisioning.hasOutput('GeneratorsExecutionPolicyArn', { Value: { Ref: Match.stringLikeRegexp('ExecutionPolicy') } });
  t.provisioning.hasOutput('GeneratorsQualifier', { Value: generatorsQualifier('dev') });
  t.provisioning.hasOutput('GeneratorsToolkitStackName', { Value: generatorsToolkitStackName('dev') });
});

test('no policy of the platform has a wildcard action or Resource "*" beyond the ones asserted above', () => {
  // aws-cdk-lib's read grant of a CodeBuild project's S3 source (the repository asset).
  const cdkSourceGrant = ['s3:GetObject*', 's3:GetBucket*', 's3:List*'];
  let starResources = 0;
  for (const tpl of all) {
    const docs = [
      ...Object.values(tpl.findResources('AWS::IAM::Policy')).map((r: any) => r.Properties.PolicyDocument),
      ...Object.values(tpl.findResources('AWS::IAM::Role')).flatMap((r: any) => (r.Properties.Policies ?? []).map((x: any) => x.PolicyDocument)),
    ];
    for (const st of docs.flatMap((d) => d.Statement)) {
      const actions = [st.Action].flat();
      if (JSON.stringify(actions) !== JSON.stringify(cdkSourceGrant)) {
        for (const a of actions) assert.ok(!a.includes('*'), `wildcard action ${a}`);
      }
      if ([st.Resource].flat().includes('*')) starResources += 1;
    }
  }
  assert.equal(starResources, 2, 'only the state machine\'s log delivery and X-Ray statements');
});

test('the state machine runs provisioning.asl.json with a substitution for every ${X} in it and no other', () => {
  const asl = fs.readFileSync(ASL_FILE, 'utf8');
  const placeholders = [...new Set([...asl.matchAll(/\$\{(\w+)\}/g)].map((m) => m[1]))].sort();
  assert.ok(placeholders.length > 0);
  const machines = Object.values(t.provisioning.findResources('AWS::StepFunctions::StateMachine')) as any[];
  assert.equal(machines.length, 1);
  const props = machines[0].Properties;
  assert.equal(props.DefinitionString, asl);
  assert.equal(props.StateMachineName, 'dev-busway-provisioning');
  assert.deepEqual(Object.keys(props.DefinitionSubstitutions).sort(), placeholders);
  assert.deepEqual(Object.keys(JSON.parse(fs.readFileSync(SUBSTITUTIONS_FILE, 'utf8'))).sort(), placeholders);
  assert.match(render(props.DefinitionSubstitutions.DeploymentsTableName), /^<import:dev-self-service-portal:ExportsOutputRefEvents\w+>$/);
  assert.match(render(props.DefinitionSubstitutions.ProvisionerFunctionArn), /^<ProvisionerFunction\w+\.Arn>$/);
  assert.match(render(props.DefinitionSubstitutions.ProducerBuildProjectName), /^<ProducerBuild\w+>$/);
  assert.match(render(props.DefinitionSubstitutions.ConsumerBuildProjectName), /^<ConsumerBuild\w+>$/);
  t.provisioning.hasResourceProperties('AWS::StepFunctions::StateMachine', {
    StateMachineType: 'STANDARD',
    LoggingConfiguration: { Level: 'ALL', Destinations: [{ CloudWatchLogsLogGroup: { LogGroupArn: { 'Fn::GetAtt': [Match.stringLikeRegexp('^ProvisioningLogs'), 'Arn'] } } }] },
    TracingConfiguration: { Enabled: true },
  });
});

test('the build projects run buildspecs/{kind}.yml on the repository asset, which holds what git would commit', () => {
  for (const kind of ['producer', 'consumer']) {
    t.provisioning.hasResourceProperties('AWS::CodeBuild::Project', {
      Name: `dev-busway-${kind}-build`,
      Source: { Type: 'S3', BuildSpec: `buildspecs/${kind}.yml`, Location: Match.anyValue() },
      Artifacts: { Type: 'NO_ARTIFACTS' },
      Environment: Match.objectLike({ Image: 'aws/codebuild/standard:7.0', PrivilegedMode: false, EnvironmentVariables: [
        { Name: 'BUSWAY_ENV', Type: 'PLAINTEXT', Value: 'dev' },
        // scripts/provision-build.sh re-checks the deployment record in the platform's table.
        { Name: ENV_VARS.tableName, Type: 'PLAINTEXT', Value: Match.anyValue() },
        // The consumer build generates stacks for the platform's bus.
        ...(kind === 'consumer' ? [{ Name: ENV_VARS.busKind, Type: 'PLAINTEXT', Value: 'custom' }] : []),
      ] }),
      TimeoutInMinutes: 30,
    });
    const project = Object.values(t.provisioning.findResources('AWS::CodeBuild::Project', { Properties: { Name: `dev-busway-${kind}-build` } }))[0] as any;
    assert.match(render(project.Properties.Environment.EnvironmentVariables[1].Value), /^<import:dev-self-service-portal:ExportsOutputRefEvents\w+>$/);
  }
  classic.provisioning.hasResourceProperties('AWS::CodeBuild::Project', {
    Name: 'dev-busway-consumer-build',
    Environment: Match.objectLike({ EnvironmentVariables: Match.arrayWith([{ Name: ENV_VARS.busKind, Type: 'PLAINTEXT', Value: 'classic' }]) }),
  });
  const repo = p.provisioning.node.findChild('Repository') as s3assets.Asset;
  const staged = path.join((p.provisioning.node.root as App).outdir, repo.assetPath);
  for (const needed of ['Makefile', 'buildspecs/producer.yml', 'buildspecs/consumer.yml', 'scripts/provision-build.sh', 'cdk-app/package-lock.json', 'functions/core/schemas']) {
    assert.ok(fs.existsSync(path.join(staged, needed)), `the build needs ${needed}`);
  }
  for (const unwanted of ['.git', 'target', 'cdk-app/node_modules', 'infra/node_modules', '.venv']) {
    assert.ok(!fs.existsSync(path.join(staged, unwanted)), `${unwanted} is in the repository asset`);
  }
});

test('a deploy.json written to either configuration bucket notifies the provisioner', () => {
  const provisioner = Object.keys(t.provisioning.findResources('AWS::Lambda::Function', { Properties: { FunctionName: 'dev-busway-provisioner' } }))[0];
  const notifications = Object.values(t.provisioning.findResources('Custom::S3BucketNotifications')) as any[];
  assert.equal(notifications.length, 2);
  for (const n of notifications) {
    assert.equal(n.Properties.Managed, false, 'notifications of other owners are kept');
    assert.deepEqual(n.Properties.NotificationConfiguration.LambdaFunctionConfigurations, [{
      Events: ['s3:ObjectCreated:*'],
      Filter: { Key: { FilterRules: [{ Name: 'suffix', Value: 'deploy.json' }] } },
      LambdaFunctionArn: { 'Fn::GetAtt': [provisioner, 'Arn'] },
    }]);
  }
  const buckets = notifications.map((n) => JSON.stringify(n.Properties.BucketName)).sort();
  assert.match(buckets[0], /ExportsOutputFnGetAttPublisher\w+Arn/);
  assert.match(buckets[1], /ExportsOutputFnGetAttSubscriber\w+Arn/);
  t.provisioning.resourceCountIs('AWS::Lambda::Permission', 2);
  t.provisioning.hasResourceProperties('AWS::Lambda::Permission', {
    Principal: 's3.amazonaws.com', Action: 'lambda:InvokeFunction', FunctionName: { 'Fn::GetAtt': [provisioner, 'Arn'] },
  });
});

test('the platform writes exactly the SSM parameters the generators of cdk-app/ read', () => {
  const written = all.flatMap((tpl) => Object.values(tpl.findResources('AWS::SSM::Parameter')).map((r: any) => r.Properties.Name)).sort();
  const read = (Object.keys(PARAMETERS) as PlatformParameter[]).map((k) => parameterName('dev', k)).sort();
  assert.deepEqual(written, read);
  assert.ok(written.includes('/busway/dev/broker-api/id') && written.includes('/busway/dev/injector-sqs/role-arn'));
  const value = (tpl: Template, name: string) => render((Object.values(tpl.findResources('AWS::SSM::Parameter', { Properties: { Name: name } }))[0] as any).Properties.Value);
  assert.equal(value(t.bus, '/busway/dev/bus/name'), 'dev.custom.events.bus');
  assert.match(value(t.bus, '/busway/dev/bus/arn'), /^<Bus\.EventBusArn>$/);
  assert.equal(value(t.bus, '/busway/dev/bus/kind'), 'custom');
  assert.match(value(classic.bus, '/busway/dev/bus/name'), /^<Bus\w+>$/);
  assert.match(value(classic.bus, '/busway/dev/bus/arn'), /^<Bus\w+\.Arn>$/);
  assert.equal(value(classic.bus, '/busway/dev/bus/kind'), 'classic');
  assert.match(value(t.backup, '/busway/dev/schema-backup/bucket-name'), /^<SchemaBackup\w+>$/);
  assert.match(value(t.brokerApi, '/busway/dev/broker-api/id'), /^<BrokerApi\w+>$/);
  assert.match(value(t.brokerApi, '/busway/dev/broker-api/root-resource-id'), /^<BrokerApi\w+\.RootResourceId>$/);
  assert.match(value(t.brokerApi, '/busway/dev/injector/function-arn'), /^<InjectorFunction\w+\.Arn>$/);
  assert.match(value(t.brokerApi, '/busway/dev/injector-sqs/function-arn'), /^<InjectorSqsFunction\w+\.Arn>$/);
  assert.match(value(t.brokerApi, '/busway/dev/injector-sqs/role-arn'), /^<InjectorSqsRole\w+\.Arn>$/);
  assert.match(value(t.brokerApi, '/busway/dev/delivery/function-arn'), /^<DeliveryFunction\w+\.Arn>$/);
});

test('the broker API takes its API key from the authorizer and has a default usage plan on its stage, which the portal finds by name', () => {
  for (const tpl of [t.brokerApi, classic.brokerApi]) {
    tpl.hasResourceProperties('AWS::ApiGateway::RestApi', { Name: 'dev-event-broker-api', ApiKeySourceType: 'AUTHORIZER' });
    tpl.resourceCountIs('AWS::ApiGateway::UsagePlan', 1);
    const plan = Object.values(tpl.findResources('AWS::ApiGateway::UsagePlan'))[0] as any;
    assert.equal(plan.Properties.UsagePlanName, 'dev-event-broker-api-default');
    assert.deepEqual(plan.Properties.Throttle, { RateLimit: DEFAULT_PRODUCER_THROTTLE.rateLimit, BurstLimit: DEFAULT_PRODUCER_THROTTLE.burstLimit });
    assert.equal(plan.Properties.ApiStages.length, 1);
    assert.match(render(plan.Properties.ApiStages[0].ApiId), /^<BrokerApi\w+>$/);
    assert.match(render(plan.Properties.ApiStages[0].Stage), /^<BrokerApiDeploymentStage\w+>$/);
    // API Gateway keys, and the plans of rate limits, are made with the busway keys
    // (functions/aws/src/usage_plans.rs), which find this plan by the name the portal is given.
    tpl.resourceCountIs('AWS::ApiGateway::ApiKey', 0);
  }
  for (const portal of [t.portal, classic.portal]) {
    portal.hasResourceProperties('AWS::Lambda::Function', {
      FunctionName: 'dev-busway-portal',
      Environment: { Variables: Match.objectLike({ [ENV_VARS.brokerUsagePlan]: 'dev-event-broker-api-default' }) },
    });
  }
  // The portal API limits nothing per key.
  t.portal.resourceCountIs('AWS::ApiGateway::UsagePlan', 0);
});

test('the broker API deploys its stage with a MOCK health check and GET /openapi.json on the injector behind the key authorizer; the portal API proxies to the portal behind the key authorizer', () => {
  t.brokerApi.hasResourceProperties('AWS::ApiGateway::RestApi', { Name: 'dev-event-broker-api', EndpointConfiguration: { Types: ['REGIONAL'] } });
  t.brokerApi.hasResourceProperties('AWS::ApiGateway::Stage', {
    StageName: STAGES.broker,
    AccessLogSetting: Match.objectLike({ DestinationArn: Match.anyValue() }),
    MethodSettings: [Match.objectLike({ LoggingLevel: 'INFO', DataTraceEnabled: false })],
  });
  t.brokerApi.hasResourceProperties('AWS::ApiGateway::Method', { HttpMethod: 'GET', AuthorizationType: 'NONE', Integration: Match.objectLike({ Type: 'MOCK' }) });
  // GET /openapi.json reaches the injector, which serves the broker's document.
  t.brokerApi.hasResourceProperties('AWS::ApiGateway::Resource', { PathPart: 'openapi.json' });
  t.brokerApi.hasResourceProperties('AWS::ApiGateway::Method', {
    HttpMethod: 'GET', AuthorizationType: 'CUSTOM', AuthorizerId: { Ref: Match.stringLikeRegexp('^BrokerAuthorizer') },
    Integration: Match.objectLike({ Type: 'AWS_PROXY' }),
  });
  t.brokerApi.resourceCountIs('AWS::ApiGateway::Method', 2);
  t.brokerApi.hasResourceProperties('AWS::Lambda::Permission', { Principal: 'apigateway.amazonaws.com', Action: 'lambda:InvokeFunction' });
  t.brokerApi.resourceCountIs('AWS::ApiGateway::Account', 0);
  t.brokerApi.hasOutput('BrokerUrl', {});

  t.portal.hasResourceProperties('AWS::ApiGateway::RestApi', { Name: 'dev-self-service-portal-api' });
  const methods = Object.values(t.portal.findResources('AWS::ApiGateway::Method')) as any[];
  assert.equal(methods.length, 2, 'ANY / and ANY /{proxy+}');
  for (const m of methods) {
    assert.equal(m.Properties.HttpMethod, 'ANY');
    assert.equal(m.Properties.AuthorizationType, 'CUSTOM');
    assert.equal(m.Properties.Integration.Type, 'AWS_PROXY');
  }
  t.portal.hasResourceProperties('AWS::ApiGateway::Stage', { StageName: STAGES.portal });
  t.portal.resourceCountIs('AWS::ApiGateway::Account', 1);
  t.portal.hasOutput('PortalUrl', {});
  assert.ok(p.brokerApi.dependencies.includes(p.portal), 'the broker stage needs the account logging role the portal stack sets');
});

test('an unacknowledged cdk-nag finding fails the synth', () => {
  const q = platform(newApp(), 'dev', assets, SETTINGS);
  new s3.Bucket(q.bus, 'Unencrypted', {});
  assert.throws(() => Template.fromStack(q.bus), /Validation failed/);
});

test('a missing Lambda asset or a malformed env is refused with the reason', () => {
  assert.throws(() => platform(newApp(), 'dev', path.join(assets, 'nowhere'), SETTINGS), /no Lambda asset for portal: build it first/);
  assert.throws(() => platform(newApp(), 'Prod!', assets, SETTINGS), /platform env/);
});

test('the stacks keep the seed\'s names, prefixed by the environment', () => {
  const q = platform(newApp(), 'prod', assets, SETTINGS);
  assert.deepEqual(Object.values(q).map((s) => s.stackName), [
    'prod-event-schemas-backup-service',
    'prod-components-configuration-storage-service',
    'prod-event-broker-bus',
    'prod-self-service-portal',
    'prod-event-broker-api-service',
    'prod-provisioning-service',
    'prod-busway-monitoring',
  ]);
});

test('the functions write their EMF metrics to the env\'s namespace, which the alarms and the dashboard read', () => {
  for (const tpl of [t.portal, t.brokerApi, t.provisioning]) {
    tpl.hasResourceProperties('AWS::Lambda::Function', { Environment: { Variables: Match.objectLike({ [ENV_VARS.metricsNamespace]: 'busway/dev' }) } });
  }
  for (const [name, metric] of [['put-events-throttled', EMF_METRICS.throttled], ['put-events-failed-entries', EMF_METRICS.failedEntries]]) {
    t.monitoring.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: `dev-busway-${name}`, Namespace: 'busway/dev', MetricName: metric, Statistic: 'Sum',
      Threshold: 1, ComparisonOperator: 'GreaterThanOrEqualToThreshold', TreatMissingData: 'notBreaching',
    });
  }
});

test('alarms: injector 5xx on the broker stage, failed and timed-out provisioning, each function\'s errors', () => {
  t.monitoring.hasResourceProperties('AWS::CloudWatch::Alarm', {
    AlarmName: 'dev-busway-injector-server-errors', Namespace: 'AWS/ApiGateway', MetricName: '5XXError',
    Dimensions: Match.arrayWith([{ Name: 'ApiName', Value: 'dev-event-broker-api' }, { Name: 'Stage', Value: STAGES.broker }]),
  });
  for (const [name, metric] of [['provisioning-failed', 'ExecutionsFailed'], ['provisioning-timed-out', 'ExecutionsTimedOut']]) {
    const alarms = Object.values(t.monitoring.findResources('AWS::CloudWatch::Alarm', { Properties: { AlarmName: `dev-busway-${name}` } })) as any[];
    assert.equal(alarms.length, 1, name);
    const props = alarms[0].Properties;
    assert.equal(props.Namespace, 'AWS/States');
    assert.equal(props.MetricName, metric);
    assert.match(render(props.Dimensions[0].Value), ARN('states', 'stateMachine:dev-busway-provisioning'));
  }
  for (const fn of FUNCTIONS) {
    t.monitoring.hasResourceProperties('AWS::CloudWatch::Alarm', {
      Namespace: 'AWS/Lambda', MetricName: 'Errors', Dimensions: [{ Name: 'FunctionName', Value: `dev-busway-${fn}` }],
    });
  }
  t.monitoring.resourceCountIs('AWS::CloudWatch::Alarm', 5 + FUNCTIONS.length);
});

test('one dashboard shows events, latency, PutEvents, the broker API, provisioning, functions and every alarm', () => {
  t.monitoring.resourceCountIs('AWS::CloudWatch::Dashboard', 1);
  const dashboard = Object.values(t.monitoring.findResources('AWS::CloudWatch::Dashboard'))[0] as any;
  assert.equal(dashboard.Properties.DashboardName, 'dev-busway');
  const body = render(dashboard.Properties.DashboardBody);
  for (const metric of Object.values(EMF_METRICS)) assert.ok(body.includes(`"busway/dev","${metric}"`), `${metric} on the dashboard`);
  for (const metric of ['5XXError', 'ExecutionsFailed', 'ExecutionTime', 'Throttles']) assert.ok(body.includes(`"${metric}"`), metric);
  const alarms = Object.keys(t.monitoring.findResources('AWS::CloudWatch::Alarm'));
  for (const a of alarms) assert.ok(body.includes(`<${a}.Arn>`), `${a} on the dashboard's alarm widget`);
});
