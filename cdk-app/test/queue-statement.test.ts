// The queue-statement handler (lib/queue-statement-handler.js) on a queue policy kept in memory
// behind the two SQS calls it makes: subscriptions add and remove only their own statement, and
// the statement the team wrote itself stays.
import { test } from 'node:test';
import * as assert from 'node:assert/strict';
import Module = require('module');

let policy: string | undefined;
const responses: any[] = [];
class GetQueueAttributesCommand { constructor(readonly input: any) {} }
class SetQueueAttributesCommand { constructor(readonly input: any) {} }
const fakes: Record<string, unknown> = {
  '@aws-sdk/client-sqs': {
    SQSClient: class {
      async send(command: any) {
        if (command instanceof GetQueueAttributesCommand) return { Attributes: policy ? { Policy: policy } : {} };
        policy = command.input.Attributes.Policy || undefined;
        return {};
      }
    },
    GetQueueAttributesCommand,
    SetQueueAttributesCommand,
  },
  // CloudFormation's pre-signed response URL.
  https: {
    request: (_url: string, _options: unknown, answered: (r: unknown) => void) => ({
      on() {},
      end(body: string) {
        responses.push(JSON.parse(body));
        answered({ resume() {}, on(_event: string, done: () => void) { done(); } });
      },
    }),
  },
};
const load = (Module as any)._load;
(Module as any)._load = function (request: string, ...rest: unknown[]) {
  return request in fakes ? fakes[request] : load.call(this, request, ...rest);
};
// eslint-disable-next-line @typescript-eslint/no-require-imports
const { handler } = require('../lib/queue-statement-handler');

const QUEUE = 'https://sqs.eu-west-1.amazonaws.com/123456789012/parcels';
const sendFrom = (rule: string) => ({
  Effect: 'Allow', Principal: { Service: 'events.amazonaws.com' }, Action: 'sqs:SendMessage',
  Resource: 'arn:aws:sqs:eu-west-1:123456789012:parcels', Condition: { ArnEquals: { 'aws:SourceArn': rule } },
});
const event = (type: string, sid: string, rule: string) => ({
  RequestType: type, ResponseURL: 'https://cloudformation-custom-resource-response.example/x', StackId: 's', RequestId: 'r', LogicalResourceId: 'l',
  ResourceProperties: { QueueUrl: QUEUE, Sid: sid, Statement: JSON.stringify({ ...sendFrom(rule), Sid: sid }) },
});
const sids = () => (policy ? JSON.parse(policy).Statement.map((s: any) => s.Sid) : []);

test('two subscriptions on one queue each keep their own statement, and the team\'s stays through both', async () => {
  policy = JSON.stringify({ Version: '2012-10-17', Statement: [{ ...sendFrom('arn:aws:events:eu-west-1:123456789012:rule/theirs'), Sid: 'TeamOwn' }] });
  await handler(event('Create', 'buswayA', 'arn:aws:events:eu-west-1:123456789012:rule/bus/a'));
  await handler(event('Create', 'buswayB', 'arn:aws:events:eu-west-1:123456789012:rule/bus/b'));
  assert.deepEqual(sids(), ['TeamOwn', 'buswayA', 'buswayB']);
  const b = JSON.parse(policy as string).Statement[2];
  assert.equal(b.Condition.ArnEquals['aws:SourceArn'], 'arn:aws:events:eu-west-1:123456789012:rule/bus/b');

  await handler(event('Delete', 'buswayA', 'arn:aws:events:eu-west-1:123456789012:rule/bus/a'));
  assert.deepEqual(sids(), ['TeamOwn', 'buswayB']);
  await handler(event('Delete', 'buswayB', 'arn:aws:events:eu-west-1:123456789012:rule/bus/b'));
  assert.deepEqual(sids(), ['TeamOwn']);
  assert.deepEqual(responses.map((r) => [r.Status, r.PhysicalResourceId]), [
    ['SUCCESS', 'buswayA'], ['SUCCESS', 'buswayB'], ['SUCCESS', 'buswayA'], ['SUCCESS', 'buswayB'],
  ]);
});

test('the last statement removed leaves the queue without a policy, and a repeated delete succeeds', async () => {
  policy = undefined;
  responses.length = 0;
  await handler(event('Create', 'buswayC', 'arn:aws:events:eu-west-1:123456789012:rule/bus/c'));
  assert.deepEqual(sids(), ['buswayC']);
  await handler(event('Delete', 'buswayC', 'arn:aws:events:eu-west-1:123456789012:rule/bus/c'));
  assert.equal(policy, undefined);
  await handler(event('Delete', 'buswayC', 'arn:aws:events:eu-west-1:123456789012:rule/bus/c'));
  assert.deepEqual(responses.map((r) => r.Status), ['SUCCESS', 'SUCCESS', 'SUCCESS']);
});
