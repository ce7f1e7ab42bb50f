package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/event"
	"treasure/internal/natsjs"
	"treasure/internal/platform"
	"treasure/internal/ratelimit"
	"treasure/internal/stack/stacktest"
	"treasure/internal/testenv"
	"treasure/services/proximity"
	"treasure/services/push"
)

// TestBurstPolicy is docs/operations.md's burst policy, end to end on the
// four services in this process: a burst larger than the pipeline's rate
// is absorbed into the backlog, answered unavailable with retry_after_ms
// only once the log is at its configured cap, and drained without loss.
//
// The pipeline's rate is made smaller than any burst by pausing the
// proximity workers' durable consumers (JetStream consumer pause, nats-server
// 2.11+: an embedded 2.15 server) while 12 players each send moves back to
// back into a log (P_IN) capped at 60 messages. Then:
//
//   - every move is acked until the log is full, and every move answered
//     unavailable was answered while it was full (the log only grows, so a
//     look right after the answer that finds room proves a refusal before
//     the limit), with retry_after_ms;
//   - the log holds exactly its cap, and exactly the acked moves;
//   - the backlog is all of it (treasure_proximity_backlog_messages too);
//   - once the consumers resume, every acked move gets its proximity update,
//     once, and no refused move does; the backlog drains to 0;
//   - the refused move sent again after its retry_after_ms is refused again
//     while the log is full (draining frees no room: the log keeps what it
//     holds), and acked once the cap is raised.
func TestBurstPolicy(t *testing.T) {
	t.Parallel()
	const (
		players = 12
		capMsgs = 60
	)
	g := amsterdam(t)
	url, _ := testenv.EmbeddedNATS(t)
	other := natsjs.Limits{MaxBytes: 16 << 20, MaxMsgs: 100_000}
	pipe, _ := startStack(t, stacktest.Options{NATSURL: url, Partitions: 2,
		StreamLimits: other, In: natsjs.Limits{MaxBytes: 8 << 20, MaxMsgs: capMsgs},
		RateLimit: ratelimit.Limit{Rate: 10_000, Burst: 10_000},
		// The leaderboard's default rate limit (stacktest's zero Limits
		// would turn it off).
		Limits: platform.Limits{LeaderboardRate: push.DefaultLeaderboardRate}})
	js, topo, d := pipe.js, pipe.topo, pipe.d
	ctx := context.Background()

	// The workers stop taking moves: the pipeline's rate is now 0.
	for k := 0; k < topo.Partitions; k++ {
		if _, err := js.PauseConsumer(ctx, topo.InStream(), proximity.Durable(topo, k), time.Now().Add(time.Hour)); err != nil {
			t.Fatalf("pause partition %d: %v", k, err)
		}
	}
	inStream, err := js.Stream(ctx, topo.InStream())
	if err != nil {
		t.Fatal(err)
	}
	inMsgs := func() uint64 {
		t.Helper()
		info, err := inStream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.State.Msgs
	}

	// The burst: every player sends moves back to back until one is refused.
	type player struct {
		name        string
		moves, push *socket
		path        [][]uint32 // path of move seq i+1
		acked       int
		refused     msg // the unavailable answer
		roomAtRefus uint64
	}
	ps := make([]*player, players)
	for i := range ps {
		p := &player{name: fmt.Sprintf("burst-%d", i)}
		tok := d.token(t, p.name, "")
		p.push = dial(t, ws(d.push)+"/v1/updates/ws?after=0", tok)
		p.moves = dial(t, ws(d.ingest)+"/v1/moves/ws", tok)
		// Spawn on a node with a neighbour, then go back and forth.
		at := uint32(1000 + 997*i)
		for g.Degree(at) == 0 {
			at++
		}
		nb := g.Neighbors(at)[0].To
		p.path = append(p.path, []uint32{at})
		for j := 0; j < 4*capMsgs; j++ {
			if j%2 == 0 {
				p.path = append(p.path, []uint32{at, nb})
			} else {
				p.path = append(p.path, []uint32{nb, at})
			}
		}
		ps[i] = p
	}
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Go(func() {
			for i, path := range p.path {
				seq := uint64(i + 1)
				p.moves.send(moveJSON(seq, graphIDs(path)...))
				m := p.moves.next(20 * time.Second)
				switch {
				case m.Type == "ack" && m.Seq == seq:
					p.acked++
				case m.Type == "error" && m.Code == "unavailable" && m.Seq == seq:
					p.roomAtRefus = capMsgs - inMsgs()
					p.refused = m
					return
				default:
					t.Errorf("%s move %d: %+v, want an ack or unavailable", p.name, seq, m)
					return
				}
			}
			t.Errorf("%s: %d moves acked, none refused: the log never filled", p.name, len(p.path))
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	acked := 0
	for _, p := range ps {
		acked += p.acked
		if p.roomAtRefus != 0 {
			t.Errorf("%s: move %d answered unavailable while the log had room for %d more messages", p.name, p.refused.Seq, p.roomAtRefus)
		}
		if p.refused.RetryAfterMS <= 0 {
			t.Errorf("%s: unavailable without retry_after_ms: %+v", p.name, p.refused)
		}
	}
	if n := inMsgs(); n != capMsgs {
		t.Fatalf("the log holds %d messages after the burst, want its cap %d", n, capMsgs)
	}
	if moves := countMoves(t, js, topo); moves != acked {
		t.Fatalf("the log holds %d moves, %d were acked", moves, acked)
	}
	t.Logf("burst: %d moves acked in %d log messages, then every player refused (retry_after_ms %d)", acked, capMsgs, ps[0].refused.RetryAfterMS)

	// Absorbed: the whole log is the backlog, as JetStream and /metrics say.
	backlog := func() (uint64, float64) {
		var n uint64
		for k := 0; k < topo.Partitions; k++ {
			c, err := js.Consumer(ctx, topo.InStream(), proximity.Durable(topo, k))
			if err != nil {
				t.Fatal(err)
			}
			info := c.CachedInfo()
			n += info.NumPending + uint64(info.NumAckPending)
		}
		return n, metricSum(t, d.ingest+"/metrics", "treasure_proximity_backlog_messages")
	}
	if n, m := backlog(); n != capMsgs || m != capMsgs {
		t.Fatalf("backlog %d (metric %v), want the %d messages of the burst", n, m, capMsgs)
	}

	// The drain: the workers resume; every acked move is answered once.
	for k := 0; k < topo.Partitions; k++ {
		if _, err := js.ResumeConsumer(ctx, topo.InStream(), proximity.Durable(topo, k)); err != nil {
			t.Fatalf("resume partition %d: %v", k, err)
		}
	}
	for _, p := range ps {
		seen := map[uint64]int{}
		p.push.until(60*time.Second, func(m msg) bool {
			if m.Type == "proximity" {
				seen[m.Seq]++
			}
			return len(seen) == p.acked
		})
		for seq := uint64(1); seq <= uint64(p.acked); seq++ {
			if seen[seq] != 1 {
				t.Errorf("%s move %d: %d proximity updates, want 1", p.name, seq, seen[seq])
			}
		}
	}
	testenv.WaitUntil(t, 30*time.Second, "backlog drained", func() bool { n, m := backlog(); return n == 0 && m == 0 })

	// Draining frees no room in the log: the refused move, sent again after
	// its retry_after_ms, is refused again until an operator raises the cap.
	p := ps[0]
	seq := p.refused.Seq
	time.Sleep(time.Duration(p.refused.RetryAfterMS) * time.Millisecond) // the client's wait, as SPEC tells it
	p.moves.send(moveJSON(seq, graphIDs(p.path[seq-1])...))
	if m := p.moves.next(20 * time.Second); m.Type != "error" || m.Code != "unavailable" {
		t.Fatalf("retry while the log is still full: %+v, want unavailable", m)
	}
	cfg := inStream.CachedInfo().Config
	cfg.MaxMsgs = 2 * capMsgs
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	p.moves.send(moveJSON(seq, graphIDs(p.path[seq-1])...))
	if m := p.moves.next(20 * time.Second); m.Type != "ack" || m.Seq != seq {
		t.Fatalf("retry once the cap is raised: %+v, want its ack", m)
	}
	p.push.until(30*time.Second, func(m msg) bool { return m.Type == "proximity" && m.Seq == seq })
	// No other player got an update for its refused move.
	for _, q := range ps[1:] {
		select {
		case m := <-q.push.in:
			if m.Type == "proximity" {
				t.Errorf("%s: an update %+v after the drain, for a move that was refused", q.name, m)
			}
		default:
		}
	}
}

// countMoves counts the move events in the log's IN stream.
func countMoves(t *testing.T, js jetstream.JetStream, topo natsjs.Topology) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	c, err := js.OrderedConsumer(ctx, topo.InStream(), jetstream.OrderedConsumerConfig{})
	if err != nil {
		t.Fatal(err)
	}
	info, err := js.Stream(ctx, topo.InStream())
	if err != nil {
		t.Fatal(err)
	}
	total := info.CachedInfo().State.Msgs
	var rd event.Reader
	moves := 0
	for n := uint64(0); n < total; n++ {
		m, err := c.Next(jetstream.FetchMaxWait(10 * time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := rd.Reset(m.Data()); err != nil {
			t.Fatal(err)
		}
		for rd.Next() {
			if rd.Kind() == event.KindMove {
				moves++
			}
		}
	}
	return moves
}

// metricSum reads url (a /metrics) and sums the samples of one metric.
func metricSum(t *testing.T, url, name string) float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		var v float64
		if _, err := fmt.Sscan(line[strings.LastIndexByte(line, ' ')+1:], &v); err != nil {
			t.Fatalf("%s: %q: %v", url, line, err)
		}
		sum += v
	}
	return sum
}
