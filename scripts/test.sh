#!/usr/bin/env bash
# `make test` after lint: unit tests, then the end-to-end tests against the local control
# plane (started here unless one is already up; stopped again if started here).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/cluster/lib.sh

log() { printf 'test: %s\n' "$*" >&2; }

bash scripts/install-test-packages.sh
export NEURALLOG_REQUIRE_STRACE=1

log "unit tests"
cargo test --workspace --lib --bins --examples

# The cluster's real node (tests/cluster/node) is on unless NEURALLOG_REAL_NODE=0: the
# tests of tests/e2e_real_node.rs need it, and say they are skipped without it.
export NEURALLOG_REAL_NODE=${NEURALLOG_REAL_NODE:-1}

# The power-cut tests (tests/journal_power_cut.rs, lazyfs/tests) mount a FUSE filesystem;
# without FUSE they would say they are skipped and pass: here they must run.
export NEURALLOG_REQUIRE_FUSE=1

started=0
if bash tests/cluster/cluster.sh status; then
  log "using the cluster that is already running"
  if [ "$NEURALLOG_REAL_NODE" = 1 ] && ! "$(cluster_bin_dir)/kubectl" --kubeconfig "$(cluster_state_dir)/kubeconfig" \
    get node neurallog-real-node >/dev/null 2>&1; then
    log "it has no real node: the real-node tests are skipped (restart it with make cluster-down)"
    export NEURALLOG_REAL_NODE=0
  fi
else
  bash tests/cluster/cluster.sh up
  started=1
fi
cleanup() { [ "$started" = 1 ] && bash tests/cluster/cluster.sh down; }
trap cleanup EXIT

if [ "$NEURALLOG_REAL_NODE" = 1 ]; then
  # The operator's image and the in-cluster Auth stub's are assembled from release builds.
  log "release build of the operator and the Auth stub (images for the real node)"
  cargo build --release --locked -p neurallog-operator -p neurallog-auth-stub \
    --bin neurallog-operator --bin neurallog-auth-stub
fi

export NEURALLOG_E2E_KUBECONFIG="$(cluster_state_dir)/kubeconfig"
# Without it, an end-to-end test that finds no cluster says so and passes (plain `cargo test`).
export NEURALLOG_REQUIRE_CLUSTER=1
export NEURALLOG_KUBECTL="$(cluster_bin_dir)/kubectl"
export NEURALLOG_HELM="$(bash tests/cluster/build.sh helm | tail -n 1)/helm"
# The monitoring tests' tools: promtool (built from the Prometheus Go module) and the
# Prometheus Operator's CRDs (from its Go module), cached beside the cluster's binaries.
log "monitoring test tools (promtool, the Prometheus Operator's CRDs)"
export NEURALLOG_PROMTOOL="$(bash tests/cluster/build.sh monitoring | tail -n 1)/promtool"
log "end-to-end tests"
# Every test binary runs even when one fails, so one run reports every failure.
cargo test --workspace --no-fail-fast --test '*'
