package ingest

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/wire"
)

// Handler returns the service's routes:
//
//	GET  /v1/moves/ws      serveWS
//	POST /v1/moves         serveMoves
//	POST /v1/admin/drops   serveDrops
//
// Every error body is the WebSocket error object
// {"type":"error","seq":S,"code":C,"message":M[,"retry_after_ms":R]}
// (seq 0 when no move is concerned); 429 and 503 also carry Retry-After
// (whole seconds, rounded up). A client address with MaxConnsPerAddr
// requests or sockets in progress gets 429 rate_limited for one more.
func (in *Ingest) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/moves/ws", in.serveWS)
	mux.HandleFunc("POST /v1/moves", in.serveMoves)
	mux.HandleFunc("POST /v1/admin/drops", in.serveDrops)
	return in.perAddr.Wrap(mux)
}

// statusOf maps a reply's code to an HTTP status.
func statusOf(code game.Code) int {
	switch code {
	case "":
		return http.StatusAccepted
	case game.CodeStaleSeq:
		return http.StatusConflict
	case game.CodeRateLimited:
		return http.StatusTooManyRequests
	case game.CodeUnauthorized:
		return http.StatusUnauthorized
	case game.CodeUnavailable:
		return http.StatusServiceUnavailable
	}
	return http.StatusBadRequest
}

// Header values shared by every answer (net/http only reads them).
var (
	contentTypeJSON = []string{"application/json"}
	cacheNoStore    = []string{"no-store"}
)

// writeError answers with one error object.
func writeError(w http.ResponseWriter, status int, seq uint64, code game.Code, msg string, retry time.Duration) {
	r := reply{seq: seq, code: code, msg: msg, retry: retry}
	writeJSON(w, status, appendReply(nil, &r), retry)
}

func writeJSON(w http.ResponseWriter, status int, body []byte, retry time.Duration) {
	h := w.Header()
	h["Content-Type"] = contentTypeJSON
	h["Cache-Control"] = cacheNoStore
	if status == http.StatusTooManyRequests || status == http.StatusServiceUnavailable {
		secs := (wire.RetryAfterMs(retry) + 999) / 1000
		h.Set("Retry-After", strconv.FormatInt(secs, 10))
	}
	w.WriteHeader(status)
	_, _ = w.Write(append(body, '\n'))
}

// readBody reads at most limit bytes of r's body, answering 413 or 400
// and reporting false when it cannot.
func readBody(w http.ResponseWriter, r *http.Request, limit int64) ([]byte, bool) {
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			writeError(w, http.StatusRequestEntityTooLarge, 0, game.CodeBadRequest, fmt.Sprintf("body larger than %d bytes", limit), 0)
		} else {
			writeError(w, http.StatusBadRequest, 0, game.CodeBadRequest, "cannot read the body", 0)
		}
		return nil, false
	}
	return body, true
}

// collector gathers the replies of one request.
type collector struct {
	mu      sync.Mutex
	replies []reply
	left    int
	done    chan struct{}
}

// deliver records r; the last reply wakes the request's handler, which
// writes the answer itself, so deliver never reports ready.
func (c *collector) deliver(slot uint64, r reply) bool {
	c.mu.Lock()
	c.replies[slot] = r
	c.left--
	if c.left == 0 {
		close(c.done)
	}
	c.mu.Unlock()
	return false
}

func (c *collector) flush() {}

// serveMoves is POST /v1/moves: one move object, or a JSON array of them,
// taken exactly as over the WebSocket (same rate limit, validation, player
// state and durability) under the bearer token's player.
//
// The body of the answer has the request's shape: for one move object, the
// one reply object ({"type":"ack","seq":S} or the error object); for an
// array, the array of replies in the moves' order. The status is 202 when
// at least one move was acked; otherwise that of the first reply's error:
// 400 for bad_json, bad_request, path_too_long, unknown_node,
// discontinuous and not_adjacent, 409 for stale_seq, 429 for rate_limited,
// 503 for unavailable (the last two with Retry-After). An empty array is
// 400 with one bad_request in an array, a body over MaxMovesBody 413, a
// missing or bad token 401, a Redis failure while reading the player's
// state 503 (all three with a single error object).
func (in *Ingest) serveMoves(w http.ResponseWriter, r *http.Request) {
	claims, ok := in.authenticate(w, r)
	if !ok {
		return
	}
	if !in.enter() {
		writeError(w, http.StatusServiceUnavailable, 0, game.CodeUnavailable, "ingest is not running", in.o.RetryAfter)
		return
	}
	defer in.leave()
	body, ok := readBody(w, r, MaxMovesBody)
	if !ok {
		return
	}
	var parser wire.Parser
	items, array := parser.ParseBody(body, nil)
	if array && len(items) == 0 {
		rep := reply{code: game.CodeBadRequest, msg: "the array holds no move"}
		writeJSON(w, http.StatusBadRequest, append(appendReply([]byte{'['}, &rep), ']'), 0)
		return
	}
	p, err := in.players.attach(r.Context(), claims.Subject)
	if err != nil {
		in.o.Log.Warn("player state unavailable", "err", err)
		writeError(w, http.StatusServiceUnavailable, 0, game.CodeUnavailable, "player state unavailable", in.o.RetryAfter)
		return
	}
	defer in.players.release(p)
	col := &collector{replies: make([]reply, len(items)), left: len(items), done: make(chan struct{})}
	sc := in.scratches.Get().(*scratch)
	defer in.scratches.Put(sc)
	for i, it := range items {
		if it.Err != nil {
			in.reject(col, uint64(i), it.Seq, it.Err.Code, it.Err.Msg, 0)
			continue
		}
		in.submit(p, it.Seq, it.Path, col, uint64(i), sc)
	}
	select {
	case <-col.done:
	case <-r.Context().Done():
		return // the client left; the moves go on and their replies are dropped
	}
	for _, rep := range col.replies {
		if rep.unanswered {
			// A move whose outcome is unknown gets no answer, not an
			// error: the client sees the request fail and resends.
			panic(http.ErrAbortHandler)
		}
	}
	status := statusOf(col.replies[0].code)
	var retry time.Duration
	for _, rep := range col.replies {
		if rep.code == "" {
			status = http.StatusAccepted
			break
		}
	}
	if status != http.StatusAccepted {
		retry = col.replies[0].retry
	}
	bp := in.bodies.Get().(*[]byte)
	defer in.bodies.Put(bp)
	out := (*bp)[:0]
	if array {
		out = append(out, '[')
	}
	for i := range col.replies {
		if i > 0 {
			out = append(out, ',')
		}
		out = appendReply(out, &col.replies[i])
	}
	if array {
		out = append(out, ']')
	}
	writeJSON(w, status, out, retry)
	if cap(out) <= 4*maxOutFrame {
		*bp = out
	}
}

// serveDrops is POST /v1/admin/drops: {"treasures":[{"id","node","points"},…]}
// with an admin token (role "admin"; any other valid token is 403, a
// missing or bad one 401).
//
// The body is checked whole first (wire.ParseDrop: ids per
// game.CheckTreasure, points 1..2^31-1; every node must exist): 400 with
// the error object naming the first faulty treasure otherwise. The
// treasures whose id was never dropped before (a Redis set of dropped ids;
// within one body the first of a repeated id) are published as
// TreasureDropped events to every partition's subject, and the answer is
// 202 {"accepted":N}, N the number of those new treasures, only once every
// publish is acked and the ids are in the set: every move accepted after
// the 202 comes after the drop in its partition's log. A failed publish
// or Redis call is 503 unavailable (drop again: known ids are ignored, by
// this endpoint and by the engines).
func (in *Ingest) serveDrops(w http.ResponseWriter, r *http.Request) {
	claims, ok := in.authenticate(w, r)
	if !ok {
		return
	}
	if !claims.Admin {
		in.lm.notAdmin.Inc()
		writeError(w, http.StatusForbidden, 0, game.CodeUnauthorized, "dropping treasures needs an admin token", 0)
		return
	}
	if !in.enter() {
		writeError(w, http.StatusServiceUnavailable, 0, game.CodeUnavailable, "ingest is not running", in.o.RetryAfter)
		return
	}
	defer in.leave()
	body, ok := readBody(w, r, MaxDropBody)
	if !ok {
		return
	}
	drops, err := wire.ParseDrop(body, nil)
	if err != nil {
		var ge *game.Error
		if errors.As(err, &ge) {
			writeError(w, http.StatusBadRequest, 0, ge.Code, ge.Msg, 0)
		} else {
			writeError(w, http.StatusBadRequest, 0, game.CodeBadRequest, err.Error(), 0)
		}
		return
	}
	n := in.o.Graph.NumNodes()
	for i, d := range drops {
		if _, ok := graph.Index(d.Node, n); !ok {
			writeError(w, http.StatusBadRequest, 0, game.CodeUnknownNode, fmt.Sprintf("treasures[%d]: node %d does not exist", i, d.Node), 0)
			return
		}
	}
	accepted, err := in.drop(r.Context(), drops)
	if err != nil {
		in.o.Log.Warn("drop failed", "err", err, "treasures", len(drops))
		writeError(w, http.StatusServiceUnavailable, 0, game.CodeUnavailable, "the drop could not be stored; send it again", in.retryAfter(err))
		return
	}
	in.o.Log.Info("treasures dropped", "new", accepted, "in_body", len(drops))
	writeJSON(w, http.StatusAccepted, wire.AppendAccepted(nil, uint64(accepted)), 0)
}

// drop publishes the treasures of drops not dropped before to every
// partition and records their ids; it returns how many were new. Drops
// are serialized per instance.
func (in *Ingest) drop(ctx context.Context, drops []wire.Drop) (int, error) {
	in.dropMu.Lock()
	defer in.dropMu.Unlock()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), in.o.StoreTimeout+in.o.ShutdownTimeout)
	defer cancel()

	// The first of each id in the body.
	seen := make(map[string]bool, len(drops))
	fresh := drops[:0:0]
	for _, d := range drops {
		if !seen[d.ID] {
			seen[d.ID] = true
			fresh = append(fresh, d)
		}
	}
	if len(fresh) == 0 {
		return 0, nil
	}
	ids := make([]string, len(fresh))
	for i, d := range fresh {
		ids[i] = d.ID
	}
	known, err := in.o.Redis.SMIsMember(ctx, in.dropsKey, toAny(ids)...).Result()
	if err != nil {
		return 0, fmt.Errorf("read dropped ids: %w", err)
	}
	k := 0
	for i, d := range fresh {
		if !known[i] {
			fresh[k] = d
			k++
		}
	}
	fresh = fresh[:k]
	if len(fresh) == 0 {
		return 0, nil
	}

	// The events, in as many batches as the caps require.
	now := time.Now().UnixNano()
	var batches [][]byte
	b := event.Builder{}
	for _, d := range fresh {
		ev := &eventpb.Event{Kind: &eventpb.Event_Drop{Drop: &eventpb.TreasureDropped{Id: d.ID, Node: uint32(d.Node), Points: uint64(d.Points), IngestUnixNanos: now}}}
		err := b.Add(ev)
		if errors.Is(err, event.ErrFull) {
			batches = append(batches, append([]byte(nil), b.Bytes()...))
			b.Reset()
			err = b.Add(ev)
		}
		if err != nil {
			return 0, fmt.Errorf("encode drop: %w", err)
		}
	}
	batches = append(batches, append([]byte(nil), b.Bytes()...))
	in.dropNo++
	base := in.instance + "-drop-" + strconv.FormatUint(in.dropNo, 10) + "-"
	var futures []*natsjs.Future
	for k, subject := range in.o.Topology.InSubjects() {
		for j, data := range batches {
			f, err := in.pub.Publish(ctx, subject, data, base+strconv.Itoa(k)+"-"+strconv.Itoa(j))
			if err != nil {
				return 0, fmt.Errorf("publish drop: %w", err)
			}
			futures = append(futures, f)
		}
	}
	for _, f := range futures {
		if _, err := f.Wait(ctx); err != nil {
			return 0, fmt.Errorf("publish drop: %w", err)
		}
	}
	ids = ids[:0]
	for _, d := range fresh {
		ids = append(ids, d.ID)
	}
	if err := in.o.Redis.SAdd(ctx, in.dropsKey, toAny(ids)...).Err(); err != nil {
		return 0, fmt.Errorf("record dropped ids: %w", err)
	}
	in.m.drops.Add(float64(len(fresh)))
	return len(fresh), nil
}

func toAny(s []string) []any {
	a := make([]any, len(s))
	for i, v := range s {
		a[i] = v
	}
	return a
}
