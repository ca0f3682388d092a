// The provisioning pipeline the seed only described: an S3 notification of a deploy.json starts the
// state machine (statemachines/provisioning.asl.json) through the provisioner, which validates the
// document; a CodeBuild project then runs the CDK generators of cdk-app/ on it (buildspecs/).
import * as fs from 'fs';
import * as path from 'path';
import { ArnFormat, CfnOutput, CfnResource, Duration, IgnoreMode, Stack, StackProps, Validations } from 'aws-cdk-lib';
import * as codebuild from 'aws-cdk-lib/aws-codebuild';
import * as dynamodb from 'aws-cdk-lib/aws-dynamodb';
import * as iam from 'aws-cdk-lib/aws-iam';
import * as logs from 'aws-cdk-lib/aws-logs';
import * as s3 from 'aws-cdk-lib/aws-s3';
import * as s3assets from 'aws-cdk-lib/aws-s3-assets';
import * as s3n from 'aws-cdk-lib/aws-s3-notifications';
import * as sfn from 'aws-cdk-lib/aws-stepfunctions';
import { Construct } from 'constructs';
import { RustFunction } from './function';
import { GeneratorPermissions } from './generators';
import { acknowledgeWildcards, objects, tableAndIndexes } from './iam';
import { BucketBase, BusKind, ENV_VARS, Names } from './names';
import { generatorsQualifier } from '../../cdk-app/lib/platform-names';

export const REPO_ROOT = path.resolve(__dirname, '..', '..');
export const ASL_FILE = path.join(REPO_ROOT, 'statemachines', 'provisioning.asl.json');
export const SUBSTITUTIONS_FILE = path.join(REPO_ROOT, 'infra', 'definition-substitutions.json');
/** The key suffix of every deploy.json (README: Contracts); other objects never start a deployment. */
const DEPLOY_JSON = 'deploy.json';

export interface ProvisioningProps extends StackProps {
  lambdaAssets: string;
  /** The bus the consumer build generates stacks for (scripts/provision-build.sh). */
  busKind: BusKind;
  table: dynamodb.ITable;
  schemaBackup: s3.IBucket;
  publisher: s3.IBucket;
  subscriber: s3.IBucket;
}

type Kind = 'producer' | 'consumer';
const CONFIG_BUCKET: Record<Kind, BucketBase> = { producer: 'publisher-components-bucket', consumer: 'subscriber-components-bucket' };

export class ProvisioningStack extends Stack {
  constructor(scope: Construct, names: Names, props: ProvisioningProps) {
    super(scope, names.stack('provisioning'), { ...props, stackName: names.stack('provisioning') });
    // Built from its name, not referenced: the machine's definition names the provisioner, so a
    // reference back from the provisioner's environment would be a cycle.
    const stateMachineArn = this.formatArn({
      service: 'states', resource: 'stateMachine', resourceName: names.stateMachineName, arnFormat: ArnFormat.COLON_RESOURCE_NAME,
    });
    const buckets = { producer: props.publisher, consumer: props.subscriber };

    const provisioner = new RustFunction(this, 'Provisioner', {
      name: 'provisioner',
      names,
      lambdaAssets: props.lambdaAssets,
      timeout: Duration.seconds(30),
      environment: {
        [ENV_VARS.tableName]: props.table.tableName,
        [ENV_VARS.schemaBackupBucket]: props.schemaBackup.bucketName,
        [ENV_VARS.publisherBucket]: props.publisher.bucketName,
        [ENV_VARS.subscriberBucket]: props.subscriber.bucketName,
        [ENV_VARS.stateMachineArn]: stateMachineArn,
      },
    });
    provisioner.role.addToPolicy(new iam.PolicyStatement({ actions: ['states:StartExecution'], resources: [stateMachineArn] }));
    // The await_turn task asks whether an older job's execution of the same document still runs.
    const executions = this.formatArn({
      service: 'states', resource: 'execution', resourceName: `${names.stateMachineName}:*`, arnFormat: ArnFormat.COLON_RESOURCE_NAME,
    });
    provisioner.role.addToPolicy(new iam.PolicyStatement({ actions: ['states:DescribeExecution'], resources: [executions] }));
    acknowledgeWildcards(provisioner.role, [`Resource::arn:<AWS::Partition>:states:<AWS::Region>:<AWS::AccountId>:execution:${names.stateMachineName}:*`],
      'Execution names are made at run time from each deploy.json version; the wildcard is the executions of the one provisioning state machine.');
    const deployJsons = (['producer', 'consumer'] as const).map((k) => objects(this, names, CONFIG_BUCKET[k], `*/${DEPLOY_JSON}`));
    // The validate task reads exactly the version the notification named.
    provisioner.role.addToPolicy(new iam.PolicyStatement({ actions: ['s3:GetObject', 's3:GetObjectVersion'], resources: deployJsons.map((o) => o.arn) }));
    acknowledgeWildcards(provisioner.role, deployJsons.map((o) => o.finding), 'Deploy.json keys are made at run time from validated names; the wildcard is that key shape in the two configuration buckets.');
    // Without it S3 answers 403 for a missing key: a deploy.json deleted before its notification
    // is read would look forbidden, and the notification would be retried instead of skipped.
    provisioner.role.addToPolicy(new iam.PolicyStatement({ actions: ['s3:ListBucket'], resources: [buckets.producer.bucketArn, buckets.consumer.bucketArn] }));
    // The starter writes the PENDING record and reads it back to drop repeated notifications.
    provisioner.role.addToPolicy(new iam.PolicyStatement({
      actions: ['dynamodb:GetItem', 'dynamodb:Query', 'dynamodb:PutItem', 'dynamodb:UpdateItem'],
      resources: tableAndIndexes(props.table),
    }));
    for (const kind of ['producer', 'consumer'] as const) {
      // Imported by ARN so that the notification lives here, not in the buckets' stack.
      const bucket = s3.Bucket.fromBucketArn(this, `${kind}ConfigBucket`, buckets[kind].bucketArn);
      bucket.addEventNotification(s3.EventType.OBJECT_CREATED, new s3n.LambdaDestination(provisioner.fn), { suffix: DEPLOY_JSON });
    }
    const notificationsHandler = this.node.children.find((c) => c.node.id.startsWith('BucketNotificationsHandler'));
    if (!notificationsHandler) throw new Error('aws-cdk-lib no longer adds a BucketNotificationsHandler: review its acknowledgement');
    Validations.of(notificationsHandler).acknowledge({
      id: 'AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]',
      reason: 'aws-cdk-lib\'s singleton handler that sets bucket notifications at deploy time; its role is not configurable.',
    });

    const repo = new s3assets.Asset(this, 'Repository', {
      path: REPO_ROOT,
      // What git tracks: the build needs the Makefile, scripts/, buildspecs/, cdk-app/ and the
      // deploy.json schemas of functions/core/, never node_modules, target/ or a venv.
      ignoreMode: IgnoreMode.GIT,
      exclude: ['.git/', ...gitignore()],
    });
    new GeneratorPermissions(this, 'Generators', names);
    const projects = {
      producer: this.buildProject('producer', names, repo, props.table, {}),
      consumer: this.buildProject('consumer', names, repo, props.table, { [ENV_VARS.busKind]: { value: props.busKind } }),
    };
    // The describe_build task records a build's phases and log link on its deployment.
    provisioner.role.addToPolicy(new iam.PolicyStatement({
      actions: ['codebuild:BatchGetBuilds'],
      resources: [projects.producer.projectArn, projects.consumer.projectArn],
    }));

    const substitutions: Record<string, string> = {
      DeploymentsTableName: props.table.tableName,
      ProvisionerFunctionArn: provisioner.fn.functionArn,
      ProducerBuildProjectName: projects.producer.projectName,
      ConsumerBuildProjectName: projects.consumer.projectName,
    };
    const expected = Object.keys(JSON.parse(fs.readFileSync(SUBSTITUTIONS_FILE, 'utf8'))).sort();
    if (JSON.stringify(Object.keys(substitutions).sort()) !== JSON.stringify(expected)) {
      throw new Error(`definition substitutions ${Object.keys(substitutions)} differ from ${SUBSTITUTIONS_FILE}: ${expected}`);
    }

    const role = new iam.Role(this, 'StateMachineRole', {
      assumedBy: new iam.ServicePrincipal('states.amazonaws.com'),
      description: 'busway provisioning state machine: status writes, the validate task, the two builds',
    });
    role.addToPolicy(new iam.PolicyStatement({ actions: ['dynamodb:UpdateItem'], resources: [props.table.tableArn] }));
    role.addToPolicy(new iam.PolicyStatement({ actions: ['lambda:InvokeFunction'], resources: [provisioner.fn.functionArn] }));
    role.addToPolicy(new iam.PolicyStatement({
      actions: ['codebuild:StartBuild', 'codebuild:StopBuild', 'codebuild:BatchGetBuilds'],
      resources: [projects.producer.projectArn, projects.consumer.projectArn],
    }));
    // startBuild.sync waits for the build through this Step Functions-managed rule.
    role.addToPolicy(new iam.PolicyStatement({
      actions: ['events:PutTargets', 'events:PutRule', 'events:DescribeRule'],
      resources: [this.formatArn({ service: 'events', resource: 'rule', resourceName: 'StepFunctionsGetEventForCodeBuildStartBuildRule' })],
    }));

    const machine = new sfn.StateMachine(this, 'Provisioning', {
      stateMachineName: names.stateMachineName,
      stateMachineType: sfn.StateMachineType.STANDARD,
      definitionBody: sfn.DefinitionBody.fromString(fs.readFileSync(ASL_FILE, 'utf8')),
      definitionSubstitutions: substitutions,
      role,
      logs: { destination: new logs.LogGroup(this, 'ProvisioningLogs', { retention: logs.RetentionDays.THREE_MONTHS }), level: sfn.LogLevel.ALL },
      tracingEnabled: true,
    });
    acknowledgeWildcards(role, ['Resource::*'], 'Added by aws-cdk-lib for logs and tracing: the CloudWatch Logs delivery actions and X-Ray\'s '
      + 'PutTraceSegments, PutTelemetryRecords and GetSampling* support no resource-level permission, so AWS requires Resource "*".');
    new CfnOutput(this, 'StateMachineArn', { value: machine.stateMachineArn });
  }

  /** The CodeBuild project of one kind: runs buildspecs/{kind}.yml on the repository asset. */
  private buildProject(kind: Kind, names: Names, repo: s3assets.Asset, table: dynamodb.ITable,
    environment: Record<string, codebuild.BuildEnvironmentVariable>): codebuild.Project {
    const project = new codebuild.Project(this, `${kind === 'producer' ? 'Producer' : 'Consumer'}Build`, {
      projectName: names.buildProject(kind),
      description: `busway ${kind} build: cdk deploy|destroy of one deploy.json with cdk-app/`,
      source: codebuild.Source.s3({ bucket: repo.bucket, path: repo.s3ObjectKey }),
      buildSpec: codebuild.BuildSpec.fromSourceFilename(`buildspecs/${kind}.yml`),
      environment: {
        buildImage: codebuild.LinuxBuildImage.STANDARD_7_0,
        computeType: codebuild.ComputeType.SMALL,
        environmentVariables: { BUSWAY_ENV: { value: names.env }, [ENV_VARS.tableName]: { value: table.tableName }, ...environment },
      },
      timeout: Duration.minutes(30),
      logging: { cloudWatch: { logGroup: new logs.LogGroup(this, `${kind}BuildLogs`, { retention: logs.RetentionDays.THREE_MONTHS }) } },
    });
    // `cdk deploy` works through the roles of the generators' own bootstrap
    // (cdk-{qualifier}-{deploy,file-publishing,lookup}-role-…), whose CloudFormation execution
    // role has only the generators' execution policy (lib/generators.ts); never the default
    // bootstrap's, which deploys with AdministratorAccess.
    const bootstrapRoles = `arn:${this.partition}:iam::${this.account}:role/cdk-${generatorsQualifier(names.env)}-*`;
    project.addToRolePolicy(new iam.PolicyStatement({ actions: ['sts:AssumeRole'], resources: [bootstrapRoles] }));
    const deployJson = objects(this, names, CONFIG_BUCKET[kind], `*/${DEPLOY_JSON}`);
    // scripts/provision-build.sh fetches exactly the validated version, and first re-checks on the
    // deployment record that the deployment still expects it.
    project.addToRolePolicy(new iam.PolicyStatement({ actions: ['s3:GetObject', 's3:GetObjectVersion'], resources: [deployJson.arn] }));
    project.addToRolePolicy(new iam.PolicyStatement({ actions: ['dynamodb:GetItem'], resources: [table.tableArn] }));
    // The generated stacks take the platform's IDs as SSM-typed parameters of this environment.
    const parameters = `parameter/busway/${names.env}/*`;
    project.addToRolePolicy(new iam.PolicyStatement({
      actions: ['ssm:GetParameter', 'ssm:GetParameters'],
      resources: [`arn:${this.partition}:ssm:${this.region}:${this.account}:${parameters}`],
    }));
    Validations.of(project).acknowledge({
      id: 'AwsSolutions-CB4',
      reason: 'The build produces no artifacts (NO_ARTIFACTS); what CodeBuild stores is encrypted with the AWS managed key alias/aws/s3, and no customer key is needed for it.',
    });
    acknowledgeWildcards(project, [
      `Resource::arn:<AWS::Partition>:iam::<AWS::AccountId>:role/cdk-${generatorsQualifier(names.env)}-*`,
      deployJson.finding,
      `Resource::arn:<AWS::Partition>:ssm:<AWS::Region>:<AWS::AccountId>:${parameters}`,
    ], 'The generators\' bootstrap roles\' names end in the account and region and start with cdk-{their qualifier}-; deploy.json keys are made at run time; '
      + 'the generators may read every platform parameter of this environment and no other.');
    const self = `<${this.getLogicalId(project.node.defaultChild as CfnResource)}>`;
    acknowledgeWildcards(project, [
      'Action::s3:GetObject*', 'Action::s3:GetBucket*', 'Action::s3:List*',
      `Resource::arn:<AWS::Partition>:logs:<AWS::Region>:<AWS::AccountId>:log-group:/aws/codebuild/${self}:*`,
      `Resource::arn:<AWS::Partition>:codebuild:<AWS::Region>:<AWS::AccountId>:report-group/${self}-*`,
    ], 'aws-cdk-lib\'s own grants to every Project: read of the source asset (its bucket and object key only), its default log group\'s streams, its report groups.');
    return project;
  }
}

/** The repository's .gitignore patterns (the asset holds what git would commit). */
function gitignore(): string[] {
  return fs.readFileSync(path.join(REPO_ROOT, '.gitignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
}
