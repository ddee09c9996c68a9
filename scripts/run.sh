#!/usr/bin/env bash
# `make run`: the operator against the local cluster (built and started here if needed),
# with the CRD installed and a loopback Auth service. Point KUBECONFIG at another cluster
# to use that one instead (NEURALLOG_USE_KUBECONFIG=1 make run).
set -euo pipefail
cd "$(dirname "$0")/.."
source tests/cluster/lib.sh

log() { printf 'run: %s\n' "$*" >&2; }

if [ "${NEURALLOG_USE_KUBECONFIG:-0}" = 1 ] && [ -n "${KUBECONFIG:-}" ]; then
  kubeconfig=$KUBECONFIG
  kubectl_bin=$(command -v kubectl || echo "$(cluster_bin_dir)/kubectl")
  log "using the cluster of KUBECONFIG=$kubeconfig"
else
  bash tests/cluster/cluster.sh status || bash tests/cluster/cluster.sh up
  kubeconfig="$(cluster_state_dir)/kubeconfig"
  kubectl_bin="$(cluster_bin_dir)/kubectl"
fi

log "building the operator"
cargo build --quiet --bins -p neurallog-operator -p neurallog-auth-stub

"$kubectl_bin" --kubeconfig "$kubeconfig" apply --server-side -f deploy/crd/tenants.neurallog.io.yaml >/dev/null
"$kubectl_bin" --kubeconfig "$kubeconfig" wait --for=condition=Established crd/tenants.neurallog.io --timeout=30s >/dev/null

mkdir -p target/run
auth_addr=${NEURALLOG_AUTH_STUB_LISTEN:-127.0.0.1:3040}
./target/debug/neurallog-auth-stub --listen "$auth_addr" >target/run/auth-stub.log 2>&1 &
auth_pid=$!
trap 'kill $auth_pid 2>/dev/null || true' EXIT

cat >&2 <<MSG
run: the operator is starting. In another terminal:
       export KUBECONFIG=$kubeconfig
       alias kubectl=$kubectl_bin
       kubectl apply -f examples/basic-tenant.yaml
       kubectl get tenants -w
     Metrics: http://127.0.0.1:8080/metrics   Auth stub: http://$auth_addr (log: target/run/auth-stub.log)
     Stop with Ctrl-C (the cluster keeps running; make cluster-down stops it).
MSG
./target/debug/neurallog-operator run \
  --kubeconfig "$kubeconfig" \
  --journal target/run/journal \
  --auth-url "http://$auth_addr" \
  --metrics-addr 127.0.0.1:8080
