#!/usr/bin/env bash
# bench-restart.sh — issue 7's restart figures (BENCHMARKS.md "Issue 7:
# checkpoints and restart"): for each log length, the restart time of a
# proximity worker (services/proximity BenchmarkWorkerRestart) and of a
# push instance (services/push BenchmarkPushRestart), with and without
# checkpoints, plus the proximity checkpoint's size and write time, on
# the 2.3 M-node synthetic city with 20,000 treasures and 35,000 players,
# each on a private embedded JetStream server (nats-server v2.15).
#
# Usage: scripts/bench-restart.sh [MOVES…]   (default: 1000000 10000000)
# Environment: BENCH_GRAPH (default .cache/city.snap, generated when
# missing), BENCH_RUNS (restarts per figure, default 3), BENCH_NICE (nice
# level, default 0), BENCH_OUT (a directory for the raw output, default
# none). Needs PostgreSQL (push's store) as the tests do.
set -euo pipefail
cd "$(dirname "$0")/.."

graph=${BENCH_GRAPH:-.cache/city.snap}
runs=${BENCH_RUNS:-3}
nicelvl=${BENCH_NICE:-0}
sizes=("$@")
((${#sizes[@]})) || sizes=(1000000 10000000)
for n in "${sizes[@]}"; do
	[[ $n =~ ^[1-9][0-9]*$ ]] || { echo "bench-restart: $n is not a number of moves" >&2; exit 2; }
done

if [[ ! -f $graph ]]; then
	mkdir -p "$(dirname "$graph")" bin
	go build -o bin/treasure ./cmd/treasure
	bin/treasure graph gen --nodes 2300000 --edges 6800000 --seed 1 --out "$graph.tmp"
	mv "$graph.tmp" "$graph"
fi
graph=$(realpath "$graph")

echo "bench-restart: $(date -u +%FT%TZ) $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), load $(cut -d' ' -f1-3 /proc/loadavg)"
for n in "${sizes[@]}"; do
	echo "bench-restart: $n moves in the log"
	out=/dev/null
	if [[ -n ${BENCH_OUT:-} ]]; then
		mkdir -p "$BENCH_OUT"
		out=$BENCH_OUT/restart-$n.txt
	fi
	TREASURE_BENCH_GRAPH=$graph TREASURE_BENCH_MOVES=$n nice -n "$nicelvl" \
		go test -run '^$' -bench BenchmarkWorkerRestart -benchtime "${runs}x" -timeout 4h ./services/proximity 2>&1 | tee -a "$out"
	TREASURE_BENCH_RESTART=1 TREASURE_BENCH_MOVES=$n nice -n "$nicelvl" \
		go test -run '^$' -bench BenchmarkPushRestart -benchtime "${runs}x" -timeout 4h ./services/push 2>&1 | tee -a "$out"
done
echo "bench-restart: done $(date -u +%FT%TZ), load $(cut -d' ' -f1-3 /proc/loadavg)"
