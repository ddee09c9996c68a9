// Wrapper module that builds promtool (alert rule tests of tests/e2e_monitoring.rs).
// build.sh adds the Prometheus release from versions.env. Kept apart from the others:
// Prometheus pins its own k8s.io/* and cloud SDK versions.
module neurallog.io/operator/tests/cluster/promtool

go 1.26
