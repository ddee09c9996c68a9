#!/usr/bin/env python3
"""What one write of a Tenant costs the API server, against a ConfigMap patch in the same
run: API server CPU-seconds (utime + stime from /proc) per request, for each kind of write
the operator makes of a Tenant, alternated with the baseline in ROUNDS rounds.

    scripts/bench-tenant-writes.py [--cluster-dir target/cluster] [--requests 1000] [--rounds 3]
                                   [--group neurallog.io]

Needs a running local cluster (`tests/cluster/cluster.sh up`) with the CRD applied, and
kubectl (or NEURALLOG_KUBECTL), and no operator running (it would provision the Tenant and
write its status too). Creates Tenant `bench-writes` and ConfigMap `bench-writes` in
`default`, and deletes both at the end. Each request changes something, as the
operator's writes do (an unchanged patch is cheaper). `--group` points it at a copy of the
CRD in another API group (a variant of the schema, to see what a part of it costs).
"""
import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import time

NAME = "bench-writes"


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def status(i):
    """A Running tenant's status as the operator writes it; `i` changes the journal position
    and, every other write, the phase."""
    running = i % 2 == 1
    phase = "Running" if running else "ProvisioningServer"
    return {
        "phase": phase,
        "namespace": f"tenant-{NAME}",
        "observedGeneration": 1,
        "redisStatus": {"phase": "Running", "message": "Redis is running",
                        "readyReplicas": 1, "totalReplicas": 1},
        "serverStatus": {"phase": phase,
                         "message": "Server is running" if running else "0/1 replicas ready",
                         "readyReplicas": int(running), "totalReplicas": 1},
        "conditions": [{"type": "Ready", "status": "True" if running else "False",
                        "reason": phase, "message": phase,
                        "lastTransitionTime": "2026-12-01T10:00:%02dZ" % (i % 60),
                        "observedGeneration": 1}],
        "journal": {"sequence": i + 1, "hash": "%064x" % i},
    }


class Api:
    def __init__(self, port):
        self.conn = http.client.HTTPConnection("127.0.0.1", port)

    def call(self, method, path, body=None, content_type="application/json"):
        headers = {"Content-Type": content_type} if body is not None else {}
        self.conn.request(method, path, None if body is None else json.dumps(body), headers)
        response = self.conn.getresponse()
        data = response.read()
        if response.status >= 300:
            sys.exit(f"{method} {path}: HTTP {response.status}: {data[:300]!r}")
        return json.loads(data)


CONFIGMAP = f"/api/v1/namespaces/default/configmaps/{NAME}"
MERGE = "application/merge-patch+json"


def writes(api, tenant):
    """Each kind of write: a function of the request number that makes one request."""
    last = {"tenant": api.call("GET", tenant + "/status")}

    def configmap_patch(i):
        api.call("PATCH", CONFIGMAP, {"data": {"status": json.dumps(status(i))}}, MERGE)

    def status_merge_patch(i):
        last["tenant"] = api.call("PATCH", tenant + "/status", {"status": status(i)}, MERGE)

    def status_put(i):
        # What a client that kept the last response could send: no read before the write.
        body = dict(last["tenant"], status=status(i))
        last["tenant"] = api.call("PUT", tenant + "/status", body)

    def metadata_merge_patch(i):
        # The size of the finalizer's patch: one metadata field.
        patch = {"metadata": {"annotations": {"neurallog.io/bench": str(i)}}}
        last["tenant"] = api.call("PATCH", tenant, patch, MERGE)

    return {
        "ConfigMap merge patch (baseline)": configmap_patch,
        "Tenant status merge patch": status_merge_patch,
        "Tenant status update (PUT)": status_put,
        "Tenant metadata merge patch": metadata_merge_patch,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cluster-dir", default="target/cluster")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--group", default="neurallog.io")
    args = parser.parse_args()
    tenants = f"/apis/{args.group}/v1/tenants"
    tenant = f"{tenants}/{NAME}"
    kubectl = [os.environ.get("NEURALLOG_KUBECTL", "kubectl"),
               "--kubeconfig", os.path.join(args.cluster_dir, "kubeconfig")]
    pid_file = os.path.join(args.cluster_dir, "kwok/clusters/neurallog/pids/kube-apiserver.pid")
    with open(pid_file) as f:
        apiserver = int(f.read().strip())
    port = free_port()
    proxy = subprocess.Popen(kubectl + ["proxy", f"--port={port}"], stdout=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.1)
        api = Api(port)
        api.call("POST", tenants, {
            "apiVersion": f"{args.group}/v1", "kind": "Tenant", "metadata": {"name": NAME},
            "spec": {"displayName": "Bench writes"}})
        api.call("POST", "/api/v1/namespaces/default/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": NAME}})
        api.call("PATCH", tenant + "/status", {"status": status(0)}, MERGE)
        kinds = writes(api, tenant)
        per_request = {name: [] for name in kinds}
        i = 1
        for _ in range(args.rounds):
            for name, write in kinds.items():
                before = cpu_seconds(apiserver)
                for _ in range(args.requests):
                    write(i)
                    i += 1
                per_request[name].append(1000 * (cpu_seconds(apiserver) - before) / args.requests)
        base = statistics.median(per_request["ConfigMap merge patch (baseline)"])
        print(f"API server CPU per request, median of {args.rounds} rounds of "
              f"{args.requests} (min-max), and against the ConfigMap patch:")
        for name, runs in per_request.items():
            median = statistics.median(runs)
            print(f"  {name:34} {median:5.2f} ms ({min(runs):.2f}-{max(runs):.2f})  "
                  f"{median / base:4.2f}x")
    finally:
        subprocess.run(kubectl + ["delete", f"tenants.{args.group}", NAME, "--ignore-not-found",
                                  "--wait=false"],
                       stdout=subprocess.DEVNULL)
        subprocess.run(kubectl + ["delete", "configmap", NAME, "-n", "default",
                                  "--ignore-not-found"], stdout=subprocess.DEVNULL)
        proxy.terminate()


if __name__ == "__main__":
    main()
