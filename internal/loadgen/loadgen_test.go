package loadgen

import (
	"context"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"treasure/internal/game"
	"treasure/internal/graph"
)

// reports collects what Run reports.
type reports struct {
	mu  sync.Mutex
	all []Stats
}

func (r *reports) add(s Stats) {
	r.mu.Lock()
	r.all = append(r.all, s)
	r.mu.Unlock()
}

func (r *reports) list() []Stats {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]Stats(nil), r.all...)
}

// runUntil runs o against f until done reports true on the fake's totals
// (polled), then cancels and returns Run's error and the reports. A
// deadline fails the test instead of hanging it.
func runUntil(t *testing.T, o Options, f *fake, done func(fakeTotals) bool) (error, []Stats) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var rep reports
	errc := make(chan error, 1)
	go func() { errc <- Run(ctx, o, rep.add) }()
	deadline := time.Now().Add(30 * time.Second)
	for !done(f.totals()) {
		select {
		case err := <-errc:
			return err, rep.list()
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cancel()
			<-errc
			t.Fatalf("the fake never reached the expected state: %+v", f.totals())
		}
	}
	cancel()
	err := <-errc
	return err, rep.list()
}

func baseOptions(f *fake, g *graph.Graph, players int) Options {
	return Options{
		IngestURL:      f.url(),
		PushURL:        f.url(),
		Graph:          g,
		Players:        players,
		MovesPerSecond: 500,
		Secret:         fakeSecret,
		PlayerPrefix:   "p-",
		Seed:           1,
		ReportEvery:    20 * time.Millisecond,
	}
}

func final(t *testing.T, rep []Stats) Stats {
	t.Helper()
	if len(rep) == 0 || !rep[len(rep)-1].Final {
		t.Fatalf("no final report among %d", len(rep))
	}
	for _, s := range rep[:len(rep)-1] {
		if s.Final {
			t.Fatal("a report before the last one is marked final")
		}
	}
	return rep[len(rep)-1]
}

// TestRunAgainstFakeServices drives players through everything the wire
// contract throws at a client: rate limiting, a push socket dropped and
// resumed, an ingest socket dropped before an ack, batched frames with
// claims, scores and leaderboards. Every move must be valid, every
// accepted move counted once with its latency, and no update id lost.
func TestRunAgainstFakeServices(t *testing.T) {
	t.Parallel()
	g := amsterdam(t)
	const players, movesEach = 4, 30
	f := newFake(t, g, fakeOptions{rateLimitEvery: 7, dropPushAfter: 5, dropIngestAfter: 4, claimEvery: 5})
	err, rep := runUntil(t, baseOptions(f, g, players), f, func(ft fakeTotals) bool {
		if len(ft.players) < players {
			return false
		}
		for _, p := range ft.players {
			if p.moves < movesEach || !p.droppedP || !p.droppedI || p.pushConns < 2 {
				return false
			}
		}
		return true
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	s := final(t, rep)
	ft := f.totals()
	if ft.rejected != 0 {
		t.Fatalf("the fake rejected %d moves: %v", ft.rejected, ft.rejectedCodes)
	}
	if s.TotalMoves != uint64(ft.accepted) {
		t.Errorf("loadgen counted %d acked moves, the fake accepted %d", s.TotalMoves, ft.accepted)
	}
	if s.Gaps != 0 || s.Missing != 0 || s.Duplicates != 0 || s.Unmatched != 0 {
		t.Errorf("gaps %d missing %d duplicates %d unmatched %d, want all 0", s.Gaps, s.Missing, s.Duplicates, s.Unmatched)
	}
	if s.Updates != uint64(ft.accepted) || s.TotalLatency.Count != uint64(ft.accepted) {
		t.Errorf("%d updates, %d latency samples, want one per accepted move (%d)", s.Updates, s.TotalLatency.Count, ft.accepted)
	}
	if s.TotalLatency.Max <= 0 || s.TotalLatency.P50 > s.TotalLatency.P99 || s.TotalLatency.P99 > s.TotalLatency.Max {
		t.Errorf("latency %+v is not ordered", s.TotalLatency)
	}
	if s.Errors["rate_limited"] != uint64(ft.rateLimited) || ft.rateLimited == 0 {
		t.Errorf("loadgen counted %d rate_limited, the fake sent %d", s.Errors["rate_limited"], ft.rateLimited)
	}
	for code := range s.Errors {
		if code != "rate_limited" && code != "closed" {
			t.Errorf("unexpected errors: %v", s.Errors)
		}
	}
	// One push and one ingest drop per player, each reopened.
	if s.Reconnects != 2*players || s.Errors["closed"] != 2*players {
		t.Errorf("reconnects %d, closed %d, want %d each", s.Reconnects, s.Errors["closed"], 2*players)
	}
	if s.Claims != uint64(ft.claims) || s.Scores != uint64(ft.claims) || s.Leaderboards == 0 {
		t.Errorf("claims %d scores %d leaderboards %d, want %d, %d and some", s.Claims, s.Scores, s.Leaderboards, ft.claims, ft.claims)
	}
	if s.Sent <= s.TotalMoves {
		t.Errorf("sent %d frames for %d moves, want more (rate-limited and lost-ack resends)", s.Sent, s.TotalMoves)
	}
	if len(s.Top) != 2 || s.Top[0] != (game.Entry{Player: "alice", Score: 50, Rank: 1}) || s.Ranked != 2 || s.TopError != "" {
		t.Errorf("top %+v ranked %d (%q), want alice and bob", s.Top, s.Ranked, s.TopError)
	}
	if ft.boardQuery != "limit=5" {
		t.Errorf("leaderboard asked with %q, want limit=5", ft.boardQuery)
	}
	if s.IngestSockets != 0 || s.PushSockets != 0 {
		t.Errorf("%d ingest and %d push sockets open after the run", s.IngestSockets, s.PushSockets)
	}
	// Every player went on from its seq and node: the fake's state is the
	// end of the last move loadgen counted.
	for id, p := range ft.players {
		if uint64(p.moves) != p.state.Seq {
			t.Errorf("player %s: %d moves accepted, last seq %d: seqs were skipped", id, p.moves, p.state.Seq)
		}
	}
	// Reports in between are cumulative and never go back.
	var last uint64
	for _, r := range rep {
		if r.TotalMoves < last {
			t.Fatalf("total moves went back from %d to %d", last, r.TotalMoves)
		}
		last = r.TotalMoves
	}
}

// TestRunTreatsStaleResendAsAccepted: a server that does not recognise a
// retry answers stale_seq to the move resent after a lost ack; the
// player takes the move as accepted and goes on from its end.
func TestRunTreatsStaleResendAsAccepted(t *testing.T) {
	t.Parallel()
	g := amsterdam(t)
	const players = 3
	f := newFake(t, g, fakeOptions{dropIngestAfter: 2, forgetRetries: true})
	err, rep := runUntil(t, baseOptions(f, g, players), f, func(ft fakeTotals) bool {
		n := 0
		for _, p := range ft.players {
			if p.moves >= 10 && p.droppedI {
				n++
			}
		}
		return n == players
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	s := final(t, rep)
	ft := f.totals()
	if ft.rejectedCodes[game.CodeStaleSeq] != players || ft.rejected != players {
		t.Fatalf("fake rejections %v, want one stale_seq per player", ft.rejectedCodes)
	}
	if s.Resyncs != players || s.Errors["stale_seq"] != players || s.Errors["discontinuous"] != 0 {
		t.Errorf("resyncs %d errors %v, want %d stale_seq and nothing else", s.Resyncs, s.Errors, players)
	}
	// The move whose ack was lost counts as accepted, once.
	if s.TotalMoves != uint64(ft.accepted) || s.Missing != 0 || s.TotalLatency.Count != uint64(ft.accepted) {
		t.Errorf("moves %d (fake %d), missing %d, samples %d", s.TotalMoves, ft.accepted, s.Missing, s.TotalLatency.Count)
	}
}

// TestRunResynchronisesWithAnEarlierRun: the server knows the player at a
// higher seq on another node. The player climbs past the seq
// (stale_seq, doubling steps) and then moves to the node the
// discontinuous error names.
func TestRunResynchronisesWithAnEarlierRun(t *testing.T) {
	t.Parallel()
	g := amsterdam(t)
	spawn := newWalker(g, 1, 0).at
	other := spawn + 1
	for g.Degree(other) == 0 {
		other++
	}
	f := newFake(t, g, fakeOptions{preset: map[string]game.Player{"p-0": {Seq: 100, Node: other, Moved: true}}})
	err, rep := runUntil(t, baseOptions(f, g, 1), f, func(ft fakeTotals) bool { return ft.players["p-0"].moves >= 5 })
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	s := final(t, rep)
	// seq 1, 2, 4, …, 64 are stale; 128 is past 100; its spawn path is
	// discontinuous; a walk from the named node is accepted.
	if s.Errors["stale_seq"] != 7 || s.Errors["discontinuous"] != 1 || s.Resyncs != 8 || s.Errors[errDesync] != 0 {
		t.Errorf("errors %v, resyncs %d; want 7 stale_seq, 1 discontinuous, 8 resyncs", s.Errors, s.Resyncs)
	}
	ft := f.totals()
	if p := ft.players["p-0"]; p.state.Seq != 128+uint64(p.moves)-1 {
		t.Errorf("fake has seq %d after %d moves, want %d", p.state.Seq, p.moves, 128+p.moves-1)
	}
	if s.TotalMoves != uint64(ft.accepted) || s.Missing != 0 {
		t.Errorf("moves %d (fake %d), missing %d", s.TotalMoves, ft.accepted, s.Missing)
	}
}

// TestRunCountsGaps: a server that skips an update id is caught.
func TestRunCountsGaps(t *testing.T) {
	t.Parallel()
	g := amsterdam(t)
	const players = 3
	f := newFake(t, g, fakeOptions{skipID: true})
	err, rep := runUntil(t, baseOptions(f, g, players), f, func(ft fakeTotals) bool {
		n := 0
		for _, p := range ft.players {
			if p.moves >= 5 {
				n++
			}
		}
		return n == players
	})
	if err != nil {
		t.Fatalf("Run: %v", err)
	}
	if s := final(t, rep); s.Gaps != players {
		t.Fatalf("gaps %d, want %d (one skipped id per player)", s.Gaps, players)
	}
}

func TestRunStopsAfterDuration(t *testing.T) {
	t.Parallel()
	g := amsterdam(t)
	f := newFake(t, g, fakeOptions{})
	o := baseOptions(f, g, 2)
	o.Duration = 200 * time.Millisecond
	var rep reports
	if err := Run(context.Background(), o, rep.add); err != nil {
		t.Fatalf("Run: %v", err)
	}
	s := final(t, rep.list())
	if s.TotalMoves == 0 || s.Missing != 0 || s.Gaps != 0 {
		t.Fatalf("final %+v, want moves, none missing, no gaps", s)
	}
}

func TestRunRefusedByTheServices(t *testing.T) {
	t.Parallel()
	g := amsterdam(t)
	f := newFake(t, g, fakeOptions{})
	o := baseOptions(f, g, 3)
	o.Secret = "not-the-secret"
	var rep reports
	err := Run(context.Background(), o, rep.add)
	if err == nil || !strings.Contains(err.Error(), "401") || !strings.Contains(err.Error(), "TREASURE_JWT_SECRET") {
		t.Fatalf("Run with a wrong secret: %v, want a 401 naming the secret", err)
	}
	if strings.Contains(err.Error(), "token=") {
		t.Fatalf("the error shows the token: %v", err)
	}
	final(t, rep.list())
}

func TestRunWithNothingListening(t *testing.T) {
	t.Parallel()
	g := amsterdam(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	for _, c := range []struct {
		name              string
		connect, duration time.Duration
	}{
		{"connect timeout", 300 * time.Millisecond, 0},
		{"run ends first", 0, 300 * time.Millisecond},
	} {
		t.Run(c.name, func(t *testing.T) {
			o := Options{
				IngestURL: "ws://" + addr, PushURL: "ws://" + addr, Graph: g, Players: 2, MovesPerSecond: 1,
				Secret: "s", ConnectTimeout: c.connect, Duration: c.duration,
			}
			err := Run(context.Background(), o, func(Stats) {})
			if err == nil || !strings.Contains(err.Error(), "no socket opened") || !strings.Contains(err.Error(), addr) {
				t.Fatalf("Run with nothing listening: %v, want no socket opened, naming %s", err, addr)
			}
		})
	}
}

func TestRunRejectsBadOptions(t *testing.T) {
	t.Parallel()
	g := amsterdam(t)
	noEdges, err := graph.FromEdges(3, nil, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	good := Options{IngestURL: "ws://127.0.0.1:1", PushURL: "ws://127.0.0.1:2", Graph: g, Players: 1, MovesPerSecond: 1, Secret: "s"}
	cases := []struct {
		name string
		edit func(*Options)
		want string
	}{
		{"too many players for one process", func(o *Options) { o.Players = MaxPlayers + 1 }, "several loadgen processes"},
		{"no players", func(o *Options) { o.Players = 0 }, "at least 1"},
		{"no rate", func(o *Options) { o.MovesPerSecond = 0 }, "from 0.01 to 1000"},
		{"NaN rate", func(o *Options) { o.MovesPerSecond = nan() }, "from 0.01 to 1000"},
		{"absurd rate", func(o *Options) { o.MovesPerSecond = 1e6 }, "from 0.01 to 1000"},
		{"no secret", func(o *Options) { o.Secret = "" }, "secret"},
		{"no graph", func(o *Options) { o.Graph = nil }, "no graph"},
		{"graph without edges", func(o *Options) { o.Graph = noEdges }, "no edge"},
		{"http ingest url", func(o *Options) { o.IngestURL = "http://127.0.0.1:1" }, "ws://"},
		{"push url without host", func(o *Options) { o.PushURL = "ws://" }, "no host"},
		{"negative duration", func(o *Options) { o.Duration = -time.Second }, "negative"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := good
			c.edit(&o)
			called := false
			err := Run(context.Background(), o, func(Stats) { called = true })
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("Run: %v, want an error containing %q", err, c.want)
			}
			if called {
				t.Fatal("report called for a run that never started")
			}
		})
	}
}

func nan() float64 {
	zero := 0.0
	return zero / zero
}

func TestWSURLKeepsTheBasePath(t *testing.T) {
	t.Parallel()
	for _, c := range []struct{ base, want string }{
		{"ws://127.0.0.1:8081", "ws://127.0.0.1:8081/v1/moves/ws"},
		{"ws://127.0.0.1:8081/", "ws://127.0.0.1:8081/v1/moves/ws"},
		{"wss://example.test/treasure?x=1#f", "wss://example.test/treasure/v1/moves/ws"},
	} {
		u, err := wsURL(c.base, "/v1/moves/ws")
		if err != nil || u.String() != c.want {
			t.Errorf("wsURL(%q) = %v, %v; want %s", c.base, u, err, c.want)
		}
	}
}
