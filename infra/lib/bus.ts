// Seed step 3, first half: the platform's event bus, of the kind chosen at install (README:
// "Bus kinds"). Custom: the second-generation Custom Event Bus, which keeps every event for its
// retention period (replay and a subscriber's starting point come from there). Classic: the custom
// bus with an archive of busway's events for replay.
import { Duration, Stack, StackProps } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as eventsv2 from 'aws-cdk-lib/aws-eventsv2';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import { Construct } from 'constructs';
import { BusKind, Names, parameterName, PlatformParameter } from './names';

export interface BusSettings {
  kind: BusKind;
  /** Days the Custom Event Bus keeps every event, 1-365. */
  retentionDays: number;
}

export const DEFAULT_RETENTION_DAYS = 7;

export class BusStack extends Stack {
  readonly kind: BusKind;
  readonly busName: string;
  readonly busArn: string;
  /** Days the Custom Event Bus keeps every event (the portal's ENV_VARS.busRetentionDays); undefined on Classic. */
  readonly retentionDays?: number;

  constructor(scope: Construct, names: Names, settings: BusSettings, props: StackProps = {}) {
    super(scope, names.stack('bus'), { ...props, stackName: names.stack('bus') });
    this.kind = settings.kind;
    if (settings.kind === 'custom') {
      const days = settings.retentionDays;
      if (!Number.isInteger(days) || days < 1 || days > 365) throw new Error(`bus retention ${days} must be a whole number of days from 1 to 365`);
      const bus = new eventsv2.CfnEventBus(this, 'Bus', {
        name: names.busName,
        description: 'busway: every event of every producer, one subscriber per subscription',
        storageConfiguration: { retentionPeriodInDays: days },
      });
      this.busName = names.busName;
      this.busArn = bus.attrEventBusArn;
      this.retentionDays = days;
    } else {
      const bus = new events.EventBus(this, 'Bus', { eventBusName: names.busName });
      bus.archive('Archive', {
        archiveName: `${names.env}-busway-events`,
        description: 'every event busway put on the bus (Source busway.*), for replay',
        eventPattern: { source: events.Match.prefix('busway.') },
        retention: Duration.days(30),
      });
      this.busName = bus.eventBusName;
      this.busArn = bus.eventBusArn;
    }
    const parameters: [PlatformParameter, string][] = [['busName', this.busName], ['busArn', this.busArn], ['busKind', this.kind]];
    for (const [p, stringValue] of parameters) {
      new ssm.StringParameter(this, `${p[0].toUpperCase()}${p.slice(1)}Parameter`, { parameterName: parameterName(names.env, p), stringValue });
    }
  }
}
