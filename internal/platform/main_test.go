package platform

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests if any goroutine outlives them: the
// servers and groups here must stop everything they start.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
