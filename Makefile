# The two commands a newcomer needs: `make run` and `make test`. The rest are parts of them.
SHELL := /bin/bash
CLUSTER := tests/cluster/cluster.sh
KUBECONFIG_FILE := $(CURDIR)/target/cluster/kubeconfig

.PHONY: run test unit-test e2e-test lint cluster-up cluster-down cluster-build bench crd

run: ## Start the local cluster (unless KUBECONFIG points elsewhere) and run the operator against it
	@bash scripts/run.sh

test: lint ## fmt + clippy, unit tests, then end-to-end tests on the local cluster
	@bash scripts/test.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings

unit-test:
	cargo test --workspace --lib --bins --examples

e2e-test:
	NEURALLOG_REQUIRE_CLUSTER=1 NEURALLOG_E2E_KUBECONFIG=$(KUBECONFIG_FILE) cargo test --workspace --tests

cluster-build:
	@bash tests/cluster/build.sh >/dev/null

cluster-up:
	@bash $(CLUSTER) up

cluster-down:
	@bash $(CLUSTER) down

# Tenants per side and operator/baseline concurrency of `make bench` (N=50 for a quick run).
N ?= 1000
CONCURRENCY ?= 16
# Runs of `make bench`, each on a fresh bench cluster (ROUNDS=3: median and spread).
ROUNDS ?= 1
# More of scripts/bench.sh: --mirrored, --control, --one-cluster (see the script's header).
BENCH_FLAGS ?=

bench: ## Converge N tenants with the operator and with a plain client on a bench cluster
	@bash scripts/bench.sh --tenants $(N) --concurrency $(CONCURRENCY) --rounds $(ROUNDS) $(BENCH_FLAGS)

crd:
	cargo run -q -- crd > deploy/crd/tenants.neurallog.io.yaml
	cp deploy/crd/tenants.neurallog.io.yaml charts/neurallog-operator/crds/tenants.neurallog.io.yaml
	cp deploy/crd/tenant_deletion_protection.yaml charts/neurallog-operator/crds/tenant_deletion_protection.yaml
