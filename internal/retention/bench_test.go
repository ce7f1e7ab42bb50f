//go:build unix

package retention

import (
	"syscall"
	"testing"
	"time"
)

// BenchmarkRetentionPass measures one pass of retention (Retainer.Once),
// which `treasure archive` runs once a minute (DefaultEvery) beside the
// archiver, in this process's CPU (user + system; the NATS server is
// another process). Every holder is in place (both proximity durables, the
// ranker, the archiver's keys) and, before each pass, a new checkpoint of
// each partition and of push is written and the oldest pruned, keeping 3,
// as a minute of checkpoints does: the pass lists them and fetches and
// checks the new oldest ones (its cache knows the rest). The checkpoints
// are small (a 4-node graph); a real one costs its transfer and CRC on top.
//
//	go test -run '^$' -bench RetentionPass -count 10 ./internal/retention
func BenchmarkRetentionPass(b *testing.B) {
	w := newWorld(b, 100_000)
	tp := w.topo
	in := w.publish(b, 200, tp.InSubject(0), tp.InSubject(1))
	out := w.publish(b, 200, tp.OutSubject(0), tp.OutSubject(1), tp.RankSubject())
	w.everythingAhead(b, in, out)
	lastIn := max(in[tp.InSubject(0)][199], in[tp.InSubject(1)][199])
	w.archive(b, KeyIn, lastIn)
	w.archive(b, KeyOut, out[tp.RankSubject()][199])
	r, _ := w.retainer(b, Options{MaxAge: DefaultMaxAge, Now: time.Now})
	once(b, r)
	ctx := ctxFor(b)
	var cpu time.Duration
	b.ResetTimer()
	for i := range b.N {
		b.StopTimer()
		for k := range tp.Partitions {
			w.proxCkpt(b, k, lastIn+uint64(i)+1)
			if err := w.store.Prune(ctx, k, 3); err != nil {
				b.Fatal(err)
			}
		}
		w.pushCkpt(b, out[tp.RankSubject()][199]+uint64(i)+1)
		if err := w.store.PushPrune(ctx, 3); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		c0 := cpuTime(b)
		once(b, r)
		cpu += cpuTime(b) - c0
	}
	b.ReportMetric(float64(cpu.Microseconds())/float64(b.N), "cpu-us/pass")
}

// cpuTime is the CPU time (user + system) this process has used so far.
func cpuTime(tb testing.TB) time.Duration {
	tb.Helper()
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
