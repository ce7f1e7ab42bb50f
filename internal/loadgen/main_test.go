package loadgen

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package's tests when a goroutine outlives them: Run
// must leave nothing behind.
func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }
