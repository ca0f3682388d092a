// What the generators of cdk-app/ may deploy. They run `cdk deploy` through a CDK bootstrap of
// their own (qualifier `generatorsQualifier(env)`, set up by deploy.sh after the platform), whose
// CloudFormation execution role has the execution policy below instead of the default
// bootstrap's AdministratorAccess: rules, connections and API destinations, queues, Lambda
// permissions and event source mappings, the broker API's routes, the queue-statement custom
// resource's function and log group, the claim-check reader policies, and roles only under the
// boundary below.
import { ArnFormat, CfnOutput, Stack } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import { Construct } from 'constructs';
import { generatedRolesBoundaryName, generatorsExecutionPolicyName, generatorsQualifier, generatorsToolkitStackName } from '../../cdk-app/lib/platform-names';
import { acknowledgeWildcards } from './iam';
import { Names, parameterName, PlatformParameter } from './names';

/** The generated stacks' names: `busway-producer-*`, `busway-consumer-*`; rules, queues and their other resources `busway-*`. */
const GENERATED = 'busway-';
const CONSUMER_STACKS = 'busway-consumer-';

export class GeneratorPermissions extends Construct {
  readonly boundary: iam.ManagedPolicy;
  readonly executionPolicy: iam.ManagedPolicy;

  constructor(scope: Construct, id: string, names: Names) {
    super(scope, id);
    const stack = Stack.of(this);
    const arn = (service: string, resource: string, resourceName?: string, sep = ArnFormat.SLASH_RESOURCE_NAME) =>
      stack.formatArn({ service, resource, resourceName, arnFormat: sep });
    const iamArn = (resource: string, name: string) => stack.formatArn({ service: 'iam', region: '', resource, resourceName: name });

    // The most a generated role may ever do: the queue-statement handler edits queue policies and
    // writes its logs, the API destination invoker calls its destination.
    const roleLogs = arn('logs', 'log-group', `${CONSUMER_STACKS}*`, ArnFormat.COLON_RESOURCE_NAME);
    const anyQueue = arn('sqs', '*', undefined);
    const destinations = arn('events', 'api-destination', `${GENERATED}*`);
    this.boundary = new iam.ManagedPolicy(this, 'RolesBoundary', {
      managedPolicyName: generatedRolesBoundaryName(names.env),
      description: `busway ${names.env}: the permissions boundary of every role a generated stack creates`,
      statements: [
        new iam.PolicyStatement({ actions: ['sqs:GetQueueAttributes', 'sqs:SetQueueAttributes'], resources: [anyQueue] }),
        new iam.PolicyStatement({ actions: ['logs:CreateLogStream', 'logs:PutLogEvents'], resources: [roleLogs] }),
        new iam.PolicyStatement({ actions: ['events:InvokeApiDestination'], resources: [destinations] }),
        // A Custom Event Bus subscriber's delivery role reaches its one target and its DLQ.
        new iam.PolicyStatement({ actions: ['lambda:InvokeFunction'], resources: [arn('lambda', 'function', '*', ArnFormat.COLON_RESOURCE_NAME)] }),
        new iam.PolicyStatement({ actions: ['sqs:SendMessage'], resources: [anyQueue] }),
      ],
    });

    const rules = arn('events', 'rule', `${names.busName}/${GENERATED}*`);
    const roles = iamArn('role', `${CONSUMER_STACKS}*`);
    const claimCheckPolicies = iamArn('policy', `${GENERATED}*-claim-checks`);
    const functions = arn('lambda', 'function', '*', ArnFormat.COLON_RESOURCE_NAME);
    const ownFunctions = arn('lambda', 'function', `${CONSUMER_STACKS}*`, ArnFormat.COLON_RESOURCE_NAME);
    const injectorSqs = arn('lambda', 'function', names.function('injector-sqs'), ArnFormat.COLON_RESOURCE_NAME);
    const delivery = arn('lambda', 'function', names.function('delivery'), ArnFormat.COLON_RESOURCE_NAME);
    const mappings = arn('lambda', 'event-source-mapping', '*', ArnFormat.COLON_RESOURCE_NAME);
    // The broker API (its routes and stage: the producer stacks) and the SQS injector's role (each
    // SQS producer stack grants it the consumption of its own queue), as the broker API stack
    // publishes them.
    const platform = (p: PlatformParameter) => ssm.StringParameter.valueForStringParameter(this, parameterName(names.env, p));
    const brokerApiId = platform('brokerApiId');
    const api = `arn:${stack.partition}:apigateway:${stack.region}::/restapis/${brokerApiId}`;
    const parameters = arn('ssm', 'parameter', `busway/${names.env}/*`);
    const statements = [
      new iam.PolicyStatement({
        sid: 'ConsumerRules',
        actions: ['events:PutRule', 'events:DeleteRule', 'events:DescribeRule', 'events:EnableRule', 'events:DisableRule',
          'events:PutTargets', 'events:RemoveTargets', 'events:ListTargetsByRule', 'events:TagResource', 'events:UntagResource'],
        resources: [rules],
      }),
      // The Custom Event Bus's subscribers (its ARNs are event-busv2/{name}/{id}/...).
      new iam.PolicyStatement({
        sid: 'ConsumerSubscribers',
        actions: ['events:CreateSubscriber', 'events:UpdateSubscriber', 'events:DeleteSubscriber', 'events:DescribeSubscriber',
          'events:TagResource', 'events:UntagResource'],
        resources: [arn('events', 'event-busv2', `${names.busName}/*`)],
      }),
      // HTTPS subscriptions now target the delivery function; a consumer stack made before it
      // removes its connection and API destination when built again.
      new iam.PolicyStatement({
        sid: 'HttpsTargets',
        actions: ['events:CreateConnection', 'events:UpdateConnection', 'events:DeleteConnection', 'events:DescribeConnection',
          'events:CreateApiDestination', 'events:UpdateApiDestination', 'events:DeleteApiDestination', 'events:DescribeApiDestination'],
        resources: [arn('events', 'connection', `${GENERATED}*`), destinations],
      }),
      // EventBridge keeps a connection's authorization in a secret it names events!connection/{name}/….
      new iam.PolicyStatement({
        sid: 'ConnectionSecrets',
        actions: ['secretsmanager:CreateSecret', 'secretsmanager:PutSecretValue', 'secretsmanager:UpdateSecret',
          'secretsmanager:DeleteSecret', 'secretsmanager:DescribeSecret', 'secretsmanager:TagResource'],
        resources: [arn('secretsmanager', 'secret', `events!connection/${GENERATED}*`, ArnFormat.COLON_RESOURCE_NAME)],
      }),
      new iam.PolicyStatement({
        sid: 'Queues',
        actions: ['sqs:CreateQueue', 'sqs:DeleteQueue', 'sqs:GetQueueAttributes', 'sqs:SetQueueAttributes', 'sqs:GetQueueUrl',
          'sqs:TagQueue', 'sqs:UntagQueue', 'sqs:ListQueueTags'],
        resources: [arn('sqs', `${GENERATED}*`, undefined)],
      }),
      // A rule's or a route's permission to invoke a function: the team's target or the injector.
      new iam.PolicyStatement({
        sid: 'InvokePermissions',
        actions: ['lambda:AddPermission', 'lambda:RemovePermission'],
        resources: [functions],
        conditions: { StringEquals: { 'lambda:Principal': ['events.amazonaws.com', 'apigateway.amazonaws.com'] } },
      }),
      // An HTTPS subscription on the Classic bus gives the delivery function an alias of its own
      // with its retries and dead-letter queue (cdk-app/ consumer stacks); nothing else of it.
      new iam.PolicyStatement({
        sid: 'DeliveryAliases',
        actions: ['lambda:CreateAlias', 'lambda:UpdateAlias', 'lambda:DeleteAlias', 'lambda:GetAlias',
          'lambda:PutFunctionEventInvokeConfig', 'lambda:UpdateFunctionEventInvokeConfig', 'lambda:DeleteFunctionEventInvokeConfig',
          'lambda:GetFunctionEventInvokeConfig'],
        resources: [delivery, `${delivery}:${GENERATED}*`],
      }),
      // An SQS producer's queue feeds the SQS injector, and no other function.
      new iam.PolicyStatement({
        sid: 'ProducerQueueMappings',
        actions: ['lambda:CreateEventSourceMapping', 'lambda:GetEventSourceMapping', 'lambda:UpdateEventSourceMapping', 'lambda:DeleteEventSourceMapping'],
        resources: ['*', mappings],
        conditions: { StringEquals: { 'lambda:FunctionArn': injectorSqs } },
      }),
      new iam.PolicyStatement({
        sid: 'InjectorSqsQueueGrants',
        actions: ['iam:GetRolePolicy', 'iam:PutRolePolicy', 'iam:DeleteRolePolicy'],
        resources: [platform('injectorSqsRoleArn')],
      }),
      new iam.PolicyStatement({
        sid: 'BrokerRoutes',
        actions: ['apigateway:GET', 'apigateway:POST', 'apigateway:PUT', 'apigateway:PATCH', 'apigateway:DELETE'],
        resources: [api, `${api}/*`],
      }),
      new iam.PolicyStatement({
        sid: 'QueueStatementFunctions',
        actions: ['lambda:CreateFunction', 'lambda:DeleteFunction', 'lambda:GetFunction', 'lambda:GetFunctionConfiguration',
          'lambda:UpdateFunctionCode', 'lambda:UpdateFunctionConfiguration', 'lambda:InvokeFunction', 'lambda:TagResource', 'lambda:ListTags'],
        resources: [ownFunctions],
      }),
      new iam.PolicyStatement({
        sid: 'QueueStatementLogs',
        actions: ['logs:CreateLogGroup', 'logs:DeleteLogGroup', 'logs:PutRetentionPolicy', 'logs:DeleteRetentionPolicy', 'logs:TagResource'],
        resources: [roleLogs],
      }),
      new iam.PolicyStatement({ sid: 'DescribeLogGroups', actions: ['logs:DescribeLogGroups'], resources: [arn('logs', 'log-group', '*', ArnFormat.COLON_RESOURCE_NAME)] }),
      // A role is created, or given a policy, only under the boundary: what the generated roles
      // may do never exceeds it, whatever a stack asks.
      new iam.PolicyStatement({
        sid: 'RolesUnderBoundary',
        actions: ['iam:CreateRole', 'iam:PutRolePolicy', 'iam:AttachRolePolicy', 'iam:DetachRolePolicy', 'iam:PutRolePermissionsBoundary'],
        resources: [roles],
        conditions: { StringEquals: { 'iam:PermissionsBoundary': this.boundary.managedPolicyArn } },
      }),
      new iam.PolicyStatement({
        sid: 'GeneratedRoles',
        actions: ['iam:GetRole', 'iam:DeleteRole', 'iam:GetRolePolicy', 'iam:DeleteRolePolicy', 'iam:ListRolePolicies',
          'iam:ListAttachedRolePolicies', 'iam:UpdateRoleDescription', 'iam:TagRole', 'iam:UntagRole'],
        resources: [roles],
      }),
      new iam.PolicyStatement({
        sid: 'PassGeneratedRoles',
        actions: ['iam:PassRole'],
        resources: [roles],
        conditions: { StringEquals: { 'iam:PassedToService': ['lambda.amazonaws.com', 'events.amazonaws.com'] } },
      }),
      new iam.PolicyStatement({
        sid: 'ClaimCheckReaders',
        actions: ['iam:CreatePolicy', 'iam:DeletePolicy', 'iam:GetPolicy', 'iam:GetPolicyVersion', 'iam:ListPolicyVersions',
          'iam:CreatePolicyVersion', 'iam:DeletePolicyVersion', 'iam:TagPolicy', 'iam:UntagPolicy'],
        resources: [claimCheckPolicies],
      }),
      // The generated stacks take the platform's IDs as SSM-typed parameters of this environment.
      new iam.PolicyStatement({ sid: 'PlatformParameters', actions: ['ssm:GetParameters'], resources: [parameters] }),
    ];
    this.executionPolicy = new iam.ManagedPolicy(this, 'ExecutionPolicy', {
      managedPolicyName: generatorsExecutionPolicyName(names.env),
      description: `busway ${names.env}: what CloudFormation may do for the generated stacks (the generators' bootstrap execution policy)`,
      statements,
    });

    new CfnOutput(stack, 'GeneratorsExecutionPolicyArn', {
      value: this.executionPolicy.managedPolicyArn,
      description: 'cdk bootstrap --cloudformation-execution-policies of the generators\' bootstrap (deploy.sh)',
    });
    new CfnOutput(stack, 'GeneratorsQualifier', { value: generatorsQualifier(names.env) });
    new CfnOutput(stack, 'GeneratorsToolkitStackName', { value: generatorsToolkitStackName(names.env) });

    // cdk-nag's findings name each wildcard resource as below (`<AWS::…>` for the pseudo parameters).
    const finding = (resource: string) => `Resource::arn:<AWS::Partition>:${resource}`;
    const here = '<AWS::Region>:<AWS::AccountId>';
    acknowledgeWildcards(this.boundary, [
      finding(`sqs:${here}:*`),
      finding(`logs:${here}:log-group:${CONSUMER_STACKS}*`),
      finding(`events:${here}:api-destination/${GENERATED}*`),
      finding(`lambda:${here}:function:*`),
    ], 'A boundary only caps what a role may be given: the queue-statement handler edits the policy of a team\'s queue (any name; '
      + 'its own role names the one queue), writes the logs of a generated stack, a rule calls its API destination, and a '
      + 'subscriber\'s delivery role invokes its one target, a team\'s function or queue (its own policy names that one).');
    const apiParameter = (stack.resolve(brokerApiId) as { Ref: string }).Ref;
    acknowledgeWildcards(this.executionPolicy, [
      finding(`events:${here}:rule/${names.busName}/${GENERATED}*`),
      finding(`events:${here}:event-busv2/${names.busName}/*`),
      finding(`events:${here}:connection/${GENERATED}*`),
      finding(`events:${here}:api-destination/${GENERATED}*`),
      finding(`secretsmanager:${here}:secret:events!connection/${GENERATED}*`),
      finding(`sqs:${here}:${GENERATED}*`),
      finding(`lambda:${here}:function:${CONSUMER_STACKS}*`),
      finding(`lambda:${here}:function:${names.function('delivery')}:${GENERATED}*`),
      finding(`logs:${here}:log-group:${CONSUMER_STACKS}*`),
      finding(`iam::<AWS::AccountId>:role/${CONSUMER_STACKS}*`),
      finding(`iam::<AWS::AccountId>:policy/${GENERATED}*-claim-checks`),
      finding(`ssm:${here}:parameter/busway/${names.env}/*`),
      finding(`apigateway:<AWS::Region>::/restapis/<${apiParameter}>/*`),
    ], 'What the generated stacks create is named at deploy time from a subscription id, an event type and version, '
      + 'or by CloudFormation after its stack (busway-consumer-{id}-…); the wildcard is that name shape, under the '
      + 'platform\'s bus, in this account and region; roles only under the boundary; the routes of the broker API only.');
    acknowledgeWildcards(this.executionPolicy, [
      finding(`lambda:${here}:function:*`),
      'Resource::*',
      finding(`lambda:${here}:event-source-mapping:*`),
      finding(`logs:${here}:log-group:*`),
    ], 'A rule may target any function of the team\'s (a Lambda subscription), so adding its permission is limited by '
      + 'the principal (events or API Gateway) instead; CreateEventSourceMapping takes no resource ARN and is limited by '
      + 'the function (the SQS injector); DescribeLogGroups lists and takes no name.');
  }
}
