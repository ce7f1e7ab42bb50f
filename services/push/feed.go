package push

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/event"
	"treasure/internal/game"
	"treasure/internal/wire"
)

// hopBuckets are the buckets of every hop histogram
// (treasure_<service>_hop_*_seconds): 50 µs to 1 s, each about 1.54 times
// the one before.
var hopBuckets = prometheus.ExponentialBucketsRange(50e-6, 1, 24)

// feedHops are push's share of the per-hop latency histograms
// (docs/operations.md), observed per proximity result while the feed is
// live, and the stamps of the update being delivered.
type feedHops struct {
	resultToConsumed prometheus.Histogram // result stored in P_OUT → read by the feed
	resultToSent     prometheus.Histogram // result stored in P_OUT → written to a socket
	receivedToSent   prometheus.Histogram // ingest received the move → written to a socket

	// cur holds the stamps of the update the feed is delivering, zero when
	// it is not a live proximity result. Only the feed goroutine writes it;
	// conn.enqueue, which only the feed calls (through hub.deliver), reads it.
	cur hopStamp
}

// hopStamp is when an update's proximity result was stored in P_OUT and
// when ingest received its move, Unix nanoseconds.
type hopStamp struct {
	result, received int64
}

func newFeedHops(r prometheus.Registerer) feedHops {
	h := feedHops{
		resultToConsumed: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_push_hop_result_to_consumed_seconds",
			Help: "Per proximity result: from JetStream storing it in the OUT stream to push's feed reading it.", Buckets: hopBuckets}),
		resultToSent: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_push_hop_result_to_sent_seconds",
			Help: "Per proximity update and socket: from JetStream storing the result to its frame being written to the socket.", Buckets: hopBuckets}),
		receivedToSent: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "treasure_push_hop_received_to_sent_seconds",
			Help: "Per proximity update and socket: from ingest receiving the move to the update being written to the socket (the whole pipeline).", Buckets: hopBuckets}),
	}
	if r != nil {
		r.MustRegister(h.resultToConsumed, h.resultToSent, h.receivedToSent)
	}
	return h
}

// sent observes the stamps of updates written to a socket now.
func (h *feedHops) sent(stamps []hopStamp) {
	if len(stamps) == 0 {
		return
	}
	now := time.Now().UnixNano()
	for _, st := range stamps {
		h.resultToSent.Observe(float64(now-st.result) / 1e9)
		if st.received > 0 {
			h.receivedToSent.Observe(float64(now-st.received) / 1e9)
		}
	}
}

// hopQueue holds the stamps of the live proximity updates queued on one
// socket, in queue order. add and take are called under conn.mu, with the
// queue's own appends and swaps; it allocates only while growing.
type hopQueue struct {
	q, spare []hopStamp
}

// add queues st, unless it is zero (not a live proximity result).
func (h *hopQueue) add(st hopStamp) {
	if st.result != 0 {
		h.q = append(h.q, st)
	}
}

// take returns the queued stamps and empties the queue. The slice stays
// valid until the next take: only the socket's writer takes, one frame at
// a time.
func (h *hopQueue) take() []hopStamp {
	q := h.q
	h.q, h.spare = h.spare[:0], q
	return q
}

// apply turns one OUT batch into player updates and leaderboard
// broadcasts. A batch or an event that does not decode is skipped (and
// counted): every push instance skips the same ones, so ids still agree.
func (s *Server) apply(data []byte) { s.applyStored(data, time.Time{}) }

// applyStored is apply for a batch that JetStream stored at stored (zero:
// unknown), which times its proximity results' hops.
func (s *Server) applyStored(data []byte, stored time.Time) {
	var result, now int64
	if !stored.IsZero() && s.ready.Load() {
		result, now = stored.UnixNano(), time.Now().UnixNano()
	}
	if err := s.rd.Reset(data); err != nil {
		s.m.bad.Inc()
		s.o.Log.Warn("push feed: undecodable batch skipped", "err", err)
		return
	}
	for s.rd.Next() {
		kind := s.rd.Kind()
		switch kind {
		case event.KindProximity, event.KindClaim, event.KindScore, event.KindLeaderboard:
		default:
			continue // moves, drops, kinds newer than this reader
		}
		if err := s.rd.Event(&s.ev); err != nil {
			s.m.bad.Inc()
			s.o.Log.Warn("push feed: undecodable event skipped", "kind", kind.String(), "err", err)
			continue
		}
		s.m.byKind[kind].Inc()
		u := &s.u
		switch kind {
		case event.KindProximity:
			p := s.ev.GetProximity()
			*u = update{kind: recProximity, seq: p.GetSeq(), node: uint64(p.GetNode()), prev: p.GetPrevSeq()}
			if t := p.GetTreasure(); t != nil {
				u.kind, u.treasure, u.tnode, u.dist = recProximityFound, t.GetId(), uint64(t.GetNode()), t.GetDistance()
			}
			if result != 0 {
				s.hop.resultToConsumed.Observe(float64(now-result) / 1e9)
				s.hop.cur = hopStamp{result: result, received: p.GetIngestUnixNanos()}
			}
			s.hub.deliver(p.GetPlayer(), u)
			s.hop.cur = hopStamp{}
			if ns := p.GetIngestUnixNanos(); ns > 0 && s.ready.Load() {
				s.m.latency.Observe(time.Since(time.Unix(0, ns)).Seconds())
			}
		case event.KindClaim:
			c := s.ev.GetClaim()
			*u = update{kind: recClaim, seq: c.GetSeq(), treasure: c.GetTreasure(), points: c.GetPoints(), prev: c.GetPrevSeq()}
			s.hub.deliver(c.GetPlayer(), u)
		case event.KindScore:
			sc := s.ev.GetScore()
			*u = update{kind: recScore, score: int64(sc.GetScore()), rank: sc.GetRank()}
			s.hub.deliver(sc.GetPlayer(), u)
		case event.KindLeaderboard:
			lb := s.ev.GetLeaderboard()
			if s.lbSeen && lb.GetVersion() <= s.lbVersion {
				continue // older than, or the same as, the one sent
			}
			s.lbSeen, s.lbVersion = true, lb.GetVersion()
			top := make([]game.Entry, len(lb.GetTop()))
			for i, e := range lb.GetTop() {
				top[i] = game.Entry{Player: e.GetPlayer(), Score: int64(e.GetScore()), Rank: int64(e.GetRank())}
			}
			s.hub.broadcast(wire.AppendLeaderboard(nil, top))
		}
	}
}
