package cli

import (
	"bytes"
	"context"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/archive"
)

// syncBuffer is a bytes.Buffer safe for a writer and a reader.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestArchiveCommandThenReplayAfterPurge runs `treasure archive` on a
// small log until its progress bucket says everything is archived (and its
// /readyz says ready), purges the log stream, and replays: through the
// archive the output is what it was before the purge; with an empty
// archive the replay fails naming the missing sequences.
func TestArchiveCommandThenReplayAfterPurge(t *testing.T) {
	t.Parallel()
	ctx, cancelAll := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancelAll()
	js, topo, env := goldWalkLog(t, ctx, 1)
	dir := t.TempDir()
	env["TREASURE_ARCHIVE_DIR"] = dir
	env["TREASURE_ARCHIVE_ADDR"] = "127.0.0.1:0"

	if code, _, errs := runCLI(t, "", env, "archive", "-h"); code != 0 || !strings.Contains(errs, "Usage: treasure archive") {
		t.Fatalf("archive -h: exit %d\n%s", code, errs)
	}
	if code, _, errs := runCLI(t, "", env, "archive", "--segment", "10ms"); code != 2 || !strings.Contains(errs, "--segment") {
		t.Fatalf("archive --segment 10ms: exit %d\n%s", code, errs)
	}
	code, before, errs := runCLI(t, "", env, "replay")
	if code != 0 || strings.Count(before, "\n") != 3 {
		t.Fatalf("replay before: exit %d\n%s\n%s", code, before, errs)
	}

	actx, stop := context.WithCancel(ctx)
	var stderr syncBuffer
	exit := make(chan int, 1)
	go func() {
		exit <- Run(actx, []string{"archive", "--segment", "1s"}, func(k string) string { return env[k] }, strings.NewReader(""), &bytes.Buffer{}, &stderr)
	}()
	ops := regexp.MustCompile(`ops=(http://[0-9.:]+)`)
	ready := false
	for deadline := time.Now().Add(60 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("archive: ready %v, progress not reached in 60 s:\n%s", ready, stderr.String())
		}
		if m := ops.FindStringSubmatch(stderr.String()); m != nil && !ready {
			if resp, err := http.Get(m[1] + "/readyz"); err == nil {
				resp.Body.Close()
				ready = resp.StatusCode == http.StatusOK
			}
		}
		in, _, err := archive.Progress(ctx, js, topo)
		if err != nil {
			t.Fatal(err)
		}
		if ready && in == 4 {
			break
		}
	}
	stop()
	if code := <-exit; code != 0 {
		t.Fatalf("archive exited %d:\n%s", code, stderr.String())
	}
	if !strings.Contains(stderr.String(), "segment archived") {
		t.Errorf("no progress line in the archiver's log:\n%s", stderr.String())
	}

	s, err := js.Stream(ctx, topo.InStream())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Purge(ctx, jetstream.WithPurgeSequence(5)); err != nil {
		t.Fatal(err)
	}
	code, after, errs := runCLI(t, "", env, "replay")
	if code != 0 || after != before {
		t.Fatalf("replay after the purge, through the archive: exit %d\n%s\nwant\n%s\n%s", code, after, before, errs)
	}
	env["TREASURE_ARCHIVE_DIR"] = t.TempDir()
	if code, _, errs = runCLI(t, "", env, "replay"); code != 1 || !strings.Contains(errs, "seqs 1-4 are in neither the stream nor the archive") {
		t.Fatalf("replay after the purge, empty archive: exit %d\n%s", code, errs)
	}
}
