// The generators against fixture deploy.json files. Template.fromStack runs cdk-nag's AWS
// Solutions checks (a validation plugin), so every template asserted here is also nag-clean:
// an unacknowledged finding makes it throw (last test).
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import * as fs from 'fs';
import * as path from 'path';
import { App, Stack } from 'aws-cdk-lib';
import { Match, Template } from 'aws-cdk-lib/assertions';
import * as sqs from 'aws-cdk-lib/aws-sqs';
import { parseDeployJson, DeployDoc, SCHEMA_DIR } from '../lib/deploy-config';
import { generate } from '../lib/generate';
import { generatedRolesBoundaryName, generatorsQualifier, STAGES } from '../lib/platform-names';

const FIXTURES = path.join(__dirname, 'fixtures');
const fixture = (name: string): DeployDoc => parseDeployJson(fs.readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8'));
const raw = (name: string): any => JSON.parse(fs.readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8'));

function newApp(): App {
  return new App({ context: { '@aws-cdk/core:defaultCrossStackReferences': 'strong' } });
}

function synth(...names: string[]): { app: App; stacks: Stack[] } {
  const app = newApp();
  const stacks = names.flatMap((n) => generate(app, fixture(n), 'dev'));
  return { app, stacks };
}

function byName(stacks: Stack[], stackName: string): Template {
  const s = stacks.find((x) => x.stackName === stackName);
  assert.ok(s, `no stack ${stackName} among ${stacks.map((x) => x.stackName).join(', ')}`);
  return Template.fromStack(s);
}

/** A CloudFormation value as text: joins concatenated, any other intrinsic as `<...>`. */
function render(v: any): string {
  if (typeof v === 'string') return v;
  if (v && v['Fn::Join']) return v['Fn::Join'][1].map(render).join(v['Fn::Join'][0]);
  return `<${JSON.stringify(v)}>`;
}

/** Every IAM statement of a template: no wildcard action, no `*` resource. */
function assertLeastPrivilege(t: Template): void {
  const docs = [
    ...Object.values(t.findResources('AWS::IAM::Policy')).map((r: any) => r.Properties.PolicyDocument),
    ...Object.values(t.findResources('AWS::IAM::Role')).flatMap((r: any) => (r.Properties.Policies ?? []).map((p: any) => p.PolicyDocument)),
  ];
  for (const doc of docs) {
    for (const st of doc.Statement) {
      for (const a of [st.Action].flat()) assert.ok(!String(a).includes('*'), `wildcard action ${a}`);
      for (const r of [st.Resource].flat()) assert.notEqual(r, '*', `statement on every resource: ${JSON.stringify(st)}`);
    }
  }
}

test('an HTTPS producer gets a model, a body validator, a POST route to the injector behind the platform\'s key authorizer, requiring the API key the authorizer names, and a new stage deployment', () => {
  const { stacks } = synth('producer-https-v1');
  const t = byName(stacks, 'busway-producer-order-created-v1');
  const doc = raw('producer-https-v1');
  t.hasResourceProperties('AWS::ApiGateway::Model', { Name: 'OrderCreatedV1', ContentType: 'application/json', Schema: doc.schema });
  t.hasResourceProperties('AWS::ApiGateway::RequestValidator', { ValidateRequestBody: true });
  t.hasResourceProperties('AWS::ApiGateway::Resource', { PathPart: '1' });
  t.hasResourceProperties('AWS::ApiGateway::Method', {
    HttpMethod: 'POST',
    AuthorizationType: 'CUSTOM',
    AuthorizerId: { Ref: Match.stringLikeRegexp('SsmParameterValue.*brokerapiauthorizerid') },
    // The usage plan of the caller's key applies (infra/README.md: "Rate limits").
    ApiKeyRequired: true,
    RequestValidatorId: { Ref: Match.stringLikeRegexp('BodyValidator') },
    RequestModels: { 'application/json': { Ref: Match.stringLikeRegexp('EventModel') } },
    Integration: Match.objectLike({ Type: 'AWS_PROXY', IntegrationHttpMethod: 'POST' }),
  });
  t.hasResourceProperties('AWS::Lambda::Permission', {
    Principal: 'apigateway.amazonaws.com',
    SourceArn: Match.objectLike({ 'Fn::Join': Match.arrayWith([Match.arrayWith(['/*/POST/order_created/1'])]) }),
  });
  t.resourceCountIs('AWS::ApiGateway::Deployment', 1);
  const deployment = Object.values(t.findResources('AWS::ApiGateway::Deployment'))[0] as any;
  assert.ok(deployment.DependsOn.some((d: string) => d.startsWith('PostEvent')), 'the stage is deployed after the route exists');
  // The stage infra deploys the broker API to (one definition, platform-names.ts).
  assert.equal(deployment.Properties.StageName, STAGES.broker);
  // The broker API is found through the platform's SSM parameters, never a hand-copied id.
  const params = t.toJSON().Parameters ?? {};
  const defaults = Object.values(params).map((p: any) => p.Default);
  for (const name of ['/busway/dev/broker-api/id', '/busway/dev/broker-api/authorizer-id', '/busway/dev/injector/function-arn']) {
    assert.ok(defaults.includes(name), `${name} is not read`);
  }
  const types = byName(stacks, 'busway-producer-order-created');
  types.hasResourceProperties('AWS::ApiGateway::Resource', { PathPart: 'order_created' });
});

test('version 2 of an event type deploys beside version 1 under the same event type resource', () => {
  const { stacks } = synth('producer-https-v1', 'producer-https-v2');
  assert.deepEqual(stacks.map((s) => s.stackName).sort(), [
    'busway-producer-order-created', 'busway-producer-order-created',
    'busway-producer-order-created-v1', 'busway-producer-order-created-v2',
  ]);
  const types = byName(stacks, 'busway-producer-order-created');
  types.resourceCountIs('AWS::ApiGateway::Resource', 1);
  for (const v of [1, 2]) {
    const t = byName(stacks, `busway-producer-order-created-v${v}`);
    t.resourceCountIs('AWS::ApiGateway::Resource', 1);
    t.hasResourceProperties('AWS::ApiGateway::Resource', {
      PathPart: String(v),
      ParentId: { 'Fn::ImportValue': Match.stringLikeRegexp('^busway-producer-order-created:') },
    });
    t.hasResourceProperties('AWS::ApiGateway::Model', { Name: `OrderCreatedV${v}` });
  }
});

test('an SQS producer gets an encrypted queue with a DLQ and a partial-batch event source mapping to the injector', () => {
  const { stacks } = synth('producer-sqs-v1');
  const t = byName(stacks, 'busway-producer-order-created-v1');
  t.hasResourceProperties('AWS::SQS::Queue', {
    QueueName: 'busway-order-created-v1',
    SqsManagedSseEnabled: true,
    MaximumMessageSize: 1048576,
    RedrivePolicy: { deadLetterTargetArn: { 'Fn::GetAtt': [Match.stringLikeRegexp('DeadLetters'), 'Arn'] }, maxReceiveCount: 5 },
  });
  t.hasResourceProperties('AWS::SQS::Queue', { QueueName: 'busway-order-created-v1-dlq' });
  t.hasResourceProperties('AWS::Lambda::EventSourceMapping', {
    FunctionResponseTypes: ['ReportBatchItemFailures'],
    EventSourceArn: { 'Fn::GetAtt': [Match.stringLikeRegexp('^Events'), 'Arn'] },
  });
  t.hasResourceProperties('AWS::IAM::Policy', {
    PolicyDocument: { Statement: [Match.objectLike({ Resource: { 'Fn::GetAtt': [Match.stringLikeRegexp('^Events'), 'Arn'] } })] },
  });
  // Lambda refuses a mapping whose role cannot receive from the queue yet: the policy comes first.
  const [policy] = Object.keys(t.findResources('AWS::IAM::Policy'));
  const [mapping] = Object.values(t.findResources('AWS::Lambda::EventSourceMapping')) as any[];
  assert.ok(mapping.DependsOn?.includes(policy), `the mapping depends on ${JSON.stringify(mapping.DependsOn)}, not on ${policy}`);
  t.resourceCountIs('AWS::ApiGateway::Method', 0);
  assertLeastPrivilege(t);
});

function assertRule(t: Template, name: string): void {
  const doc = raw(name);
  t.hasResourceProperties('AWS::Events::Rule', {
    Name: doc.rule_name,
    EventBusName: { Ref: Match.stringLikeRegexp('SsmParameterValue') },
    EventPattern: {
      source: ['busway.shop'],
      'detail-type': ['order_created.1'],
      detail: { metadata: { event_attributes: { target: [doc.target_unit] } } },
    },
    Targets: [Match.objectLike({
      RetryPolicy: { MaximumRetryAttempts: 7, MaximumEventAgeInSeconds: 3600 },
      DeadLetterConfig: { Arn: { 'Fn::GetAtt': [Match.stringLikeRegexp('DeadLetters'), 'Arn'] } },
    })],
  });
  t.hasResourceProperties('AWS::SQS::QueuePolicy', {
    PolicyDocument: { Statement: Match.arrayWith([Match.objectLike({
      Action: 'sqs:SendMessage', Principal: { Service: 'events.amazonaws.com' },
      Condition: { ArnEquals: { 'aws:SourceArn': Match.anyValue() } },
    })]) },
  });
  assertLeastPrivilege(t);
}

test('a Lambda consumer gets the rule, the target with retry policy and DLQ, and an invoke permission for that rule only', () => {
  const { stacks } = synth('consumer-lambda');
  const t = byName(stacks, raw('consumer-lambda').stack_name);
  assertRule(t, 'consumer-lambda');
  t.hasResourceProperties('AWS::Events::Rule', { Targets: [Match.objectLike({ Arn: raw('consumer-lambda').connection_string })] });
  t.hasResourceProperties('AWS::Lambda::Permission', {
    FunctionName: raw('consumer-lambda').connection_string,
    Principal: 'events.amazonaws.com',
    SourceArn: Match.objectLike({ 'Fn::Join': Match.anyValue() }),
  });
});

test('an SQS consumer adds one statement letting only its rule send to the team\'s queue, never the queue\'s whole policy', () => {
  const { stacks } = synth('consumer-sqs');
  const doc = raw('consumer-sqs');
  const t = byName(stacks, doc.stack_name);
  assertRule(t, 'consumer-sqs');
  t.hasResourceProperties('AWS::Events::Rule', { Targets: [Match.objectLike({ Arn: doc.connection_string })] });
  t.resourceCountIs('AWS::SQS::QueuePolicy', 1); // the stack's own dead-letter queue only
  t.resourceCountIs('AWS::SQS::QueueInlinePolicy', 0);
  assert.ok(
    Object.values(t.findResources('AWS::SQS::QueuePolicy')).every((p: any) => JSON.stringify(p.Properties.Queues).includes('DeadLetters')),
    'no policy of the target queue',
  );
  const statements = Object.values(t.findResources('Custom::QueueStatement')) as any[];
  assert.equal(statements.length, 1);
  const props = statements[0].Properties;
  const sid = `busway${doc.subscription_id.replace(/-/g, '')}`;
  assert.equal(props.Sid, sid);
  const statement = render(props.Statement);
  for (const part of ['"Action":"sqs:SendMessage"', '"Service":"events.amazonaws.com"', `"Resource":"${doc.connection_string}"`, `"Sid":"${sid}"`, `:rule/`, `/${doc.rule_name}"`]) {
    assert.ok(statement.includes(part), `${part} in ${statement}`);
  }
  // The handler may read and write the policy of this queue and nothing else.
  t.hasResourceProperties('AWS::IAM::Policy', {
    PolicyDocument: { Statement: Match.arrayWith([{ Action: ['sqs:GetQueueAttributes', 'sqs:SetQueueAttributes'], Effect: 'Allow', Resource: doc.connection_string }]) },
  });
  assertLeastPrivilege(t);
});

test('two subscriptions on one queue each add their own statement by their own Sid', () => {
  const other = { ...raw('consumer-sqs'), subscription_id: '0f1e2d3c-4b5a-4968-8776-a5b4c3d2e1f0', target_unit: 'returns' };
  other.rule_name = `busway-${other.subscription_id}`;
  other.stack_name = `busway-consumer-${other.subscription_id}`;
  other.event_pattern = { ...other.event_pattern, detail: { metadata: { event_attributes: { target: ['returns'] } } } };
  const app = newApp();
  const stacks = [...generate(app, fixture('consumer-sqs'), 'dev'), ...generate(app, parseDeployJson(JSON.stringify(other)), 'dev')];
  const sids = stacks.flatMap((s) => Object.values(Template.fromStack(s).findResources('Custom::QueueStatement')).map((r: any) => r.Properties.Sid));
  assert.equal(sids.length, 2);
  assert.notEqual(sids[0], sids[1]);
});

test('an HTTPS consumer on the Classic bus targets its own alias of the delivery function with {subscription_id, event}, its retries and DLQ', () => {
  const { stacks } = synth('consumer-https');
  const doc = raw('consumer-https');
  const t = byName(stacks, doc.stack_name);
  assertRule(t, 'consumer-https');
  t.resourceCountIs('AWS::Events::Connection', 0);
  t.resourceCountIs('AWS::Events::ApiDestination', 0);
  t.resourceCountIs('AWS::IAM::Role', 0);
  const deliveryArn = { Ref: Match.stringLikeRegexp('SsmParameterValue.*deliveryfunctionarn') };
  t.hasParameter('*', { Type: 'AWS::SSM::Parameter::Value<String>', Default: '/busway/dev/delivery/function-arn' });
  t.hasResourceProperties('AWS::Lambda::Alias', { FunctionName: deliveryArn, FunctionVersion: '$LATEST', Name: doc.rule_name });
  const alias = Object.keys(t.findResources('AWS::Lambda::Alias'))[0];
  // The rule's input is the delivery function's: the subscription and the whole event.
  const rule = Object.values(t.findResources('AWS::Events::Rule'))[0] as any;
  const target = rule.Properties.Targets[0];
  assert.deepEqual(target.Arn, { Ref: alias });
  assert.equal(target.RoleArn, undefined);
  assert.deepEqual(target.InputTransformer.InputPathsMap, {});
  const template = target.InputTransformer.InputTemplate as string;
  assert.equal(template, `{"subscription_id": "${doc.subscription_id}", "event": <aws.events.event.json>}`);
  assert.deepEqual(JSON.parse(template.replace('<aws.events.event.json>', '{"id": "e1"}')), { subscription_id: doc.subscription_id, event: { id: 'e1' } });
  // The rule's retry policy and DLQ cover the invocation; the alias's cover a failed delivery.
  assert.deepEqual(target.RetryPolicy, { MaximumRetryAttempts: doc.retry_policy.maximum_retry_attempts, MaximumEventAgeInSeconds: doc.retry_policy.maximum_event_age_seconds });
  const dlq = { 'Fn::GetAtt': [Match.stringLikeRegexp('^DeadLetters'), 'Arn'] };
  t.hasResourceProperties('AWS::Lambda::EventInvokeConfig', {
    FunctionName: deliveryArn,
    Qualifier: doc.rule_name,
    MaximumRetryAttempts: Math.min(doc.retry_policy.maximum_retry_attempts, 2),
    MaximumEventAgeInSeconds: Math.min(doc.retry_policy.maximum_event_age_seconds, 21600),
    DestinationConfig: { OnFailure: { Destination: dlq } },
  });
  const config = Object.values(t.findResources('AWS::Lambda::EventInvokeConfig'))[0] as any;
  assert.deepEqual(config.DependsOn, [alias]);
  // Only this rule may invoke only this alias.
  t.resourceCountIs('AWS::Lambda::Permission', 1);
  t.hasResourceProperties('AWS::Lambda::Permission', {
    FunctionName: { Ref: alias }, Principal: 'events.amazonaws.com', SourceArn: Match.objectLike({ 'Fn::Join': Match.anyValue() }),
  });
  assertLeastPrivilege(t);
});

test('the Classic alias keeps the retry policy within what Lambda allows', () => {
  for (const [retries, age, expected] of [[0, 60, [0, 60]], [185, 86400, [2, 21600]], [1, 600, [1, 600]]] as [number, number, [number, number]][]) {
    const app = newApp();
    const doc = fixture('consumer-https') as any;
    doc.retry_policy = { maximum_retry_attempts: retries, maximum_event_age_seconds: age };
    const t = Template.fromStack(generate(app, doc, 'dev')[0]);
    t.hasResourceProperties('AWS::Lambda::EventInvokeConfig', { MaximumRetryAttempts: expected[0], MaximumEventAgeInSeconds: expected[1] });
  }
});

test('every consumer stack offers a policy that reads the claim checks of its event version only', () => {
  for (const name of ['consumer-lambda', 'consumer-sqs', 'consumer-https']) {
    const doc = raw(name);
    const t = byName(synth(name).stacks, doc.stack_name);
    const policies = Object.values(t.findResources('AWS::IAM::ManagedPolicy')) as any[];
    assert.equal(policies.length, 1, name);
    const { ManagedPolicyName, PolicyDocument } = policies[0].Properties;
    assert.equal(ManagedPolicyName, `${doc.rule_name}-claim-checks`);
    assert.equal(PolicyDocument.Statement.length, 1);
    const [statement] = PolicyDocument.Statement;
    assert.equal(statement.Effect, 'Allow');
    assert.equal(statement.Action, 's3:GetObject');
    // The bucket is the platform's, read from its SSM parameter.
    const parameters = t.toJSON().Parameters as Record<string, any>;
    const bucket = Object.keys(parameters).find((k) => parameters[k].Default === '/busway/dev/schema-backup/bucket-name');
    assert.ok(bucket, JSON.stringify(parameters));
    assert.deepEqual(statement.Resource, {
      'Fn::Join': ['', ['arn:', { Ref: 'AWS::Partition' }, ':s3:::', { Ref: bucket }, `/claim-checks/${doc.detail_type}/*`]],
    });
    t.hasOutput('ClaimCheckReaderPolicyArn', { Value: { Ref: Match.stringLikeRegexp('^ClaimCheckReader') } });
  }
});

test('two target units of one event version get two stacks and two rules, neither replacing the other', () => {
  const { stacks } = synth('consumer-lambda', 'consumer-sqs');
  const names = stacks.map((s) => s.stackName);
  assert.equal(new Set(names).size, 2);
  const rules = stacks.map((s) => Object.values(Template.fromStack(s).findResources('AWS::Events::Rule'))[0] as any);
  assert.notEqual(rules[0].Properties.Name, rules[1].Properties.Name);
  assert.deepEqual(rules.map((r) => r.Properties.EventPattern.detail.metadata.event_attributes.target[0]), ['billing', 'shipping']);
});

test('the rule pattern is compared by meaning, not by key order (the portal writes sorted keys)', () => {
  const doc = raw('consumer-lambda');
  const p = doc.event_pattern;
  doc.event_pattern = { detail: p.detail, 'detail-type': p['detail-type'], source: p.source };
  assert.deepEqual(parseDeployJson(JSON.stringify(doc)).kind, 'consumer');
  doc.event_pattern.detail.metadata.event_attributes.target = ['other-unit'];
  assert.throws(() => parseDeployJson(JSON.stringify(doc)), /event_pattern/);
});

test('a malformed deploy.json is refused before any stack exists', () => {
  const good = raw('consumer-lambda');
  const cases: [string, string][] = [
    ['not json', 'not JSON'],
    [JSON.stringify({ ...good, kind: 'other' }), 'kind'],
    [JSON.stringify({ ...good, target_unit: 'Bad-Unit' }), '$.target_unit'],
    [JSON.stringify({ ...good, rule_name: undefined }), '$.rule_name: is required'],
    [JSON.stringify({ ...good, extra: 1 }), '$.extra: is not allowed'],
    [JSON.stringify({ ...good, connection_type: 'SNS' }), '$.connection_type'],
    [JSON.stringify({ ...good, stack_name: 'busway-consumer-other' }), '$.stack_name'],
    [JSON.stringify({ ...good, event_pattern: { source: ['busway.shop'] } }), '$.event_pattern'],
    [JSON.stringify({ ...raw('producer-https-v1'), version: 0 }), '$.version'],
    [JSON.stringify({ ...raw('producer-https-v1'), source: 'busway.other' }), '$.source'],
  ];
  for (const [text, message] of cases) {
    assert.throws(() => parseDeployJson(text), (e: Error) => e.message.includes(message), `accepted or wrong message for ${message}`);
  }
  assert.throws(() => generate(newApp(), fixture('consumer-lambda'), 'Prod!'), /platform env/);
});

test('a deploy.json of any format up to the current one is read; a newer format is refused', () => {
  const schema = JSON.parse(fs.readFileSync(path.join(SCHEMA_DIR, 'consumer-deploy.schema.json'), 'utf8'));
  const current: number = schema.properties.format_version.maximum;
  const first = raw('consumer-lambda');
  assert.equal('format_version' in first, false, 'the fixtures are documents of the first release');
  assert.equal(parseDeployJson(JSON.stringify(first)).kind, 'consumer');
  assert.equal(parseDeployJson(JSON.stringify({ ...first, format_version: current })).format_version, current);
  assert.throws(() => parseDeployJson(JSON.stringify({ ...first, format_version: current + 1 })), /\$\.format_version: above/);
});

/** The consumer stack of fixture `name` built for the Custom Event Bus, its deploy.json changed by `edit`. */
function subscriberStack(name: string, edit: (doc: any) => void = () => {}, platformBus: 'custom' | 'classic' = 'custom'): Template {
  const doc = raw(name);
  edit(doc);
  const [stack] = generate(newApp(), parseDeployJson(JSON.stringify(doc)), 'dev', {}, platformBus);
  return Template.fromStack(stack);
}

/** The statements of the delivery role's policy. */
function deliveryStatements(t: Template): any[] {
  const roles = Object.keys(t.findResources('AWS::IAM::Role', { Properties: { AssumeRolePolicyDocument: { Statement: [Match.objectLike({ Principal: { Service: 'events.amazonaws.com' } })] } } }));
  assert.equal(roles.length, 1, 'one delivery role');
  const policies = Object.values(t.findResources('AWS::IAM::Policy')).filter((p: any) => p.Properties.Roles.some((r: any) => r.Ref === roles[0])) as any[];
  return policies.flatMap((p) => p.Properties.PolicyDocument.Statement);
}

test('on the Custom Event Bus a consumer gets a subscriber: the pattern as its DATA filter, its retry policy, its DLQ on failure', () => {
  const doc = raw('consumer-lambda');
  const t = subscriberStack('consumer-lambda');
  t.resourceCountIs('AWS::Events::Rule', 0);
  t.resourceCountIs('AWS::EventsV2::Subscriber', 1);
  t.hasResourceProperties('AWS::EventsV2::Subscriber', {
    Name: doc.rule_name,
    EventBusArn: { Ref: Match.stringLikeRegexp('busarn') },
    RetryPolicy: { MaxRetryAttempts: 7, MaxEventAgeInSeconds: 3600 },
    OnFailureConfiguration: { Arn: { 'Fn::GetAtt': [Match.stringLikeRegexp('^DeadLetters'), 'Arn'] } },
    Transformer: { Type: 'RAW' },
    State: 'RUNNING',
  });
  const subscriber = Object.values(t.findResources('AWS::EventsV2::Subscriber'))[0] as any;
  const filters = subscriber.Properties.FilterConfiguration.Filters;
  assert.equal(filters.length, 1);
  assert.equal(filters[0].Scope, 'DATA');
  // The DATA scope of an event put with PutEvents is its envelope: the Classic rule's own pattern.
  assert.deepEqual(JSON.parse(filters[0].Pattern), doc.event_pattern);
  t.hasParameter('*', { Type: 'AWS::SSM::Parameter::Value<String>', Default: '/busway/dev/bus/arn' });
  t.hasOutput('BusKind', { Value: 'custom' });
});

test('a subscriber\'s delivery role may reach exactly its one target and its DLQ; no team policy is edited', () => {
  const cases: [string, string, RegExp | string, Record<string, unknown>][] = [
    ['consumer-lambda', 'lambda:InvokeFunction', raw('consumer-lambda').connection_string, { LambdaParameters: { InvocationType: 'EVENT' } }],
    ['consumer-sqs', 'sqs:SendMessage', raw('consumer-sqs').connection_string, {}],
    ['consumer-https', 'lambda:InvokeFunction', /deliveryfunctionarn/, { LambdaParameters: { InvocationType: 'REQUEST_RESPONSE' } }],
  ];
  for (const [name, action, target, parameters] of cases) {
    const t = subscriberStack(name);
    const statements = deliveryStatements(t);
    assert.equal(statements.length, 2, name);
    assert.equal(statements[0].Action, action, name);
    const resource = typeof statements[0].Resource === 'string' ? statements[0].Resource : JSON.stringify(statements[0].Resource);
    if (typeof target === 'string') assert.equal(resource, target, name);
    else assert.match(resource, target, name);
    assert.deepEqual(statements[1], { Action: 'sqs:SendMessage', Effect: 'Allow', Resource: { 'Fn::GetAtt': [statements[1].Resource['Fn::GetAtt'][0], 'Arn'] } }, name);
    assert.match(statements[1].Resource['Fn::GetAtt'][0], /^DeadLetters/, name);
    const subscriber = Object.values(t.findResources('AWS::EventsV2::Subscriber'))[0] as any;
    const invoke = subscriber.Properties.InvokeConfiguration;
    assert.equal(invoke.RoleArn['Fn::GetAtt'][0], Object.keys(t.findResources('AWS::IAM::Role', { Properties: { Description: Match.stringLikeRegexp('delivers') } }))[0], name);
    for (const [k, v] of Object.entries(parameters)) assert.deepEqual(invoke[k], v, name);
    t.resourceCountIs('AWS::Lambda::Permission', 0);
    t.resourceCountIs('Custom::QueueStatement', 0);
    t.resourceCountIs('AWS::SQS::QueuePolicy', 1); // the dead-letter queue's TLS-only policy
    t.hasResourceProperties('AWS::IAM::Role', {
      AssumeRolePolicyDocument: { Statement: [Match.objectLike({ Principal: { Service: 'events.amazonaws.com' }, Condition: { StringEquals: { 'aws:SourceAccount': { Ref: 'AWS::AccountId' } } } })] },
    });
    assertLeastPrivilege(t);
  }
});

test('an HTTPS consumer on the Custom Event Bus: its subscriber invokes the delivery function synchronously with {subscription_id, event}', () => {
  const doc = raw('consumer-https');
  const t = subscriberStack('consumer-https');
  const subscriber = Object.values(t.findResources('AWS::EventsV2::Subscriber'))[0] as any;
  const props = subscriber.Properties;
  assert.match(JSON.stringify(props.InvokeConfiguration.TargetArn), /deliveryfunctionarn/);
  // Synchronous: a failed delivery fails the invocation, retried by the subscriber's policy, then its DLQ.
  assert.deepEqual(props.InvokeConfiguration.LambdaParameters, { InvocationType: 'REQUEST_RESPONSE' });
  assert.deepEqual(props.RetryPolicy, { MaxRetryAttempts: doc.retry_policy.maximum_retry_attempts, MaxEventAgeInSeconds: doc.retry_policy.maximum_event_age_seconds });
  assert.match(props.OnFailureConfiguration.Arn['Fn::GetAtt'][0], /^DeadLetters/);
  assert.equal(props.Transformer.Type, 'JSONATA');
  assert.equal(props.Transformer.JsonataConfiguration.Expression, `{% {"subscription_id": "${doc.subscription_id}", "event": $events.Data} %}`);
  t.resourceCountIs('AWS::Lambda::Alias', 0);
  t.resourceCountIs('AWS::Lambda::EventInvokeConfig', 0);
  t.resourceCountIs('AWS::Events::ApiDestination', 0);
});

test('after a replay the subscriber is a new one, named for its start, that starts at that point in time', () => {
  const doc = raw('consumer-lambda');
  const replayed = subscriberStack('consumer-lambda', (d) => { d.format_version = 3; d.replay_from = 1790000000; });
  replayed.resourceCountIs('AWS::EventsV2::Subscriber', 1);
  replayed.hasResourceProperties('AWS::EventsV2::Subscriber', {
    Name: `${doc.rule_name}-r1790000000`,
    StartingPosition: 'POINT_IN_TIME',
    PointInTimeConfiguration: { PointType: 'TIMESTAMP', StartingPoint: 1790000000 },
    RetryPolicy: { MaxRetryAttempts: 7, MaxEventAgeInSeconds: 3600 },
    State: 'RUNNING',
  });
  // Its dead-letter queue and alarms keep the subscription's names: only the subscriber is replaced.
  replayed.hasResourceProperties('AWS::SQS::Queue', { QueueName: `${doc.rule_name}-dlq` });
  replayed.hasResourceProperties('AWS::CloudWatch::Alarm', { AlarmName: `${doc.rule_name}-dead-letters` });
  // Never replayed: the subscription's own name, from the newest event (EventBridge's default).
  const subscriber = Object.values(subscriberStack('consumer-lambda').findResources('AWS::EventsV2::Subscriber'))[0] as any;
  assert.equal(subscriber.Properties.Name, doc.rule_name);
  assert.equal('StartingPosition' in subscriber.Properties, false);
  assert.equal('PointInTimeConfiguration' in subscriber.Properties, false);
  // A Classic rule has no point in time to start from: refused, whichever way the bus is named.
  assert.throws(() => subscriberStack('consumer-lambda', (d) => { d.bus_kind = 'classic'; d.replay_from = 1790000000; }), /\$\.replay_from: only a Custom Event Bus subscriber/);
  assert.throws(() => subscriberStack('consumer-lambda', (d) => { d.replay_from = 1790000000; }, 'classic'), /only a Custom Event Bus subscriber starts at a point in time/);
  assert.throws(() => subscriberStack('consumer-lambda', (d) => { d.replay_from = -1; }), /\$\.replay_from: below 0/);
});

test('a consumer deploy.json that names its bus is built for that bus, whatever the platform\'s', () => {
  const classic = subscriberStack('consumer-lambda', (doc) => { doc.bus_kind = 'classic'; }, 'custom');
  classic.resourceCountIs('AWS::EventsV2::Subscriber', 0);
  classic.resourceCountIs('AWS::Events::Rule', 1);
  classic.hasOutput('BusKind', { Value: 'classic' });
  const custom = subscriberStack('consumer-lambda', (doc) => { doc.bus_kind = 'custom'; }, 'classic');
  custom.resourceCountIs('AWS::EventsV2::Subscriber', 1);
  // One that names none follows the platform; a platform installed before the choice is Classic.
  subscriberStack('consumer-lambda', () => {}, 'classic').resourceCountIs('AWS::Events::Rule', 1);
  Template.fromStack(generate(newApp(), fixture('consumer-lambda'), 'dev')[0]).resourceCountIs('AWS::Events::Rule', 1);
  assert.throws(() => subscriberStack('consumer-lambda', (doc) => { doc.bus_kind = 'v3'; }), /\$\.bus_kind: must be one of custom, classic/);
});

test('every generated stack deploys through the generators\' own bootstrap, and every role it creates has the boundary', () => {
  const names = ['producer-https-v1', 'producer-sqs-v1', 'consumer-lambda', 'consumer-sqs', 'consumer-https'];
  const stacks = names.flatMap((n) => generate(newApp(), fixture(n), 'dev'));
  const qualifier = generatorsQualifier('dev');
  assert.match(qualifier, /^[a-z0-9]{1,10}$/);
  assert.notEqual(qualifier, generatorsQualifier('prod'));
  let roles = 0;
  for (const s of stacks) {
    const json = Template.fromStack(s).toJSON();
    // The deploy checks this bootstrap's version, and cdk deploy assumes its roles.
    assert.equal(json.Parameters.BootstrapVersion.Default, `/cdk-bootstrap/${qualifier}/version`, s.stackName);
    const synth = s.synthesizer as any;
    assert.match(synth.cloudFormationExecutionRoleArn, new RegExp(`cdk-${qualifier}-cfn-exec-role-`), s.stackName);
    for (const [id, role] of Object.entries(json.Resources).filter(([, r]: any) => r.Type === 'AWS::IAM::Role') as [string, any][]) {
      roles += 1;
      assert.equal(render(role.Properties.PermissionsBoundary),
        `arn:<{"Ref":"AWS::Partition"}>:iam::<{"Ref":"AWS::AccountId"}>:policy/${generatedRolesBoundaryName('dev')}`, `${s.stackName} ${id}`);
    }
  }
  // The SQS consumer's statement handler (the HTTPS consumer's rule invokes the delivery function by its permission).
  assert.equal(roles, 1);
});

test('an unacknowledged cdk-nag finding fails the synth', () => {
  const app = newApp();
  const [stack] = generate(app, fixture('consumer-lambda'), 'dev');
  new sqs.Queue(stack, 'Unencrypted', { encryption: sqs.QueueEncryption.UNENCRYPTED });
  assert.throws(() => Template.fromStack(stack), /Validation failed/);
});

test('each consumer stack alarms on its DLQ depth; on the Classic bus also on its rule\'s failed, throttled and undeliverable invocations', () => {
  const doc = raw('consumer-lambda');
  const classic = byName(synth('consumer-lambda').stacks, doc.stack_name);
  const custom = subscriberStack('consumer-lambda');
  for (const t of [classic, custom]) {
    t.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: `${doc.rule_name}-dead-letters`,
      Namespace: 'AWS/SQS', MetricName: 'ApproximateNumberOfMessagesVisible', Statistic: 'Maximum',
      Dimensions: [{ Name: 'QueueName', Value: { 'Fn::GetAtt': [Match.stringLikeRegexp('^DeadLetters'), 'QueueName'] } }],
      Threshold: 1, ComparisonOperator: 'GreaterThanOrEqualToThreshold',
    });
  }
  for (const [suffix, metric] of [['failed-invocations', 'FailedInvocations'], ['throttled', 'ThrottledRules'], ['dlq-failures', 'InvocationsFailedToBeSentToDlq']]) {
    classic.hasResourceProperties('AWS::CloudWatch::Alarm', {
      AlarmName: `${doc.rule_name}-${suffix}`, Namespace: 'AWS/Events', MetricName: metric, Statistic: 'Sum',
      Dimensions: [{ Name: 'EventBusName', Value: { Ref: Match.stringLikeRegexp('busname') } }, { Name: 'RuleName', Value: doc.rule_name }],
    });
  }
  classic.resourceCountIs('AWS::CloudWatch::Alarm', 4);
  custom.resourceCountIs('AWS::CloudWatch::Alarm', 1);
});
