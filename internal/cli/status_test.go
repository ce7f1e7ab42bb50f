package cli

import (
	"context"
	"strings"
	"testing"

	"treasure/internal/natsjs"
	"treasure/internal/testenv"
)

func TestStatusShowsStreamsAndBacklog(t *testing.T) {
	t.Parallel()
	_, js, prefix := testenv.JetStream(t)
	small := natsjs.Limits{MaxBytes: 1 << 20, MaxMsgs: 1000}
	topo := natsjs.Topology{Prefix: prefix, Partitions: 2, In: small, Out: small, Upd: small, DLQ: small}
	ctx := context.Background()
	if err := topo.Ensure(ctx, js); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 3; i++ {
		if _, err := js.Publish(ctx, topo.InSubject(1), []byte("x")); err != nil {
			t.Fatal(err)
		}
	}
	// A durable consumer that has read nothing: all three messages wait.
	if _, err := natsjs.NewConsumer(ctx, js, natsjs.ConsumerOptions{Stream: topo.InStream(), Durable: prefix + "-proximity-1",
		Subjects: []string{topo.InSubject(1)}, DeadLetter: topo.DLQSubject()}); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"TREASURE_NATS_URL": testenv.NATSURL(), "TREASURE_STREAM_PREFIX": prefix, "TREASURE_PARTITIONS": "2"}
	code, out, errs := runCLI(t, "", env, "status")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{prefix + "_IN", prefix + "_OUT", prefix + "-proximity-1", "backlog: 3 messages", "checkpoints: none"} {
		if !strings.Contains(out, want) {
			t.Fatalf("status output lacks %q:\n%s", want, out)
		}
	}
	// Checkpoints: partition 1 has two, partition 0 none.
	store, err := natsjs.OpenCheckpoints(ctx, js, topo)
	if err != nil {
		t.Fatal(err)
	}
	for _, seq := range []uint64{2, 3} {
		if err := store.Put(ctx, 1, seq, make([]byte, 1000+int(seq))); err != nil {
			t.Fatal(err)
		}
	}
	if code, out, errs = runCLI(t, "", env, "status"); code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	rows := map[string][]string{}
	for _, line := range strings.Split(out, "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			rows[f[0]] = f
		}
	}
	if r := rows["0"]; len(r) != 3 || r[1] != "(none)" || r[2] != "0" {
		t.Fatalf("partition 0's checkpoint row %q:\n%s", r, out)
	}
	if r := rows["1"]; len(r) != 5 || r[1] != "3" || r[3] != "1003" || r[4] != "2" {
		t.Fatalf("partition 1's checkpoint row %q (want seq 3, 1003 bytes, 2 kept):\n%s", r, out)
	}
	env["TREASURE_STREAM_PREFIX"] = "nosuch" + prefix
	if code, _, errs = runCLI(t, "", env, "status"); code != 1 || !strings.Contains(errs, "no stream of prefix") {
		t.Fatalf("absent streams: exit %d %q", code, errs)
	}
}
