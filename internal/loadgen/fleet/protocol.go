package fleet

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sync"
	"time"
)

// The control protocol between the coordinator and one worker: one JSON
// object per line on the worker's stdin (coordinator → worker) and stdout
// (worker → coordinator); the worker's stderr carries only logs.
//
//	coordinator → worker              worker → coordinator
//	{"type":"config","config":{…}}
//	                                  {"type":"connected","n":N}   (repeated while connecting)
//	                                  {"type":"ready"}             (every socket is open)
//	{"type":"start","t0":UNIX_NANOS}
//	                                  {"type":"second","i":I,"body":{…}}  (per second since t0)
//	{"type":"end"}                    (optional: end the schedule now, drain, finish)
//	{"type":"stop"}                   (optional: stop now, skip the drain, finish)
//	                                  {"type":"result","body":{…}}  then exit 0
//	                                  {"type":"error","error":"…"}  then exit 1
//
// End of file on the worker's stdin means the coordinator is gone: the
// worker stops at once (it never outlives its coordinator for long).
// Bodies are the engine's own JSON forms (see engine.go); the protocol
// does not look inside them.
const (
	msgConfig    = "config"
	msgStart     = "start"
	msgEnd       = "end"
	msgStop      = "stop"
	msgConnected = "connected"
	msgReady     = "ready"
	msgSecond    = "second"
	msgResult    = "result"
	msgError     = "error"
)

// message is one line of the protocol, in either direction.
type message struct {
	Type   string          `json:"type"`
	Config *Config         `json:"config,omitempty"`
	T0     int64           `json:"t0,omitempty"` // start: unix nanoseconds
	N      int             `json:"n,omitempty"`  // connected
	I      int             `json:"i,omitempty"`  // second: index since t0
	Body   json.RawMessage `json:"body,omitempty"`
	Error  string          `json:"error,omitempty"`
}

// Config is one worker's share of a run, sent as the first line.
type Config struct {
	// Worker is the worker's index (0-based), for logs.
	Worker int `json:"worker"`
	// Ingest and Push are ws:// base URLs.
	Ingest []string `json:"ingest"`
	Push   []string `json:"push"`
	// GraphPath is the graph file the worker loads (the services' graph).
	GraphPath    string `json:"graph"`
	Secret       string `json:"secret"`
	PlayerPrefix string `json:"player_prefix"`
	FirstPlayer  int    `json:"first_player"`
	Players      int    `json:"players"`
	Seed         uint64 `json:"seed"`
	// LocalAddr is the source IP the worker dials from ("" lets the kernel
	// choose).
	LocalAddr       string        `json:"local_addr,omitempty"`
	PushLeaderboard bool          `json:"push_leaderboard,omitempty"`
	Drain           time.Duration `json:"drain_ns,omitempty"`
	ConnectTimeout  time.Duration `json:"connect_timeout_ns,omitempty"`
	Schedule        Schedule      `json:"schedule"`
	// LogLevel is the slog level of the worker's stderr log.
	LogLevel string `json:"log_level,omitempty"`
}

// Schedule is loadgen.Schedule in a form that travels: RateAt, a function,
// is sampled every RateStep from 0 to Duration, and the worker steps
// through the samples (RateAt(t) = RateSamples[t/RateStep]).
type Schedule struct {
	Rate        float64       `json:"rate,omitempty"`
	Duration    time.Duration `json:"duration_ns,omitempty"`
	Window      time.Duration `json:"window_ns,omitempty"`
	Waves       int           `json:"waves,omitempty"`
	RateStep    time.Duration `json:"rate_step_ns,omitempty"`
	RateSamples []float64     `json:"rate_samples,omitempty"`
}

// maxLine bounds one protocol line: a result with per-second histograms of
// a long run is large, but not this large.
const maxLine = 256 << 20

// lineReader reads protocol messages one line at a time.
type lineReader struct{ r *bufio.Reader }

func newLineReader(r io.Reader) *lineReader { return &lineReader{r: bufio.NewReaderSize(r, 64<<10)} }

// next returns the next message; io.EOF at a clean end of input.
func (l *lineReader) next() (message, error) {
	var m message
	var line []byte
	for {
		chunk, err := l.r.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > maxLine {
			return m, fmt.Errorf("protocol line longer than %d bytes", maxLine)
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		if errors.Is(err, io.EOF) && len(line) > 0 {
			return m, fmt.Errorf("protocol: truncated line %q", truncate(line))
		}
		return m, err
	}
	if err := json.Unmarshal(line, &m); err != nil {
		return m, fmt.Errorf("protocol: bad line %q: %w", truncate(line), err)
	}
	if m.Type == "" {
		return m, fmt.Errorf("protocol: line without a type: %q", truncate(line))
	}
	return m, nil
}

func truncate(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "…"
	}
	return string(b)
}

// lineWriter writes protocol messages; safe for concurrent use.
type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) send(m message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("protocol: %w", err)
	}
	b = append(b, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	_, err = l.w.Write(b)
	return err
}

// marshalBody encodes a second or a result for the wire.
func marshalBody(v any) (json.RawMessage, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("protocol: encoding %T: %w", v, err)
	}
	return b, nil
}
