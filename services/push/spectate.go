package push

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/protobuf/encoding/protowire"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
	"treasure/internal/wire"
)

// Defaults of the spectator feed (docs/protocol.md, "Spectator feed").
const (
	// DefaultSpectateInterval is the shortest time between two frames to
	// one spectator.
	DefaultSpectateInterval = 200 * time.Millisecond
	// DefaultSpectatePositions caps the player positions of one frame.
	DefaultSpectatePositions = 500
	// DefaultSpectatePlayers caps the players the feed follows.
	DefaultSpectatePlayers = 5000
	// DefaultMaxSpectators caps the spectator sockets of one push.
	DefaultMaxSpectators = 64
)

const (
	// spectateIdle: a followed player who has not moved for this long is
	// forgotten (sent as "gone"), freeing its place for another.
	spectateIdle = time.Minute
	// spectateQueue is the frames queued per spectator; a spectator whose
	// queue is full misses frames and gets a snapshot once it has room.
	spectateQueue = 4
	// spectateEvents caps the claims plus treasures of one frame; the rest
	// go in the next frames, none is left out.
	spectateEvents = 1000
	// spectateRecent is the claims a snapshot repeats.
	spectateRecent = 20
	// spectateInput is the batches waiting for the tracker; a batch
	// arriving when it is full is lost to the spectators (counted).
	spectateInput = 512
	// spectateMaxClaimed bounds the ids of claimed treasures remembered.
	spectateMaxClaimed = 1 << 20
)

// spectate is the spectator feed's tracker: a subscriber of push's feed
// that keeps what the live page shows — where the followed players stand,
// the active treasures it knows of, the claims since the last frame — and
// sends every spectator socket a frame at most every interval.
//
// The feed's cost: one atomic load per feed step while nobody watches; a
// non-blocking channel send of the step's message payloads (already in
// memory, not copied) while someone does. The tracker decodes them on its
// own goroutine, so a slow tracker or spectator never delays a player's
// update: a step that finds the tracker's input full is lost to the
// spectators (treasure_push_spectate_lost_batches_total), a frame that
// finds a spectator's queue full is dropped for that spectator, which gets
// a snapshot instead once its queue has room.
//
// State is kept only while someone watches: the feed hands nothing over
// and the tracker forgets everything when the last spectator leaves.
type spectate struct {
	s        *Server
	g        *graph.Graph // nil: no map, positions carry no coordinates
	interval time.Duration
	maxPos   int
	maxPlay  int
	maxSocks int

	watching atomic.Bool  // a spectator is connected: the feed hands its steps over
	full     atomic.Int32 // spectators of the treasure view: the drop follower runs
	in       chan specInput

	mu    sync.Mutex
	socks map[*specConn]struct{}
	wg    sync.WaitGroup
	shut  bool

	m specMetrics

	// The tracker goroutine's own.
	rd        event.Reader
	ev        eventpb.Event
	players   map[string]*specPlayer
	dirty     []string // players whose position changed since it was sent, oldest first
	treasures map[string]specTreasure
	claimed   map[string]struct{}
	claims    []specClaim // not sent yet
	appeared  []string    // treasure ids that became known, not sent yet
	gone      []string    // forgotten players, not sent yet
	recent    []specClaim // the last spectateRecent claims, for snapshots
	boardVer  uint64      // the hub leaderboard version last sent
	moves     uint64      // proximity results in the current second
	rate      float64     // moves per second over the last whole second
	rateAt    time.Time
	stats     []byte // the stats object of the frames
	statsDue  bool
	backlog   atomic.Int64 // messages waiting for proximity (-1: unknown)
	polling   atomic.Bool
	lostN     atomic.Uint64 // steps lost because the tracker was behind
	cur       frameParts    // the frame being built
}

// specInput is one feed step (or one step of the drop follower) handed to
// the tracker: the payloads of its messages.
type specInput struct {
	data [][]byte
	in   bool // from the IN stream (drops), else OUT
}

type specPlayer struct {
	id    string
	node  uint32 // wire id
	seen  time.Time
	dirty bool
}

type specTreasure struct {
	node   uint32
	points uint64 // 0: not known (seen in a proximity answer only)
}

type specClaim struct {
	player, treasure string
	points           uint64
	node             uint32
}

type specMetrics struct {
	spectators prometheus.Gauge
	frames     prometheus.Counter
	dropped    prometheus.Counter
	lost       prometheus.Counter
}

func newSpecMetrics(r prometheus.Registerer) specMetrics {
	m := specMetrics{
		spectators: prometheus.NewGauge(prometheus.GaugeOpts{Name: "treasure_push_spectators", Help: "Open spectator WebSockets (GET /v1/spectate, the live page)."}),
		frames:     prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_spectate_frames_total", Help: "Frames written to spectator WebSockets."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_spectate_dropped_frames_total",
			Help: "Frames not queued to a spectator whose queue was full (it gets a snapshot once it has room)."}),
		lost: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_spectate_lost_batches_total",
			Help: "Feed steps the spectator tracker could not take because it was behind (never delays the players' feed)."}),
	}
	if r != nil {
		r.MustRegister(m.spectators, m.frames, m.dropped, m.lost)
	}
	return m
}

func newSpectate(s *Server, o Options) *spectate {
	return &spectate{
		s: s, g: o.Graph, interval: o.SpectateInterval, maxPos: o.SpectatePositions, maxPlay: o.SpectatePlayers, maxSocks: o.MaxSpectators,
		in:      make(chan specInput, spectateInput),
		socks:   make(map[*specConn]struct{}),
		m:       newSpecMetrics(o.Registerer),
		players: make(map[string]*specPlayer), treasures: make(map[string]specTreasure), claimed: make(map[string]struct{}),
	}
}

// tap is the feed's hook, called after each step it applied: it hands the
// step to the tracker when someone watches and the feed is live. It never
// blocks.
func (t *spectate) tap(msgs []natsjs.Msg) {
	if !t.watching.Load() || !t.s.ready.Load() {
		return
	}
	t.offer(msgs, false)
}

func (t *spectate) offer(msgs []natsjs.Msg, in bool) {
	data := make([][]byte, len(msgs))
	for i := range msgs {
		data[i] = msgs[i].Data
	}
	select {
	case t.in <- specInput{data: data, in: in}:
	default:
		t.m.lost.Inc()
		t.lostN.Add(1)
	}
}

// run is the tracker: it applies the feed's steps and, every interval
// while someone watches, sends the frame. It returns when ctx is done,
// after closing every spectator socket.
func (t *spectate) run(ctx context.Context) {
	defer t.close()
	tick := time.NewTicker(t.interval)
	defer tick.Stop()
	var fl *follower // the drop follower, while it runs
	defer func() { fl.stop() }()
	for {
		select {
		case <-ctx.Done():
			return
		case in := <-t.in:
			t.apply(in)
		case now := <-tick.C:
			switch {
			case t.full.Load() > 0 && fl == nil:
				// The start is read here, before this tick's frames: a
				// drop stored after a spectator saw a frame is followed.
				if start, ok := t.followStart(ctx); ok {
					fctx, cancel := context.WithCancel(ctx)
					fl = &follower{cancel: cancel, done: make(chan struct{})}
					go func(done chan struct{}) {
						defer close(done)
						t.follow(fctx, start)
					}(fl.done)
				}
			case t.full.Load() == 0 && fl != nil:
				fl.stop()
				fl = nil
			}
			if !t.watching.Load() {
				t.reset()
				continue
			}
			t.tick(ctx, now)
		}
	}
}

// follower is the running drop follower.
type follower struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// stop ends the follower and waits for it; a no-op on nil.
func (f *follower) stop() {
	if f != nil {
		f.cancel()
		<-f.done
	}
}

// reset forgets everything once nobody watches: what happens meanwhile is
// not followed, so the state would go stale.
func (t *spectate) reset() {
	if len(t.players) == 0 && len(t.treasures) == 0 && len(t.claimed) == 0 && len(t.claims) == 0 {
		return
	}
	for len(t.in) > 0 {
		<-t.in
	}
	clear(t.players)
	clear(t.treasures)
	clear(t.claimed)
	t.dirty, t.claims, t.appeared, t.gone, t.recent = nil, nil, nil, nil, nil
	t.boardVer, t.moves, t.rate, t.rateAt, t.stats = 0, 0, 0, time.Time{}, nil
}

// follow reads the drops from the IN stream's partition 0 subject (every
// drop goes to every partition) from its end on, for as long as a
// spectator of the treasure view is connected, handing each step to the
// tracker. Treasures dropped earlier become known when a proximity answer
// names them.
func (t *spectate) follow(ctx context.Context, start uint64) {
	js, topo := t.s.o.JS, t.s.o.Topology
	for ctx.Err() == nil {
		err := natsjs.Replay(ctx, js, natsjs.ReplayOptions{
			Stream: topo.InStream(), Subjects: []string{topo.InSubject(0)}, StartSeq: start, Follow: true, Batch: 256,
		}, func(_ context.Context, msgs []natsjs.Msg) error {
			start = msgs[len(msgs)-1].Seq + 1
			t.offer(msgs, true)
			return nil
		})
		if ctx.Err() != nil {
			return
		}
		t.s.o.Log.Warn("spectators: drop follower failed; resuming", "err", err)
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
	}
}

// followStart returns the IN stream's next sequence: where the drop
// follower starts. false (logged) when the stream cannot be read; the
// next tick tries again.
func (t *spectate) followStart(ctx context.Context) (uint64, bool) {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	st, err := t.s.o.JS.Stream(ctx, t.s.o.Topology.InStream())
	if err != nil {
		if ctx.Err() == nil {
			t.s.o.Log.Warn("spectators: IN stream unavailable: drops are not followed", "err", err)
		}
		return 0, false
	}
	return st.CachedInfo().State.LastSeq + 1, true
}

// apply takes one step's events into the tracker's state.
func (t *spectate) apply(in specInput) {
	now := time.Now()
	for _, data := range in.data {
		if err := t.rd.Reset(data); err != nil {
			continue // the feed has counted and logged it
		}
		for t.rd.Next() {
			kind := t.rd.Kind()
			if in.in && kind != event.KindDrop && kind != event.KindClaim {
				continue // moves: the OUT stream has their results
			}
			if !in.in && kind != event.KindProximity && kind != event.KindClaim {
				continue // scores and leaderboards: the hub has the latest
			}
			if kind == event.KindProximity {
				// The hot case, read in place (no allocation for a
				// player or treasure already known).
				player, node, tid, tnode, ok := proximityFields(t.rd.Raw())
				if !ok {
					continue
				}
				t.moves++
				t.move(player, node, now)
				if tid != nil {
					t.see(tid, tnode, 0)
				}
				continue
			}
			if t.rd.Event(&t.ev) != nil {
				continue
			}
			switch kind {
			case event.KindDrop:
				d := t.ev.GetDrop()
				t.see([]byte(d.GetId()), d.GetNode(), d.GetPoints())
			case event.KindClaim:
				c := t.ev.GetClaim()
				t.claim(specClaim{player: c.GetPlayer(), treasure: c.GetTreasure(), points: c.GetPoints(), node: c.GetNode()}, !in.in)
			}
		}
	}
}

// move records that player stands on node now.
func (t *spectate) move(player []byte, node uint32, now time.Time) {
	p := t.players[string(player)]
	if p == nil {
		if len(t.players) >= t.maxPlay {
			return // a sample: the players followed first
		}
		p = &specPlayer{id: string(player)}
		t.players[p.id] = p
	}
	p.node, p.seen = node, now
	if !p.dirty {
		p.dirty = true
		t.dirty = append(t.dirty, p.id)
	}
}

// see records an active treasure; points 0 keeps points already known.
func (t *spectate) see(id []byte, node uint32, points uint64) {
	if _, done := t.claimed[string(id)]; done {
		return
	}
	old, known := t.treasures[string(id)]
	if known && (points == 0 || old.points == points) {
		return
	}
	if points == 0 {
		points = old.points
	}
	sid := string(id)
	t.treasures[sid] = specTreasure{node: node, points: points}
	t.appeared = append(t.appeared, sid)
}

// proximityFields reads, in place, the fields of an encoded Event holding
// a ProximityResult (schemas/proto/treasure/v1/events.proto) that the
// spectators need: the player, the node, and the nearest treasure's id
// (nil when none) and node. ok is false for bytes that do not parse.
func proximityFields(ev []byte) (player []byte, node uint32, tid []byte, tnode uint32, ok bool) {
	var res []byte
	for len(ev) > 0 {
		num, typ, n := protowire.ConsumeTag(ev)
		if n < 0 {
			return nil, 0, nil, 0, false
		}
		ev = ev[n:]
		if num == 4 && typ == protowire.BytesType { // Event.proximity
			if res, n = protowire.ConsumeBytes(ev); n < 0 {
				return nil, 0, nil, 0, false
			}
		} else if n = protowire.ConsumeFieldValue(num, typ, ev); n < 0 {
			return nil, 0, nil, 0, false
		}
		ev = ev[n:]
	}
	for len(res) > 0 {
		num, typ, n := protowire.ConsumeTag(res)
		if n < 0 {
			return nil, 0, nil, 0, false
		}
		res = res[n:]
		switch {
		case num == 1 && typ == protowire.BytesType: // player
			player, n = protowire.ConsumeBytes(res)
		case num == 3 && typ == protowire.VarintType: // node
			var v uint64
			v, n = protowire.ConsumeVarint(res)
			node = uint32(v)
		case num == 4 && typ == protowire.BytesType: // treasure
			var tr []byte
			if tr, n = protowire.ConsumeBytes(res); n >= 0 {
				for len(tr) > 0 {
					tnum, ttyp, m := protowire.ConsumeTag(tr)
					if m < 0 {
						return nil, 0, nil, 0, false
					}
					tr = tr[m:]
					switch {
					case tnum == 1 && ttyp == protowire.BytesType:
						tid, m = protowire.ConsumeBytes(tr)
					case tnum == 2 && ttyp == protowire.VarintType:
						var v uint64
						v, m = protowire.ConsumeVarint(tr)
						tnode = uint32(v)
					default:
						m = protowire.ConsumeFieldValue(tnum, ttyp, tr)
					}
					if m < 0 {
						return nil, 0, nil, 0, false
					}
					tr = tr[m:]
				}
			}
		default:
			n = protowire.ConsumeFieldValue(num, typ, res)
		}
		if n < 0 {
			return nil, 0, nil, 0, false
		}
		res = res[n:]
	}
	return player, node, tid, tnode, true
}

// claim records a claim; out says it is the OUT stream's (sent to the
// spectators), else a notice on IN (only retires the treasure).
func (t *spectate) claim(c specClaim, out bool) {
	if _, done := t.claimed[c.treasure]; done && !out {
		return
	}
	if len(t.claimed) < spectateMaxClaimed {
		t.claimed[c.treasure] = struct{}{}
	}
	delete(t.treasures, c.treasure)
	if !out {
		return
	}
	t.claims = append(t.claims, c)
	t.recent = append(t.recent, c)
	if n := len(t.recent); n > spectateRecent {
		t.recent = append(t.recent[:0], t.recent[n-spectateRecent:]...)
	}
}

// tick runs once per interval while someone watches: figures once a
// second, then a frame to every spectator (a snapshot to those that need
// one).
func (t *spectate) tick(ctx context.Context, now time.Time) {
	if t.rateAt.IsZero() {
		t.rateAt = now
		t.backlog.Store(-1)
		t.pollBacklog(ctx)
	}
	if d := now.Sub(t.rateAt); d >= time.Second {
		t.rate = float64(t.moves) / d.Seconds()
		t.moves, t.rateAt = 0, now
		t.forget(now)
		t.pollBacklog(ctx)
		t.stats = nil
	}
	if t.stats == nil {
		t.stats = t.appendStats(nil)
		t.statsDue = true
	}

	t.mu.Lock()
	socks := make([]*specConn, 0, len(t.socks))
	for c := range t.socks {
		socks = append(socks, c)
	}
	t.mu.Unlock()

	var frames [2][]byte // public, full
	var snaps [2][]byte
	frame := func(full bool) []byte {
		i := b2i(full)
		if frames[i] == nil {
			frames[i] = t.appendFrame(nil, full)
		}
		return frames[i]
	}
	// The positions, claims and treasures of this frame are taken once
	// (they are spent whether or not a spectator's queue had room).
	t.take()
	for _, c := range socks {
		if c.resync.Load() {
			i := b2i(c.full)
			if snaps[i] == nil {
				snaps[i] = t.appendSnapshot(nil, c.full)
			}
			if c.offer(snaps[i]) {
				c.resync.Store(false)
			} else {
				t.m.dropped.Inc()
			}
			continue
		}
		if !t.pending() {
			continue
		}
		if !c.offer(frame(c.full)) {
			c.resync.Store(true)
			t.m.dropped.Inc()
		}
	}
	t.statsDue = false
	t.sent()
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// forget drops the followed players idle for spectateIdle.
func (t *spectate) forget(now time.Time) {
	for id, p := range t.players {
		if now.Sub(p.seen) >= spectateIdle {
			delete(t.players, id)
			t.gone = append(t.gone, id)
		}
	}
}

// pollBacklog refreshes, in the background, the messages waiting for the
// IN stream's consumers (the proximity workers): the queue absorbing a
// burst.
func (t *spectate) pollBacklog(ctx context.Context) {
	if !t.polling.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer t.polling.Store(false)
		ctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		st, err := t.s.o.JS.Stream(ctx, t.s.o.Topology.InStream())
		if err != nil {
			t.backlog.Store(-1)
			return
		}
		var n int64
		l := st.ListConsumers(ctx)
		for info := range l.Info() {
			n += int64(info.NumPending) + int64(info.NumAckPending)
		}
		if l.Err() != nil {
			n = -1
		}
		t.backlog.Store(n)
	}()
}

// frameParts is what the current frame carries, taken by take.
type frameParts struct {
	pos      []string // players
	claims   []specClaim
	appeared []string
	gone     []string
	board    []byte
}

// take moves up to maxPos positions, up to spectateEvents claims and
// treasures, the forgotten players and a newer leaderboard into the
// frame being built.
func (t *spectate) take() {
	f := &t.cur
	f.pos, f.claims, f.appeared, f.gone, f.board = f.pos[:0], nil, nil, nil, nil
	n := 0
	for n < len(t.dirty) && len(f.pos) < t.maxPos {
		id := t.dirty[n]
		n++
		if p := t.players[id]; p != nil && p.dirty {
			p.dirty = false
			f.pos = append(f.pos, id)
		}
	}
	t.dirty = append(t.dirty[:0], t.dirty[n:]...)
	k := min(len(t.claims), spectateEvents)
	f.claims = t.claims[:k]
	t.claims = t.claims[k:]
	k = min(len(t.appeared), spectateEvents-len(f.claims))
	f.appeared = t.appeared[:k]
	t.appeared = t.appeared[k:]
	f.gone, t.gone = t.gone, nil
	if b := t.s.hub.latest.Load(); b != nil && b.ver != t.boardVer {
		t.boardVer = b.ver
		f.board = b.msg
	}
}

// pending reports whether the frame taken carries anything.
func (t *spectate) pending() bool {
	f := &t.cur
	return len(f.pos) > 0 || len(f.claims) > 0 || len(f.appeared) > 0 || len(f.gone) > 0 || f.board != nil || t.statsDue
}

// sent ends the frame.
func (t *spectate) sent() {
	if len(t.claims) == 0 {
		t.claims = nil
	}
	if len(t.appeared) == 0 {
		t.appeared = nil
	}
}

// appendFrame appends the frame taken, as one JSON message: the full
// view adds the treasures that became known.
func (t *spectate) appendFrame(b []byte, full bool) []byte {
	f := &t.cur
	b = append(b, `{"type":"frame","moves":[`...)
	for i, id := range f.pos {
		if i > 0 {
			b = append(b, ',')
		}
		b = t.appendPos(b, id, t.players[id].node)
	}
	b = append(b, `],"gone":[`...)
	for i, id := range f.gone {
		if i > 0 {
			b = append(b, ',')
		}
		b = wire.AppendString(b, id)
	}
	b = append(b, `],"claims":[`...)
	for i, c := range f.claims {
		if i > 0 {
			b = append(b, ',')
		}
		b = t.appendClaim(b, c)
	}
	b = append(b, ']')
	if full {
		b = append(b, `,"treasures":[`...)
		first := true
		for _, id := range f.appeared {
			tr, ok := t.treasures[id]
			if !ok {
				continue // claimed since
			}
			if !first {
				b = append(b, ',')
			}
			first = false
			b = t.appendTreasure(b, id, tr)
		}
		b = append(b, ']')
	}
	if f.board != nil {
		b = append(b, `,"leaderboard":`...)
		b = append(b, f.board...)
	}
	b = append(b, `,"stats":`...)
	b = append(b, t.stats...)
	return append(b, '}')
}

// appendSnapshot appends everything the tracker knows, for a spectator
// that connected or missed frames: every followed player's position, the
// active treasures (full view), the recent claims, the latest leaderboard.
func (t *spectate) appendSnapshot(b []byte, full bool) []byte {
	b = append(b, `{"type":"snapshot","players":[`...)
	first := true
	for id, p := range t.players {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = t.appendPos(b, id, p.node)
	}
	b = append(b, `],"claims":[`...)
	for i, c := range t.recent {
		if i > 0 {
			b = append(b, ',')
		}
		b = t.appendClaim(b, c)
	}
	b = append(b, ']')
	if full {
		b = append(b, `,"treasures":[`...)
		first = true
		for id, tr := range t.treasures {
			if !first {
				b = append(b, ',')
			}
			first = false
			b = t.appendTreasure(b, id, tr)
		}
		b = append(b, ']')
	}
	if lb := t.s.hub.latest.Load(); lb != nil {
		b = append(b, `,"leaderboard":`...)
		b = append(b, lb.msg...)
	}
	b = append(b, `,"stats":`...)
	b = append(b, t.stats...)
	return append(b, '}')
}

// appendStats appends the figures of the frames.
func (t *spectate) appendStats(b []byte) []byte {
	players, _ := t.s.hub.stats()
	t.mu.Lock()
	n := len(t.socks)
	t.mu.Unlock()
	b = append(b, `{"moves_per_s":`...)
	b = strconv.AppendFloat(b, t.rate, 'f', 1, 64)
	b = append(b, `,"backlog":`...)
	b = strconv.AppendInt(b, t.backlog.Load(), 10)
	b = append(b, `,"players":`...)
	b = strconv.AppendInt(b, int64(players), 10)
	b = append(b, `,"followed":`...)
	b = strconv.AppendInt(b, int64(len(t.players)), 10)
	b = append(b, `,"treasures_known":`...)
	b = strconv.AppendInt(b, int64(len(t.treasures)), 10)
	b = append(b, `,"spectators":`...)
	b = strconv.AppendInt(b, int64(n), 10)
	b = append(b, `,"lost_batches":`...)
	b = strconv.AppendUint(b, t.lostN.Load(), 10)
	return append(b, '}')
}

// appendPos appends [player,node,x,y] (x and y 0 without coordinates).
func (t *spectate) appendPos(b []byte, id string, node uint32) []byte {
	b = append(b, '[')
	b = wire.AppendString(b, id)
	b = t.appendNode(b, node)
	return append(b, ']')
}

// appendNode appends ,node,x,y.
func (t *spectate) appendNode(b []byte, node uint32) []byte {
	return t.appendXY(append(b, ','), node)
}

// appendXY appends node,x,y.
func (t *spectate) appendXY(b []byte, node uint32) []byte {
	b = strconv.AppendUint(b, uint64(node), 10)
	var x, y int32
	if t.g != nil && t.g.HasCoords() {
		if v, ok := graph.Index(uint64(node), t.g.NumNodes()); ok {
			x, y = t.g.X[v], t.g.Y[v]
		}
	}
	b = append(b, ',')
	b = strconv.AppendInt(b, int64(x), 10)
	b = append(b, ',')
	return strconv.AppendInt(b, int64(y), 10)
}

// appendClaim appends {"player","treasure","points","node","x","y"}.
func (t *spectate) appendClaim(b []byte, c specClaim) []byte {
	b = append(b, `{"player":`...)
	b = wire.AppendString(b, c.player)
	b = append(b, `,"treasure":`...)
	b = wire.AppendString(b, c.treasure)
	b = append(b, `,"points":`...)
	b = strconv.AppendUint(b, c.points, 10)
	b = append(b, `,"at":[`...)
	b = t.appendXY(b, c.node)
	return append(b, "]}"...)
}

// appendTreasure appends [id,node,x,y,points].
func (t *spectate) appendTreasure(b []byte, id string, tr specTreasure) []byte {
	b = append(b, '[')
	b = wire.AppendString(b, id)
	b = t.appendNode(b, tr.node)
	b = append(b, ',')
	b = strconv.AppendUint(b, tr.points, 10)
	return append(b, ']')
}
