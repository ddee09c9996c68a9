// Wrapper module that builds the etcd server. build.sh adds the release from versions.env.
// Kept apart from the Kubernetes module so grpc/otel versions do not move each other.
module neurallog.io/operator/tests/cluster/etcd

go 1.26
