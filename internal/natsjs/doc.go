// Package natsjs is treasure's JetStream adapter: the streams of the
// pipeline declared in code (Topology), an asynchronous publisher with a
// bounded number of acks in flight (Publisher), a durable pull consumer that
// acks after its handler and dead-letters poison messages (Consumer), and an
// ordered read of a stream from any sequence for replays (Replay).
//
// # Layout
//
// Every name derives from a Topology's Prefix p (production: "treasure";
// tests: testenv.Prefix, so that parallel tests and a running demo never
// meet). Stream names are the prefix verbatim plus a suffix, so that
// testenv.DeleteStreamsOnCleanup(tb, js, p) finds them.
//
//	stream     subjects         written by          read by           discard  retention
//	p_IN       p.in.<part>      ingest, proximity   proximity         new      limits (the log of record)
//	p_OUT      p.out.<part>     proximity           ranker, push      new      limits
//	p_UPD      p.upd.<shard>    (unused, see below) push              old      MaxAge (the resume window)
//	p_DLQ      p.dlq            any Consumer        operators         new      limits
//
// What the subjects carry:
//
//   - p.in.<part> carries, in log order, everything the state of graph
//     partition <part> depends on: accepted moves ending on one of its own
//     nodes, treasure drops (published to every partition) and claim notices
//     from other partitions that touch its halo. One subject per partition
//     is what lets a proximity worker own a set of partitions and consume
//     each in order with a 2.9 server (one filter subject per consumer).
//   - p.out.<part> carries proximity results and claims, per partition.
//   - p.upd.<shard> was meant for the ranker's score changes; the pipeline
//     publishes those on p.out.rank instead (Topology.RankSubject), inside
//     OUT, so that push sees them in one total order with the claims that
//     caused them (docs/pipeline.md). UPD is still declared, and empty.
//   - p.dlq receives the messages a Consumer gave up on, with the original
//     payload and headers naming the reason (the HeaderDLQ* headers).
//
// Every message carries one event.Batch (package event). Publishers set a
// Nats-Msg-Id derived from what they publish so that a retried publish is
// stored once (the streams keep a two-minute duplicate window).
//
// IN and OUT reject a publish when full (DiscardNew): the publisher gets
// ErrUnavailable with a retry-after and nothing is lost silently. UPD drops
// its oldest updates instead: it is derived data, reproducible by replay,
// and only its recent past is needed for a push client's resume.
//
// # Server versions
//
// Everything here works with nats-server 2.9 (Debian's 2.9.10 runs on the
// development machines). A Consumer or Replay on several subjects needs
// 2.10 (multi-filter consumers); it is refused up front on an older server.
// With the file store, a server reserves each stream's MaxBytes against its
// storage limit when the stream is created, so tests give their Topology
// small limits.
package natsjs
