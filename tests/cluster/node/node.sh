# The real test node (NEURALLOG_REAL_NODE=1): containerd, runc and the CNI bridge, kubelet,
# kube-proxy (iptables), CoreDNS serving cluster.local only and kube-router's network
# policy controller, beside the kwok nodes. Sourced by cluster.sh, not executed.
#
# Everything of the node lives in a network namespace of its own (nl-<id>), entered with
# `nsenter --net` (the mount namespace stays the machine's, so the kubelet's volume mounts
# are the ones containerd sees). Its bridge, routes, iptables chains and ipsets exist only
# there: the machine's own routes, resolver and iptables rules are never touched, and a
# second cluster's node gets another namespace. The namespace has no route out, so no pod
# traffic can leave the machine. netns-proxy.py joins it to the control plane on loopback:
# the API server's port inside the namespace, and the API server's egress selector (its
# connections to the kubelet and to pods) through an HTTP CONNECT proxy on a Unix socket.
# Pods run under a cgroup of their own (/neurallog-<id>), so `down` finds every process.
# shellcheck shell=bash

node_name=neurallog-real-node
node_pod_cidr=10.244.0.0/24
node_ip=10.244.0.1
node_taint=neurallog.io/real-node
# The API server's default service range is 10.0.0.0/24 (kwokctl sets none).
node_kubernetes_service_ip=10.0.0.1

real_node_enabled() { [ "${NEURALLOG_REAL_NODE:-0}" = 1 ]; }

node_dir() { echo "$state/node"; }
node_id() { printf '%s' "$state" | sha256sum | cut -c1-8; }
node_netns() { echo "nl-$(node_id)"; }
node_cgroup() { echo "neurallog-$(node_id)"; }
node_sock() { echo "$(node_dir)/containerd/containerd.sock"; }
in_node() { nsenter --net="/var/run/netns/$(node_netns)" "$@"; }
ctr_() { ctr --address "$(node_sock)" -n k8s.io "$@"; }

# The kube-apiserver flags the node needs; cluster.sh adds them to the control plane. Pods
# reach the API server at the node's address (netns-proxy), which the Service
# `kubernetes` advertises and the serving certificate names (node_kwokctl_options).
node_apiserver_args() {
  cat <<EOF
  - {key: advertise-address, value: "$node_ip"}
  - {key: egress-selector-config-file, value: "$(node_dir)/egress-selector.yaml"}
  - {key: kubelet-preferred-address-types, value: "InternalIP"}
  - {key: feature-gates, value: "MutatingAdmissionPolicy=true"}
  - {key: runtime-config, value: "admissionregistration.k8s.io/v1beta1=true"}
EOF
}

node_kwokctl_options() {
  cat <<EOF
options:
  kubeApiserverCertSANs: ["$node_ip", "$node_kubernetes_service_ip"]
EOF
}

node_prepare_config() {
  mkdir -p "$(node_dir)"
  cat >"$(node_dir)/egress-selector.yaml" <<EOF
apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
- name: cluster
  connection:
    proxyProtocol: HTTPConnect
    transport:
      uds:
        udsName: $(node_dir)/egress.sock
EOF
}

node_install_packages() {
  local missing=()
  command -v containerd >/dev/null || missing+=(containerd)
  command -v runc >/dev/null || missing+=(runc)
  [ -x /usr/lib/cni/bridge ] || missing+=(containernetworking-plugins)
  command -v iptables >/dev/null || missing+=(iptables)
  command -v ipset >/dev/null || missing+=(ipset)
  command -v conntrack >/dev/null || missing+=(conntrack)
  [ -x /bin/busybox ] || missing+=(busybox-static)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v nsenter >/dev/null || missing+=(util-linux)
  [ "${#missing[@]}" = 0 ] && return 0
  [ "$(id -u)" = 0 ] || die "the real node needs root and these packages: ${missing[*]}"
  log "installing ${missing[*]}"
  apt-get update -qq >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  # Debian may start a system Redis or containerd; the node runs its own.
  service redis-server stop >/dev/null 2>&1 || true
  service containerd stop >/dev/null 2>&1 || true
}

# The kubelet sets these machine-wide sysctls at start; `down` puts back what was there.
node_kernel_tunables="vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes"

node_wait() {
  local what=$1 tries=$2
  shift 2
  local i
  for i in $(seq "$tries"); do
    "$@" >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  die "$what did not come up; logs are in $state/logs"
}

# Starts a node process in the background (its own session, so it outlives cluster.sh)
# and records its pid: `setsid` and `nsenter` exec, so $! is the process itself.
node_start() {
  local name=$1
  shift
  setsid "$@" >"$state/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$(node_dir)/$name.pid"
}
node_start_in() {
  local name=$1
  shift
  node_start "$name" nsenter --net="/var/run/netns/$(node_netns)" "$@"
}

node_up() {
  local dir netns cg api_port service_cidr dns_ip started
  started=$(date +%s)
  node_install_packages
  bash "$here/build.sh" node >/dev/null
  dir=$(node_dir)
  netns=$(node_netns)
  cg=$(node_cgroup)
  api_port=$(sed -nE 's#.*server: https://127\.0\.0\.1:([0-9]+).*#\1#p' "$kubeconfig" | head -n 1)
  service_cidr=$(tr '\0' '\n' <"/proc/$(cat "$kwok_dir/clusters/$cluster_name/pids/kube-apiserver.pid")/cmdline" |
    sed -nE 's/^--service-cluster-ip-range=(.*)/\1/p')
  service_cidr=${service_cidr:-10.0.0.0/24}
  dns_ip=${service_cidr%.*/*}.10
  mkdir -p "$dir"/{containerd,cni,cni-ipam,kubelet,pod-logs,images}
  log "starting the real node $node_name (netns $netns, pods $node_pod_cidr, DNS $dns_ip)"

  # Network namespace: loopback and the pods' bridge, nothing else. The first `ip netns
  # add` on a machine also makes /run/netns a mount point: down undoes that too.
  mountpoint -q /run/netns 2>/dev/null || touch "$dir/made-run-netns-mount"
  ip netns add "$netns"
  in_node ip link set lo up
  in_node ip link add nlbr0 type bridge
  in_node ip addr add "$node_ip/${node_pod_cidr#*/}" dev nlbr0
  in_node ip link set nlbr0 up
  in_node sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1

  # cgroup v1: the node's own root in every hierarchy (cpuset needs its cpus and mems).
  local h
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h" ] || continue
    mkdir -p "$h$cg"
    if [ -f "${h}cpuset.cpus" ]; then
      cat "${h}cpuset.cpus" >"$h$cg/cpuset.cpus"
      cat "${h}cpuset.mems" >"$h$cg/cpuset.mems"
    fi
  done

  local t
  for t in $node_kernel_tunables; do
    echo "$t=$(sysctl -n "$t")"
  done >"$dir/sysctl.saved"

  cat >"$dir/cni/10-neurallog.conflist" <<EOF
{"cniVersion": "0.4.0", "name": "neurallog-$(node_id)",
 "plugins": [{"type": "bridge", "bridge": "nlbr0", "isGateway": true, "ipMasq": false, "hairpinMode": true,
              "ipam": {"type": "host-local", "dataDir": "$dir/cni-ipam",
                       "ranges": [[{"subnet": "$node_pod_cidr", "gateway": "$node_ip"}]],
                       "routes": [{"dst": "0.0.0.0/0"}]}}]}
EOF

  local pause_ref
  pause_ref=$(bash "$here/node/images.sh" pause | awk '{print $2}')
  cat >"$dir/containerd.toml" <<EOF
version = 2
root = "$dir/containerd/root"
state = "$dir/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.tracing.processor.v1.otlp", "io.containerd.internal.v1.tracing"]
[grpc]
  address = "$(node_sock)"
[ttrpc]
  address = "$dir/containerd/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/containerd/opt"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$pause_ref"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
        Root = "$dir/runc"
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$dir/cni"
    max_conf_num = 1
EOF
  node_start_in containerd containerd --config "$dir/containerd.toml"
  node_wait containerd 150 ctr_ version

  node_import_images pause redis server-standin coredns

  # The API server's port inside the namespace, and its egress to the node.
  node_start netns-proxy python3 "$here/node/netns-proxy.py" --netns "/var/run/netns/$netns" \
    --forward "$api_port" --connect "$dir/egress.sock"
  node_wait netns-proxy 100 grep -q ready "$state/logs/netns-proxy.log"
  # Node components use the admin kubeconfig: this is a throwaway test cluster.
  "$bin/kubectl" --kubeconfig "$kubeconfig" config view --raw --minify --flatten >"$dir/kubeconfig"

  cat >"$dir/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$cg
address: $node_ip
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
authentication:
  anonymous: {enabled: true}
  webhook: {enabled: false}
authorization: {mode: AlwaysAllow}
clusterDomain: cluster.local
clusterDNS: [$dns_ip]
resolvConf: ""
containerRuntimeEndpoint: unix://$(node_sock)
podLogsDir: $dir/pod-logs
failSwapOn: false
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
evictionHard: {memory.available: "100Mi", nodefs.available: "1%", imagefs.available: "1%"}
registerWithTaints:
- {key: $node_taint, value: "true", effect: NoSchedule}
serializeImagePulls: false
maxPods: 30
EOF
  node_start_in kubelet "$bin/kubelet" --config "$dir/kubelet.yaml" --kubeconfig "$dir/kubeconfig" \
    --hostname-override "$node_name" --node-ip "$node_ip" --root-dir "$dir/kubelet" \
    --cert-dir "$dir/kubelet/pki" --node-labels "$node_taint=true" --v 1
  node_wait "the kubelet's node" 300 "$bin/kubectl" --kubeconfig "$kubeconfig" get node "$node_name"
  kubectl_ wait --for=condition=Ready "node/$node_name" --timeout=120s >/dev/null ||
    die "the real node did not become Ready; logs are in $state/logs"

  cat >"$dir/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $dir/kubeconfig}
hostnameOverride: $node_name
clusterCIDR: $node_pod_cidr
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$node_ip/32]
# Zero: leave the machine-wide conntrack limits and timeouts as they are.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  node_start_in kube-proxy "$bin/kube-proxy" --config "$dir/kube-proxy.yaml" --v 1

  # kube-router: only its network policy controller.
  node_start_in kube-router "$bin/kube-router" --kubeconfig "$dir/kubeconfig" \
    --hostname-override "$node_name" --run-firewall=true --run-router=false \
    --run-service-proxy=false --service-cluster-ip-range "$service_cidr" \
    --health-port 0 --metrics-port 0 --v 1

  node_coredns "$dns_ip" "$api_port"
  node_scheduling_policy
  log "real node ready in $(( $(date +%s) - started ))s"
}

# Imports locally built images (images.sh names) into the running node's containerd.
node_import_images() {
  local name ref archive
  while read -r name ref archive; do
    ctr_ images import "$archive" >/dev/null
    ctr_ images ls -q | grep -x "$ref" >/dev/null || die "image $ref was not imported from $archive"
  done < <(bash "$here/node/images.sh" "$@")
}

# CoreDNS as a pod in kube-system (tenant policies allow DNS to that namespace), behind the
# kube-dns Service at the kubelet's clusterDNS. It reads the API server through the
# namespace's end of netns-proxy and answers for cluster.local only: anything else is
# refused, nothing is forwarded.
node_coredns() {
  local dns_ip=$1 api_port=$2 ref
  ref=$(bash "$here/node/images.sh" coredns | awk '{print $2}')
  sed -e "s#server: https://127.0.0.1:$api_port#server: https://$node_ip:$api_port#" \
    "$(node_dir)/kubeconfig" >"$(node_dir)/pod-kubeconfig"
  kubectl_ -n kube-system create secret generic coredns-kubeconfig \
    --from-file=kubeconfig="$(node_dir)/pod-kubeconfig" --dry-run=client -o yaml | kubectl_ apply -f - >/dev/null
  kubectl_ apply -f - >/dev/null <<EOF
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    cluster.local:53 {
        errors
        ready :8181
        kubernetes cluster.local {
            kubeconfig /etc/coredns/kubeconfig/kubeconfig
        }
        cache 5
    }
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: coredns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      nodeSelector: {$node_taint: "true"}
      tolerations: [{key: $node_taint, operator: Exists, effect: NoSchedule}]
      automountServiceAccountToken: false
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        seccompProfile: {type: RuntimeDefault}
        # Port 53 without a capability. It must be 53 in the pod: network policies match
        # the port after the Service's translation (tenants allow egress to port 53).
        sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "53"}]
      containers:
      - name: coredns
        image: $ref
        imagePullPolicy: Never
        args: ["-conf", "/etc/coredns/Corefile"]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        securityContext:
          allowPrivilegeEscalation: false
          readOnlyRootFilesystem: true
          capabilities: {drop: [ALL]}
        readinessProbe:
          httpGet: {path: /ready, port: 8181}
        volumeMounts:
        - {name: config, mountPath: /etc/coredns}
        - {name: kubeconfig, mountPath: /etc/coredns/kubeconfig}
      volumes:
      - {name: config, configMap: {name: coredns}}
      - {name: kubeconfig, secret: {secretName: coredns-kubeconfig}}
---
apiVersion: v1
kind: Service
metadata: {name: kube-dns, namespace: kube-system, labels: {k8s-app: kube-dns}}
spec:
  clusterIP: $dns_ip
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, targetPort: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, targetPort: 53, protocol: TCP}
EOF
  kubectl_ -n kube-system rollout status deployment/coredns --timeout=120s >/dev/null ||
    die "CoreDNS did not become ready on the real node; see kubectl -n kube-system describe pod"
}

# Pods land on the real node only where a test asks for it: the node is tainted, and this
# policy adds the toleration and node selector to every pod whose containers all use the
# node's local images (localhost/neurallog-test/..., which only this node has): the
# tenants, clients and in-cluster operator of tests/e2e_real_node.rs. Every other pod,
# and so every test on kwok nodes, is left as it was.
node_scheduling_policy() {
  kubectl_ apply -f - >/dev/null <<EOF
apiVersion: admissionregistration.k8s.io/v1beta1
kind: MutatingAdmissionPolicy
metadata: {name: neurallog-real-node}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: [v1], operations: [CREATE], resources: [pods]}
  matchConditions:
  - name: local-images-only
    expression: "object.spec.containers.all(c, c.image.startsWith('localhost/neurallog-test/'))"
  failurePolicy: Fail
  reinvocationPolicy: Never
  # JSON patches: nodeSelector and tolerations are atomic, which an apply configuration
  # may not change.
  mutations:
  - patchType: JSONPatch
    jsonPatch:
      expression: >-
        [
          JSONPatch{op: "add", path: "/spec/nodeSelector", value: {"$node_taint": "true"}},
          JSONPatch{op: "add", path: "/spec/tolerations",
            value: (has(object.spec.tolerations) ? object.spec.tolerations : []) +
              [Object.spec.tolerations{key: "$node_taint", operator: "Exists", effect: "NoSchedule"}]}
        ]
---
apiVersion: admissionregistration.k8s.io/v1beta1
kind: MutatingAdmissionPolicyBinding
metadata: {name: neurallog-real-node}
spec:
  policyName: neurallog-real-node
EOF
}

# Stops the node and removes all it made: processes (the kubelet first, then every
# process in the node's cgroups, then containerd and its shims), mounts under the state
# directory, the network namespace (its bridge, veths, iptables rules and ipsets go with
# it), the cgroups, kubelet symlinks in /var/log/containers, and the kernel tunables the
# kubelet changed. Safe to run on a half-started or already stopped node.
node_down() {
  local dir netns cg
  dir=$(node_dir)
  netns=$(node_netns)
  cg=$(node_cgroup)
  [ -d "$dir" ] || [ -e "/var/run/netns/$netns" ] || [ -d "/sys/fs/cgroup/pids/$cg" ] || return 0
  local p pid
  for p in kubelet kube-proxy kube-router; do
    pid=$(cat "$dir/$p.pid" 2>/dev/null) && kill "$pid" 2>/dev/null || true
  done
  for p in kubelet kube-proxy kube-router; do
    pid=$(cat "$dir/$p.pid" 2>/dev/null) || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  # Every container process, pause included, is in the node's cgroup tree.
  local procs round
  for round in $(seq 50); do
    procs=$(find "/sys/fs/cgroup/pids/$cg" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u || true)
    [ -z "$procs" ] && break
    # shellcheck disable=SC2086
    kill -9 $procs 2>/dev/null || true
    sleep 0.1
  done
  [ -z "$procs" ] || log "warning: processes still in cgroup $cg: $procs"
  # With their containers gone, the shims exit when containerd removes the tasks; then
  # containerd itself stops. Whatever is left is killed by cmdline (cluster.sh).
  local containers=""
  if [ -S "$(node_sock)" ]; then
    containers=$(timeout 20 ctr --address "$(node_sock)" -n k8s.io containers ls -q 2>/dev/null || true)
    local id
    for id in $(timeout 20 ctr --address "$(node_sock)" -n k8s.io tasks ls -q 2>/dev/null); do
      timeout 10 ctr --address "$(node_sock)" -n k8s.io tasks delete -f "$id" >/dev/null 2>&1 || true
    done
  fi
  for p in containerd netns-proxy; do
    pid=$(cat "$dir/$p.pid" 2>/dev/null) && kill "$pid" 2>/dev/null || true
  done
  for p in containerd netns-proxy; do
    pid=$(cat "$dir/$p.pid" 2>/dev/null) || continue
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
  done
  local shims
  shims=$(pgrep -f -- "containerd-shim.*-address $(node_sock)" || true)
  # shellcheck disable=SC2086
  [ -n "$shims" ] && kill -9 $shims 2>/dev/null || true
  # Mounts: deepest first; a busy one is detached.
  local m
  for round in 1 2 3; do
    mapfile -t mounts < <(awk -v d="$state/" 'index($5, d) == 1 {print $5}' /proc/self/mountinfo | sort -r)
    [ "${#mounts[@]}" = 0 ] && break
    for m in "${mounts[@]}"; do
      umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true
    done
  done
  [ -e "/var/run/netns/$netns" ] && ip netns del "$netns" 2>/dev/null
  if [ -f "$dir/made-run-netns-mount" ] && [ -z "$(ls -A /run/netns 2>/dev/null)" ]; then
    umount /run/netns 2>/dev/null || true
  fi
  local h d
  for h in /sys/fs/cgroup/*/; do
    [ -d "$h$cg" ] || continue
    find "$h$cg" -depth -type d | while read -r d; do rmdir "$d" 2>/dev/null || true; done
  done
  # libcni's cache of results (its directory is not configurable in containerd 1.6).
  rm -f /var/lib/cni/results/"neurallog-$(node_id)"-*
  local c
  for c in $containers; do rm -f "/var/lib/cni/results/cni-loopback-$c-lo"; done
  local l
  for l in /var/log/containers/*.log; do
    [ -L "$l" ] && [[ $(readlink "$l") == "$dir/"* ]] && rm -f "$l"
  done
  if [ -f "$dir/sysctl.saved" ]; then
    while IFS= read -r t; do sysctl -qw "$t" >/dev/null 2>&1 || true; done <"$dir/sysctl.saved"
  fi
  return 0
}
