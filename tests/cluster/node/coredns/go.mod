// Wrapper module for a CoreDNS with only the plugins the real test node needs: it serves
// cluster.local from the API server and forwards nothing. build.sh adds the CoreDNS release
// from versions.env at build time, in a copy of this directory.
module neurallog.io/operator/tests/cluster/node/coredns

go 1.26
