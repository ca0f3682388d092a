# The one place that lists busway's commands; README, CI and buildspecs call these targets.
.PHONY: demo up test check lint unit bench fmt

CARGO ?= cargo

## demo: the seed's full demo against a temporary broker
demo:
	$(CARGO) run --release -- demo

## up: run the broker on this machine (portal :4000, broker :4001, state in ./.busway)
up:
	$(CARGO) run --release -- up

## test: everything CI runs: formatting, lints, every test suite
test: check unit test-infra test-api test-ui

check: fmt-check lint

.PHONY: fmt-check

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings

# The Lambda bins are built first, with the tests' features, so tests/tests/deployed.rs runs
# them as infra deploys them without compiling anything twice.
unit: setup
	$(CARGO) build --workspace --all-features --locked --bins --tests
	$(CARGO) test --workspace --all-features --locked --no-fail-fast

## test-ui: the catalog page (/ui) in headless Chromium against `busway up` (tests/ui/)
## screenshots: the same run, keeping its screenshots in docs/screenshots/ for the README
.PHONY: test-ui screenshots
test-ui: setup
	$(CARGO) build --workspace --all-features --locked --bin busway
	.venv/bin/python tests/ui/catalog_test.py "$${CARGO_TARGET_DIR:-target}/debug/busway"

screenshots:
	BUSWAY_SCREENSHOTS=docs $(MAKE) test-ui

## bench: the benchmarks whose figures are in docs/benchmarks.md
bench: setup
	$(CARGO) bench -p busway-core --bench validation
	$(CARGO) bench -p busway-local --bench load
	$(CARGO) bench -p busway-local --bench delivery -- --scenario all
	$(CARGO) bench -p busway-pattern
	$(CARGO) bench -p busway-injector --bench handler
	$(CARGO) bench -p busway-injector --bench handler --profile lambda
	scripts/build-lambdas.sh
	$(CARGO) bench -p busway-tests --bench lambda

## lambdas: the six Lambda functions as target/lambda/{function}/bootstrap.zip (x86_64; --arm64 via the script)
.PHONY: lambdas
lambdas:
	scripts/build-lambdas.sh

fmt:
	$(CARGO) fmt --all

# Provisioning as code (statemachines/, buildspecs/, cdk-app/, infra/).
.PHONY: setup test-infra test-api setup-cdk-app provision-producer provision-consumer

## setup: install the infrastructure checks' tools (scripts/setup.sh, idempotent)
setup:
	scripts/setup.sh

## test-infra: offline checks of the state machine, the CDK generators and the platform
test-infra: setup
	cd infra && npx --no-install asl-validator --json-path ../statemachines/provisioning.asl.json
	cd cdk-app && npx --no-install tsc -p . && TS_NODE_TRANSPILE_ONLY=1 node --require ts-node/register --test test/*.test.ts
	cd infra && npx --no-install tsc -p . && TS_NODE_TRANSPILE_ONLY=1 node --require ts-node/register --test test/*.test.ts
	scripts/lint-generated.sh
	scripts/test-asl-moto.sh

## test-api: schemathesis against a fresh `busway up`, from the portal's and broker's OpenAPI documents
test-api: setup
	CARGO=$(CARGO) scripts/fuzz-api.sh

## setup-cdk-app: the generators' npm packages only (CodeBuild install phase)
setup-cdk-app:
	cd cdk-app && npm ci --no-audit --no-fund --loglevel=error

## provision-producer / provision-consumer: the build step (buildspecs/), from BUSWAY_DEPLOY_* variables
provision-producer:
	scripts/provision-build.sh producer

provision-consumer:
	scripts/provision-build.sh consumer
