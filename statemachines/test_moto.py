"""Runs statemachines/provisioning.asl.json on moto server's Step Functions engine with real
DynamoDB status writes. moto cannot run `codebuild:startBuild.sync` nor the provisioner's code, so
the test rewrites exactly those two task resources to `sqs:sendMessage.waitForTaskToken` (the
strongest stand-in: the test answers each task with SendTaskSuccess or SendTaskFailure, so Retry
and Catch run as on AWS). On AWS a failed CodeBuild build surfaces as `States.TaskFailed`, which
SendTaskFailure may not send (reserved prefix), so the failing build answers `Build.Failed`, the
error the local build step returns; both are caught by the same `States.ALL`. Everything else, placeholders substituted from
infra/definition-substitutions.json keys, runs unchanged.

Usage: python statemachines/test_moto.py http://127.0.0.1:PORT
"""
import json
import pathlib
import sys
import time

import boto3

ROOT = pathlib.Path(__file__).resolve().parent.parent
ENDPOINT = sys.argv[1]
REGION = "eu-west-1"
kw = dict(endpoint_url=ENDPOINT, region_name=REGION, aws_access_key_id="test", aws_secret_access_key="test")
ddb, sfn, sqs = (boto3.client(s, **kw) for s in ("dynamodb", "stepfunctions", "sqs"))

TABLE = "busway-test-deployments"
QUEUE_URL = sqs.create_queue(QueueName="busway-test-tasks")["QueueUrl"]
VALUES = {
    "DeploymentsTableName": TABLE,
    "ProvisionerFunctionArn": "arn:aws:lambda:eu-west-1:123456789012:function:provisioner",
    "ProducerBuildProjectName": "busway-producer-build",
    "ConsumerBuildProjectName": "busway-consumer-build",
}
assert set(VALUES) == set(json.loads((ROOT / "infra/definition-substitutions.json").read_text()))


def definition():
    text = (ROOT / "statemachines/provisioning.asl.json").read_text()
    for k, v in VALUES.items():
        text = text.replace("${%s}" % k, v)
    assert "${" not in text
    asl = json.loads(text)
    for name, state in asl["States"].items():
        if state.get("Resource") in ("arn:aws:states:::lambda:invoke", "arn:aws:states:::codebuild:startBuild.sync"):
            state["Resource"] = "arn:aws:states:::sqs:sendMessage.waitForTaskToken"
            state["Parameters"] = {
                "QueueUrl": QUEUE_URL,
                "MessageBody": {"state": name, "token.$": "$$.Task.Token", "request": state["Parameters"]},
            }
    return json.dumps(asl)


ddb.create_table(
    TableName=TABLE,
    KeySchema=[{"AttributeName": "PK", "KeyType": "HASH"}, {"AttributeName": "SK", "KeyType": "RANGE"}],
    AttributeDefinitions=[{"AttributeName": "PK", "AttributeType": "S"}, {"AttributeName": "SK", "AttributeType": "S"}],
    BillingMode="PAY_PER_REQUEST",
)
machine = sfn.create_state_machine(
    name="busway-provisioning", definition=definition(),
    roleArn="arn:aws:iam::123456789012:role/busway-provisioning",
)["stateMachineArn"]


def next_task():
    # Longer than the turn's retry interval (20 s).
    deadline = time.time() + 40
    while time.time() < deadline:
        msgs = sqs.receive_message(QueueUrl=QUEUE_URL, WaitTimeSeconds=1).get("Messages", [])
        for m in msgs:
            sqs.delete_message(QueueUrl=QUEUE_URL, ReceiptHandle=m["ReceiptHandle"])
            body = json.loads(m["Body"])
            return body["state"], body["token"], body["request"]
    raise AssertionError("no task reached the test within 40 s")


def run(case, deployment_id, expected, answers):
    # The record as the S3 handler leaves it for the execution it starts (the portal wrote the
    # PENDING record; a retry appended PENDING to an earlier attempt's history): it names its
    # execution, which every status write is conditional on.
    name = f"{case}-{deployment_id[:8]}"
    before = expected.get("before", ["PENDING"])
    item = {
        "PK": {"S": f"DEPLOYMENT#{deployment_id}"}, "SK": {"S": "DEPLOYMENT"}, "status": {"S": before[-1]},
        "history": {"L": [{"M": {"status": {"S": s}, "at": {"S": "2026-11-27T00:00:00Z"}}} for s in before]},
        "execution": {"S": "a-later-attempt" if expected.get("owner") == "another" else name},
        "object_version": {"S": VERSION},
    }
    ddb.put_item(TableName=TABLE, Item=item)
    arn = sfn.start_execution(
        stateMachineArn=machine, name=name,
        input=json.dumps({"deployment_id": deployment_id, "bucket": "publisher", "key": "order_created/1/deploy.json",
                          "object_version": VERSION, "kind": "producer"}),
    )["executionArn"]
    for expected_state, answer in answers:
        state, token, request = next_task()
        # moto hands a retried task the same token and the answer its previous attempt got, so
        # a turn waited for once comes back once more after it was granted: grant it again.
        while state == "AwaitTurn" != expected_state and case == "waited-turn":
            sfn.send_task_success(taskToken=token, output=json.dumps(TURN[1]))
            state, token, request = next_task()
        assert state == expected_state, (case, state, expected_state)
        if state == "ValidateConfig":
            assert request["Payload"]["object_version"] == VERSION, request
        if state == "AwaitTurn":
            assert request["Payload"] == {"task": "await_turn", "deployment_id": deployment_id, "bucket": "publisher",
                                          "key": "order_created/1/deploy.json"}, request
            # Nothing is recorded while the job waits for its turn.
            waiting = ddb.get_item(TableName=TABLE, Key={"PK": {"S": f"DEPLOYMENT#{deployment_id}"}, "SK": {"S": "DEPLOYMENT"}})["Item"]
            assert [h["M"]["status"]["S"] for h in waiting["history"]["L"]] == before, (case, waiting)
        if state.startswith("Build"):
            env = {e["Name"]: e["Value"] for e in request["EnvironmentVariablesOverride"]}
            assert env["BUSWAY_DEPLOY_KEY"] == "order_created/1/deploy.json" and env["BUSWAY_DEPLOY_KIND"] == "producer", env
            # The build fetches exactly the validated version and checks the record still
            # expects it from this execution (scripts/provision-build.sh).
            assert env["BUSWAY_DEPLOY_VERSION"] == VERSION and env["BUSWAY_EXECUTION"] == name, env
            assert request["ProjectName"] == "busway-producer-build"
        if state == "DescribeBuild":
            assert request["Payload"] == {"task": "describe_build", "deployment_id": deployment_id, "build_id": BUILD_ID}, request
        if state == "DescribeFailedBuild":
            # The build's failure as its Catch kept it (moto drops the cause).
            failure = request["Payload"]["failure"]
            assert request["Payload"]["task"] == "describe_build" and failure["Error"] == "Build.Failed", request
        if "error" in answer:
            sfn.send_task_failure(taskToken=token, error=answer["error"], cause=answer["cause"])
        else:
            sfn.send_task_success(taskToken=token, output=json.dumps(answer))
    deadline = time.time() + 20
    while (desc := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.time() < deadline, f"{case}: still running"
        time.sleep(0.2)
    item = ddb.get_item(TableName=TABLE, Key={"PK": {"S": f"DEPLOYMENT#{deployment_id}"}, "SK": {"S": "DEPLOYMENT"}})["Item"]
    history = [h["M"]["status"]["S"] for h in item["history"]["L"]]
    return desc, item, history


# An S3 VersionId, which names the document version validate and build read.
VERSION = "3HL4kqtJlcpXroDTDmJ.rmSpXd3dIbrHY"
VALID = {"Payload": {"kind": "producer", "action": "deploy", "stack_name": "busway-producer-order-created-v1"}}
BUILD_ID = "busway-producer-build:6a1f0c1e-0000-4000-8000-000000000000"
# What the provisioner's describe_build task answers; the state machine keeps nothing of it.
DESCRIBED = {"Payload": {"id": BUILD_ID, "status": "SUCCEEDED", "phases": [], "logs_url": None}}
# How the test answers the tasks moto cannot run, per case; what each case must end in is
# statemachines/cases.json, which the local host's run is held to as well.
TURN = ("AwaitTurn", {"Payload": None})
ANSWERS = {
    "success": [
        ("ValidateConfig", VALID), ("BuildProducer", {"Build": {"Id": BUILD_ID, "BuildStatus": "SUCCEEDED"}}),
        ("DescribeBuild", DESCRIBED),
    ],
    # The describe task failing too: the deployment still ends with the build's own failure.
    "failing-build": [
        ("ValidateConfig", VALID), ("BuildProducer", {"error": "Build.Failed", "cause": "cdk deploy exited 1"}),
        ("DescribeFailedBuild", {"error": "Lambda.Unknown", "cause": "the provisioner crashed"}),
    ],
    "invalid-config": [("ValidateConfig", {"error": "DeployConfig.Invalid", "cause": "$.target_unit: must match"})],
    "retried": [
        ("ValidateConfig", VALID), ("BuildProducer", {"Build": {"Id": BUILD_ID, "BuildStatus": "SUCCEEDED"}}),
        ("DescribeBuild", DESCRIBED),
    ],
    # A late execution of an ended deployment, of one a later job replaced before it started
    # (a starter had already named this execution), and one the record no longer names: the
    # first conditional status write is refused, no task runs and the record stays as it was.
    "ended-before": [],
    "superseded-before": [],
    "another-execution": [],
    # The record names this execution but already builds: its VALIDATING would move it back.
    "passed-before": [],
    # An older job of the document still runs: the turn is retried (after its 20 s interval),
    # and nothing is written meanwhile.
    "waited-turn": [
        ("AwaitTurn", {"error": "Turn.Waiting", "cause": "deployment d0 of order_created/1/deploy.json (BUILDING) runs before"}),
        TURN, ("ValidateConfig", VALID), ("BuildProducer", {"Build": {"Id": BUILD_ID, "BuildStatus": "SUCCEEDED"}}),
        ("DescribeBuild", DESCRIBED),
    ],
}
# Every execution starts by taking its turn (the stale ones too: their first status write is
# what they find refused).
ANSWERS = {case: answers if case == "waited-turn" else [TURN, *answers] for case, answers in ANSWERS.items()}
CASES = json.loads((ROOT / "statemachines/cases.json").read_text())["cases"]
assert set(CASES) == set(ANSWERS)
results = {}
for i, (case, expected) in enumerate(CASES.items()):
    answers = ANSWERS[case]
    desc, item, history = run(case, f"{i:08d}-0000-4000-8000-000000000000", expected, answers)
    status = desc["status"]
    failed = expected["error"] is not None or "execution_error" in expected
    assert status == ("FAILED" if failed else "SUCCEEDED"), (case, status)
    if "execution_error" in expected:
        assert desc.get("error") == expected["execution_error"], (case, desc)
    assert history == expected["history"], (case, history)
    assert item["status"]["S"] == expected["history"][-1]
    if expected["error"]:
        failure = json.loads(item["cause"]["S"])
        assert item["error"]["S"] == failure["Error"] == expected["error"], (case, item)
        cause = next(a["cause"] for state, a in answers if "error" in a and not state.startswith("Describe"))
        # moto drops the cause of SendTaskFailure (it arrives as null); AWS keeps it.
        assert failure.get("Cause") in (cause, None), (case, item)
    else:
        assert "error" not in item
    results[case] = history
    print(f"ok {case}: execution {status}, status record {' -> '.join(history)}")
print(json.dumps(results))
