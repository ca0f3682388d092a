// Seed step 3, first half: the custom event bus, with an archive of busway's events for replay.
import { Duration, Stack, StackProps } from 'aws-cdk-lib';
import * as events from 'aws-cdk-lib/aws-events';
import * as ssm from 'aws-cdk-lib/aws-ssm';
import { Construct } from 'constructs';
import { Names, parameterName } from './names';

export class BusStack extends Stack {
  readonly bus: events.EventBus;

  constructor(scope: Construct, names: Names, props: StackProps = {}) {
    super(scope, names.stack('bus'), { ...props, stackName: names.stack('bus') });
    this.bus = new events.EventBus(this, 'Bus', { eventBusName: names.busName });
    this.bus.archive('Archive', {
      archiveName: `${names.env}-busway-events`,
      description: 'every event busway put on the bus (Source busway.*), for replay',
      eventPattern: { source: events.Match.prefix('busway.') },
      retention: Duration.days(30),
    });
    new ssm.StringParameter(this, 'BusNameParameter', { parameterName: parameterName(names.env, 'busName'), stringValue: this.bus.eventBusName });
    new ssm.StringParameter(this, 'BusArnParameter', { parameterName: parameterName(names.env, 'busArn'), stringValue: this.bus.eventBusArn });
  }
}
