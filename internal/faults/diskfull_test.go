package faults

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/auth"
	"treasure/internal/graph"
	"treasure/internal/loadgen"
	"treasure/internal/natsjs"
	"treasure/internal/ratelimit"
	"treasure/internal/stack/stacktest"
	"treasure/internal/testenv"
)

// TestJetStreamStoreFullUnderLoad runs the pipeline on a private embedded
// JetStream server whose file store is capped (max_file_store 48 MiB), its
// streams unlimited (so the server's cap, not a stream's, is what fills),
// under load; then fills the store with another stream's data — a disk
// shared with something else that grew — and later deletes that data.
//
// While the store is full ingest answers every move `unavailable` with a
// retry_after_ms (checked on a socket of its own) and the players resend
// the same move after that wait; once space returns the moves are
// accepted again without anyone reconnecting. At the end every accepted
// move has exactly one result (nothing acked was lost, nothing answered
// with an error took effect twice), no treasure is claimed twice, and OUT,
// PostgreSQL and Redis equal a replay of the log.
func TestJetStreamStoreFullUnderLoad(t *testing.T) {
	t.Parallel()
	g := amsterdam(t)
	const maxStore = 48 << 20
	url, _ := testenv.EmbeddedNATSWith(t, testenv.NATSOptions{MaxStore: maxStore})
	sp := stacktest.Start(t, stacktest.Options{Graph: g, Secret: secret, NATSURL: url,
		StreamLimits: natsjs.Limits{MaxBytes: -1, MaxMsgs: -1},
		RateLimit:    ratelimit.Limit{Rate: 1e6, Burst: 1_000_000}})
	dropTreasures(t, sp, g, 10)
	l := startLoad(t, loadgen.Options{IngestURL: sp.IngestURL, PushURL: sp.PushURL, Graph: g,
		Players: 10, MovesPerSecond: 5, PlayerPrefix: "full-", Seed: 9})
	l.progress(t, "moves before the store fills", 50)

	// Fill the store: another stream's data, until the server refuses.
	ctx := context.Background()
	js := sp.JS
	filler := sp.StreamPrefix + "-filler"
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: filler, Subjects: []string{filler + ".>"}, Storage: jetstream.FileStorage}); err != nil {
		t.Fatal(err)
	}
	chunk := make([]byte, 256<<10)
	var filled int
	for ; ; filled++ {
		if filled > 2*maxStore/len(chunk) {
			t.Fatalf("%d MiB stored in a %d MiB store and no refusal", filled*len(chunk)>>20, maxStore>>20)
		}
		_, err := js.Publish(ctx, filler+".x", chunk)
		if err == nil {
			continue
		}
		// JetStream's 10047 "insufficient storage resources available"
		// (10023 on older servers).
		var api *jetstream.APIError
		if errors.As(err, &api) && (api.ErrorCode == 10047 || api.ErrorCode == 10023) {
			break
		}
		t.Fatalf("filling the store: %v", err)
	}
	tFull := time.Now()
	unavailBefore := l.errors()["unavailable"]
	acceptedFull := l.accepted.Load()

	// A move of a new player, on its own socket: unavailable, with a wait.
	tok, _ := auth.Sign(secret, "probe", "", time.Hour)
	probe, _, err := websocket.DefaultDialer.Dial(sp.IngestURL+"/v1/moves/ws?token="+tok, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	var rep struct {
		Type, Code, Message string
		Seq                 uint64
		RetryAfterMs        *int64 `json:"retry_after_ms"`
	}
	move := fmt.Sprintf(`{"type":"move","seq":1,"path":[%d]}`, graph.ID(5))
	_ = probe.SetReadDeadline(time.Now().Add(guard))
	if err := probe.WriteMessage(websocket.TextMessage, []byte(move)); err != nil {
		t.Fatal(err)
	}
	_, data, err := probe.ReadMessage()
	if err != nil {
		t.Fatal(err)
	}
	if json.Unmarshal(data, &rep) != nil || rep.Type != "error" || rep.Code != "unavailable" || rep.RetryAfterMs == nil || *rep.RetryAfterMs <= 0 {
		t.Fatalf("a move while the store is full answered %s; want unavailable with retry_after_ms", data)
	}
	testenv.WaitUntil(t, guard, "the players' moves answered unavailable", func() bool { return l.errors()["unavailable"] >= unavailBefore+30 })
	acceptedWhileFull := l.accepted.Load() - acceptedFull

	// Space returns: the other data is deleted.
	if err := js.DeleteStream(ctx, filler); err != nil {
		t.Fatal(err)
	}
	fullFor := time.Since(tFull)
	l.progress(t, "moves after space returned", 100)
	// The probe's move, sent again after its wait, is accepted.
	time.Sleep(time.Duration(*rep.RetryAfterMs) * time.Millisecond)
	if err := probe.WriteMessage(websocket.TextMessage, []byte(move)); err != nil {
		t.Fatal(err)
	}
	_, data, err = probe.ReadMessage()
	rep.Type, rep.Seq = "", 0
	if err != nil || json.Unmarshal(data, &rep) != nil || rep.Type != "ack" || rep.Seq != 1 {
		t.Fatalf("the probe's move sent again after space returned: %s %v", data, err)
	}
	f := l.finish(t, "unavailable")
	t.Logf("store full for %v (%d MiB of other data): %d moves answered unavailable (retry_after_ms %d), %d accepted meanwhile; %d moves accepted in all, %d claims, errors %v",
		fullFor.Round(time.Millisecond), filled*len(chunk)>>20, f.Errors["unavailable"]-unavailBefore, *rep.RetryAfterMs, acceptedWhileFull, f.TotalMoves, f.Claims, f.Errors)
	checkOut(t, sp, f, 1) // and the probe's move
	rep2 := LogAgrees(t, live(sp, g), guard)
	t.Logf("a replay of the log agrees with OUT, PostgreSQL and Redis: %d claims, %d players", rep2.Claims, rep2.Players)
}
