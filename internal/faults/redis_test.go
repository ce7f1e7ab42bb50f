package faults

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/auth"
	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/ratelimit"
	"treasure/internal/redisstore"
	"treasure/internal/stack/stacktest"
	"treasure/internal/testenv"
	"treasure/internal/testgraph"
)

const secret = "faults-secret"

// guard bounds every wait: a guard against hangs, not a timing assertion.
const guard = 60 * time.Second

// TestRedisFaultsUnderLoad runs the four services on a private Redis
// under load from players walking amsterdam, each on its own move socket,
// and puts Redis through the faults an operator meets:
//
//  1. SIGKILL mid-load, not restarted: every player keeps having moves
//     acked; the leaderboard is served (from PostgreSQL) on every poll;
//  2. restarted empty: players keep playing on their sockets, half of them
//     on new sockets, with no discontinuous (ingest writes back the
//     states it holds); the ranker rebuilds its board in Redis;
//  3. killed and at once restarted empty (faster than a health check):
//     the same.
//
// Over the whole run: every acked move has exactly one proximity result,
// for the node its acked path ended on; no move answered with an error
// (every unavailable is answered by a resend of the same seq with another
// path) has a result; no treasure is claimed twice; and the scores in
// PostgreSQL and in the rebuilt Redis board are the sums of the claims.
func TestRedisFaultsUnderLoad(t *testing.T) {
	t.Parallel()
	g, err := graph.LoadDIMACS(testgraph.Path(t, "amsterdam.gr.gz"))
	if err != nil {
		t.Fatal(err)
	}
	pr := testenv.PrivateRedis(t)
	rdb := pr.Client()
	sp := stacktest.Start(t, stacktest.Options{Graph: g, Secret: secret, Redis: rdb, Partitions: 3,
		RateLimit: ratelimit.Limit{Rate: 1e6, Burst: 1_000_000}})
	ingestWS := sp.IngestURL + "/v1/moves/ws"
	pushHTTP := "http://" + sp.Stack.PushAddr().String()
	ingestHTTP := "http://" + sp.Stack.IngestAddr().String()

	const players = 24
	ps := make([]*player, players)
	var treasures []string
	for i := range ps {
		ps[i] = newPlayer(t, g, i, ingestWS)
		// Treasures next to each spawn, so that walks claim some.
		for j, a := range g.Neighbors(ps[i].at) {
			if j == 3 {
				break
			}
			treasures = append(treasures, fmt.Sprintf(`{"id":"t%d-%d","node":%d,"points":%d}`, i, j, graph.ID(a.To), 1+j))
		}
	}
	adminTok, _ := auth.Sign(secret, "admin", "admin", time.Hour)
	req, _ := http.NewRequest(http.MethodPost, ingestHTTP+"/v1/admin/drops", strings.NewReader(`{"treasures":[`+strings.Join(treasures, ",")+`]}`))
	req.Header.Set("Authorization", "Bearer "+adminTok)
	if resp, err := http.DefaultClient.Do(req); err != nil || resp.StatusCode != http.StatusAccepted {
		t.Fatalf("drop: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}

	// The load: every player moves every few milliseconds until stop.
	var stop atomic.Bool
	var wg sync.WaitGroup
	for _, p := range ps {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !stop.Load() && p.fail == nil {
				p.step()
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	// Leaderboard polls: every one must answer 200.
	var polls, failedPolls atomic.Int64
	var pollMu sync.Mutex
	var pollErr []string
	pollDone := make(chan struct{})
	go func() {
		defer close(pollDone)
		for !stop.Load() {
			resp, err := http.Get(pushHTTP + "/v1/leaderboard?limit=10")
			polls.Add(1)
			if err != nil || resp.StatusCode != http.StatusOK {
				failedPolls.Add(1)
				pollMu.Lock()
				pollErr = append(pollErr, fmt.Sprint(resp, err))
				pollMu.Unlock()
			}
			if resp != nil {
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	defer func() { stop.Store(true); wg.Wait(); <-pollDone }()
	progress := func(what string, n int) {
		t.Helper()
		base := make([]int64, players)
		for i, p := range ps {
			base[i] = p.acks.Load()
		}
		testenv.WaitUntil(t, guard, what, func() bool {
			for i, p := range ps {
				if p.failed() != nil {
					t.Fatalf("player %d: %v", i, p.failed())
				}
				if p.acks.Load() < base[i]+int64(n) {
					return false
				}
			}
			return true
		})
	}

	progress("moves before the fault", 10)
	// 1. Redis killed and left down.
	pr.Kill()
	progress("moves with Redis down", 30)
	pollsDown := polls.Load()
	testenv.WaitUntil(t, guard, "leaderboard polls with Redis down", func() bool { return polls.Load() >= pollsDown+10 })

	// 2. Redis back, empty. Half the players reconnect.
	pr.Start()
	for i, p := range ps {
		if i%2 == 0 {
			p.reconnect.Store(true)
		}
	}
	progress("moves after Redis came back empty", 30)
	board := redisstore.New(rdb, sp.RedisPrefix)
	testenv.WaitUntil(t, guard, "the ranker to rebuild its Redis board", func() bool {
		empty, err := board.Empty(context.Background())
		return err == nil && !empty
	})

	// 3. Killed and restarted at once.
	pr.Kill()
	pr.Start()
	for i, p := range ps {
		if i%2 == 1 {
			p.reconnect.Store(true)
		}
	}
	progress("moves after a quick restart", 30)
	stop.Store(true)
	wg.Wait()
	<-pollDone
	for i, p := range ps {
		if p.failed() != nil {
			t.Fatalf("player %d: %v", i, p.failed())
		}
	}
	if n := failedPolls.Load(); n > 0 {
		t.Errorf("%d of %d leaderboard polls failed: %v", n, polls.Load(), pollErr[:min(len(pollErr), 3)])
	}

	// Every acked move's result, and nothing else.
	acked := map[string]uint32{} // player/seq → wire id of the acked path's end
	errored := 0
	for _, p := range ps {
		for seq, end := range p.acked {
			acked[fmt.Sprintf("%s/%d", p.id, seq)] = end
		}
		errored += p.errored
	}
	t.Logf("%d players, %d moves acked, %d answered unavailable, %d leaderboard polls", players, len(acked), errored, polls.Load())
	var out outputs
	testenv.WaitUntil(t, guard, "a result for every acked move", func() bool {
		out = readOut(t, sp)
		n := 0
		for k := range acked {
			if out.prox[k] != nil {
				n++
			}
		}
		return n == len(acked)
	})
	for k, r := range out.prox {
		end, ok := acked[k]
		switch {
		case !ok:
			t.Errorf("move %s has a result (node %d) but was never acked", k, r.Node)
		case r.Node != end:
			t.Errorf("move %s: result for node %d, but the acked path ended on %d (an errored path took effect)", k, r.Node, end)
		}
	}
	if out.dups > 0 {
		t.Errorf("%d moves have more than one result", out.dups)
	}
	if out.claimedTwice > 0 {
		t.Errorf("%d treasures claimed twice", out.claimedTwice)
	}
	if len(out.score) == 0 {
		t.Logf("no claims happened (the walks missed every treasure)")
	}
	// The scores, in PostgreSQL (the leaderboard endpoint falls back to it
	// only when Redis fails, so read both stores through redisstore and the
	// player endpoint once the ranker has caught up).
	testenv.WaitUntil(t, guard, "the Redis board to hold every claim", func() bool {
		top, _, err := board.Leaderboard(context.Background(), 1000)
		if err != nil {
			return false
		}
		got := map[string]int64{}
		for _, e := range top {
			got[e.Player] = e.Score
		}
		for p, s := range out.score {
			if got[p] != s {
				return false
			}
		}
		return len(got) == len(out.score)
	})
	for p, s := range out.score {
		var e struct{ Score int64 }
		resp, err := http.Get(pushHTTP + "/v1/players/" + p)
		if err != nil {
			t.Fatal(err)
		}
		json.NewDecoder(resp.Body).Decode(&e)
		resp.Body.Close()
		if e.Score != s {
			t.Errorf("player %s: score %d, claims sum to %d", p, e.Score, s)
		}
	}
	// Ingest wrote every player's state back to the restarted Redis.
	testenv.WaitUntil(t, guard, "every player state in Redis", func() bool {
		vals, err := rdb.HGetAll(context.Background(), sp.RedisPrefix+"players").Result()
		if err != nil {
			return false
		}
		for _, p := range ps {
			var seq uint64
			fmt.Sscan(vals[p.id], &seq)
			if seq != p.seq {
				return false
			}
		}
		return true
	})
}

// player walks the graph over one move socket, one move at a time.
type player struct {
	tb   testing.TB
	id   string
	g    *graph.Graph
	url  string
	tok  string
	r    *rand.Rand
	ws   *websocket.Conn
	at   uint32 // index of the node the last acked move ended on
	seq  uint64 // the last acked seq
	acks atomic.Int64
	// reconnect asks the walker to open a new socket before its next move.
	reconnect atomic.Bool

	acked   map[uint64]uint32 // seq → wire id of the acked path's end
	errored int
	// failAfter: after an unavailable, the next try of that seq is a
	// one-node path (ending elsewhere than the failed one).
	retrySeq uint64

	mu   sync.Mutex
	fail error
}

func newPlayer(tb testing.TB, g *graph.Graph, i int, url string) *player {
	r := rand.New(rand.NewPCG(uint64(i), 99))
	v := uint32(r.IntN(g.NumNodes()))
	for g.Degree(v) < 2 {
		v = uint32(r.IntN(g.NumNodes()))
	}
	tok, _ := auth.Sign(secret, fmt.Sprintf("walker-%02d", i), "", time.Hour)
	p := &player{tb: tb, id: fmt.Sprintf("walker-%02d", i), g: g, url: url, tok: tok, r: r, at: v, acked: map[uint64]uint32{}}
	if err := p.dial(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.ws.Close() })
	return p
}

func (p *player) dial() error {
	ws, _, err := websocket.DefaultDialer.Dial(p.url+"?token="+p.tok, nil)
	if err != nil {
		return err
	}
	if p.ws != nil {
		p.ws.Close()
	}
	p.ws = ws
	return nil
}

func (p *player) failed() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.fail
}

func (p *player) setFail(err error) {
	p.mu.Lock()
	p.fail = err
	p.mu.Unlock()
}

// step sends one move and reads its reply.
func (p *player) step() {
	if p.reconnect.CompareAndSwap(true, false) {
		if err := p.dial(); err != nil {
			p.setFail(fmt.Errorf("reconnect: %w", err))
			return
		}
	}
	seq := p.seq + 1
	path := []uint64{uint64(graph.ID(p.at))}
	if p.retrySeq != seq {
		at := p.at
		for range 1 + p.r.IntN(3) {
			arcs := p.g.Neighbors(at)
			at = arcs[p.r.IntN(len(arcs))].To
			path = append(path, uint64(graph.ID(at)))
		}
		if path[len(path)-1] == path[0] { // must end elsewhere than a one-node retry would
			path = path[:2]
		}
	}
	line, _ := json.Marshal(map[string]any{"type": "move", "seq": seq, "path": path})
	_ = p.ws.SetWriteDeadline(time.Now().Add(guard))
	if err := p.ws.WriteMessage(websocket.TextMessage, line); err != nil {
		p.setFail(fmt.Errorf("send seq %d: %w", seq, err))
		return
	}
	_ = p.ws.SetReadDeadline(time.Now().Add(guard))
	_, data, err := p.ws.ReadMessage()
	if err != nil {
		p.setFail(fmt.Errorf("reply to seq %d: %w", seq, err))
		return
	}
	var rep struct {
		Type, Code, Message string
		Seq                 uint64
	}
	if err := json.Unmarshal(bytes.TrimSpace(data), &rep); err != nil || rep.Seq != seq {
		p.setFail(fmt.Errorf("reply %q to seq %d: %v", data, seq, err))
		return
	}
	switch {
	case rep.Type == "ack":
		end := path[len(path)-1]
		p.acked[seq] = uint32(end)
		p.at, _ = graph.Index(end, p.g.NumNodes())
		p.seq = seq
		p.acks.Add(1)
	case rep.Code == "unavailable":
		// SPEC: a rejected move does not use up its seq; send another
		// path with it, so that the failed one taking effect shows.
		p.errored++
		p.retrySeq = seq
	default:
		p.setFail(fmt.Errorf("seq %d answered %s %s: %s", seq, rep.Type, rep.Code, rep.Message))
	}
}

// outputs is what the OUT stream holds.
type outputs struct {
	prox         map[string]*eventpb.ProximityResult
	dups         int
	claimedTwice int
	claims       int // treasures claimed (once)
	score        map[string]int64
}

func readOut(tb testing.TB, sp stacktest.Pipeline) outputs {
	tb.Helper()
	nc := testenv.ConnectNATS(tb, sp.NATSURL)
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	o := outputs{prox: map[string]*eventpb.ProximityResult{}, score: map[string]int64{}}
	claimed := map[string]bool{}
	var b eventpb.Batch
	ctx, cancel := context.WithTimeout(context.Background(), guard)
	defer cancel()
	err = natsjs.Replay(ctx, js, natsjs.ReplayOptions{Stream: sp.Topology.OutStream(), MaxWait: 200 * time.Millisecond},
		func(_ context.Context, msgs []natsjs.Msg) error {
			for _, m := range msgs {
				if strings.HasSuffix(m.Subject, ".rank") {
					continue
				}
				if err := event.Decode(m.Data, &b); err != nil {
					return err
				}
				for _, ev := range b.Events {
					if r := ev.GetProximity(); r != nil {
						k := fmt.Sprintf("%s/%d", r.Player, r.Seq)
						if o.prox[k] != nil {
							o.dups++
						}
						o.prox[k] = r
					}
					if c := ev.GetClaim(); c != nil {
						if claimed[c.Treasure] {
							o.claimedTwice++
							continue
						}
						claimed[c.Treasure] = true
						o.claims++
						o.score[c.Player] += int64(c.Points)
					}
				}
			}
			return nil
		})
	if err != nil {
		tb.Fatal(err)
	}
	return o
}
