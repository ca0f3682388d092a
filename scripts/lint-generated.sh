#!/usr/bin/env bash
# Synthesizes the generators of cdk-app/ for every fixture deploy.json, and the platform of infra/
# (with a dummy bootstrap per Lambda function: the Rust binaries are not needed to synthesize),
# each for both bus kinds (custom, classic), then lints each template with cfn-lint. cfn-lint exit code 4 means warnings only; none are
# allowed except the ones ignored below with their written reason.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true
kinds=(custom classic)
for f in cdk-app/test/fixtures/*.json; do
  name=$(basename "$f" .json)
  for kind in "${kinds[@]}"; do
    (cd cdk-app && npx --no-install cdk synth --no-notices -q -c "deployJson=test/fixtures/$name.json" -c "busKind=$kind" -o "$out/generated/$name-$kind" >/dev/null)
  done
done
templates=("$out"/generated/*/*.template.json)
# W3005: as for the platform below (an SQS consumer's queue-statement function and its role).
.venv/bin/cfn-lint --ignore-checks W3005 -- "${templates[@]}"
echo "cfn-lint: ${#templates[@]} generator templates clean"

for fn in portal injector injector-sqs provisioner authorizer delivery; do
  mkdir -p "$out/lambda/$fn" && printf '#!/bin/sh\n' >"$out/lambda/$fn/bootstrap"
done
for kind in "${kinds[@]}"; do
  (cd infra && npx --no-install cdk synth --no-notices -q -c "lambdaAssets=$out/lambda" -c "busKind=$kind" -o "$out/infra-$kind" >/dev/null)
done
platform=("$out"/infra-*/*.template.json)
# W3005 (DependsOn already enforced by a GetAtt): aws-cdk-lib makes each function and the state
# machine depend on their role and the role's policy, so that the policy exists before the first
# invocation; the role half of that DependsOn repeats the GetAtt of the role, which is harmless.
.venv/bin/cfn-lint --ignore-checks W3005 -- "${platform[@]}"
echo "cfn-lint: ${#platform[@]} platform templates clean"
