package cli

import (
	"context"
	"errors"
	"fmt"
	"text/tabwriter"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/natsjs"
	"treasure/internal/platform"
)

const statusSynopsis = `status

Prints the state of the pipeline's log: every stream of TREASURE_STREAM_PREFIX
(messages, bytes, first and last sequence) and every durable consumer on it
(messages waiting, delivered but not yet acknowledged, acknowledged
floor) — the backlog an operator watches during a burst — and each
partition's newest proximity checkpoint (IN sequence, age, size). Reads
TREASURE_NATS_URL (for a running demo: nats://127.0.0.1:4223).`

func runStatus(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("status", statusSynopsis, io.Stderr)
	if err := parse(fs, args); err != nil {
		return err
	}
	cfg, err := platform.FromEnv(env)
	if err != nil {
		return &UsageError{Msg: err.Error()}
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	nc, js, err := connectJetStream(cfg.NATSURL, "treasure-status")
	if err != nil {
		return err
	}
	defer nc.Close()
	topo := topology(cfg)
	fmt.Fprintf(io.Stdout, "nats %s (server %s), stream prefix %q, %d partitions\n\n",
		platform.MaskURL(cfg.NATSURL), nc.ConnectedServerVersion(), topo.Prefix, topo.Partitions)
	w := tabwriter.NewWriter(io.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "stream\tmessages\tbytes\tfirst seq\tlast seq\t")
	var consumers []jetstream.Consumer
	found := 0
	for _, name := range []string{topo.InStream(), topo.OutStream(), topo.DLQStream()} {
		s, err := js.Stream(ctx, name)
		if err != nil {
			fmt.Fprintf(w, "%s\t(absent)\t\t\t\t\n", name)
			continue
		}
		found++
		info, err := s.Info(ctx)
		if err != nil {
			return fmt.Errorf("stream %s: %w", name, err)
		}
		st := info.State
		fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%d\t\n", name, st.Msgs, st.Bytes, st.FirstSeq, st.LastSeq)
		for name := range s.ConsumerNames(ctx).Name() {
			c, err := s.Consumer(ctx, name)
			if err == nil {
				consumers = append(consumers, c)
			}
		}
	}
	w.Flush()
	if found == 0 {
		return fmt.Errorf("no stream of prefix %q on %s: is the pipeline running there (TREASURE_NATS_URL, TREASURE_STREAM_PREFIX)?", topo.Prefix, platform.MaskURL(cfg.NATSURL))
	}
	fmt.Fprintln(io.Stdout)
	w = tabwriter.NewWriter(io.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "consumer\tstream\twaiting\tunacked\tack floor\tredelivered\t")
	var backlog uint64
	for _, c := range consumers {
		info, err := c.Info(ctx)
		if err != nil {
			continue
		}
		backlog += info.NumPending + uint64(info.NumAckPending)
		fmt.Fprintf(w, "%s\t%s\t%d\t%d\t%d\t%d\t\n", info.Name, info.Stream, info.NumPending, info.NumAckPending, info.AckFloor.Stream, info.NumRedelivered)
	}
	w.Flush()
	fmt.Fprintf(io.Stdout, "\nbacklog: %d messages waiting or unacknowledged over %d consumers\n", backlog, len(consumers))
	if err := printCheckpoints(ctx, io, js, topo); err != nil {
		return err
	}
	return printRetention(ctx, io.Stdout, js, topo)
}

// printCheckpoints lists, per partition, the newest proximity checkpoint:
// the IN sequence it covers, its age and size, and how many are kept.
func printCheckpoints(ctx context.Context, io IO, js jetstream.JetStream, topo natsjs.Topology) error {
	store, err := natsjs.BindCheckpoints(ctx, js, topo)
	if errors.Is(err, natsjs.ErrNoCheckpoints) {
		fmt.Fprintf(io.Stdout, "\ncheckpoints: none (bucket %s absent)\n", topo.CheckpointBucket())
		return nil
	}
	if err != nil {
		return err
	}
	all, err := store.List(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintln(io.Stdout)
	w := tabwriter.NewWriter(io.Stdout, 0, 4, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(w, "partition	checkpoint seq	age	bytes	kept	")
	for k := 0; k < topo.Partitions; k++ {
		var newest *natsjs.CheckpointInfo
		kept := 0
		for i := range all {
			if all[i].Partition == k {
				if newest == nil {
					newest = &all[i]
				}
				kept++
			}
		}
		if newest == nil {
			fmt.Fprintf(w, "%d\t(none)\t\t\t0\t\n", k)
			continue
		}
		fmt.Fprintf(w, "%d\t%d\t%s\t%d\t%d\t\n", k, newest.Seq, time.Since(newest.Time).Round(time.Second), newest.Size, kept)
	}
	return w.Flush()
}
