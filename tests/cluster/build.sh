#!/usr/bin/env bash
# Builds the local control plane (kube-apiserver, kube-controller-manager, kube-scheduler,
# kubectl, etcd, kwok, kwokctl) and helm from Go modules at the versions in versions.env,
# into a cache directory outside the clone keyed by those versions. Reuses what is already
# built.
# Prints the bin directory on stdout as its last line.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=/dev/null
source "$here/lib.sh"

need_go
bin=$(cluster_bin_dir)
mkdir -p "$bin"
# The node's binaries have a lock of their own: building them never waits for, nor
# disturbs, a control-plane build.
lock=build.lock
[ "${*:-}" = node ] && lock=build-node.lock
exec 9>"$(cluster_cache_dir)/$lock"
flock 9

ldflags_for_kube() {
  local v=$KUBE_VERSION minor
  minor=$(echo "$v" | cut -d. -f2)
  local pkg=k8s.io/component-base/version
  echo "-s -w -X $pkg.gitVersion=$v -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor \
-X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z \
-X k8s.io/client-go/pkg/version.gitVersion=$v"
}

# Copies a committed wrapper module into the cache, where `go get` may edit it freely.
prepare_module() {
  local name=$1 dir
  dir=$(cluster_cache_dir)/src/$name
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$here/$name/go.mod" "$dir/go.mod"
  cp -r "$here/$name/." "$dir/"
  echo "$dir"
}

# Copies the kube wrapper module into the cache as $1 and pins every staging module of
# k8s.io/kubernetes there. Prints the module directory.
prepare_kube_module() {
  local name=$1 dir staging modfile
  dir=$(cluster_cache_dir)/src/$name
  rm -rf "$dir"
  mkdir -p "$dir"
  cp "$here/kube/go.mod" "$dir/go.mod"
  cd "$dir"
  # k8s.io/kubernetes pins its staging modules to v0.0.0 and redirects them to ./staging,
  # which Go ignores for a dependency: pin each to its published v0.<minor>.<patch> instead.
  staging="v0.${KUBE_VERSION#v1.}"
  go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" >/dev/null
  modfile="$(go env GOMODCACHE)/cache/download/k8s.io/kubernetes/@v/$KUBE_VERSION.mod"
  local replaces=()
  while read -r m; do
    replaces+=("-replace=$m=$m@$staging")
  done < <(sed -nE 's#^[[:space:]]*(k8s\.io/[A-Za-z0-9._-]+)[[:space:]]+=>[[:space:]]+\./staging/.*#\1#p' "$modfile")
  [ "${#replaces[@]}" -gt 0 ] || die "no staging replace lines found in $modfile"
  go mod edit "${replaces[@]}"
  echo "$dir"
}

# Builds commands of k8s.io/kubernetes ($@) into the bin directory, in wrapper module $1.
build_kube_cmds() {
  local module=$1 dir
  shift
  dir=$(prepare_kube_module "$module")
  cd "$dir"
  local pkgs=()
  for n in "$@"; do pkgs+=("k8s.io/kubernetes/cmd/$n"); done
  go get "${pkgs[@]/%/@$KUBE_VERSION}"
  CGO_ENABLED=0 go build -trimpath -ldflags "$(ldflags_for_kube)" -o "$bin/" "${pkgs[@]}"
}

build_kube() {
  local names=(kube-apiserver kube-controller-manager kube-scheduler kubectl) missing=0
  for n in "${names[@]}"; do [ -x "$bin/$n" ] || missing=1; done
  [ "$missing" = 1 ] || return 0
  log "building Kubernetes $KUBE_VERSION (${names[*]}); a cold build takes several minutes"
  build_kube_cmds kube "${names[@]}"
}

build_etcd() {
  [ -x "$bin/etcd" ] && return 0
  log "building etcd $ETCD_VERSION"
  local dir
  dir=$(prepare_module etcd)
  cd "$dir"
  go get "go.etcd.io/etcd/server/v3@$ETCD_VERSION"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/etcd" go.etcd.io/etcd/server/v3
}

build_kwok() {
  [ -x "$bin/kwok" ] && [ -x "$bin/kwokctl" ] && return 0
  log "building kwok $KWOK_VERSION"
  local dir
  dir=$(prepare_module kwok)
  cd "$dir"
  go get "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION" "sigs.k8s.io/kwok/cmd/kwokctl@$KWOK_VERSION"
  local pkg=sigs.k8s.io/kwok/pkg/consts
  CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X $pkg.Version=$KWOK_VERSION -X $pkg.KubeVersion=$KUBE_VERSION" \
    -o "$bin/" sigs.k8s.io/kwok/cmd/kwok sigs.k8s.io/kwok/cmd/kwokctl
  # kwokctl reads its default stages from the module source.
  cp -r "$(go env GOMODCACHE)/sigs.k8s.io/kwok@$KWOK_VERSION/kustomize/stage" "$(cluster_cache_dir)/stages"
  chmod -R u+w "$(cluster_cache_dir)/stages"
}

build_provisioner() {
  # Rebuilt whenever its source changes (the stamp is a hash of it).
  local sum
  sum=$(cat "$here/provisioner/main.go" "$here/provisioner/go.mod" | sha256sum | cut -c1-16)
  [ -x "$bin/provisioner" ] && [ "$(cat "$bin/.provisioner.version" 2>/dev/null)" = "$sum" ] && return 0
  log "building the test volume provisioner against client-go ${KUBE_VERSION/v1./v0.}"
  local dir staging="v0.${KUBE_VERSION#v1.}"
  dir=$(prepare_module provisioner)
  cd "$dir"
  go get "k8s.io/client-go@$staging" "k8s.io/api@$staging" "k8s.io/apimachinery@$staging"
  go mod tidy
  # Built aside, then renamed: a running cluster keeps executing the old file.
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/provisioner.new" .
  mv -f "$bin/provisioner.new" "$bin/provisioner"
  echo "$sum" >"$bin/.provisioner.version"
}

# The cache key does not include HELM_VERSION (see versions.env): the version check below
# is what makes a bump rebuild helm, and only helm.
build_helm() {
  if [ -x "$bin/helm" ] &&
    [ "$("$bin/helm" version --template '{{.Version}}' 2>/dev/null)" = "$HELM_VERSION" ]; then
    return 0
  fi
  log "building helm $HELM_VERSION"
  local dir client_go major minor
  dir=$(prepare_module helm)
  cd "$dir"
  go get "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  # Helm's Makefile sets its default Kubernetes version (for `helm template`'s
  # .Capabilities) from the client-go it builds against: v0.<minor>.x is 1.<minor>.
  client_go=$(go list -m -f '{{.Version}}' k8s.io/client-go)
  major=1
  minor=$(echo "$client_go" | cut -d. -f2)
  local pkg=helm.sh/helm/v3
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w \
-X $pkg/internal/version.version=$HELM_VERSION -X $pkg/internal/version.gitTreeState=clean \
-X $pkg/pkg/lint/rules.k8sVersionMajor=$major -X $pkg/pkg/lint/rules.k8sVersionMinor=$minor \
-X $pkg/pkg/chartutil.k8sVersionMajor=$major -X $pkg/pkg/chartutil.k8sVersionMinor=$minor" \
    -o "$bin/helm" helm.sh/helm/v3/cmd/helm
}

# The real test node (NEURALLOG_REAL_NODE=1): kubelet and kube-proxy at the cluster's
# version, CoreDNS with only the plugins it needs, kube-router for network policies, and
# our own pause and server stand-in programs. Their versions are stamped beside them, so
# a bump in versions.env rebuilds just what changed.
node_stamp() { cat "$bin/.$1.version" 2>/dev/null || true; }
stamp_node() { echo "$2" >"$bin/.$1.version"; }

build_kubelet() {
  [ -x "$bin/kubelet" ] && [ -x "$bin/kube-proxy" ] && return 0
  log "building kubelet and kube-proxy $KUBE_VERSION"
  build_kube_cmds kube-node kubelet kube-proxy
}

build_coredns() {
  [ -x "$bin/coredns" ] && [ "$(node_stamp coredns)" = "$COREDNS_VERSION" ] && return 0
  log "building CoreDNS $COREDNS_VERSION (kubernetes plugin only, no forwarding)"
  local dir
  dir=$(prepare_module node/coredns)
  cd "$dir"
  go get "github.com/coredns/coredns@$COREDNS_VERSION"
  go mod tidy
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/coredns" .
  stamp_node coredns "$COREDNS_VERSION"
}

build_kube_router() {
  [ -x "$bin/kube-router" ] && [ "$(node_stamp kube-router)" = "$KUBE_ROUTER_VERSION" ] && return 0
  log "building kube-router $KUBE_ROUTER_VERSION"
  local dir pkg=github.com/cloudnativelabs/kube-router/v2
  dir=$(prepare_module node/kube-router)
  cd "$dir"
  go get "$pkg/cmd/kube-router@$KUBE_ROUTER_VERSION"
  CGO_ENABLED=0 go build -trimpath \
    -ldflags "-s -w -X $pkg/pkg/version.Version=$KUBE_ROUTER_VERSION -X $pkg/pkg/version.BuildDate=1970-01-01T00:00:00Z" \
    -o "$bin/kube-router" "$pkg/cmd/kube-router"
  stamp_node kube-router "$KUBE_ROUTER_VERSION"
}

# Static binaries for the pause and server stand-in images, rebuilt when their source
# changes (the stamp is a hash of it).
build_image_programs() {
  local src=$here/node/images sum
  sum=$(cd "$src" && find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum | cut -c1-16)
  [ -x "$bin/pause" ] && [ -x "$bin/server-standin" ] && [ "$(node_stamp images)" = "$sum" ] && return 0
  log "building the pause and server stand-in programs"
  cd "$src"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o "$bin/" ./pause ./server-standin
  stamp_node images "$sum"
}

build_node() {
  build_image_programs
  build_coredns
  build_kube_router
  build_kubelet
}

# promtool, for `promtool test rules` on the chart's alerts (tests/e2e_monitoring.rs).
build_promtool() {
  [ -x "$bin/promtool" ] && [ "$(node_stamp promtool)" = "$PROMETHEUS_VERSION" ] && return 0
  log "building promtool from Prometheus $PROMETHEUS_VERSION; a cold build takes a few minutes"
  local dir pkg=github.com/prometheus/common/version
  dir=$(prepare_module promtool)
  cd "$dir"
  go get "github.com/prometheus/prometheus/cmd/promtool@$PROMETHEUS_VERSION"
  CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X $pkg.Version=$PROMETHEUS_VERSION" \
    -o "$bin/promtool" github.com/prometheus/prometheus/cmd/promtool
  stamp_node promtool "$PROMETHEUS_VERSION"
}

# The Prometheus Operator's published CRDs (ServiceMonitor, PrometheusRule), as its module
# ships them, copied into the cache under their version: the monitoring test installs them.
build_prometheus_crds() {
  local dest
  dest=$(cluster_cache_dir)/prometheus-operator-$PROMETHEUS_OPERATOR_VERSION/crds
  [ -s "$dest/monitoring.coreos.com_prometheusrules.yaml" ] &&
    [ -s "$dest/monitoring.coreos.com_servicemonitors.yaml" ] && return 0
  log "fetching the Prometheus Operator $PROMETHEUS_OPERATOR_VERSION CRDs (Go module)"
  local module=github.com/prometheus-operator/prometheus-operator src
  src=$(go mod download -json "$module@$PROMETHEUS_OPERATOR_VERSION" |
    sed -nE 's/^[[:space:]]*"Dir": "(.*)",?$/\1/p')
  [ -d "$src/example/prometheus-operator-crd" ] || die "no example/prometheus-operator-crd in $module@$PROMETHEUS_OPERATOR_VERSION"
  mkdir -p "$dest.new"
  cp "$src"/example/prometheus-operator-crd/monitoring.coreos.com_{prometheusrules,servicemonitors}.yaml "$dest.new/"
  chmod u+w "$dest.new"/*
  rm -rf "$dest"
  mv "$dest.new" "$dest"
}

# What tests/e2e_monitoring.rs needs beyond the cluster and helm.
build_monitoring() {
  build_prometheus_crds
  build_promtool
}

start=$(date +%s)
components=${*:-kwok etcd kube provisioner helm}
for c in $components; do
  "build_$c"
done
log "control plane binaries ready in $bin ($(( $(date +%s) - start ))s)"
echo "$bin"
