// Package deploytest holds the tests of the deployment files: the
// docker-compose.yml at the repository root, deploy/Dockerfile,
// deploy/nats/nats.conf and the Kubernetes manifests in deploy/k8s. No Docker
// engine or cluster is needed: the compose file is loaded with compose-go
// (the loader `docker compose` itself uses), the manifests are decoded
// strictly into the k8s.io/api types, nats.conf goes through nats-server's
// own parser, and every environment a container gets is passed through
// platform.FromEnv, so a variable the code does not read, or a value it
// rejects, fails here rather than in a cluster. The dashboard and alert
// rules of deploy/observability are loaded with Prometheus's own parsers and
// checked against the live /metrics of the services (those tests need the
// servers make test provides).
//
// The package has no non-test code.
package deploytest
