package push_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	cdplog "github.com/chromedp/cdproto/log"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/gorilla/websocket"

	"treasure/internal/auth"
	"treasure/internal/graph"
	"treasure/internal/stack/stacktest"
	"treasure/services/push"
)

const liveSecret = "live-page-secret"

// chromium returns the browser to drive: $TREASURE_CHROMIUM, else the
// first of Debian's and the usual names on PATH. The test fails, never
// skips, without one: scripts/chromium.sh (make test) installs it.
func chromium(tb testing.TB) string {
	tb.Helper()
	if p := os.Getenv("TREASURE_CHROMIUM"); p != "" {
		return p
	}
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable", "headless-shell"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	tb.Fatal("no Chromium found: run scripts/chromium.sh (make test does), or: apt-get install -y chromium")
	return ""
}

// liveGraph is a small synthetic city: it has coordinates.
func liveGraph(tb testing.TB) *graph.Graph {
	tb.Helper()
	lo, hi := graph.GenLimits(2500)
	g, err := graph.Generate(graph.GenOptions{Nodes: 2500, Edges: (lo + hi) / 2, Seed: 7})
	if err != nil {
		tb.Fatal(err)
	}
	return g
}

func token(tb testing.TB, sub, role string) string {
	tb.Helper()
	tok, err := auth.Sign(liveSecret, sub, role, time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return tok
}

// mover is one player's move socket on ingest.
type mover struct {
	tb  testing.TB
	ws  *websocket.Conn
	seq uint64
}

func newMover(tb testing.TB, ingestWS, player string) *mover {
	tb.Helper()
	ws, _, err := websocket.DefaultDialer.Dial(ingestWS+"/v1/moves/ws?token="+token(tb, player, ""), nil)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { ws.Close() })
	return &mover{tb: tb, ws: ws}
}

// move sends a move along path (graph indices) and waits for its ack.
func (m *mover) move(path ...uint32) {
	m.tb.Helper()
	m.seq++
	ids := make([]string, len(path))
	for i, v := range path {
		ids[i] = fmt.Sprint(graph.ID(v))
	}
	msg := fmt.Sprintf(`{"type":"move","seq":%d,"path":[%s]}`, m.seq, strings.Join(ids, ","))
	if err := m.ws.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		m.tb.Fatal(err)
	}
	_ = m.ws.SetReadDeadline(time.Now().Add(15 * time.Second))
	_, data, err := m.ws.ReadMessage()
	if err != nil {
		m.tb.Fatal(err)
	}
	var ack struct {
		Type string
		Seq  uint64
		Code string
	}
	if err := json.Unmarshal(bytes.SplitN(data, []byte("\n"), 2)[0], &ack); err != nil || ack.Type != "ack" || ack.Seq != m.seq {
		m.tb.Fatalf("move %s: %s", msg, data)
	}
}

func drop(tb testing.TB, ingestHTTP, id string, node uint32, points int) {
	tb.Helper()
	body := fmt.Sprintf(`{"treasures":[{"id":%q,"node":%d,"points":%d}]}`, id, graph.ID(node), points)
	req, _ := http.NewRequest(http.MethodPost, ingestHTTP+"/v1/admin/drops", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer "+token(tb, "live-admin", "admin"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		tb.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusAccepted {
		tb.Fatalf("drop %s: %s", id, resp.Status)
	}
}

// walk returns a, b, c: a path of three distinct nodes, a-b and b-c edges.
func walk(g *graph.Graph, from uint32) (a, b, c uint32) {
	for a = from; ; a++ {
		b = g.Neighbors(a)[0].To
		for _, arc := range g.Neighbors(b) {
			if arc.To != a {
				return a, b, arc.To
			}
		}
	}
}

func httpURL(wsURL string) string { return "http" + strings.TrimPrefix(wsURL, "ws") }

// tab is one browser tab on the live page: it records every console error
// or warning, exception and browser log error of the page.
type tab struct {
	t        *testing.T
	ctx      context.Context
	t0       time.Time
	mu       sync.Mutex
	problems []string
}

// openTab opens a tab in the browser of ctx. When mapBody is not nil, the
// page's GET /v1/map is answered with it instead of push's answer.
func openTab(t *testing.T, ctx context.Context, mapBody []byte) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(ctx)
	t.Cleanup(cancel)
	tb := &tab{t: t, ctx: ctx, t0: time.Now()}
	err := chromedp.Listen(ctx, func(ev any) {
		var line string
		switch ev := ev.(type) {
		case *runtime.EventConsoleAPICalled:
			if ev.Type == runtime.ConsoleAPICalledTypeError || ev.Type == runtime.ConsoleAPICalledTypeAssert || ev.Type == runtime.ConsoleAPICalledTypeWarning {
				var args []string
				for _, a := range ev.Args {
					args = append(args, string(a.Value)+a.Description)
				}
				line = fmt.Sprintf("console.%s: %s", ev.Type, strings.Join(args, " "))
			}
		case *runtime.EventExceptionThrown:
			line = "exception: " + ev.ExceptionDetails.Text
			if ev.ExceptionDetails.Exception != nil {
				line += " " + ev.ExceptionDetails.Exception.Description
			}
		case *cdplog.EventEntryAdded:
			if ev.Entry.Level == cdplog.EntryLevelError || ev.Entry.Level == cdplog.EntryLevelWarning {
				line = fmt.Sprintf("log %s (%s): %s %s", ev.Entry.Level, ev.Entry.Source, ev.Entry.Text, ev.Entry.URL)
			}
		case *fetch.EventRequestPaused:
			// Answered from another goroutine: a listener must not call
			// the browser.
			go func() {
				_, _ = chromedp.Call(ctx, fetch.FulfillRequest, fetch.FulfillRequestParams{RequestID: ev.RequestID, ResponseCode: 200,
					ResponseHeaders: []*fetch.HeaderEntry{{Name: "Content-Type", Value: "application/json"}}, Body: mapBody})
			}()
		}
		if line != "" {
			tb.mu.Lock()
			tb.problems = append(tb.problems, line)
			tb.mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err) // the browser did not start
	}
	if mapBody != nil {
		if _, err := chromedp.Call(ctx, fetch.Enable, fetch.EnableParams{Patterns: []*fetch.RequestPattern{{URLPattern: "*/v1/map"}}}); err != nil {
			t.Fatal(err)
		}
	}
	return tb
}

func (tb *tab) navigate(url string) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, chromedp.Navigate(url)); err != nil {
		tb.t.Fatal(err)
	}
}

// checkConsole fails the test when the page logged a problem.
func (tb *tab) checkConsole() {
	tb.t.Helper()
	tb.mu.Lock()
	defer tb.mu.Unlock()
	if len(tb.problems) > 0 {
		tb.t.Fatalf("the page logged:\n%s", strings.Join(tb.problems, "\n"))
	}
}

// truth evaluates a JavaScript expression in the page, as a boolean.
func (tb *tab) truth(expr string) bool {
	tb.t.Helper()
	ok, err := chromedp.Run(tb.ctx, chromedp.Evaluate[bool]("!!("+expr+")"))
	if err != nil {
		tb.t.Fatalf("%s: %v", expr, err)
	}
	return ok
}

// until polls a boolean expression until it holds, failing on the way as
// soon as the page logs a problem.
func (tb *tab) until(what, expr string) {
	tb.t.Helper()
	defer func() { tb.t.Logf("%v: %s", time.Since(tb.t0).Round(time.Millisecond), what) }()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(25 * time.Millisecond) {
		if tb.truth(expr) {
			return
		}
		tb.checkConsole()
		if time.Now().After(deadline) {
			state, _ := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`JSON.stringify({connected: __treasure.connected, view: __treasure.view, frames: __treasure.frames, players: __treasure.players, treasures: __treasure.treasures, leaderboard: __treasure.leaderboard, claims: __treasure.claims, map: __treasure.map})`))
			tb.t.Fatalf("the page never showed %s (%s); its state: %s", what, expr, state)
		}
	}
}

// TestLivePageInChromium opens the live page in headless Chromium against
// the four services on the real servers, with a spectator token, and
// checks: no console error or exception, the feed connects, a player who
// moves is shown moving (at its nodes' coordinates), a dropped treasure
// appears, and the claim that takes it changes the leaderboard and the
// claims list. It saves a screenshot to $TREASURE_ARTIFACTS (else the
// test's temporary folder). A second tab, without a token and with the
// map of a graph without coordinates, gets the public view (no active
// treasure) and says there is no map, and still shows the leaderboard.
func TestLivePageInChromium(t *testing.T) {
	exe := chromium(t)
	g := liveGraph(t)
	t0 := time.Now()
	p := stacktest.Start(t, stacktest.Options{Graph: g, Secret: liveSecret})
	t.Logf("%v: the services are ready", time.Since(t0).Round(time.Millisecond))
	t.Cleanup(func() { t.Logf("%v: stopping the services", time.Since(t0).Round(time.Millisecond)) })
	pushHTTP, ingestHTTP := httpURL(p.PushURL), httpURL(p.IngestURL)

	opts := append(chromedp.DefaultExecAllocatorOptions[:], chromedp.ExecPath(exe), chromedp.WindowSize(1280, 800), chromedp.DisableGPU)
	if os.Geteuid() == 0 {
		opts = append(opts, chromedp.NoSandbox) // Chromium refuses to run as root with its sandbox
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	defer cancelAlloc()
	bctx, cancelBrowser := chromedp.NewContext(actx)
	defer cancelBrowser()
	bctx, cancel := context.WithTimeout(bctx, 60*time.Second)
	defer cancel()
	if err := chromedp.Do(bctx); err != nil { // starts the browser
		t.Fatal(err)
	}
	t.Logf("%v: the browser is up", time.Since(t0).Round(time.Millisecond))

	page := openTab(t, bctx, nil)
	page.navigate(pushHTTP + "/?token=" + token(t, "live-spectator", push.RoleSpectator))
	page.until("a connected treasure view", `window.__treasure && __treasure.connected && __treasure.view === "treasures" && __treasure.snapshots > 0`)
	page.until("the map", `__treasure.map.loaded && __treasure.map.coords && __treasure.map.segments > 100`)

	const player = "live-walker"
	a, b, c := walk(g, 100)
	m := newMover(t, p.IngestURL, player)
	at := func(v uint32) string {
		return fmt.Sprintf(`(p => p && p.node === %d && p.x === %d && p.y === %d)(__treasure.players[%q])`, graph.ID(v), g.X[v], g.Y[v], player)
	}
	m.move(a)
	page.until("the player at its spawn", at(a))
	if page.truth(fmt.Sprintf(`__treasure.leaderboard.some(e => e.player === %q)`, player)) {
		t.Fatal("the player is on the leaderboard before any claim")
	}
	m.move(a, b)
	page.until("the player moving to its next node", at(b))

	drop(t, ingestHTTP, "live-gold", c, 25)
	page.until("the dropped treasure", fmt.Sprintf(`(t => t && t.node === %d && t.points === 25)(__treasure.treasures["live-gold"])`, graph.ID(c)))
	m.move(b, c) // onto the treasure: the claim
	page.until("the claim", fmt.Sprintf(`__treasure.claims.some(c => c.player === %q && c.treasure === "live-gold" && c.points === 25) && !__treasure.treasures["live-gold"]`, player))
	page.until("the leaderboard with the claim", fmt.Sprintf(`__treasure.leaderboard.some(e => e.player === %q && e.score === 25 && e.rank === 1)`, player))
	page.until("the leaderboard drawn", fmt.Sprintf(`document.querySelector('#board li[data-player=%q][data-score="25"]') !== null`, player))
	page.until("the stats", `__treasure.stats.players >= 1 && __treasure.stats.backlog >= 0 && __treasure.stats.moves_per_s >= 0 &&
		document.getElementById("s-players").textContent !== "–" && document.getElementById("s-backlog").textContent !== "–"`)

	shot, err := chromedp.Run(page.ctx, chromedp.CaptureScreenshot())
	if err != nil {
		t.Fatal(err)
	}
	dir := os.Getenv("TREASURE_ARTIFACTS")
	if dir == "" {
		dir = t.TempDir()
	} else if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "livepage.png")
	if err := os.WriteFile(path, shot, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s (%d bytes)", path, len(shot))
	page.checkConsole()

	// The public view, on a graph without coordinates: another treasure is
	// active, and this tab never learns of it.
	drop(t, ingestHTTP, "live-hidden", a, 5)
	m.move(c, b) // its proximity answer names live-hidden (one step away)
	page.until("the hidden treasure, in the treasure view", `!!__treasure.treasures["live-hidden"]`)
	public := openTab(t, bctx, []byte(`{"coords":false,"nodes":2500,"message":"this graph has no node coordinates (a DIMACS .gr without its .co): no map to draw"}`))
	public.navigate(pushHTTP + "/")
	public.until("a connected public view", `window.__treasure && __treasure.connected && __treasure.view === "public" && __treasure.snapshots > 0`)
	public.until("the no-map message", `__treasure.map.loaded && !__treasure.map.coords && !document.getElementById("mapmsg").hidden &&
		document.getElementById("mapmsg").textContent.includes("no node coordinates")`)
	public.until("the leaderboard", fmt.Sprintf(`document.querySelector('#board li[data-player=%q][data-score="25"]') !== null`, player))
	m.move(b, a) // claims live-hidden: the public view sees the claim
	public.until("the claim of the hidden treasure", `__treasure.claims.some(c => c.treasure === "live-hidden")`)
	if public.truth(`Object.keys(__treasure.treasures).length > 0 || document.getElementById("s-treasures").textContent !== "hidden"`) {
		t.Fatal("the public view shows active treasures")
	}
	public.checkConsole()
	page.checkConsole()
	t.Logf("%v: done", time.Since(t0).Round(time.Millisecond))
}
