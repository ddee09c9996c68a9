// Wrapper module that builds kwok and kwokctl. build.sh adds the release from versions.env.
module neurallog.io/operator/tests/cluster/kwok

go 1.26
