#!/usr/bin/env bash
# `make bench`: converge N tenants with the release operator and with a plain client on
# a control plane of its own (target/bench-cluster, stopped at the end), then a no-op
# resync. Figures go to stdout and target/bench/results.json (benches/converge/).
#
#   scripts/bench.sh [--tenants N] [--concurrency C] [--rounds R] [--keep-cluster]
#                    [--one-cluster | --control] [--mirrored]
#
# --rounds R (default 1) repeats the whole run R times, each on a fresh bench cluster, so
# the two sides alternate (baseline, operator, baseline, operator, ...); each round's
# JSON is kept as results-round-K.json and the median and spread of the ratio and the
# other figures are printed and written to target/bench/rounds.json.
#
# Each side converges on a control plane of its own, started fresh for it: on a shared
# one the side that comes second finds the first side's converged tenants there (their
# pods, volumes and claims in every controller's and the scheduler's work), which
# `--control` measures. --one-cluster runs both sides on one control plane, baseline
# first, as rounds one to seventeen did. --control runs the baseline twice on one control
# plane instead of the operator (results: baseline-twice-round-K.json, controls.json).
# --mirrored adds a third side, on a fresh control plane too, between the two: the
# baseline that also writes the operator's Events, status patches and finalizer with the
# objects (benches/converge/mirror.rs).
#
# Environment: BENCH_TENANTS (1000), BENCH_CONCURRENCY (16), BENCH_QPS / BENCH_BURST
# (client limits of the bench cluster's controllers, default 2000 / 4000),
# BENCH_OPERATOR_BIN (the operator to measure; default the release build of this tree,
# e.g. a binary saved from an earlier commit for a before/after comparison),
# BENCH_APISERVER_PROFILES=1 (CPU profiles of the API server during each side, kept per
# round in target/bench/apiserver-profiles-round-K; `go tool pprof -top -cum FILES`).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD

tenants=${BENCH_TENANTS:-1000}
concurrency=${BENCH_CONCURRENCY:-16}
keep_cluster=0
rounds=1
mode=per-side
mirrored=0
while [ $# -gt 0 ]; do
  case $1 in
    --tenants) tenants=$2; shift 2 ;;
    --concurrency) concurrency=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --keep-cluster) keep_cluster=1; shift ;;
    --one-cluster) mode=one-cluster; shift ;;
    --control) mode=control; shift ;;
    --mirrored) mirrored=1; shift ;;
    *) echo "usage: $0 [--tenants N] [--concurrency C] [--rounds R] [--keep-cluster] [--one-cluster | --control] [--mirrored]" >&2; exit 2 ;;
  esac
done

log() { printf 'bench: %s\n' "$*" >&2; }

if [ "$mirrored" = 1 ] && [ "$mode" != per-side ]; then
  echo "--mirrored needs a control plane per side (not --one-cluster or --control)" >&2
  exit 2
fi

export NEURALLOG_CLUSTER_DIR=$repo/target/bench-cluster
# Room for both sides' pods (a Redis and a server pod per tenant) on the 3 fake nodes,
# at the tenants' default requests (100m, 128Mi per container).
pods_per_node=$(( (4 * tenants) / 3 + 100 ))
export NEURALLOG_NODE_PODS=$pods_per_node
export NEURALLOG_NODE_CPU=$(( pods_per_node / 10 + 10 ))
export NEURALLOG_NODE_MEMORY="$(( pods_per_node * 256 / 1024 + 64 ))Gi"
# The controllers every tenant's pods and volumes go through must not be the limit: the
# defaults (200 / 400) would throttle the controller manager before the API server.
export NEURALLOG_CONTROLLER_QPS=${BENCH_QPS:-2000}
export NEURALLOG_CONTROLLER_BURST=${BENCH_BURST:-4000}
# The default service range (a /24) holds 256 ClusterIPs: each tenant has one server Service.
# The in-flight limits are already high; admin clients are exempt from priority and
# fairness anyway, so CPU is what limits the API server.
export NEURALLOG_APISERVER_EXTRA_ARGS=${BENCH_APISERVER_ARGS:-service-cluster-ip-range=10.0.0.0/16}

log "building the release operator and the benchmark"
cargo build --release --quiet --bin neurallog-operator
cargo bench --quiet --no-run --bench converge 2>/dev/null

if [ "$keep_cluster" = 0 ]; then
  trap 'bash tests/cluster/cluster.sh down' EXIT
fi

work_dir=$repo/target/bench
rm -f "$work_dir"/results-round-*.json "$work_dir"/baseline-twice-round-*.json
rm -f "$work_dir/baseline.json" "$work_dir/mirrored.json"

# One process of the benchmark: CONVERGE_RUN=$1 on the running bench cluster.
converge() {
  CONVERGE_RUN=$1 CONVERGE_TENANTS=$tenants CONVERGE_CONCURRENCY=$concurrency \
    CONVERGE_CLUSTER_DIR=$NEURALLOG_CLUSTER_DIR \
    CONVERGE_OPERATOR_BIN=${BENCH_OPERATOR_BIN:-$repo/target/release/neurallog-operator} \
    CONVERGE_WORK_DIR=$work_dir \
    CONVERGE_APISERVER_PROFILES=${BENCH_APISERVER_PROFILES:-0} \
    cargo bench --quiet --bench converge
}

# A fresh control plane: nothing of an earlier side or round is left in it (`up` stops
# and removes the cluster its state directory holds before it starts one).
fresh_cluster() {
  bash tests/cluster/cluster.sh up
}

# Keeps one round's API server profiles (each process of the round starts them afresh).
keep_profiles() {
  if [ -d "$work_dir/apiserver-profiles" ]; then
    mkdir -p "$work_dir/apiserver-profiles-round-$1"
    mv "$work_dir"/apiserver-profiles/* "$work_dir/apiserver-profiles-round-$1"/ 2>/dev/null || true
    rm -rf "$work_dir/apiserver-profiles"
  fi
}

for round in $(seq 1 "$rounds"); do
  rm -rf "$work_dir/apiserver-profiles-round-$round"
  log "round $round of $rounds: $tenants tenants per side, concurrency $concurrency, $mode"
  case $mode in
    per-side)
      fresh_cluster
      converge baseline
      keep_profiles "$round"
      if [ "$mirrored" = 1 ]; then
        fresh_cluster
        converge mirrored
        keep_profiles "$round"
        export CONVERGE_MIRRORED_JSON=$work_dir/mirrored.json
      fi
      fresh_cluster
      converge operator
      ;;
    one-cluster)
      fresh_cluster
      converge both
      ;;
    control)
      fresh_cluster
      converge baseline-twice
      keep_profiles "$round"
      cp "$work_dir/baseline-twice.json" "$work_dir/baseline-twice-round-$round.json"
      continue
      ;;
  esac
  keep_profiles "$round"
  cp "$work_dir/results.json" "$work_dir/results-round-$round.json"
done

if [ "$mode" = control ]; then
  jq -s '
    def median: sort | if length % 2 == 1 then .[length / 2 | floor]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def summary(f): [.[] | f] | {median: median, min: min, max: max, runs: .};
    {
      tenants: ((.[0].first.client_writes / .[0].first.client_writes_per_tenant) | round),
      rounds: length,
      ratio_again_to_first: summary(.ratio_again_to_first),
      machine_busy_ratio_again_to_first: summary(.machine_busy_ratio_again_to_first),
      first_seconds: summary(.first.seconds),
      again_seconds: summary(.again.seconds)
    }' "$work_dir"/baseline-twice-round-*.json | tee "$work_dir/controls.json"
  exit 0
fi

if [ "$rounds" -gt 1 ]; then
  # Median and spread (min..max) over the rounds of the figures that decide the targets.
  jq -s '
    def median: sort | if length % 2 == 1 then .[length / 2 | floor]
      else (.[length / 2 - 1] + .[length / 2]) / 2 end;
    def summary(f): [.[] | f] | {median: median, min: min, max: max, runs: .};
    {
      tenants: .[0].tenants,
      rounds: length,
      ratio_operator_to_baseline: summary(.ratio_operator_to_baseline),
      operator_seconds: summary(.operator.seconds),
      baseline_seconds: summary(.baseline.seconds),
      passes_per_tenant: summary(.operator_process.passes_per_tenant),
      operator_cpu_seconds_per_1000_tenants: summary(.operator_process.cpu_seconds_per_1000_tenants),
      peak_rss_mib: summary([.operator_process.peak_rss_mib, .resync.peak_rss_mib] | max),
      resync_writes: summary(.resync.operator_write_counter
        + ([.resync.apiserver_tenant_object_writes[]] | add // 0)),
      apiserver_cpu_seconds_operator_side: summary(.operator.cpu_seconds.by_process["kube-apiserver"]),
      apiserver_cpu_seconds_baseline_side: summary(.baseline.cpu_seconds.by_process["kube-apiserver"])
    } + if .[0].ratio_mirrored_to_baseline == null then {} else {
      ratio_mirrored_to_baseline: summary(.ratio_mirrored_to_baseline),
      ratio_operator_to_mirrored: summary(.ratio_operator_to_mirrored),
      mirrored_seconds: summary(.mirrored.seconds)
    } end' "$work_dir"/results-round-*.json | tee "$work_dir/rounds.json"
fi
