package push

import (
	"slices"
	"testing"
)

func TestHopQueueKeepsLiveStampsInOrder(t *testing.T) {
	var h hopQueue
	h.add(hopStamp{result: 1, received: 10})
	h.add(hopStamp{}) // a claim, a score or a result read during catch-up
	h.add(hopStamp{result: 2})
	first := h.take()
	if want := []hopStamp{{1, 10}, {2, 0}}; !slices.Equal(first, want) {
		t.Fatalf("first take %v, want %v", first, want)
	}
	// Stamps queued while the first frame is written do not touch it.
	h.add(hopStamp{result: 3})
	h.add(hopStamp{result: 4})
	if want := []hopStamp{{1, 10}, {2, 0}}; !slices.Equal(first, want) {
		t.Fatalf("first take changed to %v by later adds", first)
	}
	if got, want := h.take(), []hopStamp{{3, 0}, {4, 0}}; !slices.Equal(got, want) {
		t.Fatalf("second take %v, want %v", got, want)
	}
	if got := h.take(); len(got) != 0 {
		t.Fatalf("take of an empty queue: %v", got)
	}
}

func TestHopQueueStopsAllocating(t *testing.T) {
	var h hopQueue
	for range 3 {
		for i := range 64 {
			h.add(hopStamp{result: int64(i + 1)})
		}
		h.take()
	}
	allocs := testing.AllocsPerRun(100, func() {
		for i := range 64 {
			h.add(hopStamp{result: int64(i + 1)})
		}
		h.take()
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per frame of 64 stamps once grown", allocs)
	}
}
