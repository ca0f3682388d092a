#!/usr/bin/env bash
# The build step of provisioning (run by CodeBuild through buildspecs/): fetch the deploy.json the
# state machine names, then `cdk deploy` or `cdk destroy` its stacks with the generators of
# cdk-app/. Any failing command fails the build, and so the state machine's build step.
# Environment (set by the state machine's EnvironmentVariablesOverride):
#   BUSWAY_DEPLOY_BUCKET, BUSWAY_DEPLOY_KEY, BUSWAY_DEPLOY_KIND, BUSWAY_DEPLOY_ACTION,
#   BUSWAY_DEPLOYMENT_ID; and BUSWAY_ENV (project environment, default dev).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${BUSWAY_DEPLOY_BUCKET:?}" "${BUSWAY_DEPLOY_KEY:?}" "${BUSWAY_DEPLOY_KIND:?}" "${BUSWAY_DEPLOY_ACTION:?}"
expected_kind=${1:?usage: provision-build.sh producer|consumer}
if [ "$BUSWAY_DEPLOY_KIND" != "$expected_kind" ]; then
  echo "this is the $expected_kind build; the deploy.json is a $BUSWAY_DEPLOY_KIND" >&2
  exit 1
fi
doc=$(mktemp --suffix=.json)
trap 'rm -f "$doc"' EXIT
aws s3 cp "s3://$BUSWAY_DEPLOY_BUCKET/$BUSWAY_DEPLOY_KEY" "$doc"
stack=$(node -e 'process.stdout.write(JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")).stack_name)' "$doc")
export CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true
cd cdk-app
ctx=(-c "deployJson=$doc" -c "platformEnv=${BUSWAY_ENV:-dev}")
case "$BUSWAY_DEPLOY_ACTION" in
  # deploy brings the stacks it depends on (the event type's resource stack) along
  deploy) npx --no-install cdk deploy "${ctx[@]}" --require-approval never --no-notices "$stack" ;;
  # destroy removes this version's or subscription's stack only, never a shared parent
  destroy) npx --no-install cdk destroy "${ctx[@]}" --force --exclusively --no-notices "$stack" ;;
  *) echo "unknown action $BUSWAY_DEPLOY_ACTION" >&2; exit 1 ;;
esac
