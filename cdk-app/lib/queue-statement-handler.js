// The custom resource of lib/queue-statement.ts: adds one statement (by Sid) to an SQS queue's
// policy and removes only that one, keeping every other statement of the queue's owner and of
// other subscriptions. SQS has no conditional policy write, so each change is checked again after
// a pause and repeated if a concurrent writer replaced it.
const https = require('https');
const { SQSClient, GetQueueAttributesCommand, SetQueueAttributesCommand } = require('@aws-sdk/client-sqs');

const sqs = new SQSClient({});
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function statements(url) {
  const out = await sqs.send(new GetQueueAttributesCommand({ QueueUrl: url, AttributeNames: ['Policy'] }));
  const text = out.Attributes && out.Attributes.Policy;
  const policy = text ? JSON.parse(text) : {};
  return { policy, list: [policy.Statement || []].flat() };
}

async function apply(url, sid, statement) {
  for (let attempt = 0; attempt < 5; attempt += 1) {
    const { policy, list } = await statements(url);
    const kept = list.filter((s) => s.Sid !== sid).concat(statement ? [statement] : []);
    const written = kept.length ? JSON.stringify({ Version: '2012-10-17', ...policy, Statement: kept }) : '';
    await sqs.send(new SetQueueAttributesCommand({ QueueUrl: url, Attributes: { Policy: written } }));
    await sleep(1000 + Math.random() * 2000);
    const present = (await statements(url)).list.some((s) => s.Sid === sid);
    if (present === Boolean(statement)) return;
  }
  throw new Error(`statement ${sid} of ${url} was replaced by concurrent writers five times`);
}

function respond(event, status, reason) {
  const body = JSON.stringify({
    Status: status,
    Reason: reason,
    PhysicalResourceId: event.ResourceProperties.Sid,
    StackId: event.StackId,
    RequestId: event.RequestId,
    LogicalResourceId: event.LogicalResourceId,
  });
  return new Promise((resolve, reject) => {
    const request = https.request(event.ResponseURL, { method: 'PUT', headers: { 'content-type': '', 'content-length': Buffer.byteLength(body) } }, (response) => {
      response.resume();
      response.on('end', resolve);
    });
    request.on('error', reject);
    request.end(body);
  });
}

exports.handler = async (event) => {
  const { QueueUrl, Sid, Statement } = event.ResourceProperties;
  try {
    await apply(QueueUrl, Sid, event.RequestType === 'Delete' ? null : JSON.parse(Statement));
    await respond(event, 'SUCCESS', `${event.RequestType} of ${Sid} done`);
  } catch (e) {
    await respond(event, 'FAILED', String(e));
  }
};
