package push

import (
	"time"

	"treasure/internal/event"
	"treasure/internal/wire"
)

// apply turns one OUT batch into player updates and leaderboard
// broadcasts. A batch or an event that does not decode is skipped (and
// counted): every push instance skips the same ones, so ids still agree.
func (s *Server) apply(data []byte) {
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
			*u = update{kind: recProximity, seq: p.GetSeq(), node: uint64(p.GetNode())}
			if t := p.GetTreasure(); t != nil {
				u.kind, u.treasure, u.tnode, u.dist = recProximityFound, t.GetId(), uint64(t.GetNode()), t.GetDistance()
			}
			s.hub.deliver(p.GetPlayer(), u)
			if ns := p.GetIngestUnixNanos(); ns > 0 && s.ready.Load() {
				s.m.latency.Observe(time.Since(time.Unix(0, ns)).Seconds())
			}
		case event.KindClaim:
			c := s.ev.GetClaim()
			*u = update{kind: recClaim, seq: c.GetSeq(), treasure: c.GetTreasure(), points: c.GetPoints()}
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
			top := make([]wire.Entry, len(lb.GetTop()))
			for i, e := range lb.GetTop() {
				top[i] = wire.Entry{Player: e.GetPlayer(), Score: int64(e.GetScore()), Rank: e.GetRank()}
			}
			s.hub.broadcast(wire.AppendLeaderboard(nil, top))
		}
	}
}
