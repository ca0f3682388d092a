# The one place that lists busway's commands; README, CI and buildspecs call these targets.
.PHONY: up test check lint unit bench fmt

CARGO ?= cargo

## up: run the broker on this machine (portal :4000, broker :4001, state in ./.busway)
up:
	$(CARGO) run --release -- up

## test: everything CI runs: formatting, lints, every test suite
test: check unit

check: fmt-check lint

.PHONY: fmt-check

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --locked -- -D warnings

unit:
	$(CARGO) test --workspace --locked

## bench: the benchmarks whose figures are in docs/benchmarks.md
bench:
	$(CARGO) bench -p busway-core --bench validation
	$(CARGO) bench -p busway-local --bench ingest
	$(CARGO) bench -p busway-pattern

fmt:
	$(CARGO) fmt --all
