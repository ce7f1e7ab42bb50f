package cli

import (
	"bytes"
	"strings"
	"testing"
	"time"

	"treasure/internal/retention"
)

// TestStatusShowsRetention: status ends with the retention section: the
// streams' spans and headroom, and per subject the safe sequence and the
// holder that sets it, naming what is missing.
func TestStatusShowsRetention(t *testing.T) {
	t.Parallel()
	js, topo, env := testStreams(t, 2)
	prefix := topo.Prefix
	publishIn(t, js, topo, 1, 3)
	code, out, errs := runCLI(t, "", env, "status")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	section := out[strings.Index(out, "\nretention"):]
	for _, want := range []string{
		prefix + "_IN", "3 / 1000", "997", // messages / cap, headroom
		prefix + ".in.1", "missing:archiver",
		"missing holders (retention trims none of these subjects):",
		prefix + ".in.1: archiver: no archive bucket " + prefix + "-archive",
		prefix + ".in.1: proximity-checkpoint: no checkpoint bucket",
		prefix + ".in.1: consumer:" + prefix + "-proximity-1: durable consumer absent",
	} {
		if !strings.Contains(section, want) {
			t.Fatalf("the retention section lacks %q:\n%s", want, section)
		}
	}
}

func TestRenderRetention(t *testing.T) {
	rep := retention.Report{Time: time.Unix(0, 0), Prefix: "p", Streams: []retention.StreamReport{
		{Stream: "p_IN", Present: true, Msgs: 10, Bytes: 640, FirstSeq: 31, LastSeq: 50, AgeSpanSeconds: 90, OldestAgeSeconds: 3600,
			MaxMsgs: 100, MaxBytes: -1, HeadroomMsgs: 90, HeadroomBytes: -1,
			Subjects: []retention.SubjectReport{{Subject: "p.in.0", Msgs: 10, FirstSeq: 31, LastSeq: 50, SafeSeq: 30, HeldBy: "consumer:p-proximity-0",
				Holders: []retention.Holder{{Kind: "consumer", Name: "p-proximity-0", Seq: 30}}}}},
		{Stream: "p_OUT"},
	}, Errors: []string{"boom"}}
	var b bytes.Buffer
	if err := renderRetention(&b, rep); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"p_IN", "1m30s", "1h0m0s", "10 / 100", "640 / none", "p_OUT", "(absent)", "p.in.0", "consumer:p-proximity-0", "could not read: boom"} {
		if !strings.Contains(out, want) {
			t.Fatalf("rendered report lacks %q:\n%s", want, out)
		}
	}
}
