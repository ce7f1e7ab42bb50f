#!/usr/bin/env bash
# bench-pipeline.sh — the end-to-end figures of BENCHMARKS.md ("Issue 6"),
# one after the other, each through scripts/burst.sh (the services as
# separate processes of `treasure dev --separate`, the open-loop load
# generator, server CPU from every process) on the synthetic city:
#
#   burst      the city-wide drop: 35,000 players, one move each within 1 s
#   steady2k   2,000 players × 1 move/s for 60 s, against edge-ref first
#   steady10k  2,000 players × 5 moves/s for 60 s, against edge-ref first
#   ramp       2,000 players from 2,000 to 20,000 moves/s in 10 s steps,
#              against edge-ref first
#   http       2,000 players, 2,000 moves/s over POST /v1/moves (vegeta), 30 s
#
# Usage: scripts/bench-pipeline.sh OUTDIR [NAME…]   (default: all of them)
# Each run's JSON summary goes to OUTDIR/NAME.json, its output to
# OUTDIR/NAME.out, its charts to OUTDIR/NAME/ (and OUTDIR/NAME/reference/).
# Run it on a quiet box: every figure is a measurement of the whole box.
set -euo pipefail
cd "$(dirname "$0")/.."

out=${1:?usage: scripts/bench-pipeline.sh OUTDIR [NAME…]}
shift
mkdir -p "$out"
names=("$@")
((${#names[@]})) || names=(burst steady2k steady10k ramp http)

run() {
	local name=$1
	shift
	printf 'bench-pipeline: %s\n' "$name" >&2
	mkdir -p "$out/$name"
	# burst.sh prints the JSON summary last; its status is the load
	# generator's (1 on any lost, duplicated or out-of-order update).
	if env "$@" bash scripts/burst.sh >"$out/$name.out" 2>"$out/$name.err"; then
		tail -n 1 "$out/$name.out" >"$out/$name.json"
	else
		local status=$?
		tail -n 1 "$out/$name.out" >"$out/$name.json" || true
		printf 'bench-pipeline: %s failed (status %d); see %s\n' "$name" "$status" "$out/$name.err" >&2
	fi
}

one=(BURST_PLAYERS=2000 BURST_INGEST=1 BURST_PUSH=1)
for name in "${names[@]}"; do
	case $name in
	burst) run burst BURST_EXTRA="--charts $out/burst" ;;
	steady2k) run steady2k "${one[@]}" BURST_SCENARIO="steady --players 2000 --rate 1 --duration 60s" BURST_EXTRA="--reference --charts $out/steady2k" ;;
	steady10k) run steady10k "${one[@]}" BURST_SCENARIO="steady --players 2000 --rate 5 --duration 60s" BURST_EXTRA="--reference --charts $out/steady10k" ;;
	ramp) run ramp "${one[@]}" BURST_SCENARIO="ramp --players 2000 --from 2000 --step 2000 --every 10s --max 20000" BURST_EXTRA="--reference --charts $out/ramp" ;;
	http) run http "${one[@]}" BURST_SCENARIO="http --players 2000 --rate 2000 --duration 30s" BURST_EXTRA="" ;;
	*)
		printf 'bench-pipeline: unknown run %q (burst, steady2k, steady10k, ramp, http)\n' "$name" >&2
		exit 2
		;;
	esac
done
