import { Duration } from 'aws-cdk-lib';
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

/**
 * Both APIs' REQUEST authorizer (the `authorizer` function) is keyed by the `Authorization` header:
 * API Gateway answers a request without it 401 by itself, and caches the authorizer's answer per
 * header value for `AUTHORIZER_CACHE`, so a key is looked up once in that time whatever the route
 * (the policy covers the whole stage). A revoked key therefore works on AWS until its cached
 * answer ends.
 */
export const AUTHORIZER_IDENTITY_SOURCE = 'method.request.header.Authorization';
export const AUTHORIZER_CACHE = Duration.minutes(5);

/** The 401 body of busway's error shape (busway_http::auth::unauthorized). */
export const UNAUTHORIZED_BODY = JSON.stringify({
  error: { code: 'unauthorized', message: 'send a valid API key as Authorization: Bearer <key>' },
});

/**
 * API Gateway's own 401 (no key, or the authorizer said "Unauthorized") with the challenge and
 * busway's error body, as the local host answers.
 */
export function unauthorizedResponse(api: apigw.RestApi): void {
  api.addGatewayResponse('Unauthorized', {
    type: apigw.ResponseType.UNAUTHORIZED,
    statusCode: '401',
    responseHeaders: { 'WWW-Authenticate': '\'Bearer realm="busway"\'' },
    templates: { 'application/json': UNAUTHORIZED_BODY },
  });
}
