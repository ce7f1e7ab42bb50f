package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/game"
	"treasure/internal/graph"
	"treasure/internal/natsjs"
)

// HTTPBase turns a ws:// or wss:// base URL into the http:// or https://
// base URL of the same service.
func HTTPBase(ws string) string {
	switch {
	case strings.HasPrefix(ws, "ws://"):
		return "http://" + strings.TrimPrefix(ws, "ws://")
	case strings.HasPrefix(ws, "wss://"):
		return "https://" + strings.TrimPrefix(ws, "wss://")
	}
	return ws
}

// LeaderboardPoller polls GET /v1/leaderboard?limit=10 on the push
// services' HTTP side every Every (default 100 ms), round-robin over URLs
// (http:// base URLs), from Run until its ctx ends, one poll at a time (a
// poll slower than Every delays the next). A poll fails on a transport
// error, a status other than 200, a body that is not a leaderboard, or no
// answer within Timeout (default 2 s): the original's "Leaderboard n/a".
// Stats is safe to call during Run.
type LeaderboardPoller struct {
	URLs    []string
	Every   time.Duration
	Timeout time.Duration
	Client  *http.Client // nil: a client of its own

	mu sync.Mutex
	st LeaderboardStats
}

// LeaderboardStats are a poller's figures.
type LeaderboardStats struct {
	Polls    uint64        `json:"leaderboard_polls"`
	Failures uint64        `json:"leaderboard_failures"`
	Slowest  time.Duration `json:"-"`
	// LastError describes the last failure.
	LastError string `json:"leaderboard_last_error,omitempty"`
}

// SlowestMs is Slowest in milliseconds.
func (s LeaderboardStats) SlowestMs() float64 { return float64(s.Slowest.Microseconds()) / 1000 }

// Stats returns the figures so far.
func (p *LeaderboardPoller) Stats() LeaderboardStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.st
}

// Run polls until ctx ends.
func (p *LeaderboardPoller) Run(ctx context.Context) {
	every, timeout := p.Every, p.Timeout
	if every <= 0 {
		every = 100 * time.Millisecond
	}
	if timeout <= 0 {
		timeout = 2 * time.Second
	}
	client := p.Client
	if client == nil {
		tr := &http.Transport{MaxIdleConnsPerHost: 2}
		defer tr.CloseIdleConnections()
		client = &http.Client{Transport: tr}
	}
	if len(p.URLs) == 0 {
		return
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for i := 0; ; i++ {
		start := time.Now()
		err := pollLeaderboard(ctx, client, p.URLs[i%len(p.URLs)], timeout)
		took := time.Since(start)
		if ctx.Err() != nil {
			return // a poll cut by the end of the run does not count
		}
		p.mu.Lock()
		p.st.Polls++
		p.st.Slowest = max(p.st.Slowest, took)
		if err != nil {
			p.st.Failures++
			p.st.LastError = err.Error()
		}
		p.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

func pollLeaderboard(ctx context.Context, client *http.Client, base string, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(base, "/")+"/v1/leaderboard?limit=10", nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /v1/leaderboard: %s", resp.Status)
	}
	var lb struct {
		Top *[]game.Entry `json:"top"`
	}
	if err := json.Unmarshal(body, &lb); err != nil || lb.Top == nil {
		return fmt.Errorf("GET /v1/leaderboard: not a leaderboard: %.80q", body)
	}
	return nil
}

// JetStreamBacklog returns a reader of the pipeline's backlog: the sum
// of pending and ack-pending messages of the proximity workers' durable
// consumers on the log (stream <prefix>_IN, consumers <prefix>-proximity-<k>),
// as `treasure dev` and `treasure status` count it.
func JetStreamBacklog(js jetstream.JetStream, prefix string) func(context.Context) (int64, error) {
	topo := natsjs.Topology{Prefix: prefix, Partitions: 1}
	var consumers []jetstream.Consumer
	return func(ctx context.Context) (int64, error) {
		if consumers == nil {
			s, err := js.Stream(ctx, topo.InStream())
			if err != nil {
				return 0, fmt.Errorf("backlog: stream %s: %w", topo.InStream(), err)
			}
			names := s.ConsumerNames(ctx)
			for name := range names.Name() {
				if !strings.HasPrefix(name, prefix+"-proximity-") {
					continue
				}
				c, err := s.Consumer(ctx, name)
				if err != nil {
					return 0, fmt.Errorf("backlog: consumer %s: %w", name, err)
				}
				consumers = append(consumers, c)
			}
			if err := names.Err(); err != nil {
				consumers = nil
				return 0, fmt.Errorf("backlog: consumers of %s: %w", topo.InStream(), err)
			}
			if len(consumers) == 0 {
				return 0, fmt.Errorf("backlog: no proximity consumer on %s (is --stream-prefix the pipeline's?)", topo.InStream())
			}
		}
		var n int64
		for _, c := range consumers {
			info, err := c.Info(ctx)
			if err != nil {
				return 0, fmt.Errorf("backlog: %w", err)
			}
			n += int64(info.NumPending) + int64(info.NumAckPending)
		}
		return n, nil
	}
}

// BacklogMonitor samples a backlog reader every Every (default 250 ms)
// from Run until its ctx ends. Its methods are safe to call during Run.
type BacklogMonitor struct {
	Read  func(context.Context) (int64, error)
	Every time.Duration

	mu      sync.Mutex
	samples []BacklogSample
	peak    int64
	fails   uint64
	lastErr error
}

// BacklogSample is one reading.
type BacklogSample struct {
	At    time.Time
	Value int64
}

// Run samples until ctx ends.
func (m *BacklogMonitor) Run(ctx context.Context) {
	every := m.Every
	if every <= 0 {
		every = 250 * time.Millisecond
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		v, err := m.Read(rctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		m.mu.Lock()
		if err != nil {
			m.fails++
			m.lastErr = err
		} else {
			m.samples = append(m.samples, BacklogSample{At: time.Now(), Value: v})
			m.peak = max(m.peak, v)
		}
		m.mu.Unlock()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Last returns the latest reading (-1: none yet).
func (m *BacklogMonitor) Last() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.samples) == 0 {
		return -1
	}
	return m.samples[len(m.samples)-1].Value
}

// Peak returns the largest reading.
func (m *BacklogMonitor) Peak() int64 {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.peak
}

// Failures returns how many readings failed and the last error.
func (m *BacklogMonitor) Failures() (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.fails, m.lastErr
}

// ZeroAfter returns how long after t the backlog first read 0 (0 if it
// read 0 at the first reading at or after t); false when it never did.
func (m *BacklogMonitor) ZeroAfter(t time.Time) (time.Duration, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, s := range m.samples {
		if !s.At.Before(t) && s.Value == 0 {
			return s.At.Sub(t), true
		}
	}
	return 0, false
}

// Treasure is one treasure of an admin drop.
type Treasure struct {
	ID     string `json:"id"`
	Node   uint64 `json:"node"`
	Points int    `json:"points"`
}

// RandomTreasures returns n treasures on seeded random nodes of g, ids
// idPrefix+i, points 10 to 100.
func RandomTreasures(g *graph.Graph, n int, seed uint64, idPrefix string) []Treasure {
	r := rand.New(rand.NewPCG(seed, 0x7ea5))
	ts := make([]Treasure, n)
	for i := range ts {
		ts[i] = Treasure{ID: idPrefix + strconv.Itoa(i), Node: uint64(graph.ID(uint32(r.IntN(g.NumNodes())))), Points: 10 * (1 + r.IntN(10))}
	}
	return ts
}

// PostDrop drops ts through POST /v1/admin/drops on ingestHTTP (an
// http:// base URL) with an admin token, and returns how many were new.
// It sends the drop again on a 503 (drops are idempotent) until ctx ends.
func PostDrop(ctx context.Context, client *http.Client, ingestHTTP, adminToken string, ts []Treasure) (int, error) {
	if client == nil {
		client = http.DefaultClient
	}
	body, err := json.Marshal(struct {
		Treasures []Treasure `json:"treasures"`
	}{ts})
	if err != nil {
		return 0, err
	}
	for {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(ingestHTTP, "/")+"/v1/admin/drops", bytes.NewReader(body))
		if err != nil {
			return 0, err
		}
		req.Header.Set("Authorization", "Bearer "+adminToken)
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return 0, fmt.Errorf("admin drop: %w", err)
		}
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		resp.Body.Close()
		switch resp.StatusCode {
		case http.StatusAccepted:
			var out struct {
				Accepted int `json:"accepted"`
			}
			if err := json.Unmarshal(data, &out); err != nil {
				return 0, fmt.Errorf("admin drop: %w", err)
			}
			return out.Accepted, nil
		case http.StatusServiceUnavailable:
			select {
			case <-ctx.Done():
				return 0, fmt.Errorf("admin drop: %s", resp.Status)
			case <-time.After(200 * time.Millisecond):
			}
		default:
			return 0, fmt.Errorf("admin drop: %s: %.200s", resp.Status, data)
		}
	}
}
