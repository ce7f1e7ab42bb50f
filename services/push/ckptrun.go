package push

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"treasure/internal/natsjs"
)

// Defaults of the checkpoint options.
const (
	DefaultCheckpointEvery = 10 * time.Second
	DefaultCheckpointKeep  = 3
)

// Checkpoints is where push keeps its checkpoints: natsjs.Checkpoints
// (the "out-push/<seq>" objects of the topology's checkpoint bucket) in
// production.
type Checkpoints interface {
	PushList(ctx context.Context) ([]natsjs.CheckpointInfo, error)
	PushGet(ctx context.Context, seq uint64) ([]byte, error)
	PushPut(ctx context.Context, seq uint64, data []byte) error
	PushDelete(ctx context.Context, seq uint64) error
	PushPrune(ctx context.Context, keep int) error
}

var _ Checkpoints = (*natsjs.Checkpoints)(nil)

type ckptMetrics struct {
	written, failed, invalid, skipped, loaded prometheus.Counter
	unreachable                               prometheus.Counter
	seq                                       prometheus.Gauge
}

func newCkptMetrics(r prometheus.Registerer) ckptMetrics {
	m := ckptMetrics{
		written: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_checkpoints_total", Help: "Push checkpoints written by this instance."}),
		failed:  prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_checkpoint_failures_total", Help: "Push checkpoint writes that failed (the feed carries on; the next interval retries)."}),
		invalid: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_checkpoint_invalid_total", Help: "Push checkpoints refused at start (damaged, beyond the stream's end, or not reaching its first message); the one before is tried."}),
		skipped: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_checkpoint_skipped_total", Help: "Checkpoint intervals this instance left to another push instance, which had stored one within the interval."}),
		loaded:  prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_checkpoint_loaded_total", Help: "Starts of the feed from a checkpoint (instead of the stream's first message)."}),
		unreachable: prometheus.NewCounter(prometheus.CounterOpts{Name: "treasure_push_checkpoint_unreachable_total",
			Help: "Push checkpoint listings and reads at start that failed after their bounded tries (timeout, deleted meanwhile, connection): a failed read skips to the checkpoint before, a failed listing fails the start."}),
		seq: prometheus.NewGauge(prometheus.GaugeOpts{Name: "treasure_push_checkpoint_seq", Help: "OUT sequence of the newest push checkpoint this instance loaded or wrote."}),
	}
	if r != nil {
		r.MustRegister(m.written, m.failed, m.invalid, m.skipped, m.loaded, m.unreachable, m.seq)
	}
	return m
}

// loadCheckpoint restores the hub and the feed's position from the newest
// push checkpoint that passes every check, refusing (log line and
// treasure_push_checkpoint_invalid_total) each one that does not: a
// damaged one and one beyond the stream's last message are also deleted;
// one older than the stream's head (the messages after it are gone) is
// kept but useless. first and last are the stream's first and last
// sequences. It returns the sequence restored, 0 when none.
func (s *Server) loadCheckpoint(ctx context.Context, first, last uint64) (uint64, error) {
	c := s.o.Checkpoints
	list, err := c.PushList(ctx)
	if err != nil {
		if ctx.Err() == nil {
			s.ckpt.unreachable.Inc()
		}
		return 0, err
	}
	for _, ci := range list {
		seq := ci.Seq
		var drop bool
		var err error
		switch {
		case seq > last:
			drop = true
			err = fmt.Errorf("checkpoint at seq %d is beyond the stream's last message %d (the stream was recreated?)", seq, last)
		case first > 1 && seq < first-1:
			err = fmt.Errorf("checkpoint at seq %d does not reach the stream's first message %d: messages between are gone", seq, first)
		default:
			var data []byte
			data, err = c.PushGet(ctx, seq)
			if err != nil && ctx.Err() == nil {
				s.ckpt.unreachable.Inc() // bounded and retried by natsjs; kept
			}
			if err == nil {
				drop = true
				var fs *feedState
				if fs, err = readCheckpoint(data, s.hub); err == nil && fs.seq != seq {
					err = fmt.Errorf("checkpoint of seq %d stored as seq %d: %w", fs.seq, seq, ErrCheckpointCorrupt)
				}
				if err == nil {
					s.restore(fs)
					s.ckpt.loaded.Inc()
					s.ckpt.seq.Set(float64(seq))
					s.ckptSeq = seq
					return seq, nil
				}
				s.hub.reset()
			}
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		s.ckpt.invalid.Inc()
		s.o.Log.Warn("push checkpoint refused; trying the one before", "seq", seq, "deleted", drop, "err", err)
		if drop {
			if err := c.PushDelete(ctx, seq); err != nil {
				s.o.Log.Warn("refused push checkpoint not deleted", "seq", seq, "err", err)
			}
		}
	}
	return 0, nil
}

// restore sets the feed's state from a checkpoint's.
func (s *Server) restore(fs *feedState) {
	s.applied.Store(fs.seq)
	s.lbSeen, s.lbVersion = fs.lbSeen, fs.lbVersion
	if fs.board != nil {
		s.hub.broadcast(fs.board)
	}
}

// reset forgets every player (a checkpoint that failed half-way).
func (h *hub) reset() {
	for i := range h.shards {
		sh := &h.shards[i]
		sh.mu.Lock()
		clear(sh.players)
		sh.mu.Unlock()
	}
}

// checkpointData encodes the feed's state; the feed goroutine only,
// between steps.
func (s *Server) checkpointData() (uint64, []byte) {
	fs := feedState{seq: s.applied.Load(), lbSeen: s.lbSeen, lbVersion: s.lbVersion}
	if b := s.hub.latest.Load(); b != nil {
		fs.board = b.msg
	}
	return fs.seq, appendCheckpoint(nil, s.hub, &fs)
}

// maybeCheckpoint, called by the feed after each step, writes a checkpoint
// when CheckpointEvery has passed since the last one, messages have been
// applied since, the previous upload has finished, and no push instance
// has stored one within the interval. It encodes on the feed goroutine;
// the look at the store and the upload run in the background.
func (s *Server) maybeCheckpoint() {
	if s.o.Checkpoints == nil || s.applied.Load() <= s.ckptSeq || time.Since(s.ckptAt) < s.o.CheckpointEvery {
		return
	}
	if s.uploading != nil {
		select {
		case <-s.uploading:
			s.uploading = nil
		default:
			return
		}
	}
	s.ckptAt = time.Now()
	// Encoded here, between steps (the state is the feed's); everything
	// that waits on the network — the look at what other instances stored,
	// the upload — runs in the background, so the feed never stalls on it.
	seq, data := s.checkpointData()
	s.ckptSeq = seq
	done := make(chan struct{})
	s.uploading = done
	go func() {
		defer close(done)
		// One writer suffices (every instance holds the same state):
		// leave the interval to an instance that has just written.
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		list, err := s.o.Checkpoints.PushList(ctx)
		cancel()
		if err == nil && len(list) > 0 && (list[0].Seq >= seq || time.Since(list[0].Time) < s.o.CheckpointEvery) {
			s.ckpt.skipped.Inc()
			return
		}
		s.writeCheckpoint(seq, data)
	}()
}

// finalCheckpoint writes the state after the feed stopped, when it covers
// messages the last one does not.
func (s *Server) finalCheckpoint() {
	if s.uploading != nil {
		<-s.uploading
		s.uploading = nil
	}
	if s.o.Checkpoints == nil || s.applied.Load() <= s.ckptSeq {
		return
	}
	seq, data := s.checkpointData()
	s.writeCheckpoint(seq, data)
}

// writeCheckpoint stores data as the checkpoint at seq and prunes the old
// ones; it touches no feed state.
func (s *Server) writeCheckpoint(seq uint64, data []byte) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := s.o.Checkpoints.PushPut(ctx, seq, data); err != nil {
		s.ckpt.failed.Inc()
		s.o.Log.Warn("push checkpoint not written", "seq", seq, "err", err)
		return
	}
	s.ckpt.written.Inc()
	s.ckpt.seq.Set(float64(seq))
	s.o.Log.Debug("push checkpoint written", "seq", seq, "bytes", len(data))
	if err := s.o.Checkpoints.PushPrune(ctx, s.o.CheckpointKeep); err != nil && !errors.Is(err, context.Canceled) {
		s.o.Log.Warn("old push checkpoints not pruned", "err", err)
	}
}
