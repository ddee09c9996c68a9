# Shared helpers for the control-plane scripts. Sourced, not executed.
# shellcheck shell=bash
cluster_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_root=$(cd "$cluster_dir/../.." && pwd)
# shellcheck source=/dev/null
source "$cluster_dir/versions.env"

log() { printf 'cluster: %s\n' "$*" >&2; }
die() { printf 'cluster: error: %s\n' "$*" >&2; exit 1; }

need_go() {
  command -v go >/dev/null 2>&1 ||
    die "Go toolchain not found on PATH: install Go >= 1.26 (https://go.dev/doc/install) to build the control plane"
}

cluster_cache_dir() {
  local root=${NEURALLOG_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/neurallog-operator}
  local dir="$root/kube-$KUBE_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION"
  mkdir -p "$dir"
  echo "$dir"
}

cluster_bin_dir() { echo "$(cluster_cache_dir)/bin"; }

# Where the running cluster keeps its state; the kubeconfig lands here too.
cluster_state_dir() { echo "${NEURALLOG_CLUSTER_DIR:-$repo_root/target/cluster}"; }
