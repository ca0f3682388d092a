#!/usr/bin/env bash
# Installs the tools the infrastructure checks need, from the package registries only:
# the npm packages of infra/ (asl-validator, CDK) by `npm ci` from the committed lock file.
# Idempotent: a step whose lock file has not changed since its last install is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

npm_install() {
  local dir=$1
  if [ ! -f "$dir/node_modules/.package-lock.json" ] \
    || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

npm_install infra
