#!/usr/bin/env bash
# soak.sh — the soak (`make soak`, issue 9; not CI): a steady open-loop load
# at half the sustainable rate for a long time against the services running
# as separate processes, recording how their resources and the latency
# move over time. Flat is the goal: a leak shows as a resident set,
# goroutine count or descriptor count that keeps growing in the second
# half of the run, a slow-down as a latency that climbs.
#
#   1. runs scripts/burst.sh with the steady scenario (it builds
#      bin/treasure, finds or starts Redis and PostgreSQL, starts
#      `treasure dev --separate` with 2 ingest and 2 push processes (burst.sh:
#      BURST_INGEST, BURST_PUSH) on free
#      ports and an embedded JetStream, and runs `treasure loadgen steady`
#      with its server CPU measurement: --metrics of every service, the dev
#      process, Redis and PostgreSQL, one CPU/RSS sample every 10 s) and the
#      load generator's charts (latency, throughput, backlog, cpu);
#   2. beside it, once the services are ready, `treasure sample` reads
#      every service's /metrics every SOAK_EVERY for the run's length:
#      resident set, goroutines, open descriptors, heap per process, into
#      samples.csv, rss.svg, goroutines.svg, fds.svg and a summary
#      (sample.txt: first, last, max and the change over the second half);
#   3. prints the sampler's summary, then the load generator's JSON summary
#      object as the LAST line; exits with the load generator's status (1
#      when a move was lost or duplicated).
#
# Variables:
#   SOAK_DURATION  how long the load runs (default 30m)
#   SOAK_RATE      total moves/s (default 2000: half of what the 2-core box
#                  sustains on amsterdam within the latency target; see
#                  BENCHMARKS.md)
#   SOAK_PLAYERS   players (default 2000; each moves SOAK_RATE/SOAK_PLAYERS
#                  times a second)
#   SOAK_GRAPH     graph (default data/amsterdam.gr.gz)
#   SOAK_EVERY     resource sample interval (default 10s)
#   SOAK_DIR       run folder (default .cache/soak/<UTC time>): everything of
#                  burst.sh (dev.log, endpoints.json, loadgen.out), charts/
#                  (the load generator's), samples.csv, rss.svg,
#                  goroutines.svg, fds.svg, sample.txt
#   GO, BURST_BIN and the TREASURE_* variables as for scripts/burst.sh.
set -euo pipefail

cd "$(dirname "$0")/.."

DURATION=${SOAK_DURATION:-30m}
RATE=${SOAK_RATE:-2000}
PLAYERS=${SOAK_PLAYERS:-2000}
GRAPH=${SOAK_GRAPH:-data/amsterdam.gr.gz}
EVERY=${SOAK_EVERY:-10s}
RUN_DIR=${SOAK_DIR:-.cache/soak/$(date -u +%Y%m%dT%H%M%SZ)}
BIN=${BURST_BIN:-bin/treasure}

say() { printf 'soak: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}

[[ $PLAYERS =~ ^[1-9][0-9]*$ ]] || die "SOAK_PLAYERS=$PLAYERS: want a positive integer"
[[ $RATE =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "SOAK_RATE=$RATE: want moves per second"
PER_PLAYER=$(awk -v r="$RATE" -v p="$PLAYERS" 'BEGIN { printf "%.6g", r / p }')
mkdir -p "$RUN_DIR"
ENDPOINTS=$RUN_DIR/endpoints.json
rm -f "$ENDPOINTS"

say "$PLAYERS players × $PER_PLAYER moves/s = $RATE moves/s for $DURATION on $GRAPH; run folder $RUN_DIR"

# The sampler waits for burst.sh's endpoints file, then samples for the
# load's length.
(
	for ((i = 0; i < 6000; i++)); do
		[[ -s $ENDPOINTS ]] && break
		sleep 0.2
	done
	[[ -s $ENDPOINTS ]] || exit 0
	metrics=$(awk 'index($0, "  \"metrics\": [") == 1 {f = 1; next} f && /^  \]/ {f = 0} f {gsub(/[ ",]/, ""); print}' "$ENDPOINTS" | paste -sd, -)
	[[ -n $metrics ]] || {
		say "no metrics URLs in $ENDPOINTS: no resource samples"
		exit 0
	}
	"$BIN" sample --metrics "$metrics" --every "$EVERY" --duration "$DURATION" \
		--csv "$RUN_DIR/samples.csv" --charts "$RUN_DIR" >"$RUN_DIR/sample.txt" 2>"$RUN_DIR/sample.err" || true
) &
SAMPLER=$!
trap 'kill "$SAMPLER" 2>/dev/null || true' EXIT

status=0
BURST_DIR=$RUN_DIR BURST_GRAPH=$GRAPH BURST_PLAYERS=$PLAYERS BURST_TREASURES=${SOAK_TREASURES:-1000} \
	BURST_SCENARIO="steady --players $PLAYERS --rate $PER_PLAYER --duration $DURATION" \
	BURST_EXTRA="--charts $RUN_DIR/charts --cpu-every 10s ${SOAK_EXTRA:-}" \
	bash scripts/burst.sh >"$RUN_DIR/burst.out" || status=$?
wait "$SAMPLER" 2>/dev/null || true
trap - EXIT

if [[ -s $RUN_DIR/sample.txt ]]; then
	say "resources per process (first/last/max/change over the second half):"
	cat "$RUN_DIR/sample.txt" >&2
else
	say "no resource samples (see $RUN_DIR/sample.err)"
fi
say "run folder: $RUN_DIR (charts: charts/*.svg, rss.svg, goroutines.svg, fds.svg)"
tail -n 1 "$RUN_DIR/burst.out"
exit "$status"
