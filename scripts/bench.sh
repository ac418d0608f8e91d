#!/usr/bin/env bash
# `make bench`: events/s for decode + conversion into Lua + one trivial rule call (+ JSON of its result) on
# ../shared/bench/event.json, beside lua5.4 + lua-cjson running ../shared/bench/inproc.lua, in the same run;
# the same with the event form-encoded (Kazoo's default format); the engine with 20 rules; store operations
# inside a rule; and `switchboard replay` (whole command, wall time) on a journal of N accepted events with the
# anchor's rule.
# The two alternate for ROUNDS rounds (default 3) and the medians are compared.
# Environment: SHARED (default ../shared), N events per round (default 200000), ROUNDS.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
N=${N:-200000}
ROUNDS=${ROUNDS:-3}
event="$SHARED/bench/event.json"
[ -f "$event" ] || { echo "bench: $event not found (set SHARED to the folder holding bench/)" >&2; exit 1; }
scripts/deps.sh bench  # lua5.4 and lua-cjson for the anchor row (as the serve benchmarks do), when missing
scripts/build_release.sh SwitchboardBench switchboard
sb_runs=(); form_runs=(); lua_runs=(); task_runs=(); store_runs=(); replay_runs=()
# switchboard replay on a real journal of N accepted events (each its own call), the anchor's rule loaded.
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
.build/release/SwitchboardBench --make-journal "$work/var" "$N" "$event" >/dev/null

for r in $(seq "$ROUNDS"); do
  out=$(.build/release/SwitchboardBench "$event" "$N")
  [ "$r" = 1 ] && echo "$out" | grep -v '_per_second '
  sb_runs+=("$(echo "$out" | awk '/^switchboard_events_per_second/ {print $2}')")
  task_runs+=("$(echo "$out" | awk '/^switchboard_engine_task_events_per_second/ {print $2}')")
  # The same event posted as Kazoo's default format (form-data), decoded as such: no goal.
  form_runs+=("$(BENCH_BRIDGE_ONLY=1 BENCH_FORMAT=form .build/release/SwitchboardBench "$event" "$N" |
    awk '/^switchboard_events_per_second/ {print $2}')")
  store_runs+=("$(echo "$out" | awk '/^switchboard_store_operations_per_second/ {print $2}')")
  anchor=$(lua5.4 "$SHARED/bench/inproc.lua" "$event" "$N")
  [ "$r" = 1 ] && echo "$anchor"
  lua_runs+=("$(echo "$anchor" | sed -E 's/.*= ([0-9]+) events\/s.*/\1/')")
  start=$(date +%s.%N)
  .build/release/switchboard replay --data-dir "$work/var" --rules scripts/anchor --summary >/dev/null
  replay_runs+=("$(echo "$N / ($(date +%s.%N) - $start)" | bc)")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
sb=$(median "${sb_runs[@]}"); lua=$(median "${lua_runs[@]}"); form=$(median "${form_runs[@]}")
task=$(median "${task_runs[@]}")
store=$(median "${store_runs[@]}"); replay=$(median "${replay_runs[@]}")
echo
printf '%-42s %10s   %s\n' target 'events/s' 'runs'
printf '%-42s %10s   %s\n' 'switchboard decode+Lua+rule+JSON' "$sb" "${sb_runs[*]}"
printf '%-42s %10s   %s\n' 'the same, the event as a form body' "$form" "${form_runs[*]}  (Kazoo's default format)"
printf '%-42s %10s   %s\n' 'switchboard engine, 20 rules, 1 matching' "$task" "${task_runs[*]}  (from a task, as the server calls it)"
printf '%-42s %10s   %s\n' 'lua5.4 + lua-cjson (inproc.lua)' "$lua" "${lua_runs[*]}"
printf '%-42s %10s   %s\n' 'store operations/s inside a rule' "$store" "${store_runs[*]}"
printf '%-42s %10s   %s\n' "switchboard replay, $N events, anchor rule" "$replay" "${replay_runs[*]}  (goal >= 50000)"
awk -v s="$sb" -v l="$lua" 'BEGIN {printf "ratio decode+Lua+rule / lua5.4+cjson: %.2f (goal: >= 1.00)\n", s / l}'
awk -v f="$form" -v l="$lua" -v s="$sb" 'BEGIN {
  printf "ratio decode+Lua+rule, form body / lua5.4+cjson: %.2f (%.2f of the JSON body; no goal)\n", f / l, f / s}'
awk -v s="$task" -v l="$lua" 'BEGIN {printf "ratio engine (20 rules) / lua5.4+cjson: %.2f\n", s / l}'
awk -v t="$task" -v s="$sb" 'BEGIN {printf "ratio engine from a task (20 rules) / decode+Lua+rule: %.2f (issue 17 goal: >= 0.80)\n", t / s}'
