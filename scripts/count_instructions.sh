#!/usr/bin/env bash
# Instructions per event of `make bench`'s first row (decode + Lua table + rule + JSON out), counted by
# `valgrind --tool=callgrind`, beside lua5.4 + lua-cjson running ../shared/bench/inproc.lua, and of its engine
# row (20 rules loaded, 1 matching, called from a task as the server calls it: SwitchboardEngineLoop). Each runs at N and
# 2N events; the difference over the extra events is the per-event count, so start-up cancels out. Counts
# barely move between runs, where CPU time on this shared 2-core machine moves by a third: use them to judge a
# change to the decoder or the Lua bridge.
#
#   scripts/count_instructions.sh [BINARY...]   (default: the release SwitchboardBench, built first; the
#                                                engine row only then)
#
# UNIQUE_VALUES=1 counts the first row on events whose string values differ from every other event's
# (SwitchboardBench's BENCH_UNIQUE_VALUES: 4,096 events taken in turn, each value with the event's number
# appended), where the JSON reader's shared value Strings hit only on a value repeated inside one event: the
# cost of a stream of new values. Those bodies are also written compactly and their values are longer, so
# compare two builds on the same setting, not one setting's count with the other's.
#
# FORMAT=form counts the first row on the event posted as a form body (SwitchboardBench's BENCH_FORMAT).
#
# Each BINARY is copied and stripped of its DWARF first: valgrind 3.19 gives up on Swift's debug info.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
N=${N:-10000}
event="$SHARED/bench/event.json"
case "${FORMAT:-json}" in json | form) ;; *) echo "FORMAT is json or form, not $FORMAT" >&2; exit 2 ;; esac
scripts/deps.sh bench
engine=
if [ $# -eq 0 ]; then
  scripts/build_release.sh SwitchboardBench SwitchboardEngineLoop
  set -- .build/release/SwitchboardBench
  engine=.build/release/SwitchboardEngineLoop
fi
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
count() { valgrind --tool=callgrind --callgrind-out-file="$work/out" "$@" 2>&1 | awk '/refs:/ {gsub(",", "", $4); print $4}'; }
# per_event LABEL EXTRA COMMAND...: COMMAND runs with "$event N" and "$event 2N" appended; EXTRA is how many
# more events the second run handles.
per_event() {
  local label=$1 extra=$2 a b
  shift 2
  a=$(count "$@" "$event" "$N")
  b=$(count "$@" "$event" $((2 * N)))
  printf '%-48s %8d instructions per event\n' "$label" $(((b - a) / extra))
}
for binary in "$@"; do
  cp "$binary" "$work/bench" && strip -g "$work/bench"
  # SwitchboardBench warms up with N/10 events before measuring N: 1.1 × N events per run.
  BENCH_BRIDGE_ONLY=1 BENCH_UNIQUE_VALUES=${UNIQUE_VALUES:-} BENCH_FORMAT=${FORMAT:-json} \
    per_event "$binary" $((N + N / 10)) "$work/bench"
done
per_event "lua5.4 + lua-cjson (inproc.lua)" "$N" lua5.4 "$SHARED/bench/inproc.lua"
if [ -n "$engine" ]; then
  cp "$engine" "$work/engine" && strip -g "$work/engine"
  # It warms up with N/10 events too.
  per_event "engine, 20 rules (1 matching), from a task" $((N + N / 10)) "$work/engine"
fi
