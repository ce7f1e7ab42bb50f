package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strconv"

	"google.golang.org/protobuf/proto"

	"treasure/internal/event"
	"treasure/internal/event/eventpb"
	"treasure/internal/natsjs"
	"treasure/services/proximity"
)

const replaySynopsis = `replay [--partitions LIST] [--check] | --until T|seq | --what-if | --verify

Replays the pipeline's log: reads every partition's log subject (LIST such
as "0,1" or "0-3" of TREASURE_PARTITIONS; default all) from the start into a
fresh proximity engine, exactly as a proximity worker applies it, and
writes one JSON line per output to stdout, partition after partition in log
order:
  {"partition":k,"type":"proximity","player":P,"seq":S,"node":N,
   "treasure":{"id":T,"node":N,"distance":D}|null}
  {"partition":k,"type":"claim","player":P,"seq":S,"treasure":T,
   "points":X,"node":N}
With --check it prints nothing per output but compares the replay with what
the live workers published on <prefix>.out.<k> (results by player and seq,
claims by treasure) and exits 1 on any difference. Run it on a quiet
pipeline: moves still in flight show up as differences. Publishes nothing.
Needs TREASURE_GRAPH, TREASURE_PARTITIONS and TREASURE_RADIUS as the workers
had them; reads TREASURE_NATS_URL (for a running demo:
nats://127.0.0.1:4223).

For analysts (README, "For analysts"):

  replay --until T|seq [--player ID] [--top N] [--json]
    The game as it stood at an IN stream sequence or an RFC 3339 time,
    rebuilt from the log: the leaderboard with the ranker's ranks, every
    player's score, rank and position (last node), the active treasures.

  replay --what-if [--radius R] [--treasures FILE] [--scoring NAME]
         [--until T|seq] [--out PATH] [--json]
    The same accepted moves replayed with another radius, another
    treasure set (CSV id,node,points; all dropped before the first move,
    the log's drops ignored) or another scoring (points, count,
    capped:N), compared with the real game: changed proximity answers,
    claims and leaderboard. --out writes the what-if's own outputs (one
    JSON line per proximity answer and claim, then its leaderboard) to a
    file, or to stdout with "-" (the comparison then goes to stderr).
    Reads the log only: publishes nothing, writes no store.

  replay --verify [--schema S] [--redis-prefix P] [--json]
    Rebuilds claims, scores and ranks from the log and compares them with
    the claims on P_OUT, PostgreSQL (TREASURE_DATABASE_URL, tables in
    schema S or the URL's search_path) and Redis (TREASURE_REDIS_URL, keys
    under P, default "<TREASURE_STREAM_PREFIX>:"); prints every difference
    and exits 1 when there is one. Run it on a quiet pipeline.

A progress line goes to stderr (a bar on a terminal); --quiet drops it.`

// proximityLine and claimLine are the JSON lines `replay` writes.
type proximityLine struct {
	Partition int             `json:"partition"`
	Type      string          `json:"type"`
	Player    string          `json:"player"`
	Seq       uint64          `json:"seq"`
	Node      uint32          `json:"node"`
	Treasure  *treasureAnswer `json:"treasure"`
}

type treasureAnswer struct {
	ID       string `json:"id"`
	Node     uint32 `json:"node"`
	Distance uint64 `json:"distance"`
}

type claimLine struct {
	Partition int    `json:"partition"`
	Type      string `json:"type"`
	Player    string `json:"player"`
	Seq       uint64 `json:"seq"`
	Treasure  string `json:"treasure"`
	Points    uint64 `json:"points"`
	Node      uint32 `json:"node"`
}

// maxReplayDiffs caps the differences --check prints.
const maxReplayDiffs = 10

func runReplay(ctx context.Context, args []string, env Env, io IO) error {
	fs := newFlagSet("replay", replaySynopsis, io.Stderr)
	partsFlag := fs.String("partitions", "", "partitions to replay, e.g. 0,1 or 0-3 (default all)")
	check := fs.Bool("check", false, "compare the replay with the live outputs instead of printing it; exit 1 on a difference")
	af := analystFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return &UsageError{Msg: fmt.Sprintf("replay: unexpected argument %q", fs.Arg(0))}
	}
	if mode, err := af.mode(fs); err != nil {
		return err
	} else if mode != "" {
		if *check || *partsFlag != "" {
			return &UsageError{Msg: "replay: --check and --partitions go with the plain replay, not with --" + mode}
		}
		return runReplayAnalyst(ctx, mode, af, env, io)
	}
	cfg, log, err := serviceEnv(env, io)
	if err != nil {
		return err
	}
	parts, err := parseParts(*partsFlag, cfg.Partitions)
	if err != nil {
		return &UsageError{Msg: err.Error()}
	}
	if len(parts) == 0 {
		for k := 0; k < cfg.Partitions; k++ {
			parts = append(parts, k)
		}
	}
	g, part, err := loadPartitioned(cfg, log)
	if err != nil {
		return err
	}
	nc, js, err := connectJetStream(cfg.NATSURL, "treasure-replay@"+hostname())
	if err != nil {
		return err
	}
	defer nc.Close()
	topo := topology(cfg)
	ro := proximity.ReplayOptions{Graph: g, Part: part, Partitions: parts, Radius: cfg.Radius, Topology: topo, JS: js, Read: replayReader(cfg.ArchiveDir)}

	if !*check {
		w := bufio.NewWriterSize(io.Stdout, 64<<10)
		enc := json.NewEncoder(w)
		err := proximity.Replay(ctx, ro, func(k int, ev *eventpb.Event) error {
			if l := replayLine(k, ev); l != nil {
				return enc.Encode(l)
			}
			return nil
		})
		if ferr := w.Flush(); err == nil {
			err = ferr
		}
		return err
	}

	// --check: the live outputs first, then the replay against them.
	liveRes := map[string]*eventpb.ProximityResult{}
	liveClaims := map[string]*eventpb.Claim{}
	var diffs []string
	diff := func(format string, a ...any) {
		diffs = append(diffs, fmt.Sprintf(format, a...))
	}
	var b eventpb.Batch
	for _, k := range parts {
		err := ro.Read(ctx, js, natsjs.ReplayOptions{Stream: topo.OutStream(), Subjects: []string{topo.OutSubject(k)}}, func(ctx context.Context, msgs []natsjs.Msg) error {
			for _, m := range msgs {
				if err := event.Decode(m.Data, &b); err != nil {
					return fmt.Errorf("%s seq %d: %w", m.Subject, m.Seq, err)
				}
				for _, ev := range b.Events {
					if r := ev.GetProximity(); r != nil {
						key := resultKey(r.Player, r.Seq)
						if liveRes[key] != nil {
							diff("live: two proximity results for move %s", key)
						}
						liveRes[key] = r
					}
					if c := ev.GetClaim(); c != nil {
						if prev := liveClaims[c.Treasure]; prev != nil {
							diff("live: treasure %s claimed twice, by %s and %s", c.Treasure, resultKey(prev.Player, prev.Seq), resultKey(c.Player, c.Seq))
						}
						liveClaims[c.Treasure] = c
					}
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("read live outputs: %w", err)
		}
	}
	results, claims := 0, 0
	seenRes := map[string]bool{}
	seenClaims := map[string]bool{}
	err = proximity.Replay(ctx, ro, func(k int, ev *eventpb.Event) error {
		if r := ev.GetProximity(); r != nil {
			key := resultKey(r.Player, r.Seq)
			seenRes[key] = true
			switch l := liveRes[key]; {
			case l == nil:
				diff("partition %d move %s: replay %v, nothing live", k, key, r)
			case !proto.Equal(l, r):
				diff("partition %d move %s: replay %v, live %v", k, key, r, l)
			default:
				results++
			}
		}
		if c := ev.GetClaim(); c != nil {
			seenClaims[c.Treasure] = true
			switch l := liveClaims[c.Treasure]; {
			case l == nil:
				diff("partition %d treasure %s: replay claim %v, no live claim", k, c.Treasure, c)
			case !proto.Equal(l, c):
				diff("partition %d treasure %s: replay claim %v, live %v", k, c.Treasure, c, l)
			default:
				claims++
			}
		}
		return nil
	})
	if err != nil {
		return err
	}
	for key, l := range liveRes {
		if !seenRes[key] {
			diff("move %s: live %v, no replayed result", key, l)
		}
	}
	for id, l := range liveClaims {
		if !seenClaims[id] {
			diff("treasure %s: live claim %v, none replayed", id, l)
		}
	}
	if len(diffs) == 0 {
		fmt.Fprintf(io.Stdout, "%d results and %d claims identical\n", results, claims)
		return nil
	}
	fmt.Fprintf(io.Stdout, "%d results and %d claims identical; %d differences:\n", results, claims, len(diffs))
	for i, d := range diffs {
		if i == maxReplayDiffs {
			fmt.Fprintf(io.Stdout, "  ... and %d more\n", len(diffs)-i)
			break
		}
		fmt.Fprintf(io.Stdout, "  %s\n", d)
	}
	return fmt.Errorf("replay differs from the live outputs in %d places", len(diffs))
}

// replayLine is the JSON line of a replayed output, nil for an event that
// is neither a proximity result nor a claim.
func replayLine(k int, ev *eventpb.Event) any {
	if r := ev.GetProximity(); r != nil {
		l := &proximityLine{Partition: k, Type: "proximity", Player: r.Player, Seq: r.Seq, Node: r.Node}
		if t := r.Treasure; t != nil {
			l.Treasure = &treasureAnswer{ID: t.Id, Node: t.Node, Distance: t.Distance}
		}
		return l
	}
	if c := ev.GetClaim(); c != nil {
		return &claimLine{Partition: k, Type: "claim", Player: c.Player, Seq: c.Seq, Treasure: c.Treasure, Points: c.Points, Node: c.Node}
	}
	return nil
}

func resultKey(player string, seq uint64) string { return player + "/" + strconv.FormatUint(seq, 10) }
