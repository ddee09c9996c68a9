// Wrapper module that builds kube-apiserver, kube-controller-manager, kube-scheduler and
// kubectl from k8s.io/kubernetes. build.sh adds the release and its staging-module
// replace lines from versions.env at build time, in a copy of this directory.
module neurallog.io/operator/tests/cluster/kube

go 1.26
