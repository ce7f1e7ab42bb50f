package backoff

import (
	"context"
	"testing"
	"time"
)

func TestNextDoublesUpToMaxAndResets(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		b    Backoff
		want []time.Duration
	}{
		{"zero value takes the defaults", Backoff{}, []time.Duration{100e6, 200e6, 400e6, 800e6, 1600e6, 3200e6, 5e9, 5e9}},
		{"base and max", Backoff{Base: 50 * time.Millisecond, Max: 2 * time.Second}, []time.Duration{50e6, 100e6, 200e6, 400e6, 800e6, 1600e6, 2e9, 2e9}},
		{"base above max starts at max", Backoff{Base: 3 * time.Second, Max: time.Second}, []time.Duration{1e9, 1e9}},
		{"factor 4", Backoff{Base: 20 * time.Millisecond, Max: time.Second, Factor: 4}, []time.Duration{20e6, 80e6, 320e6, 1e9, 1e9}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			b := c.b
			for i, w := range c.want {
				if got := b.Next(); got != w {
					t.Fatalf("wait %d = %v, want %v", i, got, w)
				}
			}
			b.Reset()
			if got := b.Next(); got != c.want[0] {
				t.Fatalf("after Reset: %v, want %v", got, c.want[0])
			}
		})
	}
}

func TestJitterStaysInTheUpperHalf(t *testing.T) {
	t.Parallel()
	b := Backoff{Base: 64 * time.Millisecond, Max: 256 * time.Millisecond, Jitter: true}
	plain := Backoff{Base: 64 * time.Millisecond, Max: 256 * time.Millisecond}
	distinct := map[time.Duration]bool{}
	for i := 0; i < 200; i++ {
		d, full := b.Next(), plain.Next()
		if d < full/2 || d > full {
			t.Fatalf("wait %d = %v, want in [%v, %v]", i, d, full/2, full)
		}
		distinct[d] = true
	}
	if len(distinct) < 10 {
		t.Fatalf("%d distinct waits over 200: no jitter", len(distinct))
	}
}

func TestSleepEndsWithItsContext(t *testing.T) {
	t.Parallel()
	if !Sleep(t.Context(), time.Microsecond) {
		t.Fatal("Sleep of 1 µs on a live context reported false")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Fatal("Sleep on a cancelled context reported true")
	}
	b := Backoff{Base: time.Hour}
	if b.Wait(ctx) {
		t.Fatal("Wait on a cancelled context reported true")
	}
	stop := make(chan struct{})
	close(stop)
	if SleepOr(t.Context(), stop, time.Hour) {
		t.Fatal("SleepOr with a closed stop reported true")
	}
	if !SleepOr(t.Context(), make(chan struct{}), time.Microsecond) {
		t.Fatal("SleepOr of 1 µs with an open stop reported false")
	}
}
