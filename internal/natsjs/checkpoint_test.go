package natsjs

import (
	"bytes"
	"context"
	"errors"
	"io"
	"slices"
	"strconv"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"treasure/internal/testenv"
)

// TestCheckpointsPutListGetPrune: checkpoints come back newest first per
// partition, byte for byte; Prune keeps the newest; a put aborted mid-way
// (the writer killed while writing) leaves no visible checkpoint.
func TestCheckpointsPutListGetPrune(t *testing.T) {
	servers(t, func(t *testing.T, e env) {
		ctx := context.Background()
		c, err := OpenCheckpoints(ctx, e.js, e.topo)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := BindCheckpoints(ctx, e.js, Topology{Prefix: e.topo.Prefix + "x", Partitions: 1}); !errors.Is(err, ErrNoCheckpoints) {
			t.Fatalf("bind to an absent bucket: %v", err)
		}
		if again, err := BindCheckpoints(ctx, e.js, e.topo); err != nil || again == nil {
			t.Fatalf("open an existing bucket: %v", err)
		}
		if l, err := c.List(ctx); err != nil || len(l) != 0 {
			t.Fatalf("empty bucket: %v, %v", l, err)
		}
		big := bytes.Repeat([]byte("checkpoint"), 50_000) // several chunks
		for _, seq := range []uint64{7, 300, 42, 9_000_000_000} {
			data := append([]byte{byte(seq)}, big[:seq%1000]...)
			if err := c.Put(ctx, 1, seq, data); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Put(ctx, 0, 5, big); err != nil {
			t.Fatal(err)
		}
		// An aborted write: the reader fails after two chunks' worth.
		_, err = c.Store().Put(ctx, jetstream.ObjectMeta{Name: CheckpointName(1, 1<<62)}, io.MultiReader(bytes.NewReader(big[:300_000]), failingReader{}))
		if err == nil {
			t.Fatal("the aborted put succeeded")
		}
		seqs, err := c.Seqs(ctx, 1)
		if err != nil {
			t.Fatal(err)
		}
		if want := []uint64{9_000_000_000, 300, 42, 7}; !slices.Equal(seqs, want) {
			t.Fatalf("partition 1: %v, want %v", seqs, want)
		}
		got, err := c.Get(ctx, 0, 5)
		if err != nil || !bytes.Equal(got, big) {
			t.Fatalf("get: %d bytes, %v", len(got), err)
		}
		if _, err := c.Get(ctx, 1, 1<<62); !errors.Is(err, jetstream.ErrObjectNotFound) {
			t.Fatalf("the aborted checkpoint: %v", err)
		}
		if err := c.Prune(ctx, 1, 2); err != nil {
			t.Fatal(err)
		}
		if seqs, _ := c.Seqs(ctx, 1); !slices.Equal(seqs, []uint64{9_000_000_000, 300}) {
			t.Fatalf("after pruning to 2: %v", seqs)
		}
		if err := c.Delete(ctx, 1, 300); err != nil {
			t.Fatal(err)
		}
		if err := c.Delete(ctx, 1, 300); err != nil {
			t.Fatalf("delete an absent checkpoint: %v", err)
		}
		if seqs, _ := c.Seqs(ctx, 1); !slices.Equal(seqs, []uint64{9_000_000_000}) {
			t.Fatalf("after deleting 300: %v", seqs)
		}
		all, err := c.List(ctx)
		if err != nil || len(all) != 2 || all[0].Partition != 0 || all[0].Size != uint64(len(big)) || all[0].Time.IsZero() {
			t.Fatalf("list: %+v, %v", all, err)
		}
	})
}

// TestOpenCheckpointsConcurrently: workers starting together, each on its
// own connection, all get the one bucket (nats-server 2.9 answers the
// losers of the race to create it "subjects overlap").
func TestOpenCheckpointsConcurrently(t *testing.T) {
	e := sharedEnv(t)
	ctx := context.Background()
	const n = 8
	jss := make([]jetstream.JetStream, n)
	for i := range jss {
		js, err := jetstream.New(testenv.ConnectNATS(t, testenv.NATSURL()))
		if err != nil {
			t.Fatal(err)
		}
		jss[i] = js
	}
	errs := make(chan error, n)
	for i, js := range jss {
		go func() {
			c, err := OpenCheckpoints(ctx, js, e.topo)
			if err == nil {
				err = c.Put(ctx, i, 1, []byte("x"))
			}
			errs <- err
		}()
	}
	for range n {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
}

func TestCheckpointNames(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		part int
		seq  uint64
	}{{0, 0}, {3, 1}, {65535, 1<<64 - 1}} {
		p, s, ok := parseCheckpointName(CheckpointName(c.part, c.seq))
		if !ok || p != c.part || s != c.seq {
			t.Fatalf("%d/%d: %d/%d %v", c.part, c.seq, p, s, ok)
		}
	}
	for _, bad := range []string{"", "in-1", "in-x/00000000000000000001", "in-1/1", "out-1/00000000000000000001", "in--1/00000000000000000001",
		"in-03/00000000000000000042", "in-+3/00000000000000000042", "in-3/0000000000000000042x", PushCheckpointName(7)} {
		if _, _, ok := parseCheckpointName(bad); ok {
			t.Fatalf("%q parsed", bad)
		}
	}
}

func TestPushCheckpointNames(t *testing.T) {
	t.Parallel()
	for _, seq := range []uint64{0, 7, 1<<64 - 1} {
		if s, ok := parsePushCheckpointName(PushCheckpointName(seq)); !ok || s != seq {
			t.Fatalf("%d: %d %v", seq, s, ok)
		}
	}
	for _, bad := range []string{"", "out-push/42", "out-push/0000000000000000004x", "out-pushx/00000000000000000042", CheckpointName(3, 42)} {
		if _, ok := parsePushCheckpointName(bad); ok {
			t.Fatalf("%q parsed", bad)
		}
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("writer killed") }

// BenchmarkCheckpointsPutGet: storing and reading back a checkpoint the
// size of a city partition's (0.9 MB), and of one carrying a stored
// nearest-treasure field (6 MB), on the shared server.
func BenchmarkCheckpointsPutGet(b *testing.B) {
	for _, size := range []int{900_000, 6_000_000} {
		b.Run(strconv.Itoa(size), func(b *testing.B) {
			e := sharedEnv(b)
			ctx := context.Background()
			c, err := OpenCheckpoints(ctx, e.js, e.topo)
			if err != nil {
				b.Fatal(err)
			}
			data := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7, 8, 9}, size/9)
			b.Run("put", func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				var seq uint64
				for b.Loop() {
					seq++
					if err := c.Put(ctx, 0, seq, data); err != nil {
						b.Fatal(err)
					}
					if err := c.Prune(ctx, 0, 3); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("get", func(b *testing.B) {
				b.SetBytes(int64(len(data)))
				seqs, err := c.Seqs(ctx, 0)
				if err != nil || len(seqs) == 0 {
					b.Fatal(seqs, err)
				}
				for b.Loop() {
					if _, err := c.Get(ctx, 0, seqs[0]); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
