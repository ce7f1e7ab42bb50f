//go:build unix

package archive

import (
	"context"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
)

// benchMoves is the size of BenchmarkArchiveMillionMoves's log.
const benchMoves = 1_000_000

// benchLog returns n moves, batchSize per message, over 4 partitions at
// rate moves/s of JetStream time, as IN would hold them (36-character
// player ids, paths of 6 to 12 nodes of a 2.3 M-node city), and the
// proximity results of those moves as OUT would hold them (one per move, a
// nearest treasure for half of them, hop timestamps per batch).
func benchLog(tb testing.TB, n, batchSize int, rate float64) (in, out []natsjs.Msg) {
	tb.Helper()
	in, out, err := makeLog("bench", n, batchSize, rate)
	if err != nil {
		tb.Fatal(err)
	}
	return in, out
}

// makeLog is benchLog's log on the subjects of prefix (<prefix>.in.<k>,
// <prefix>.out.<k>, k < 4), for a process that has no testing.TB (the
// publisher of BenchmarkArchiverLive).
func makeLog(prefix string, n, batchSize int, rate float64) (in, out []natsjs.Msg, err error) {
	r := rand.New(rand.NewPCG(1, 2))
	players := make([]string, 35_000)
	for i := range players {
		players[i] = fmt.Sprintf("6f1c2e0a-%04x-4d2b-9a51-%012x", r.IntN(1<<16), r.Uint64N(1<<48))
	}
	seqs := make([]uint64, len(players))
	t0 := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	var ib, ob event.Builder
	var path [12]uint32
	for done := 0; done < n; {
		part := (done / batchSize) % 4
		at := t0.Add(time.Duration(float64(done) / rate * float64(time.Second)))
		ib.Reset()
		ob.Reset()
		_ = ob.SetHops(event.Hops{InputPublished: at.UnixNano(), InputConsumed: at.UnixNano() + 300_000})
		for k := 0; k < batchSize && done < n; k++ {
			p := r.IntN(len(players))
			seqs[p]++
			node := 1 + r.Uint32N(2_300_000)
			pl := path[:6+r.IntN(7)]
			for j := range pl {
				pl[j] = node
				node = 1 + (node+r.Uint32N(50))%2_300_000
			}
			mv := &eventpb.MoveAccepted{Player: players[p], Seq: seqs[p], PrevSeq: seqs[p] - 1, Path: pl,
				IngestUnixNanos: at.UnixNano(), Partition: uint32(part)}
			if err := ib.AddMove(mv); err != nil {
				return nil, nil, err
			}
			res := &eventpb.ProximityResult{Player: players[p], Seq: seqs[p], PrevSeq: seqs[p] - 1, Node: pl[len(pl)-1],
				Move: &eventpb.LogPosition{StreamSeq: uint64(len(in) + 1), Index: uint32(k)}, IngestUnixNanos: at.UnixNano()}
			if r.IntN(2) == 0 {
				res.Treasure = &eventpb.NearestTreasure{Id: fmt.Sprintf("t%05d", r.IntN(20_000)), Node: 1 + r.Uint32N(2_300_000), Distance: r.Uint64N(2000)}
			}
			if err := ob.Add(&eventpb.Event{Kind: &eventpb.Event_Proximity{Proximity: res}}); err != nil {
				return nil, nil, err
			}
			done++
		}
		in = append(in, natsjs.Msg{Subject: fmt.Sprintf("%s.in.%d", prefix, part), Seq: uint64(len(in) + 1), Time: at, Data: append([]byte(nil), ib.Bytes()...)})
		out = append(out, natsjs.Msg{Subject: fmt.Sprintf("%s.out.%d", prefix, part), Seq: uint64(len(out) + 1), Time: at.Add(time.Millisecond), Data: append([]byte(nil), ob.Bytes()...)})
	}
	return in, out, nil
}

// archiveMsgs writes msgs through the archiver's segments (1-minute
// windows, the size caps), as the Archiver does, without NATS.
func archiveMsgs(tb testing.TB, dir, stream string, msgs []natsjs.Msg) {
	tb.Helper()
	codec, err := newZstdCodec()
	if err != nil {
		tb.Fatal(err)
	}
	var seg *segment
	for _, m := range msgs {
		win := windowOf(m.Time, DefaultSegment)
		if seg != nil && (!seg.window.Equal(win) || seg.rows >= DefaultMaxRows || seg.payload >= DefaultMaxBytes) {
			if _, err := seg.commit(nil); err != nil {
				tb.Fatal(err)
			}
			seg = nil
		}
		if seg == nil {
			seg = newSegment(filepath.Join(dir, stream), stream, codec, m.Seq, win)
		}
		if err := seg.add(m); err != nil {
			tb.Fatal(err)
		}
	}
	if _, err := seg.commit(nil); err != nil {
		tb.Fatal(err)
	}
}

func dirBytes(tb testing.TB, dir string) int64 {
	tb.Helper()
	var n int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		n += info.Size()
		return err
	})
	if err != nil {
		tb.Fatal(err)
	}
	return n
}

// BenchmarkArchiveMillionMoves measures the archive's size per million
// moves (IN: the moves; OUT: their proximity results), the cost of
// writing them, and the time to read the million moves back through the
// reader (Archive.Read: Parquet decode, batches rebuilt as the log's
// messages). Run once:
//
//	go test -run '^$' -bench ArchiveMillionMoves -benchtime 1x ./internal/archive
func BenchmarkArchiveMillionMoves(b *testing.B) {
	for range b.N {
		dir := b.TempDir()
		inMsgs, outMsgs := benchLog(b, benchMoves, 8, 10_000)
		in, out := "bench_IN", "bench_OUT"
		var payload int64
		for _, m := range inMsgs {
			payload += int64(len(m.Data))
		}
		t0, c0 := time.Now(), cpuTime(b)
		archiveMsgs(b, dir, in, inMsgs)
		writeIn, cpuIn := time.Since(t0), cpuTime(b)-c0
		t0, c0 = time.Now(), cpuTime(b)
		archiveMsgs(b, dir, out, outMsgs)
		writeOut, cpuOut := time.Since(t0), cpuTime(b)-c0
		inBytes, outBytes := dirBytes(b, filepath.Join(dir, in)), dirBytes(b, filepath.Join(dir, out))

		t0, c0 = time.Now(), cpuTime(b)
		moves, msgs := 0, 0
		var rd event.Reader
		err := Open(dir).Read(context.Background(), in, ReadOptions{}, func(_ context.Context, ms []natsjs.Msg) error {
			for _, m := range ms {
				if err := rd.Reset(m.Data); err != nil {
					return err
				}
				moves += rd.Len()
				msgs++
			}
			return nil
		})
		read, cpuRead := time.Since(t0), cpuTime(b)-c0
		if err != nil {
			b.Fatal(err)
		}
		if moves != benchMoves {
			b.Fatalf("read %d moves back, wrote %d", moves, benchMoves)
		}
		perM := float64(benchMoves) / 1e6
		b.ReportMetric(float64(inBytes)/perM/(1<<20), "IN-MiB/Mmoves")
		b.ReportMetric(float64(outBytes)/perM/(1<<20), "OUT-MiB/Mmoves")
		b.ReportMetric(float64(payload)/perM/(1<<20), "IN-log-MiB/Mmoves")
		b.ReportMetric(writeIn.Seconds()/perM, "write-IN-s/Mmoves")
		b.ReportMetric(writeOut.Seconds()/perM, "write-OUT-s/Mmoves")
		b.ReportMetric(read.Seconds()/perM, "read-s/Mmoves")
		b.ReportMetric(cpuIn.Seconds()/perM, "write-IN-cpu-s/Mmoves")
		b.ReportMetric(cpuOut.Seconds()/perM, "write-OUT-cpu-s/Mmoves")
		b.ReportMetric(cpuRead.Seconds()/perM, "read-cpu-s/Mmoves")
		b.ReportMetric(float64(msgs), "IN-messages")
	}
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
