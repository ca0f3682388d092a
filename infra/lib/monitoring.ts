// The platform's alarms and its one dashboard. Everything is found by name (the API, the state
// machine, the functions, the metrics namespace the functions write EMF to), so this stack holds
// no reference to the others and deploys after them. Each subscription's own alarms (its
// dead-letter queue, and on the Classic bus its rule's failed and throttled invocations) live in
// its consumer stack (cdk-app/lib/consumer-stack.ts), beside the queue and rule they watch.
import { ArnFormat, Duration, Stack, StackProps } from 'aws-cdk-lib';
import * as cloudwatch from 'aws-cdk-lib/aws-cloudwatch';
import { Construct } from 'constructs';
import { BusKind, FUNCTIONS, Names, STAGES } from './names';

/** busway_aws::emf's metric names. */
export const EMF_METRICS = {
  accepted: 'EventsAccepted',
  rejected: 'EventsRejected',
  latency: 'IngestLatency',
  throttled: 'PutEventsThrottled',
  failedEntries: 'PutEventsFailedEntries',
} as const;

export interface MonitoringProps extends StackProps {
  busKind: BusKind;
}

export class MonitoringStack extends Stack {
  readonly alarms: cloudwatch.Alarm[] = [];

  constructor(scope: Construct, names: Names, props: MonitoringProps) {
    super(scope, names.stack('monitoring'), { ...props, stackName: names.stack('monitoring') });
    const period = Duration.minutes(1);
    const emf = (metricName: string, statistic = 'Sum') =>
      new cloudwatch.Metric({ namespace: names.metricsNamespace, metricName, statistic, period });
    const api = (metricName: string) => new cloudwatch.Metric({
      namespace: 'AWS/ApiGateway', metricName, statistic: 'Sum', period,
      dimensionsMap: { ApiName: names.brokerApiName, Stage: STAGES.broker },
    });
    const stateMachineArn = this.formatArn({
      service: 'states', resource: 'stateMachine', resourceName: names.stateMachineName, arnFormat: ArnFormat.COLON_RESOURCE_NAME,
    });
    const states = (metricName: string, statistic = 'Sum') => new cloudwatch.Metric({
      namespace: 'AWS/States', metricName, statistic, period, dimensionsMap: { StateMachineArn: stateMachineArn },
    });
    const lambdaMetric = (fn: string, metricName: string) => new cloudwatch.Metric({
      namespace: 'AWS/Lambda', metricName, statistic: 'Sum', period, dimensionsMap: { FunctionName: fn },
    });

    const alarm = (id: string, metric: cloudwatch.IMetric, description: string) => {
      const a = new cloudwatch.Alarm(this, id, {
        alarmName: `${names.env}-busway-${kebab(id)}`,
        alarmDescription: description,
        metric,
        threshold: 1,
        comparisonOperator: cloudwatch.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD,
        evaluationPeriods: 1,
        treatMissingData: cloudwatch.TreatMissingData.NOT_BREACHING,
      });
      this.alarms.push(a);
      return a;
    };
    alarm('InjectorServerErrors', api('5XXError'),
      'The broker API answered 5xx: the injector failed, or PutEvents failed for good.');
    alarm('PutEventsThrottled', emf(EMF_METRICS.throttled),
      'The bus throttled PutEvents calls of the injectors (producers are answered 503 once retries are spent).');
    alarm('PutEventsFailedEntries', emf(EMF_METRICS.failedEntries),
      'PutEvents answered entries with an error code.');
    alarm('ProvisioningFailed', states('ExecutionsFailed'),
      'A provisioning execution failed (the deployment record says why).');
    alarm('ProvisioningTimedOut', states('ExecutionsTimedOut'),
      'A provisioning execution timed out.');
    for (const fn of FUNCTIONS) {
      alarm(`${pascal(fn)}Errors`, lambdaMetric(names.function(fn), 'Errors'),
        `The ${fn} function failed an invocation.`);
    }

    const dashboard = new cloudwatch.Dashboard(this, 'Dashboard', {
      dashboardName: `${names.env}-busway`,
      defaultInterval: Duration.hours(3),
    });
    dashboard.addWidgets(
      new cloudwatch.TextWidget({
        markdown: `# busway ${names.env} (${props.busKind} bus)\nEvents per event version: the \`${names.metricsNamespace}\` namespace (EventType, Version). Each subscription's dead letters and rule failures: its consumer stack's alarms.`,
        width: 24, height: 2,
      }),
    );
    dashboard.addWidgets(
      new cloudwatch.GraphWidget({ title: 'Events accepted and rejected', left: [emf(EMF_METRICS.accepted), emf(EMF_METRICS.rejected)], width: 8 }),
      new cloudwatch.GraphWidget({
        title: 'Ingest latency (ms)',
        left: [emf(EMF_METRICS.latency, 'p50'), emf(EMF_METRICS.latency, 'p99')],
        width: 8,
      }),
      new cloudwatch.GraphWidget({ title: 'PutEvents throttled and failed entries', left: [emf(EMF_METRICS.throttled), emf(EMF_METRICS.failedEntries)], width: 8 }),
    );
    dashboard.addWidgets(
      new cloudwatch.GraphWidget({ title: 'Broker API 4xx and 5xx', left: [api('4XXError'), api('5XXError')], width: 8 }),
      new cloudwatch.GraphWidget({
        title: 'Provisioning executions',
        left: [states('ExecutionsSucceeded'), states('ExecutionsFailed'), states('ExecutionsTimedOut')],
        right: [states('ExecutionTime', 'p90')],
        width: 8,
      }),
      new cloudwatch.GraphWidget({
        title: 'Function errors and throttles',
        left: FUNCTIONS.flatMap((fn) => [lambdaMetric(names.function(fn), 'Errors'), lambdaMetric(names.function(fn), 'Throttles')]),
        width: 8,
      }),
    );
    dashboard.addWidgets(new cloudwatch.AlarmStatusWidget({ title: 'Alarms', alarms: this.alarms, width: 24 }));
  }
}

function kebab(id: string): string {
  return id.replace(/([a-z0-9])([A-Z])/g, '$1-$2').toLowerCase();
}

function pascal(name: string): string {
  return name.split('-').map((w) => w[0].toUpperCase() + w.slice(1)).join('');
}
