#!/usr/bin/env bash
# The build step of provisioning (run by CodeBuild through buildspecs/): check that the deployment
# still expects the document version the state machine validated, fetch exactly that version, then
# `cdk deploy` or `cdk destroy` its stacks with the generators of cdk-app/. Any failing command
# fails the build, and so the state machine's build step.
# Environment (set by the state machine's EnvironmentVariablesOverride):
#   BUSWAY_DEPLOY_BUCKET, BUSWAY_DEPLOY_KEY, BUSWAY_DEPLOY_VERSION, BUSWAY_DEPLOY_KIND,
#   BUSWAY_DEPLOY_ACTION, BUSWAY_DEPLOYMENT_ID, BUSWAY_EXECUTION; and from the project
#   BUSWAY_TABLE_NAME and BUSWAY_ENV (default dev).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BUSWAY_DEPLOY_BUCKET:?}" "${BUSWAY_DEPLOY_KEY:?}" "${BUSWAY_DEPLOY_VERSION:?}" "${BUSWAY_DEPLOY_KIND:?}"
: "${BUSWAY_DEPLOY_ACTION:?}" "${BUSWAY_DEPLOYMENT_ID:?}" "${BUSWAY_EXECUTION:?}" "${BUSWAY_TABLE_NAME:?}"
expected_kind=${1:?usage: provision-build.sh producer|consumer}
if [ "$BUSWAY_DEPLOY_KIND" != "$expected_kind" ]; then
  echo "this is the $expected_kind build; the deploy.json is a $BUSWAY_DEPLOY_KIND" >&2
  exit 1
fi
doc=$(mktemp --suffix=.json)
trap 'rm -f "$doc"' EXIT
# The deployment record (statemachines/README.md) must still expect this version from this
# execution, as the local build step checks (busway_core::provisioning::Provisioner::load_for_build).
record=$(aws dynamodb get-item --consistent-read --table-name "$BUSWAY_TABLE_NAME" --output json \
  --key "{\"PK\": {\"S\": \"DEPLOYMENT#$BUSWAY_DEPLOYMENT_ID\"}, \"SK\": {\"S\": \"DEPLOYMENT\"}}")
node -e '
  const item = (JSON.parse(process.argv[1]).Item) || {};
  const [version, execution] = process.argv.slice(2);
  const s = (name) => item[name] && item[name].S;
  const ok = s("object_version") === version && [undefined, execution].includes(s("execution")) && s("status") === "BUILDING";
  if (!ok) {
    console.error(`Deployment.Stale: the deployment (${s("status")}, version ${s("object_version")}, execution ${s("execution")}) no longer expects version ${version} from ${execution}`);
    process.exit(1);
  }' "$record" "$BUSWAY_DEPLOY_VERSION" "$BUSWAY_EXECUTION"
aws s3api get-object --bucket "$BUSWAY_DEPLOY_BUCKET" --key "$BUSWAY_DEPLOY_KEY" --version-id "$BUSWAY_DEPLOY_VERSION" "$doc" >/dev/null
stack=$(node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).stack_name)' "$doc")
export CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true
cd cdk-app
# BUSWAY_BUS_KIND (the consumer build project's): the bus a consumer deploy.json that names
# none is built for.
ctx=(-c "deployJson=$doc" -c "platformEnv=${BUSWAY_ENV:-dev}" -c "busKind=${BUSWAY_BUS_KIND:-classic}")
case "$BUSWAY_DEPLOY_ACTION" in
  # deploy brings the stacks it depends on (the event type's resource stack) along
  deploy) cdk=(deploy "${ctx[@]}" --require-approval never --no-notices "$stack") ;;
  # destroy removes this version's or subscription's stack only, never a shared parent
  destroy) cdk=(destroy "${ctx[@]}" --force --exclusively --no-notices "$stack") ;;
  *) echo "unknown action $BUSWAY_DEPLOY_ACTION" >&2; exit 1 ;;
esac
# The Custom Event Bus creates or deletes one subscriber at a time and refuses a concurrent change
# with ConcurrentModificationException: that is a turn to wait for, not a failed deployment, so
# the same command runs again (CloudFormation has rolled the stack back) until it gets its turn.
out=$(mktemp)
trap 'rm -f "$doc" "$out"' EXIT
for attempt in 1 2 3 4 5 6 7 8; do
  if npx --no-install cdk "${cdk[@]}" 2>&1 | tee "$out"; then exit 0; fi
  grep -q ConcurrentModificationException "$out" || exit 1
  delay=$((attempt * 15 + RANDOM % 15))
  echo "another subscriber of the bus is changing; trying again in ${delay}s" >&2
  sleep "$delay"
done
exit 1
