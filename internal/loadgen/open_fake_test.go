package loadgen

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"treasure/internal/game"
)

func fakeOpenOptions(f *fake, players int, s Schedule) OpenOptions {
	return OpenOptions{
		Ingest: []string{f.url()}, Push: []string{f.url()}, Graph: f.g, Secret: fakeSecret,
		PlayerPrefix: "o-", Players: players, Seed: 3, Schedule: s, Drain: 5 * time.Second,
	}
}

// TestRunOpenResendsRateLimitedMoves: every third send is answered
// rate_limited, and the moves already in flight behind it discontinuous;
// the player sends the chain again and every move ends acked and answered
// (or rejected, see below), each exactly once.
func TestRunOpenResendsRateLimitedMoves(t *testing.T) {
	g := amsterdam(t)
	f := newFake(t, g, fakeOptions{rateLimitEvery: 3})
	r, err := RunOpen(context.Background(), fakeOpenOptions(f, 20, Schedule{Rate: 20, Duration: time.Second}), nil)
	if err != nil {
		t.Fatal(err)
	}
	tot := f.totals()
	// A move can stay rejected: when the rate-limited move is a spawn, the
	// next one is accepted as the first (it may start anywhere), and the
	// spawn, now behind the last acked move, is dropped.
	if r.Failed() || r.Sent != 20*20 || r.Acked+r.Rejected != r.Sent || r.Answered != r.Acked || r.Rejected > r.Errors["rate_limited"] || r.Unsent != 0 {
		t.Fatalf("accounting: sent %d acked %d answered %d rejected %d unsent %d lost %d dup %d ooo %d unexpected %d",
			r.Sent, r.Acked, r.Answered, r.Rejected, r.Unsent, r.Lost, r.Duplicated, r.OutOfOrder, r.Unexpected)
	}
	if tot.rateLimited == 0 || r.Errors["rate_limited"] != uint64(tot.rateLimited) || r.Retries == 0 {
		t.Fatalf("rate_limited: fake %d, counted %d, retries %d", tot.rateLimited, r.Errors["rate_limited"], r.Retries)
	}
	for code := range r.Errors {
		if code != "rate_limited" && code != "discontinuous" {
			t.Fatalf("errors: %v", r.Errors)
		}
	}
	if uint64(tot.accepted) != r.Acked {
		t.Fatalf("the fake accepted %d moves, the load generator counted %d acks", tot.accepted, r.Acked)
	}
}

// TestRunOpenReportsADroppedSocket: the fake drops each player's ingest
// socket after accepting its second move, before the ack: the player ends
// and its unanswered moves count as lost.
func TestRunOpenReportsADroppedSocket(t *testing.T) {
	g := amsterdam(t)
	f := newFake(t, g, fakeOptions{dropIngestAfter: 2})
	r, err := RunOpen(context.Background(), fakeOpenOptions(f, 5, Schedule{Rate: 10, Duration: time.Second}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Failed() || r.LostUnanswered < 5 || r.Errors["closed"] != 5 {
		t.Fatalf("lost unanswered %d, closed %d", r.LostUnanswered, r.Errors["closed"])
	}
	if r.Sent != r.Acked+r.Rejected+r.LostUnanswered || r.Acked != r.Answered+r.LostNoUpdate {
		t.Fatalf("the accounting does not add up: %+v", r)
	}
}

// TestRunOpenStopEndsTheScheduleAndDrains: closing Stop ends a long
// schedule early; what was sent is settled, and the moves scheduled after
// the stop count neither as sent nor as unsent.
func TestRunOpenStopEndsTheScheduleAndDrains(t *testing.T) {
	g := amsterdam(t)
	f := newFake(t, g, fakeOptions{})
	stop := make(chan struct{})
	o := fakeOpenOptions(f, 10, Schedule{Rate: 10, Duration: time.Hour})
	o.Stop = stop
	seconds := 0
	r, err := RunOpen(context.Background(), o, func(Second) {
		if seconds++; seconds == 1 {
			close(stop)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	if r.Failed() || r.Sent == 0 || r.Sent >= 10*10*3600 || r.Answered != r.Sent || r.Unsent != 0 {
		t.Fatalf("sent %d answered %d unsent %d failed %v", r.Sent, r.Answered, r.Unsent, r.Failed())
	}
	if f.totals().rejectedCodes[game.CodeDiscontinous] != 0 {
		t.Fatalf("moves rejected: %v", f.totals().rejectedCodes)
	}
}

// TestRunOpenAnswersPingsWhileConnecting: the services ping every socket
// and close one that stays silent, so a player's sockets are read from
// the moment they are open, not from t0: here Connected (which holds t0
// back, as a fleet's coordinator does while the other workers connect)
// waits for the pong of every socket the fake pinged on connect.
func TestRunOpenAnswersPingsWhileConnecting(t *testing.T) {
	g := amsterdam(t)
	f := newFake(t, g, fakeOptions{pingOnConnect: true})
	const players = 8
	o := fakeOpenOptions(f, players, Schedule{Rate: 5, Duration: time.Second})
	o.Connected = func(ctx context.Context) (time.Time, error) {
		deadline := time.Now().Add(20 * time.Second)
		for f.totals().pongs < 2*players {
			if time.Now().After(deadline) {
				return time.Time{}, fmt.Errorf("%d pongs for %d sockets pinged before t0", f.totals().pongs, 2*players)
			}
			time.Sleep(5 * time.Millisecond)
		}
		return time.Now(), nil
	}
	r, err := RunOpen(context.Background(), o, nil)
	if err != nil {
		t.Fatal(err)
	}
	if r.Failed() || r.Sent == 0 || r.Answered != r.Sent {
		t.Fatalf("sent %d answered %d failed %v errors %v", r.Sent, r.Answered, r.Failed(), r.Errors)
	}
}

// TestRunOpenAbortsCleanlyWhenConnectedFails: the players' readers,
// running since they connected, are stopped and the error returned.
func TestRunOpenAbortsCleanlyWhenConnectedFails(t *testing.T) {
	g := amsterdam(t)
	f := newFake(t, g, fakeOptions{pingOnConnect: true})
	o := fakeOpenOptions(f, 4, Schedule{Rate: 5, Duration: time.Second})
	o.Connected = func(context.Context) (time.Time, error) { return time.Time{}, errors.New("no start") }
	r, err := RunOpen(context.Background(), o, nil)
	if err == nil || !strings.Contains(err.Error(), "no start") || r != nil {
		t.Fatalf("result %v, error %v", r, err)
	}
	if f.totals().accepted != 0 {
		t.Fatalf("%d moves sent by an aborted run", f.totals().accepted)
	}
}

// TestRunOpenRetriesFailedDials: the first WebSocket requests fail (503
// and a connection closed unanswered); the players dial again and the run
// completes, the failures counted as "dial".
func TestRunOpenRetriesFailedDials(t *testing.T) {
	g := amsterdam(t)
	f := newFake(t, g, fakeOptions{failDials: 7})
	r, err := RunOpen(context.Background(), fakeOpenOptions(f, 3, Schedule{Rate: 5, Duration: time.Second}), nil)
	if err != nil {
		t.Fatal(err)
	}
	if f.totals().failedDials != 7 || r.Errors["dial"] != 7 {
		t.Fatalf("failed dials: fake %d, counted %d", f.totals().failedDials, r.Errors["dial"])
	}
	if r.Failed() || r.Sent == 0 || r.Answered != r.Sent {
		t.Fatalf("sent %d answered %d failed %v errors %v", r.Sent, r.Answered, r.Failed(), r.Errors)
	}
}

// TestRunOpenConnectTimeoutNamesItself: players that cannot connect
// within ConnectTimeout fail the run with a message naming the timeout.
func TestRunOpenConnectTimeoutNamesItself(t *testing.T) {
	g := amsterdam(t)
	f := newFake(t, g, fakeOptions{failDials: 1 << 30})
	o := fakeOpenOptions(f, 2, Schedule{Rate: 5, Duration: time.Second})
	o.ConnectTimeout = 300 * time.Millisecond
	_, err := RunOpen(context.Background(), o, nil)
	if err == nil || !strings.Contains(err.Error(), "connect timeout is 300ms") || !strings.Contains(err.Error(), "0 connected") {
		t.Fatalf("error %v", err)
	}
}

func TestConnectTimeoutScalesWithPlayers(t *testing.T) {
	if a, b := ConnectTimeoutFor(1), ConnectTimeoutFor(35_000); a < time.Minute || b < a+5*time.Minute {
		t.Fatalf("1 player %v, 35,000 players %v", a, b)
	}
}
