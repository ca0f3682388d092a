#!/usr/bin/env bash
# Synthesizes the generators of cdk-app/ for every fixture deploy.json and lints each template
# with cfn-lint. cfn-lint exit code 4 means warnings only; none are expected today, so any
# finding fails (a warning to allow must be added here with its written reason).
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
export CDK_DISABLE_VERSION_CHECK=1 CDK_DISABLE_CLI_TELEMETRY=true
for f in cdk-app/test/fixtures/*.json; do
  name=$(basename "$f" .json)
  (cd cdk-app && npx --no-install cdk synth --no-notices -q -c "deployJson=test/fixtures/$name.json" -o "$out/$name" >/dev/null)
done
templates=("$out"/*/*.template.json)
.venv/bin/cfn-lint "${templates[@]}"
echo "cfn-lint: ${#templates[@]} templates clean"
