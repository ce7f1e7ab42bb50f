package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// msg is any server message of SPEC's wire contract.
type msg struct {
	Type    string `json:"type"`
	ID      uint64 `json:"id"`
	Seq     uint64 `json:"seq"`
	Node    uint64 `json:"node"`
	Code    string `json:"code"`
	Message string `json:"message"`
	Score   int64  `json:"score"`
	Rank    int64  `json:"rank"`
	Points  int64  `json:"points"`
	// RetryAfterMS is an unavailable or rate_limited error's wait.
	RetryAfterMS int64           `json:"retry_after_ms"`
	Treasure     json.RawMessage `json:"treasure"`
	Top          []struct {
		Player string `json:"player"`
		Score  int64  `json:"score"`
		Rank   int64  `json:"rank"`
	} `json:"top"`
}

type nearest struct {
	ID       string `json:"id"`
	Node     uint64 `json:"node"`
	Distance uint64 `json:"distance"`
}

// treasure decodes a proximity message's treasure (nil for null).
func (m msg) nearest(tb testing.TB) *nearest {
	tb.Helper()
	if len(m.Treasure) == 0 || string(m.Treasure) == "null" {
		return nil
	}
	var n nearest
	if err := json.Unmarshal(m.Treasure, &n); err != nil {
		tb.Fatalf("treasure %s: %v", m.Treasure, err)
	}
	return &n
}

// socket is a test client's WebSocket: a reader goroutine splits frames on
// newlines and queues the messages.
type socket struct {
	tb   testing.TB
	conn *websocket.Conn
	in   chan msg
	mu   sync.Mutex
	err  error
}

func dial(tb testing.TB, rawURL, token string) *socket {
	tb.Helper()
	u, _ := url.Parse(rawURL)
	q := u.Query()
	q.Set("token", token)
	u.RawQuery = q.Encode()
	conn, resp, err := websocket.DefaultDialer.Dial(u.String(), nil)
	if err != nil {
		status := ""
		if resp != nil {
			status = resp.Status
		}
		tb.Fatalf("dial %s: %v %s", rawURL, err, status)
	}
	s := &socket{tb: tb, conn: conn, in: make(chan msg, 4096)}
	go s.read()
	tb.Cleanup(func() { conn.Close() })
	return s
}

func (s *socket) read() {
	defer close(s.in)
	for {
		_, data, err := s.conn.ReadMessage()
		if err != nil {
			s.mu.Lock()
			s.err = err
			s.mu.Unlock()
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(data))
		for sc.Scan() {
			line := bytes.TrimSpace(sc.Bytes())
			if len(line) == 0 {
				continue
			}
			var m msg
			if err := json.Unmarshal(line, &m); err != nil {
				s.tb.Errorf("server sent invalid JSON %q: %v", line, err)
				continue
			}
			s.in <- m
		}
	}
}

func (s *socket) send(text string) {
	s.tb.Helper()
	if err := s.conn.WriteMessage(websocket.TextMessage, []byte(text)); err != nil {
		s.tb.Fatalf("send: %v", err)
	}
}

// next returns the next message, failing after timeout.
func (s *socket) next(timeout time.Duration) msg {
	s.tb.Helper()
	select {
	case m, ok := <-s.in:
		if !ok {
			s.tb.Fatalf("socket closed: %v", s.err)
		}
		return m
	case <-time.After(timeout):
		s.tb.Fatalf("no message within %v", timeout)
	}
	return msg{}
}

// until collects messages until pred is satisfied by one of them.
func (s *socket) until(timeout time.Duration, pred func(msg) bool) []msg {
	s.tb.Helper()
	deadline := time.Now().Add(timeout)
	var got []msg
	for {
		left := time.Until(deadline)
		if left <= 0 {
			s.tb.Fatalf("condition not met within %v; got %d messages, last %+v", timeout, len(got), last(got))
		}
		m := s.next(left)
		got = append(got, m)
		if pred(m) {
			return got
		}
	}
}

func last(ms []msg) any {
	if len(ms) == 0 {
		return nil
	}
	return ms[len(ms)-1]
}

func moveJSON(seq uint64, path ...uint32) string {
	parts := make([]string, len(path))
	for i, p := range path {
		parts[i] = fmt.Sprint(p)
	}
	return fmt.Sprintf(`{"type":"move","seq":%d,"path":[%s]}`, seq, strings.Join(parts, ","))
}

func getJSON(tb testing.TB, rawURL string, out any) int {
	tb.Helper()
	resp, err := http.Get(rawURL)
	if err != nil {
		tb.Fatalf("GET %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	if out != nil && resp.StatusCode == http.StatusOK {
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			tb.Fatalf("GET %s: %v", rawURL, err)
		}
	}
	return resp.StatusCode
}

func postJSON(tb testing.TB, rawURL, token, body string) (int, string) {
	tb.Helper()
	req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, rawURL, strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatalf("POST %s: %v", rawURL, err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	return resp.StatusCode, b.String()
}
