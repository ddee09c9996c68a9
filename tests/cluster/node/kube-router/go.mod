// Wrapper module for kube-router, of which the real test node runs only the network
// policy controller (iptables + ipset). build.sh adds the release from versions.env at
// build time, in a copy of this directory.
module neurallog.io/operator/tests/cluster/node/kube-router

go 1.26
