#!/usr/bin/env bash
# Installs the tools the tests and benchmarks need, from the package registries only: the
# Debian packages they call, the npm packages of infra/, cdk-app/ and tests/asyncapi/ by `npm ci`
# from their committed lock files, and cfn-lint, moto, schemathesis and Playwright in the Python
# venv .venv/.
# Idempotent: a package already there, or a step whose lock file has not changed since its last
# install, is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

# The venv's pip (python3-venv), curl (scripts/test-asl-moto.sh), unzip (the Lambda
# benchmark), the sqlite3 shell (a second process on the event log, in its tests), wrk (the HTTP
# load of `make bench`), qemu-user with the arm64 C library (the Lambda
# benchmark of an arm64 build on an x86_64 machine) and Chromium (the catalog page's browser
# test, driven by Playwright, which cannot download a browser of its own here), from Debian's
# archive when missing; CI runs as root, elsewhere through sudo.
missing=()
python3 -c 'import ensurepip' 2>/dev/null || missing+=(python3-venv)
command -v curl >/dev/null || missing+=(curl)
command -v unzip >/dev/null || missing+=(unzip)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
command -v wrk >/dev/null || missing+=(wrk)
if [ "$(uname -m)" = x86_64 ]; then
  command -v qemu-aarch64 >/dev/null || missing+=(qemu-user)
  [ -d /usr/aarch64-linux-gnu/lib ] || missing+=(libc6-arm64-cross)
fi
command -v chromium >/dev/null || missing+=(chromium fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ]; then
  sudo=()
  [ "$(id -u)" -eq 0 ] || sudo=(sudo)
  "${sudo[@]}" apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
    apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

npm_install() {
  local dir=$1
  if [ ! -f "$dir/node_modules/.package-lock.json" ] \
    || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
  fi
}

npm_install infra
npm_install cdk-app
# The AsyncAPI parser that tests/tests/asyncapi.rs checks the AsyncAPI documents with.
npm_install tests/asyncapi

requirements=scripts/requirements-infra.txt
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if [ ! -f .venv/.installed ] || [ "$requirements" -nt .venv/.installed ]; then
  .venv/bin/pip install -q -r "$requirements"
  touch .venv/.installed
fi
