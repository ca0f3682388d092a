import * as apigw from 'aws-cdk-lib/aws-apigateway';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';

/** A regional stage with JSON access logs and INFO execution logs (no request bodies logged). */
export function stageOptions(scope: Construct, stageName: string): apigw.StageOptions {
  const accessLogs = new logs.LogGroup(scope, 'ApiAccessLogs', { retention: logs.RetentionDays.THREE_MONTHS });
  return {
    stageName,
    accessLogDestination: new apigw.LogGroupLogDestination(accessLogs),
    accessLogFormat: apigw.AccessLogFormat.jsonWithStandardFields(),
    loggingLevel: apigw.MethodLoggingLevel.INFO,
    dataTraceEnabled: false,
    metricsEnabled: true,
  };
}
