package platform

import (
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// startServer runs s until the test ends and returns its address.
func startServer(t *testing.T, s *HTTPServer) string {
	t.Helper()
	addr, err := s.Listen()
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return addr.String()
}

// TestWebSocketOutlivesReadTimeout: a hijacked connection is not cut by
// the server's ReadTimeout. The handler reads without setting a deadline
// of its own: were the request's read deadline left on the connection
// (net/http clears it in Hijack today), its first read after ReadTimeout
// would fail and the echo never come.
func TestWebSocketOutlivesReadTimeout(t *testing.T) {
	const readTimeout = 100 * time.Millisecond
	up := websocket.Upgrader{}
	addr := startServer(t, &HTTPServer{Addr: "127.0.0.1:0", ReadTimeout: readTimeout, ReadHeaderTimeout: readTimeout,
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			ws, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer ws.Close()
			for {
				mt, b, err := ws.ReadMessage()
				if err != nil {
					return
				}
				if err := ws.WriteMessage(mt, b); err != nil {
					return
				}
			}
		})})
	ws, _, err := websocket.DefaultDialer.Dial("ws://"+addr+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	// Let the request's read deadline pass: the one thing this test must
	// wait for is time itself.
	time.Sleep(4 * readTimeout)
	if err := ws.WriteMessage(websocket.TextMessage, []byte("still there?")); err != nil {
		t.Fatal(err)
	}
	_ = ws.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, b, err := ws.ReadMessage()
	if err != nil || string(b) != "still there?" {
		t.Fatalf("echo after ReadTimeout: %q, %v", b, err)
	}
}

// TestSlowHeadersAreCut: a client that never finishes its headers is
// disconnected (ReadHeaderTimeout), not held forever.
func TestSlowHeadersAreCut(t *testing.T) {
	addr := startServer(t, &HTTPServer{Addr: "127.0.0.1:0", ReadHeaderTimeout: 50 * time.Millisecond,
		Handler: http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Slow: "); err != nil {
		t.Fatal(err)
	}
	// The server closes (or answers 408 and closes); the deadline here
	// only stops a wedged test.
	_ = c.SetReadDeadline(time.Now().Add(20 * time.Second))
	_, err = io.ReadAll(c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatal("the server kept a connection whose headers never ended")
	}
}

func TestLimitsFromEnv(t *testing.T) {
	env := map[string]string{
		EnvHTTPReadHeaderTimeout: "2s", EnvHTTPReadTimeout: "1m", EnvMaxConnsPerAddr: "0",
		EnvMaxSocketsPerPlayer: "3", EnvLeaderboardRate: "7.5",
	}
	l, err := LimitsFromEnv(func(k string) string { return env[k] })
	if err != nil {
		t.Fatal(err)
	}
	if l != (Limits{ReadHeaderTimeout: 2 * time.Second, ReadTimeout: time.Minute, MaxConnsPerAddr: Off, MaxSocketsPerPlayer: 3, LeaderboardRate: 7.5}) {
		t.Fatalf("%+v", l)
	}
	if l, err := LimitsFromEnv(func(string) string { return "" }); err != nil || l != (Limits{}) {
		t.Fatalf("unset: %+v, %v", l, err)
	}
	bad := map[string]string{EnvHTTPReadTimeout: "soon", EnvMaxConnsPerAddr: "-1", EnvMaxSocketsPerPlayer: "0", EnvLeaderboardRate: "NaN"}
	_, err = LimitsFromEnv(func(k string) string { return bad[k] })
	for k := range bad {
		if err == nil || !contains(err.Error(), k) {
			t.Errorf("error %v does not name %s", err, k)
		}
	}
	var s HTTPServer
	Limits{ReadTimeout: time.Minute}.Apply(&s)
	if s.ReadTimeout != time.Minute || s.ReadHeaderTimeout != 0 {
		t.Fatalf("apply: read %v, header %v", s.ReadTimeout, s.ReadHeaderTimeout)
	}
}

func contains(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return true
		}
	}
	return false
}
