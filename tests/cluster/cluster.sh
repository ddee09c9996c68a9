#!/usr/bin/env bash
# Starts and stops the local test cluster: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler (driven by kwokctl in its binary runtime with our own builds), kwok with
# fake Nodes, a default StorageClass and a volume provisioner.
#
#   cluster.sh up       build what is missing, clean any stale cluster, start, wait ready
#   cluster.sh down     stop everything and remove the cluster state
#   cluster.sh status   exit 0 when the cluster answers
#   cluster.sh restart-apiserver   kill and restart kube-apiserver (for fault tests)
#   cluster.sh import-image NAME...  build (node/images.sh) and import images into the real node
#
# Settings (environment): NEURALLOG_CLUSTER_DIR (state, default target/cluster),
# NEURALLOG_CACHE_DIR (binaries), NEURALLOG_APISERVER_PORT (default: a free port),
# NEURALLOG_NODES (fake nodes, default 3), NEURALLOG_NODE_PODS / NEURALLOG_NODE_CPU /
# NEURALLOG_NODE_MEMORY (capacity of each, default 250 / 32 / 256Gi),
# NEURALLOG_CONTROLLER_QPS / NEURALLOG_CONTROLLER_BURST (client limits of the controller
# manager, scheduler and volume provisioner, default 200 / 400),
# NEURALLOG_APISERVER_EXTRA_ARGS (more kube-apiserver flags: "key=value key=value"),
# NEURALLOG_REAL_NODE=1 (also start one real node beside the fake ones: node/node.sh).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
source "$here/lib.sh"
# shellcheck source=/dev/null
source "$here/node/node.sh"

cluster_name=neurallog
state=$(cluster_state_dir)
kwok_dir="$state/kwok"
kubeconfig="$state/kubeconfig"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

port_busy() {
  python3 -c 'import socket,sys; s=socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
try:
    s.bind(("127.0.0.1", int(sys.argv[1])))
except OSError:
    sys.exit(0)
sys.exit(1)' "$1"
}

kwokctl_() { KWOK_WORKDIR="$kwok_dir" "$bin/kwokctl" --name "$cluster_name" "$@"; }
kubectl_() { "$bin/kubectl" --kubeconfig "$kubeconfig" "$@"; }

# Every process we start has the state directory on its command line; this finds strays
# from a run that was killed before it could stop them.
stray_pids() {
  local pid
  for pid in $(pgrep -f -- "$state/" 2>/dev/null || true); do
    [ "$pid" != "$$" ] && echo "$pid"
  done
}

stop_all() {
  node_down
  if [ -d "$kwok_dir/clusters/$cluster_name" ]; then
    kwokctl_ delete cluster >/dev/null 2>&1 || true
  fi
  local pids
  pids=$(stray_pids)
  if [ -n "$pids" ]; then
    # shellcheck disable=SC2086
    kill $pids 2>/dev/null || true
    for _ in $(seq 50); do
      [ -z "$(stray_pids)" ] && break
      sleep 0.1
    done
    pids=$(stray_pids)
    # shellcheck disable=SC2086
    [ -n "$pids" ] && kill -9 $pids 2>/dev/null || true
  fi
  rm -rf "$state"
}

# Binds every component to loopback and tunes it for tests. The controller-manager and
# scheduler run alone, without leader election: with it they exit for good whenever a
# lease renewal misses its deadline (an API server restart, a loaded 2-core machine). (kwokctl's --extra-args
# mis-indexes a component given more than one argument in v0.8.0; a config file works.)
write_kwokctl_config() {
  local etcd_port=$1 etcd_peer=$2 kwok_port=$3 lo=127.0.0.1
  local qps=${NEURALLOG_CONTROLLER_QPS:-200} burst=${NEURALLOG_CONTROLLER_BURST:-400}
  cat <<EOF
apiVersion: config.kwok.x-k8s.io/v1alpha1
kind: KwokctlConfiguration
$(if real_node_enabled; then node_kwokctl_options; fi)
componentsPatches:
- name: etcd
  extraArgs:
  - {key: listen-client-urls, value: "http://$lo:$etcd_port"}
  - {key: advertise-client-urls, value: "http://$lo:$etcd_port"}
  - {key: listen-peer-urls, value: "http://$lo:$etcd_peer"}
  - {key: initial-advertise-peer-urls, value: "http://$lo:$etcd_peer"}
  - {key: initial-cluster, value: "node0=http://$lo:$etcd_peer"}
  - {key: unsafe-no-fsync, value: "true"}
- name: kube-apiserver
  extraArgs:
  - {key: bind-address, value: "$lo"}
  - {key: max-requests-inflight, value: "800"}
  - {key: max-mutating-requests-inflight, value: "400"}
$(apiserver_extra_args)
$(if real_node_enabled; then node_apiserver_args; fi)
- name: kube-controller-manager
  extraArgs:
  - {key: bind-address, value: "$lo"}
  - {key: leader-elect, value: "false"}
  - {key: kube-api-qps, value: "$qps"}
  - {key: kube-api-burst, value: "$burst"}
- name: kube-scheduler
  extraArgs:
  - {key: bind-address, value: "$lo"}
  - {key: leader-elect, value: "false"}
  - {key: kube-api-qps, value: "$qps"}
  - {key: kube-api-burst, value: "$burst"}
- name: kwok-controller
  extraArgs:
  - {key: server-address, value: "$lo:$kwok_port"}
  # Only the fake nodes (node.yaml's annotation): kwok would overwrite a real node's pods.
  - {key: manage-all-nodes, value: "false"}
  - {key: manage-nodes-with-annotation-selector, value: "kwok.x-k8s.io/node=fake"}
EOF
}

# kwok's own default stages (from its module, as kwokctl would use them), plus ours that
# play a kubelet meeting failures. kwokctl drops its defaults once any Stage is given.
write_stages() {
  local stages
  stages="$(cluster_cache_dir)/stages"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    [ -f "$stages/$f" ] || die "kwok stage $stages/$f is missing: rebuild with tests/cluster/build.sh"
    printf -- '---\n'
    cat "$stages/$f"
  done
  printf -- '---\n'
  cat "$here/manifests/failure-stages.yaml"
}

# NEURALLOG_APISERVER_EXTRA_ARGS ("key=value ..."), one extraArgs entry each.
apiserver_extra_args() {
  local pair
  for pair in ${NEURALLOG_APISERVER_EXTRA_ARGS:-}; do
    [[ $pair == *=* ]] || die "NEURALLOG_APISERVER_EXTRA_ARGS: \"$pair\" is not key=value"
    printf '  - {key: %s, value: "%s"}\n' "${pair%%=*}" "${pair#*=}"
  done
}

up() {
  bin=$(bash "$here/build.sh" | tail -n 1)
  local started
  started=$(date +%s)
  if [ -e "$state" ]; then
    log "cleaning up a previous cluster in $state"
    stop_all
  fi
  mkdir -p "$state/logs"
  real_node_enabled && node_prepare_config

  local api_port=${NEURALLOG_APISERVER_PORT:-}
  if [ -n "$api_port" ]; then
    port_busy "$api_port" && die "port $api_port (NEURALLOG_APISERVER_PORT) is busy: free it or choose another port"
  else
    api_port=$(free_port)
  fi
  local etcd_port etcd_peer kwok_port kcm_port sched_port
  etcd_port=$(free_port); etcd_peer=$(free_port); kwok_port=$(free_port)
  kcm_port=$(free_port); sched_port=$(free_port)

  log "starting Kubernetes $KUBE_VERSION on https://127.0.0.1:$api_port"
  write_kwokctl_config "$etcd_port" "$etcd_peer" "$kwok_port" >"$state/kwokctl.yaml"
  write_stages >>"$state/kwokctl.yaml"
  if ! kwokctl_ create cluster --runtime binary \
    --kube-apiserver-binary "$bin/kube-apiserver" \
    --kube-controller-manager-binary "$bin/kube-controller-manager" \
    --kube-scheduler-binary "$bin/kube-scheduler" \
    --etcd-binary "$bin/etcd" \
    --kwok-controller-binary "$bin/kwok" \
    --kubeconfig "$kubeconfig" \
    --kube-apiserver-port "$api_port" --etcd-port "$etcd_port" \
    --controller-port "$kwok_port" \
    --kube-controller-manager-port "$kcm_port" --kube-scheduler-port "$sched_port" \
    --config "$state/kwokctl.yaml" \
    --wait 90s >"$state/logs/kwokctl.log" 2>&1; then
    tail -n 5 "$state/logs/kwokctl.log" >&2
    die "the control plane did not start; logs are in $kwok_dir/clusters/$cluster_name/logs"
  fi

  kubectl_ apply -f "$here/manifests/storage.yaml" >/dev/null
  # setsid: the provisioner outlives this script, and its command line names $state so
  # that stop_all finds it even after a killed run.
  setsid "$bin/provisioner" --kubeconfig "$kubeconfig" --base-dir "$state/volumes" \
    --kube-api-qps "${NEURALLOG_CONTROLLER_QPS:-200}" --kube-api-burst "${NEURALLOG_CONTROLLER_BURST:-400}" \
    >"$state/logs/provisioner.log" 2>&1 </dev/null &
  echo $! >"$state/provisioner.pid"

  local nodes=${NEURALLOG_NODES:-3} i
  for i in $(seq 1 "$nodes"); do
    sed -e "s/NAME/kwok-node-$i/" -e "s/NODE_PODS/${NEURALLOG_NODE_PODS:-250}/" \
      -e "s/NODE_CPU/${NEURALLOG_NODE_CPU:-32}/" -e "s/NODE_MEMORY/${NEURALLOG_NODE_MEMORY:-256Gi}/" \
      "$here/manifests/node.yaml"
  done | kubectl_ apply -f - >/dev/null
  kubectl_ wait --for=condition=Ready node --all --timeout=60s >/dev/null ||
    die "fake nodes did not become Ready within 60s"
  # Pods cannot be created in a namespace before its default ServiceAccount exists.
  local waited=0
  until kubectl_ -n default get serviceaccount default >/dev/null 2>&1; do
    waited=$((waited + 1))
    [ "$waited" -gt 300 ] && die "the default ServiceAccount did not appear within 30s"
    sleep 0.1
  done
  real_node_enabled && node_up
  log "cluster ready in $(( $(date +%s) - started ))s; kubeconfig: $kubeconfig"
}

down() {
  if [ ! -e "$state" ]; then
    log "no cluster running in $state"
    return 0
  fi
  bin=$(cluster_bin_dir)
  stop_all
  log "cluster stopped"
}

# Kills kube-apiserver (SIGKILL) and starts it again with the same command line: tests use
# it to prove that watches resume after an API server crash.
restart_apiserver() {
  bin=$(cluster_bin_dir)
  local pidfile="$kwok_dir/clusters/$cluster_name/pids/kube-apiserver.pid" pid cwd
  [ -f "$pidfile" ] || die "no running kube-apiserver in $state"
  pid=$(cat "$pidfile")
  kill -0 "$pid" 2>/dev/null || die "kube-apiserver (pid $pid) is not running"
  mapfile -d '' cmd <"/proc/$pid/cmdline"
  cwd=$(readlink "/proc/$pid/cwd")
  # SIGKILL: a crash, and no 60 s graceful drain of open watches before the restart.
  kill -9 "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  # setsid forks when it is a process-group leader, so $! may not be the server: the
  # shell records its own pid and then becomes the server.
  (cd "$cwd" && setsid bash -c 'echo $$ >"$0"; exec "$@"' "$pidfile" "${cmd[@]}" \
    >>"$kwok_dir/clusters/$cluster_name/logs/kube-apiserver.log" 2>&1 </dev/null &)
  local waited=0
  until [ -s "$pidfile" ] && [ "$(cat "$pidfile")" != "$pid" ]; do
    waited=$((waited + 1))
    [ "$waited" -gt 100 ] && die "kube-apiserver did not start"
    sleep 0.1
  done
  waited=0
  until kubectl_ get --raw /readyz >/dev/null 2>&1; do
    waited=$((waited + 1))
    [ "$waited" -gt 600 ] && die "kube-apiserver did not come back within 60s"
    sleep 0.1
  done
  log "kube-apiserver restarted"
}

# Up means every component process is alive and the API server is ready.
status() {
  bin=$(cluster_bin_dir)
  local pids="$kwok_dir/clusters/$cluster_name/pids" component pid
  for component in etcd kube-apiserver kube-controller-manager kube-scheduler kwok-controller; do
    pid=$(cat "$pids/$component.pid" 2>/dev/null) || return 1
    kill -0 "$pid" 2>/dev/null || { log "$component is not running"; return 1; }
  done
  [ -f "$kubeconfig" ] && kubectl_ get --raw /readyz >/dev/null 2>&1
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) status ;;
  restart-apiserver) restart_apiserver ;;
  import-image)
    shift
    real_node_enabled || [ -d "$(node_dir)" ] || die "no real node in $state"
    bin=$(cluster_bin_dir)
    node_import_images "$@"
    ;;
  *) die "usage: cluster.sh up|down|status|restart-apiserver|import-image NAME..." ;;
esac
