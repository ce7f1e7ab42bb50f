package cli

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
)

// TestReplayCommand writes a tiny log by hand — a drop, then a walk onto
// the treasure — and replays it: the output lines are the claim and the
// proximity answers; --check against an OUT stream the workers never
// filled reports the difference and fails.
func TestReplayCommand(t *testing.T) {
	t.Parallel()
	// The treasure sits on b; the player spawns on a, b's neighbour, and
	// steps onto b (its second move without a PrevSeq).
	_, _, env := goldWalkLog(t, context.Background(), 0)
	env["TREASURE_LOG_LEVEL"] = "warn"
	code, out, errs := runCLI(t, "", env, "replay")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	type line struct {
		Type     string          `json:"type"`
		Player   string          `json:"player"`
		Seq      uint64          `json:"seq"`
		Treasure json.RawMessage `json:"treasure"`
		Points   uint64          `json:"points"`
	}
	var got []line
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var x line
		if err := json.Unmarshal([]byte(l), &x); err != nil {
			t.Fatalf("line %q: %v", l, err)
		}
		got = append(got, x)
	}
	// Partition order can put the moves in either order; find each.
	var claim, prox1, prox2 *line
	for i := range got {
		switch {
		case got[i].Type == "claim":
			claim = &got[i]
		case got[i].Type == "proximity" && got[i].Seq == 1:
			prox1 = &got[i]
		case got[i].Type == "proximity" && got[i].Seq == 2:
			prox2 = &got[i]
		}
	}
	if len(got) != 3 || claim == nil || prox1 == nil || prox2 == nil {
		t.Fatalf("replay output:\n%s", out)
	}
	if claim.Player != "ann" || claim.Seq != 2 || string(claim.Treasure) != `"gold"` || claim.Points != 7 {
		t.Fatalf("claim %+v", *claim)
	}
	if !strings.Contains(string(prox1.Treasure), `"gold"`) || string(prox2.Treasure) != "null" {
		t.Fatalf("before the claim gold is nearest, after it nothing: %s / %s", prox1.Treasure, prox2.Treasure)
	}
	code, _, errs = runCLI(t, "", env, "replay", "--check")
	if code != 1 {
		t.Fatalf("--check with an empty OUT stream: exit %d (%s), want 1", code, errs)
	}
}
