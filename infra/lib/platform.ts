import { App, Stack, StackProps, Validations } from 'aws-cdk-lib';
import { AwsSolutionsChecks } from 'cdk-nag';
import { BrokerApiStack } from './broker-api';
import { BusSettings, BusStack } from './bus';
import { MonitoringStack } from './monitoring';
import { Names } from './names';
import { PortalStack } from './portal';
import { ProvisioningStack } from './provisioning';
import { ConfigStorageStack, SchemaBackupStack } from './storage';

export interface Platform {
  backup: SchemaBackupStack;
  storage: ConfigStorageStack;
  bus: BusStack;
  portal: PortalStack;
  brokerApi: BrokerApiStack;
  provisioning: ProvisioningStack;
  monitoring: MonitoringStack;
}

/**
 * The busway platform of one environment, every stack checked by cdk-nag's AWS Solutions rules
 * (an unacknowledged finding fails the synth). Deploy order follows the references:
 * backup, storage, bus → portal → broker API, provisioning → monitoring.
 */
export function platform(app: App, env: string, lambdaAssets: string, bus: BusSettings, props: StackProps = {}): Platform {
  const names = new Names(env);
  const backup = new SchemaBackupStack(app, names, props);
  const storage = new ConfigStorageStack(app, names, props);
  const busStack = new BusStack(app, names, bus, props);
  const portal = new PortalStack(app, names, {
    ...props, lambdaAssets, bus: busStack, schemaBackup: backup.bucket, publisher: storage.publisher, subscriber: storage.subscriber,
  });
  const brokerApi = new BrokerApiStack(app, names, {
    ...props, lambdaAssets, bus: busStack, table: portal.table, authorizer: portal.authorizer.fn,
    schemaBackup: backup.bucket, publisher: storage.publisher, subscriber: storage.subscriber,
  });
  // The portal stack sets API Gateway's account-level logging role, which the broker stage needs.
  brokerApi.addStackDependency(portal);
  const provisioning = new ProvisioningStack(app, names, {
    ...props, lambdaAssets, busKind: bus.kind, table: portal.table, schemaBackup: backup.bucket, publisher: storage.publisher, subscriber: storage.subscriber,
  });
  // The generators' execution policy names the broker API and the SQS injector's role by the
  // parameters the broker API stack writes.
  provisioning.addStackDependency(brokerApi);
  // Alarms and the dashboard find everything by name; deployed last, so they never watch what
  // does not exist yet.
  const monitoring = new MonitoringStack(app, names, { ...props, busKind: bus.kind });
  monitoring.addStackDependency(provisioning);
  const stacks: Stack[] = [backup, storage, busStack, portal, brokerApi, provisioning, monitoring];
  for (const s of stacks) Validations.of(s).addPlugins(new AwsSolutionsChecks(s, { verbose: true }));
  return { backup, storage, bus: busStack, portal, brokerApi, provisioning, monitoring };
}
