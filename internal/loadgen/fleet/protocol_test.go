package fleet

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
)

func TestLineReaderReadsWhatLineWriterWrote(t *testing.T) {
	var buf bytes.Buffer
	w := &lineWriter{w: &buf}
	big := json.RawMessage(`"` + strings.Repeat("x", 300<<10) + `"`) // longer than the read buffer
	sent := []message{
		{Type: msgConfig, Config: &Config{Worker: 2, Ingest: []string{"ws://a"}, Players: 7, FirstPlayer: 14, LocalAddr: "127.0.0.4"}},
		{Type: msgConnected, N: 5},
		{Type: msgReady},
		{Type: msgStart, T0: 1_700_000_000_123_456_789},
		{Type: msgSecond, I: 3, Body: json.RawMessage(`{"sent":4}`)},
		{Type: msgResult, Body: big},
		{Type: msgError, Error: "boom"},
	}
	for _, m := range sent {
		if err := w.send(m); err != nil {
			t.Fatal(err)
		}
	}
	r := newLineReader(&buf)
	for i, want := range sent {
		got, err := r.next()
		if err != nil {
			t.Fatalf("message %d: %v", i, err)
		}
		gb, _ := json.Marshal(got)
		wb, _ := json.Marshal(want)
		if !bytes.Equal(gb, wb) {
			t.Errorf("message %d: got %.200s, want %.200s", i, gb, wb)
		}
	}
	if _, err := r.next(); !errors.Is(err, io.EOF) {
		t.Errorf("after the last line: %v, want EOF", err)
	}
}

func TestLineReaderRejectsBadInput(t *testing.T) {
	for name, in := range map[string]string{
		"not json":     "hello\n",
		"no type":      `{"n":3}` + "\n",
		"cut off line": `{"type":"ready"`,
	} {
		t.Run(name, func(t *testing.T) {
			_, err := newLineReader(strings.NewReader(in)).next()
			if err == nil || errors.Is(err, io.EOF) {
				t.Errorf("%q: err %v, want a protocol error", in, err)
			}
		})
	}
}

func TestWorkerRefusesAFirstMessageThatIsNotConfig(t *testing.T) {
	var out bytes.Buffer
	err := serveWorker(t.Context(), strings.NewReader(`{"type":"start","t0":1}`+"\n"), &out,
		func(_ context.Context, _ Config, _ hooks) (any, error) { t.Error("run called"); return nil, nil })
	if err == nil || !strings.Contains(err.Error(), `want "config"`) {
		t.Errorf("err %v, want a complaint about the first message", err)
	}
}

// FuzzLineReader: whatever a worker writes, reading it returns messages or
// an error, never panics, and every message has a type.
func FuzzLineReader(f *testing.F) {
	f.Add([]byte(`{"type":"ready"}` + "\n" + `{"type":"second","i":2,"body":{"sent":1}}` + "\n"))
	f.Add([]byte(`{"type":"config","config":{"players":3,"schedule":{"rate_samples":[1,2]}}}` + "\n"))
	f.Add([]byte("garbage\n\n{"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r := newLineReader(bytes.NewReader(b))
		for range 1000 {
			m, err := r.next()
			if err != nil {
				return
			}
			if m.Type == "" {
				t.Fatalf("message without a type from %q", b)
			}
		}
	})
}
