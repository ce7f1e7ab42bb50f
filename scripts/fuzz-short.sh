#!/usr/bin/env bash
# fuzz-short.sh — run every fuzz target of the repository for a short while
# (FUZZTIME, default 3s each), one after the other: the CI share of the
# fuzzing (`make fuzz-short`, called by `make test`). The seed corpora
# (f.Add and testdata/fuzz/<FuzzName>/) already run as plain tests in
# `go test ./...`; this adds a few seconds of mutation per target.
#
#   FUZZTIME=3s bash scripts/fuzz-short.sh            all targets
#   bash scripts/fuzz-short.sh FuzzVerify FuzzParseFrame   some of them
#
# A failure leaves the crashing input under the package's
# testdata/fuzz/<FuzzName>/ (commit it once fixed: it becomes a seed) and
# makes the script exit 1 after trying the remaining targets.
# -fuzzminimizetime 50x: the default (60 s of minimizing per new input)
# stalls the fuzzer on this 2-core box.
set -uo pipefail

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-3s}
cd "$(dirname "$0")/.."

# package target, one a line: every func Fuzz* in the repository.
targets() {
	grep -rl --include='*_test.go' '^func Fuzz' ./internal ./services ./cmd | sort | while read -r f; do
		pkg=./$(dirname "${f#./}")
		sed -n 's/^func \(Fuzz[A-Za-z0-9_]*\)(.*/\1/p' "$f" | while read -r fn; do
			printf '%s %s\n' "$pkg" "$fn"
		done
	done
}

want=" $* "
failed=()
n=0
start=$SECONDS
while read -r pkg fn; do
	if [[ $# -gt 0 && $want != *" $fn "* ]]; then
		continue
	fi
	n=$((n + 1))
	if ! out=$("$GO" test -run '^$' -fuzz "^${fn}\$" -fuzztime "$FUZZTIME" -fuzzminimizetime 50x "$pkg" 2>&1); then
		printf '%s\n' "$out" >&2
		failed+=("$pkg $fn")
		continue
	fi
	# The fuzzer's last status line: elapsed, execs, new interesting inputs.
	last=$(grep '^fuzz: elapsed' <<<"$out" | tail -1 | sed 's/^fuzz: //')
	printf 'fuzz-short: %-24s %-24s ok (%s)\n' "$fn" "$pkg" "${last:-no status line}"
done < <(targets)
printf 'fuzz-short: %d targets, %d s\n' "$n" $((SECONDS - start))
if ((${#failed[@]})); then
	printf 'fuzz-short: FAILED: %s\n' "${failed[@]}" >&2
	exit 1
fi
