#!/usr/bin/env bash
# burst.sh — the city-wide drop in one command (`make burst`, issue 6):
# BURST_PLAYERS players connect, an admin drop is posted, and every player
# sends one move inside BURST_WITHIN, against the services running as
# separate processes (at least 2 ingest and 2 push).
#
#   1. builds bin/treasure;
#   2. finds or starts Redis and PostgreSQL (scripts/services.sh ensure);
#   3. generates the synthetic city once (2.3 M nodes, 6.8 M edges, seed 1)
#      into .cache/city.snap (gitignored; regenerated only when missing);
#   4. starts `treasure dev --separate --ingest N --push M` in the background
#      (embedded JetStream unless TREASURE_NATS_URL is set; N = ceil(players /
#      10,000), M = ceil(players / 15,000), each at least 2) and waits until
#      every service is ready;
#   5. runs `treasure loadgen drop` against it: its human summary, then its
#      JSON summary object as the LAST line of stdout (nothing is printed
#      after it);
#   6. stops everything it started, also on Ctrl-C, and exits with the load
#      generator's status.
#
# Variables:
#   BURST_PLAYERS    players (default 35000)
#   BURST_GRAPH      graph file (default .cache/city.snap, generated when missing)
#   BURST_WITHIN     the window every player sends its move in (default 1s)
#   BURST_TREASURES  treasures dev drops at start (default 1000)
#   BURST_DIR        run folder: dev.log (every service's output, each line
#                    behind [name]), endpoints.json, loadgen.out
#                    (default .cache/burst/<UTC time>)
#   BURST_BIN        the binary to build and run (default bin/treasure)
#   BURST_CONNECT_TIMEOUT  how long connecting every player may take
#                    (default: the load generator's, 1m + 10ms a player)
#   BURST_SCENARIO   the load generator's scenario and its own flags instead
#                    of the drop (e.g. "steady --players 2000 --rate 5
#                    --duration 60s": the same topology and accounting for
#                    the other figures of BENCHMARKS.md)
#   BURST_INGEST, BURST_PUSH  the number of ingest and push processes
#                    (default from the players, as above)
#   BURST_EXTRA      more loadgen flags (e.g. "--reference --charts DIR")
#   BURST_DEV_EXTRA  more `treasure dev` flags (e.g. "--archive-dir off" to
#                    measure the pipeline without its archiver)
#   GO               the go command (default go)
# and the TREASURE_* variables of docs/operations.md (TREASURE_REDIS_URL,
# TREASURE_DATABASE_URL, TREASURE_NATS_URL…), passed to treasure dev.
set -euo pipefail

cd "$(dirname "$0")/.."

PLAYERS=${BURST_PLAYERS:-35000}
CITY=.cache/city.snap
GRAPH=${BURST_GRAPH:-$CITY}
WITHIN=${BURST_WITHIN:-1s}
TREASURES=${BURST_TREASURES:-1000}
RUN_DIR=${BURST_DIR:-.cache/burst/$(date -u +%Y%m%dT%H%M%SZ)}
GO=${GO:-go}
BIN=${BURST_BIN:-bin/treasure}
READY_SECONDS=600

say() { printf 'burst: %s\n' "$*" >&2; }
die() {
	say "$*"
	exit 1
}

[[ $PLAYERS =~ ^[1-9][0-9]*$ ]] || die "BURST_PLAYERS=$PLAYERS: want a positive integer"
# One process holds at most about 19,900 sockets (shared/LIMITS.md), and
# the drop needs at least 2 of each service. 15,000 players per push
# process leaves room; ingest holds about 30 KB a socket next to its
# ~175 MB graph and partition state, so 10,000 per ingest process keeps
# each under 500 MB RSS.
INGESTS=$(((PLAYERS + 9999) / 10000))
((INGESTS >= 2)) || INGESTS=2
PUSHES=$(((PLAYERS + 14999) / 15000))
((PUSHES >= 2)) || PUSHES=2
INGESTS=${BURST_INGEST:-$INGESTS}
PUSHES=${BURST_PUSH:-$PUSHES}
[[ $INGESTS =~ ^[1-9][0-9]*$ && $PUSHES =~ ^[1-9][0-9]*$ ]] || die "BURST_INGEST=$INGESTS, BURST_PUSH=$PUSHES: want positive integers"
CONNECT_TIMEOUT=${BURST_CONNECT_TIMEOUT:-0}

say "building $BIN"
"$GO" build -o "$BIN" ./cmd/treasure

bash scripts/services.sh ensure redis postgres >&2

if [[ ! -e $GRAPH ]]; then
	[[ $GRAPH == "$CITY" ]] || die "BURST_GRAPH=$GRAPH: no such file"
	say "generating the synthetic city into $CITY (once; delete it to regenerate)"
	mkdir -p .cache
	tmp=.cache/city.$$.tmp.snap
	"$BIN" graph gen --nodes 2300000 --edges 6800000 --seed 1 --out "$tmp" >&2 || {
		rm -f "$tmp"
		exit 1
	}
	mv "$tmp" "$CITY"
fi

mkdir -p "$RUN_DIR"
ENDPOINTS=$RUN_DIR/endpoints.json
DEV_LOG=$RUN_DIR/dev.log
LG_OUT=$RUN_DIR/loadgen.out
rm -f "$ENDPOINTS"
# Created here, not by the load generator's redirection: the live view
# (tail -f below) may start first.
: >"$LG_OUT"

DEV_PID=
# stop_dev sends SIGTERM to treasure dev, which stops its service processes
# (SIGTERM, then SIGKILL of each one's process group after 20 s) and removes
# the run's streams, keys and schema; waits up to 60 s, then SIGKILLs it
# (its children then get SIGTERM from the kernel: dev sets their parent-death
# signal).
stop_dev() {
	[[ -n $DEV_PID ]] || return 0
	if kill -0 "$DEV_PID" 2>/dev/null; then
		kill -TERM "$DEV_PID" 2>/dev/null || true
		local i
		for ((i = 0; i < 600; i++)); do
			kill -0 "$DEV_PID" 2>/dev/null || break
			sleep 0.1
		done
		if kill -0 "$DEV_PID" 2>/dev/null; then
			say "treasure dev (pid $DEV_PID) still running 60 s after SIGTERM: killing it"
			kill -KILL "$DEV_PID" 2>/dev/null || true
		fi
	fi
	wait "$DEV_PID" 2>/dev/null || true
	DEV_PID=
}
LG_PID=
INTERRUPTED=0
# on_signal: while the load generator runs, Ctrl-C or SIGTERM ends it early
# (it still prints its summary) and the script then stops dev as usual;
# before that, the script stops dev at once.
on_signal() {
	INTERRUPTED=$1
	if [[ -n $LG_PID ]]; then
		kill -INT "$LG_PID" 2>/dev/null || true
	else
		stop_dev
		exit "$1"
	fi
}
trap stop_dev EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# A secret of the run's own, so that dev does not generate one and print it
# into dev.log; it reaches dev and the load generator through the
# environment only.
if [[ -z ${TREASURE_JWT_SECRET:-} ]]; then
	TREASURE_JWT_SECRET=$(od -An -N16 -tx1 /dev/urandom | tr -d ' \n')
	export TREASURE_JWT_SECRET
fi
say "starting treasure dev: $INGESTS ingest and $PUSHES push processes on $GRAPH; output in $DEV_LOG"
# Free ports unless set: a demo or another run may hold the defaults.
TREASURE_GRAPH=$GRAPH TREASURE_DEV_NATS_ADDR=${TREASURE_DEV_NATS_ADDR:-127.0.0.1:0} \
	TREASURE_INGEST_ADDR=${TREASURE_INGEST_ADDR:-127.0.0.1:0} TREASURE_PUSH_ADDR=${TREASURE_PUSH_ADDR:-127.0.0.1:0} \
	TREASURE_PROXIMITY_ADDR=${TREASURE_PROXIMITY_ADDR:-127.0.0.1:0} TREASURE_RANKER_ADDR=${TREASURE_RANKER_ADDR:-127.0.0.1:0} \
	TREASURE_ARCHIVE_ADDR=${TREASURE_ARCHIVE_ADDR:-127.0.0.1:0} \
	"$BIN" dev --separate --ingest "$INGESTS" --push "$PUSHES" \
	--treasures "$TREASURES" --drop-every 0 --endpoints "$ENDPOINTS" ${BURST_DEV_EXTRA:-} >"$DEV_LOG" 2>&1 &
DEV_PID=$!

start=$SECONDS
next=$SECONDS
until [[ -s $ENDPOINTS ]]; do
	if ! kill -0 "$DEV_PID" 2>/dev/null; then
		wait "$DEV_PID" 2>/dev/null && status=0 || status=$?
		DEV_PID=
		say "treasure dev exited (status $status) before it was ready; the end of $DEV_LOG:"
		tail -n 30 "$DEV_LOG" >&2
		exit 1
	fi
	if ((SECONDS - start > READY_SECONDS)); then
		say "services not ready after $READY_SECONDS s; the end of $DEV_LOG:"
		tail -n 30 "$DEV_LOG" >&2
		exit 1
	fi
	if ((SECONDS >= next)); then
		last=$(grep -v '^\[' "$DEV_LOG" | tail -n 1 || true)
		say "waiting for the services ($((SECONDS - start)) s): ${last:-starting}"
		next=$((SECONDS + 3))
	fi
	sleep 0.2
done
say "every service ready after $((SECONDS - start)) s"

# The endpoints file is dev's indented JSON: one scalar per line, arrays one
# element per line.
json_string() { sed -n "s/^  \"$1\": \"\(.*\)\",\{0,1\}\$/\1/p" "$ENDPOINTS" | head -n 1; }
json_list() {
	awk -v key="\"$1\": [" 'index($0, "  " key) == 1 {f = 1; next} f && /^  \]/ {f = 0} f {gsub(/[ ",]/, ""); print}' "$ENDPOINTS" | paste -sd, -
}
INGEST=$(json_list ingest)
PUSH=$(json_list push)
NATS=$(json_string nats)
PREFIX=$(json_string stream_prefix)
SECRET=$(json_string secret)
METRICS=$(json_list metrics)
GRAPH_ABS=$(json_string graph)
[[ -n $INGEST && -n $PUSH && -n $METRICS && -n $NATS && -n $PREFIX && -n $SECRET && -n $GRAPH_ABS ]] ||
	die "could not read $ENDPOINTS"
say "ingest $INGEST; push $PUSH; nats $NATS (streams ${PREFIX}_*)"

REDIS=$(json_string redis)
SCENARIO=${BURST_SCENARIO:-drop --players $PLAYERS --within $WITHIN}
# Server CPU: every service's /metrics, the dev process (the embedded
# JetStream server), Redis and PostgreSQL.
read -r -a SCENARIO_ARGS <<<"$SCENARIO"
read -r -a EXTRA_ARGS <<<"${BURST_EXTRA:-}"
say "running: treasure loadgen $SCENARIO ${BURST_EXTRA:-}"
# stdout: the load generator's lines live, but its JSON summary (a line
# starting with "{") is held back and printed last, after everything is
# stopped, so that it is the last line whatever happens on the way out.
# The load generator runs in the background so that a signal reaches the
# traps above at once.
# The secret goes through the environment, never the command line (where
# ps shows it to every user).
TREASURE_JWT_SECRET="$SECRET" "$BIN" loadgen "${SCENARIO_ARGS[@]}" \
	--ingest "$INGEST" --push "$PUSH" --graph "$GRAPH_ABS" \
	--nats "$NATS" --stream-prefix "$PREFIX" --metrics "$METRICS" \
	--pids "$DEV_PID" --redis "$REDIS" --procs postgres \
	--connect-timeout "$CONNECT_TIMEOUT" --json "${EXTRA_ARGS[@]}" >"$LG_OUT" &
LG_PID=$!
tail -n +1 -f --pid="$LG_PID" "$LG_OUT" | grep --line-buffered -v '^{' &
VIEW_PID=$!
status=0
while :; do
	wait "$LG_PID" && status=0 || status=$?
	# A trapped signal interrupts wait (status > 128) while the load
	# generator still runs (or is not reaped yet): wait again.
	kill -0 "$LG_PID" 2>/dev/null || break
done
LG_PID=
wait "$VIEW_PID" 2>/dev/null || true

stop_dev >&2
trap - EXIT INT TERM
((INTERRUPTED == 0)) || status=$INTERRUPTED

summary=$(tail -n 1 "$LG_OUT" 2>/dev/null || true)
if [[ $summary != \{* ]]; then
	say "the load generator printed no JSON summary (exit status $status); its output is in $LG_OUT"
	((status != 0)) || status=1
	exit "$status"
fi
say "run folder: $RUN_DIR"
printf '%s\n' "$summary"
exit "$status"
