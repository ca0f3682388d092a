import { Stack, StackProps, Validations } from 'aws-cdk-lib';
import * as iam from 'aws-cdk-lib/aws-iam';
import { AwsSolutionsChecks } from 'cdk-nag';
import { Construct } from 'constructs';
import { addConsumerStack } from './consumer-stack';
import { DeployDoc } from './deploy-config';
import { ENV_PATTERN } from './platform';
import { BusKind, busKind, generatedRolesBoundaryName } from './platform-names';
import { addProducerStacks } from './producer-stack';

/**
 * The stacks a deploy.json asks for, checked by cdk-nag's AWS Solutions rules. A consumer stack is
 * built for the bus its deploy.json names, else for `platformBus` (the consumer build's
 * BUSWAY_BUS_KIND; a platform installed before the choice existed has the Classic bus). Every role
 * they create has infra's permissions boundary: their execution policy refuses a role without it.
 */
export function generate(scope: Construct, doc: DeployDoc, platformEnv: string, props: StackProps = {}, platformBus: BusKind = 'classic'): Stack[] {
  if (!ENV_PATTERN.test(platformEnv)) throw new Error(`platform env ${platformEnv} must match ${ENV_PATTERN}`);
  const stacks = doc.kind === 'producer'
    ? addProducerStacks(scope, doc, platformEnv, props)
    : [addConsumerStack(scope, doc, platformEnv, busKind(doc.bus_kind, platformBus), props)];
  // The event type's resource stack is shared by its versions: it is set up once.
  for (const s of stacks.filter((x) => !x.node.tryFindChild('RolesBoundary'))) {
    iam.PermissionsBoundary.of(s).apply(iam.ManagedPolicy.fromManagedPolicyName(s, 'RolesBoundary', generatedRolesBoundaryName(platformEnv)));
    Validations.of(s).addPlugins(new AwsSolutionsChecks(s, { verbose: true }));
  }
  return stacks;
}
