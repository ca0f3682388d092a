#!/usr/bin/env bash
# Installs the tools the infrastructure checks need, from the package registries only:
# the npm packages of infra/ and cdk-app/ by `npm ci` from their committed lock files, and
# cfn-lint and moto in the Python venv .venv/.
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
npm_install cdk-app

requirements=scripts/requirements-infra.txt
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ "$requirements" -nt .venv/.installed ]; then
  .venv/bin/pip install -q -r "$requirements"
  touch .venv/.installed
fi
