#!/usr/bin/env bash
# Builds every Lambda function of busway (busway_core::tasks::FUNCTIONS) for provided.al2023 with
# cargo-lambda with the `lambda` profile of Cargo.toml (size-optimized, LTO, stripped), as
# target/lambda/{function}/bootstrap.zip (what infra/ deploys; under $CARGO_TARGET_DIR when set), and reports each
# zip's and binary's size. cargo-lambda (and the zig linker it brings) is installed from PyPI into
# the project's venv on first use.
# Usage: scripts/build-lambdas.sh [--arm64]   (default x86_64; infra deploys arm64, which needs
#        `rustup target add aarch64-unknown-linux-gnu` once)
set -euo pipefail
cd "$(dirname "$0")/.."
arch=()
case "${1:-}" in
  --arm64) arch=(--arm64) ;;
  "") ;;
  *) echo "usage: $0 [--arm64]" >&2; exit 2 ;;
esac
if [ ! -x .venv/bin/cargo-lambda ]; then
  [ -x .venv/bin/python ] || python3 -m venv .venv
  .venv/bin/pip install -q 'cargo-lambda==1.9.2'
fi
export PATH="$PWD/.venv/bin:$PATH"
# No unwind tables (scripts/lambda-no-unwind-tables.ld says why); only the functions' own builds
# get these flags, as cargo-lambda always passes --target. Cargo splits RUSTFLAGS at spaces, so
# the flags go encoded (one per 0x1f-separated field) and a checkout path with spaces stays one
# argument; flags the caller set either way are kept in front.
if [ -n "${CARGO_ENCODED_RUSTFLAGS:-}" ]; then
  IFS=$'\x1f' read -ra flags <<<"$CARGO_ENCODED_RUSTFLAGS"
else
  read -ra flags <<<"${RUSTFLAGS:-}"
fi
flags+=(-C link-arg=-Wl,--no-eh-frame-hdr -C "link-arg=-Wl,-T,$PWD/scripts/lambda-no-unwind-tables.ld")
CARGO_ENCODED_RUSTFLAGS=$(IFS=$'\x1f' && printf '%s' "${flags[*]}")
export CARGO_ENCODED_RUSTFLAGS
unset RUSTFLAGS
cargo lambda build --profile lambda "${arch[@]}" --output-format zip --locked \
  -p busway-portal -p busway-injector -p busway-provisioner -p busway-authorizer -p busway-delivery \
  --features busway-portal/lambda,busway-injector/lambda
printf '%-14s %12s %12s\n' function zip binary
unpacked=$(mktemp)
trap 'rm -f "$unpacked"' EXIT
for f in portal injector injector-sqs provisioner authorizer delivery; do
  zip=${CARGO_TARGET_DIR:-target}/lambda/$f/bootstrap.zip
  [ -f "$zip" ] || { echo "$zip was not built" >&2; exit 1; }
  .venv/bin/python -c 'import sys, zipfile; sys.stdout.buffer.write(zipfile.ZipFile(sys.argv[1]).read("bootstrap"))' "$zip" >"$unpacked"
  binary=$(stat -c %s "$unpacked")
  # A cargo-lambda that set CARGO_ENCODED_RUSTFLAGS of its own would silently drop the flags above.
  if readelf -SW "$unpacked" | grep -qE '\] \.eh_frame +PROGBITS'; then
    echo "$f was linked with unwind tables: the linker flags of $0 did not reach its link" >&2
    exit 1
  fi
  printf '%-14s %12s %12s\n' "$f" "$(stat -c %s "$zip")" "$binary"
done
