package e2e

import (
	"bufio"
	"context"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"treasure/internal/faults"
	"treasure/internal/graph"
	"treasure/internal/loadgen"
	"treasure/internal/testenv"
	"treasure/services/proximity"
)

// procLeaseTTL is the partition lease TTL of the processes startCluster
// starts (TREASURE_PROXIMITY_LEASE_TTL): a killed proximity worker's
// partitions are taken over that long after its last renewal.
const procLeaseTTL = 4 * time.Second

// readMetric reads one series (a name with its labels, as /metrics prints
// it) from a process's /metrics; ok is false while the process does not
// answer or has no such series.
func readMetric(p *proc, series string) (float64, bool) {
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + p.addr + "/metrics")
	if err != nil {
		return 0, false
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), series+" "); ok {
			f, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
			return f, err == nil
		}
	}
	return 0, false
}

// waitMetric polls until a process's series reads want (at least want,
// with atLeast).
func waitMetric(t *testing.T, p *proc, series string, want float64, atLeast bool) {
	t.Helper()
	testenv.WaitFor(t, 60*time.Second, func() string {
		select {
		case <-p.done:
			t.Fatalf("%s exited: %v\n%s", p.name, p.err, p.out.tail())
		default:
		}
		if v, ok := readMetric(p, series); !ok || v != want && !(atLeast && v > want) {
			return fmt.Sprintf("%s: %s is %v (read: %v), want %v", p.name, series, v, ok, want)
		}
		return ""
	})
}

// readyz returns a process's /readyz status and body.
func readyz(t *testing.T, p *proc) (int, string) {
	t.Helper()
	client := http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get("http://" + p.addr + "/readyz")
	if err != nil {
		t.Fatalf("%s /readyz: %v", p.name, err)
	}
	defer resp.Body.Close()
	var b strings.Builder
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		b.WriteString(sc.Text())
	}
	return resp.StatusCode, b.String()
}

// TestProximityLeaseTwoProcessesOnePartition (issue 9, "proximity workers
// scale by partitions"): two proximity processes are started for
// partition 0 while players walk, and the partition's lease decides which
// consumes:
//
//  1. the second waits: not ready ("waits for its lease, held by …"), its
//     lease_waiting gauge at 1, and it evaluates no move;
//  2. the holder is SIGKILLed (frozen first with messages delivered and not
//     acked): the waiting one takes over once the lease expires;
//  3. the killed one is started again and waits; the holder is SIGSTOPped
//     (again with messages in hand) past the TTL, the other takes over, and
//     the holder is SIGCONTed: it finds its lease lost, goes back to
//     waiting and evaluates no move from then on;
//  4. the holder is stopped (SIGTERM): it releases the lease and the
//     waiting one takes over at once.
//
// Then every accepted move has exactly one proximity update and one result
// in OUT, no treasure is claimed twice, PostgreSQL holds the points of
// exactly those claims, and a replay of the log agrees with OUT,
// PostgreSQL and Redis.
func TestProximityLeaseTwoProcessesOnePartition(t *testing.T) {
	t.Parallel()
	c := startCluster(t)
	g := c.d.g
	waiting := `treasure_proximity_partition_lease_waiting{partition="0"}`
	held := `treasure_proximity_partition_lease_held{partition="0"}`
	lost := `treasure_proximity_partition_lease_lost_total{partition="0"}`

	second := c.start("proximity-0 second", "TREASURE_PROXIMITY_ADDR", "proximity", "--partitions", "0")
	waitMetric(t, second, waiting, 1, false)
	waitMetric(t, c.prox[0], held, 1, false)

	points := dropTreasures(t, c.d)
	const players = 20
	wk := startWalkers(t, loadgen.Options{
		IngestURL: ws(c.d.ingest), PushURL: ws(c.d.push), Graph: g,
		Players: players, MovesPerSecond: 4, Secret: secret, PlayerPrefix: "leased-", Seed: 13,
		Drain: 45 * time.Second,
	})
	wk.progress(t, "players under way", 100)

	// 1. Only the holder consumes.
	if code, body := readyz(t, second); code != http.StatusServiceUnavailable || !strings.Contains(body, "waits for its lease, held by") {
		t.Fatalf("the second worker's /readyz: %d %q, want 503 naming the holder", code, body)
	}
	if n := metric(t, second, "treasure_proximity_moves_total"); n != 0 {
		t.Fatalf("the second worker evaluated %v moves while the first held the lease", n)
	}
	if n := metric(t, c.prox[0], "treasure_proximity_moves_total"); n == 0 {
		t.Fatal("the holder evaluated no move")
	}

	// freeze stops p (SIGSTOP) and waits until partition 0's consumer has
	// messages delivered and not acked — almost always p's, taken in by
	// the pull it had open; if p froze between two pulls, those of the
	// worker that takes over once p's lease expires — and returns how
	// many. Unlike freezeUntilUnacked it never thaws p: a thaw past 2/3 of
	// the TTL would cost p its lease.
	freeze := func(p *proc) int {
		t.Helper()
		cons, err := c.js.Consumer(context.Background(), c.topo.InStream(), proximity.Durable(c.topo, 0))
		if err != nil {
			t.Fatal(err)
		}
		if err := p.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
			t.Fatal(err)
		}
		n := 0
		testenv.WaitUntil(t, 60*time.Second, "partition 0's consumer holding unacked messages", func() bool {
			info, err := cons.Info(context.Background())
			if err == nil {
				n = info.NumAckPending
			}
			return n > 0
		})
		return n
	}

	// 2. kill -9 of the holder: the second takes over once the lease
	// expires.
	unacked := freeze(c.prox[0])
	t0 := time.Now()
	c.prox[0].kill(t)
	c.waitReady(second)
	t.Logf("holder killed with %d messages unacked; the second worker ready %v later (lease TTL %v)", unacked, time.Since(t0).Round(time.Millisecond), procLeaseTTL)
	wk.progress(t, "moves accepted after the takeover", 60)

	// 3. The killed one comes back and waits; the holder is frozen past
	// the TTL, the other takes over; the frozen one, thawed, stops.
	first := c.startAt("proximity-0 (restarted)", c.prox[0].addrVar, c.prox[0].addr, c.prox[0].args...)
	c.prox[0] = first
	waitMetric(t, first, waiting, 1, false)
	unacked = freeze(second)
	t0 = time.Now()
	c.waitReady(first)
	frozenFor := time.Since(t0)
	wk.progress(t, "moves accepted while the old holder is frozen", 60)
	if err := second.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	waitMetric(t, second, lost, 1, true) // more if a freeze attempt of freezeUntilUnacked outlasted the lease
	waitMetric(t, second, waiting, 1, false)
	movesThawed := metric(t, second, "treasure_proximity_moves_total")
	t.Logf("holder frozen with %d messages unacked; the restarted worker ready %v later; the old holder, thawed, lost its lease and waits",
		unacked, frozenFor.Round(time.Millisecond))
	wk.progress(t, "moves accepted after the thaw", 100)
	if n := metric(t, second, "treasure_proximity_moves_total"); n != movesThawed {
		t.Fatalf("the thawed worker evaluated %v moves after it found its lease lost", n-movesThawed)
	}
	if !strings.Contains(second.out.tail(), "partition lease lost") {
		t.Fatalf("the thawed worker did not log its lost lease:\n%s", second.out.tail())
	}

	// 4. A clean stop of the holder hands the partition over at once.
	t0 = time.Now()
	first.stop(t)
	c.waitReady(second)
	t.Logf("holder stopped (SIGTERM); the waiting worker ready %v later", time.Since(t0).Round(time.Millisecond))
	if !strings.Contains(first.out.tail(), "partition lease released") {
		t.Fatalf("the stopped holder did not release its lease:\n%s", first.out.tail())
	}
	wk.progress(t, "moves accepted after the handover", 60)

	final := wk.finish(t)
	for code, n := range final.Errors {
		t.Errorf("loadgen: %d × %s (no service was disturbed but proximity)", n, code)
	}
	// OUT: readOut fails on a second result for a move or a second claim
	// of a treasure.
	out := readOut(t, c.js, c.topo)
	if uint64(len(out.prox)) != final.TotalMoves {
		t.Fatalf("OUT holds %d proximity results for %d accepted moves", len(out.prox), final.TotalMoves)
	}
	if len(out.claims) == 0 {
		t.Fatal("no treasure was claimed: the run does not exercise claims")
	}
	scoresMatchClaims(t, c.pool, out, points, 60*time.Second)
	part, err := graph.Partition(g, c.topo.Partitions)
	if err != nil {
		t.Fatal(err)
	}
	rep := faults.LogAgrees(t, faults.Live{
		Graph: g, Part: part, Radius: c.d.radius, Topology: c.topo, JS: c.js,
		Postgres: c.pool, Redis: c.rdb, RedisPrefix: c.topo.Prefix + ":",
	}, 60*time.Second)
	t.Logf("a replay of the log agrees with OUT, PostgreSQL and Redis: %d claims, %d players", rep.Claims, rep.Players)
}
