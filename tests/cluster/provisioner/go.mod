// A tiny dynamic volume provisioner for the test cluster: kwok fakes pods, so nothing
// real is mounted; each claim of the default StorageClass gets a hostPath PV.
// build.sh pins k8s.io/client-go to the staging version of KUBE_VERSION.
module neurallog.io/operator/tests/cluster/provisioner

go 1.26
