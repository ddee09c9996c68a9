#!/usr/bin/env bash
# The load-independent figures of one operator binary, without the baseline: on a
# running cluster, the operator converges N new Tenants to Running; prints reconcile
# passes per tenant, its CPU-seconds (utime + stime) and peak RSS, and the API server's
# requests (writes by verb and resource, reads by verb) during convergence.
#
#   scripts/bench-passes.sh OPERATOR_BIN N LABEL [KUBECONFIG]
#
# Needs python3 (an in-memory Auth stub), kubectl and jq on PATH (or NEURALLOG_KUBECTL).
set -euo pipefail
bin=$1 n=$2 label=$3
kubeconfig=${4:-target/cluster/kubeconfig}
kubectl=${NEURALLOG_KUBECTL:-kubectl}
k() { "$kubectl" --kubeconfig "$kubeconfig" "$@"; }
work=$(mktemp -d /tmp/bench-passes.XXXXXX)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
auth_port=$(free_port) metrics_port=$(free_port)
python3 "$(dirname "$0")/auth_stub.py" "$auth_port" & auth_pid=$!
"$bin" run --kubeconfig "$kubeconfig" --journal "$work/journal" \
  --auth-url "http://127.0.0.1:$auth_port" --metrics-addr "127.0.0.1:$metrics_port" \
  --concurrency 16 --tenant-selector "bench-passes=$label" > "$work/operator.log" 2>&1 & op_pid=$!
trap 'kill $op_pid $auth_pid 2>/dev/null || true' EXIT
until curl -sf "http://127.0.0.1:$metrics_port/readyz" > /dev/null; do sleep 0.2; done
cpu() { awk '{ print $14 + $15 }' "/proc/$op_pid/stat"; }
k get --raw /metrics | grep '^apiserver_request_total{' > "$work/before.txt"
cpu_before=$(cpu)
started=$(date +%s.%N)
for i in $(seq 1 "$n"); do
  printf -- '---\napiVersion: neurallog.io/v1\nkind: Tenant\nmetadata:\n  name: %s-%d\n  labels: {bench-passes: %s}\nspec:\n  displayName: Bench %d\n' "$label" "$i" "$label" "$i"
done > "$work/tenants.yaml"
k apply -f "$work/tenants.yaml" > /dev/null
while :; do
  running=$(k get tenants -l "bench-passes=$label" -o json | jq '[.items[] | select(.status.phase == "Running")] | length')
  [ "$running" -ge "$n" ] && break
  sleep 1
done
seconds=$(echo "$(date +%s.%N) - $started" | bc)
cpu_after=$(cpu)
k get --raw /metrics | grep '^apiserver_request_total{' > "$work/after.txt"
metrics=$(curl -sf "http://127.0.0.1:$metrics_port/metrics")
passes=$(echo "$metrics" | awk '/^neurallog_tenant_reconciliation_duration_seconds_count/ { s += $NF } END { print s + 0 }')
errors=$(echo "$metrics" | awk '/^neurallog_reconcile_errors_total/ { s += $NF } END { print s + 0 }')
hwm=$(awk '/VmHWM/ { print $2 }' "/proc/$op_pid/status")
# What the resident memory is made of at the end: the heap and stacks (anonymous) and
# the binary's pages read from its file (code: shared, clean, but counted in RSS).
rss_parts=$(awk '/^Rss(Anon|File)/ { printf "%s %d MiB ", $1, $2 / 1024 }' "/proc/$op_pid/status")
python3 - "$work/before.txt" "$work/after.txt" "$n" <<'PY'
import re, sys, collections
def load(path):
    out = collections.Counter()
    for line in open(path):
        labels, value = line.rsplit(' ', 1)
        l = dict(re.findall(r'(\w+)="([^"]*)"', labels))
        res = l.get('resource', '') + ('/' + l['subresource'] if l.get('subresource') else '')
        code = '' if l.get('code', '').startswith('2') else ' (%s)' % l.get('code')
        out[(l.get('verb'), res + code)] += float(value)
    return out
before, after, n = load(sys.argv[1]), load(sys.argv[2]), int(sys.argv[3])
delta = {k: after[k] - before.get(k, 0) for k in after if after[k] - before.get(k, 0) > 0}
for kind, verbs in (("writes", {"POST", "PUT", "PATCH", "DELETE", "APPLY"}), ("reads", {"GET", "LIST", "WATCH"})):
    rows = sorted(((v, r, c) for (v, r), c in delta.items() if v in verbs), key=lambda x: -x[2])
    total = sum(c for _, _, c in rows)
    print(f"apiserver {kind}: {total:.0f} ({total / n:.1f} per tenant)")
    for v, r, c in rows[:12]:
        print(f"  {v} {r}: {c:.0f}")
PY
echo "tenants $n; converged in $seconds s; passes $passes + $errors failed = $(echo "scale=2; ($passes + $errors) / $n" | bc) per tenant"
echo "operator CPU $(echo "$cpu_after - $cpu_before" | bc) ticks = $(echo "scale=1; ($cpu_after - $cpu_before) / 100 * 1000 / $n" | bc) CPU-s per 1,000 tenants; peak RSS $((hwm / 1024)) MiB; at the end ${rss_parts% }"
echo "log: $work/operator.log"
