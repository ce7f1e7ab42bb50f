// Package scripttest tests the repository's shell scripts from Go, so that
// `go test ./...` runs them: scripts/services.sh against a PATH without
// the servers and with stub package managers that record what they are
// asked for.
package scripttest
