#!/usr/bin/env bash
# The daemon's CPU per exec in the middle of a long storm: no start-up
# (first hashes, cold tables) and no tail after the storm, unlike
# bench/run.py's rounds. Compares settings of one build, such as
# --poll-interval (docs/performance.md).
# usage (root): bench/steady_cpu.sh [BIN [execwatch args...]]
# Env: WINDOW seconds measured (12), SKIP seconds before it (4).
set -euo pipefail
. "$(dirname "$0")/daemon.sh"
bin=$(bench_bin "${1:-}") || exit 1
cd "$(dirname "$0")/.."
shift $(($# > 0 ? 1 : 0))
window=${WINDOW:-12}
skip=${SKIP:-4}
[ "$(id -u)" = 0 ] || { echo "steady_cpu.sh: needs root (BPF)" >&2; exit 1; }
command -v gcc >/dev/null || { echo "steady_cpu.sh: gcc is missing; run scripts/install-deps --bench" >&2; exit 1; }

work=$(mktemp -d)
daemon=
storm=
cleanup() {
    [ -n "$storm" ] && kill -- -"$storm" 2>/dev/null
    [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
    rm -rf "$work"
}
trap cleanup EXIT
gcc -O2 -static -o "$work/noop" bench/noop.c
gcc -O2 -o "$work/storm" bench/storm.c
out="$work/events.json"
marker="steady$$"

start_json_daemon "$bin" "$out" "$work/stderr" "$@"
cpu() { cat /proc/"$daemon"/task/*/schedstat | awk '{ s += $1 } END { print s }'; }
delivered() { grep -c "\"action\":\"exec\".*$marker" "$out" || true; }
# 2 workers, 16 x 64 B argv, as bench/run.py; more execs than any window
# takes. A process group of its own, so that its workers can be stopped.
setsid "$work/storm" 2 100000000 16 64 "$work/noop" "$marker" >/dev/null &
storm=$!
sleep "$skip"
c0=$(cpu); n0=$(delivered)
sleep "$window"
kill -0 "$storm" 2>/dev/null || { echo "steady_cpu.sh: the storm ended before the window did" >&2; exit 1; }
c1=$(cpu); n1=$(delivered)
kill -- -"$storm" 2>/dev/null || true
wait "$storm" 2>/dev/null || true
storm=
[ "$n1" -gt "$n0" ] || { echo "steady_cpu.sh: nothing delivered in the window; the daemon said:" >&2; cat "$work/stderr" >&2; exit 1; }
python3 -c "import sys; c0,c1,n0,n1=map(int,sys.argv[1:]); print('daemon CPU %.2f us per exec over %d execs delivered in the window' % ((c1-c0)/1000/(n1-n0), n1-n0))" "$c0" "$c1" "$n0" "$n1"
