// The two programs of our own in the real test node's images: a pause process for pod
// sandboxes and the NeuralLog server stand-in. Standard library only.
module neurallog.io/operator/tests/cluster/node/images

go 1.26
