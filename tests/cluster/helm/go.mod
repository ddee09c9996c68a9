// Wrapper module that builds the helm CLI. build.sh adds the release from versions.env.
// Kept apart from the Kubernetes module: helm pins its own k8s.io/* versions.
module neurallog.io/operator/tests/cluster/helm

go 1.26
