package push

import (
	"bytes"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/gorilla/websocket"
)

// TestDirectFramesReadAsTextMessages: frames written by appendHeader on
// the raw connection, at each of the three length encodings, read back
// with gorilla as the exact text messages.
func TestDirectFramesReadAsTextMessages(t *testing.T) {
	sizes := []int{0, 1, 125, 126, 200, 65535, 65536, 70000}
	up := websocket.Upgrader{}
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ws, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer ws.Close()
		var f []byte
		for _, n := range sizes {
			f = appendHeader(f[:0], n)
			f = append(f, bytes.Repeat([]byte{'a' + byte(n%26)}, n)...)
			if _, err := ws.NetConn().Write(f); err != nil {
				return
			}
		}
		_, _, _ = ws.ReadMessage() // until the client goes
	}))
	defer hs.Close()
	ws, _, err := websocket.DefaultDialer.Dial("ws"+strings.TrimPrefix(hs.URL, "http"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	for _, n := range sizes {
		typ, data, err := ws.ReadMessage()
		if err != nil {
			t.Fatalf("size %d: %v", n, err)
		}
		if typ != websocket.TextMessage || !bytes.Equal(data, bytes.Repeat([]byte{'a' + byte(n%26)}, n)) {
			t.Fatalf("size %d: type %d, %d bytes", n, typ, len(data))
		}
	}
}
