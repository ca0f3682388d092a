#!/usr/bin/env bash
# Deploys the busway platform of one environment to the account and region of the current AWS
# credentials; it replaces the seed's local_deploy.sh (infra/README.md). Steps: check the
# prerequisites, build the six Rust Lambda functions for arm64, bootstrap CDK in the account and
# region if that was never done, deploy every stack of infra/, bootstrap the generators with the
# execution policy the platform made for them, print the API URLs.
#
#   infra/deploy.sh [env]       env matches ^[a-z][a-z0-9]{0,15}$, default dev
#
# Credentials and region come from the usual AWS variables or profile (AWS_PROFILE, AWS_REGION).
# cdk deploy asks before it widens IAM permissions; set BUSWAY_REQUIRE_APPROVAL=never to skip that.
# The bus (README: "Bus kinds"): BUSWAY_BUS_KIND=custom|classic for a new install (default custom);
# an installed environment keeps the kind it has. BUSWAY_BUS_RETENTION_DAYS (1-365, default 7):
# how long the Custom Event Bus keeps events.
set -euo pipefail
cd "$(dirname "$0")/.."

env_name=${1:-dev}

fail() { echo "deploy.sh: $*" >&2; exit 1; }

[[ $env_name =~ ^[a-z][a-z0-9]{0,15}$ ]] || fail "env '$env_name' must match ^[a-z][a-z0-9]{0,15}\$"
for tool in aws node npm cargo; do
  command -v "$tool" >/dev/null || fail "$tool is not installed"
done
node_major=$(node -p 'process.versions.node.split(".")[0]')
(( node_major >= 20 )) || fail "node 20 or newer is needed (found $(node --version))"
account=$(aws sts get-caller-identity --query Account --output text) || fail "no usable AWS credentials"
region=${AWS_REGION:-${AWS_DEFAULT_REGION:-$(aws configure get region || true)}}
[ -n "$region" ] || fail "no AWS region: set AWS_REGION"
export AWS_REGION=$region CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true
installed=$(aws ssm get-parameter --name "/busway/$env_name/bus/kind" --query Parameter.Value --output text 2>/dev/null) \
  || { aws cloudformation describe-stacks --stack-name "$env_name-event-broker-bus" >/dev/null 2>&1 && installed=classic; } \
  || installed=
bus_kind=${BUSWAY_BUS_KIND:-${installed:-custom}}
[ -z "$installed" ] || [ "$installed" = "$bus_kind" ] \
  || fail "'$env_name' is installed with the $installed bus; changing it to $bus_kind would replace the bus and every subscription"
echo "deploying busway '$env_name' ($bus_kind bus) to account $account, region $region"

# The functions run on Graviton (arm64, provided.al2023); cargo-lambda (installed into .venv by
# the script) cross-compiles with zig.
rustup target add aarch64-unknown-linux-gnu
scripts/build-lambdas.sh --arm64

cd infra
npm ci --no-audit --no-fund --loglevel=error
if ! aws cloudformation describe-stacks --stack-name CDKToolkit >/dev/null 2>&1; then
  npx --no-install cdk bootstrap --no-notices "aws://$account/$region"
fi
outputs=$(mktemp --suffix=.json)
trap 'rm -f "$outputs"' EXIT
npx --no-install cdk deploy --all --no-notices \
  -c "platformEnv=$env_name" -c lambdaAssets=../target/lambda \
  -c "busKind=$bus_kind" -c "busRetentionDays=${BUSWAY_BUS_RETENTION_DAYS:-7}" \
  --require-approval "${BUSWAY_REQUIRE_APPROVAL:-broadening}" --outputs-file "$outputs"

# The generators' own bootstrap (lib/generators.ts): the builds deploy through its roles, and its
# CloudFormation execution role has only the generators' execution policy, never the default
# bootstrap's AdministratorAccess. Run on every deploy: it applies a changed policy.
# shellcheck disable=SC2016 # JavaScript template literals, not shell expansions
mapfile -t generators < <(node -e '
const out = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"))[`${process.argv[2]}-provisioning-service`];
console.log([out.GeneratorsQualifier, out.GeneratorsToolkitStackName, out.GeneratorsExecutionPolicyArn].join("\n"));
' "$outputs" "$env_name")
npx --no-install cdk bootstrap --no-notices "aws://$account/$region" \
  --qualifier "${generators[0]}" --toolkit-stack-name "${generators[1]}" \
  --cloudformation-execution-policies "${generators[2]}"

# shellcheck disable=SC2016 # JavaScript template literals, not shell expansions
node -e '
const out = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8"));
const env = process.argv[2];
console.log(`portal API: ${out[`${env}-self-service-portal`].PortalUrl}`);
console.log(`broker API: ${out[`${env}-event-broker-api-service`].BrokerUrl}`);
' "$outputs" "$env_name"
# Both APIs take only API keys (the authorizer function): the first platform-admin key of an
# environment is made with busway-aws on this environment's table; later keys through POST /keys.
echo "first platform-admin key (shown once, on the last line):"
echo "  BUSWAY_TABLE_NAME=$env_name-self-service-events-table BUSWAY_BROKER_USAGE_PLAN=$env_name-event-broker-api-default cargo run --release -p busway-aws --bin busway-aws -- keys create --team platform --role platform-admin"
# Every key has an API Gateway key in a usage plan of the broker stage (infra/README.md: "Rate
# limits"); keys made before that get theirs, and revoked keys lose theirs, with keys sync.
echo "keys made before API Gateway keys (once, after upgrading; then rebuild the producer stacks):"
echo "  BUSWAY_TABLE_NAME=$env_name-self-service-events-table BUSWAY_BROKER_USAGE_PLAN=$env_name-event-broker-api-default cargo run --release -p busway-aws --bin busway-aws -- keys sync"
