#!/usr/bin/env bash
# Ingest against a journal held at a small size cap, for judging a change to retention: for each binary in
# turn (RUNS times, alternating), one `switchboard serve` with the anchor's rule on a fresh data directory and
# `--journal-max-mb CAP`, then one wrk run (1 thread, 32 connections, DURATION s) against it, so retention
# deletes beside the load for most of the run. Each run prints requests/s, wrk's 99th percentile, and the
# journal's size (`switchboard.sqlite`, its write-ahead log and the accepted-event log's files, which hold the
# bodies; read every second): its largest and at the end. CALLS=new posts a new call on every request
# (scripts/wrk/new_calls.lua), which the call index's retention work depends on. FILL=S first runs wrk S
# seconds unmeasured (default 0), so that the measured run starts at the cap. Each run also prints the
# server's CPU a request over the measured run (/proc/PID/stat), split into the event loops' (their threads'
# /proc/PID/task/*/stat) and the rest: the journal's threads, and the bytes it had the kernel write to the disk
# a request (/proc/PID/io's write_bytes).
#   CAP=400 CALLS=new scripts/capped_journal.sh /tmp/before .build/release/switchboard
#   CAP=200 CALLS=new FILL=12 DURATION=15 scripts/capped_journal.sh /tmp/before .build/release/switchboard
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 BINARY [BINARY...]  (env: CAP RUNS DURATION CALLS FILL)" >&2; exit 2; }
CAP=${CAP:-200}; RUNS=${RUNS:-3}; DURATION=${DURATION:-30}; FILL=${FILL:-0}
[[ $FILL =~ ^[0-9]+$ ]] || { echo "FILL is a number of seconds, not $FILL" >&2; exit 2; }
case "${CALLS:-same}" in
  same) wrk_options=() ;;
  new) wrk_options=(-s "$PWD/scripts/wrk/new_calls.lua") ;;
  *) echo "CALLS is same or new, not $CALLS" >&2; exit 2 ;;
esac
source scripts/serve_common.sh
# loop_ticks PID: the user and system clock ticks of PID's SwiftNIO event-loop threads (named NIO-…).
loop_ticks() {
  local task sum=0
  for task in /proc/"$1"/task/*; do
    if grep -q '^NIO-' "$task/comm" 2>/dev/null; then sum=$((sum + $(awk '{print $14 + $15}' "$task/stat"))); fi
  done
  echo "$sum"
}
# per_request TICKS REQUESTS: microseconds of CPU a request.
per_request() { awk -v t="$1" -v n="$2" -v h="$ticks_per_second" 'BEGIN {printf "%.1f", t / h / n * 1e6}'; }
journal_mb() {
  # A file missing (no log file yet, or one freed meanwhile) is left out, not an error.
  { stat -c %s "$work/var/switchboard.sqlite" "$work/var/switchboard.sqlite-wal" "$work/var"/accepted-*.log \
    2>/dev/null || true; } | awk '{s += $1} END {printf "%d", s / 1048576}'
}
for run in $(seq "$RUNS"); do
  for binary in "$@"; do
    rm -rf "$work/var"
    "$binary" serve --rules scripts/anchor --port 18211 --data-dir "$work/var" --journal-max-mb "$CAP" \
      --log-level warning & pid=$!
    pids+=("$pid")
    wait_up 18211
    # The largest size seen, sampled every second while wrk runs.
    (largest=0; while kill -0 "$pid" 2>/dev/null; do
       now=$(journal_mb); [ "$now" -gt "$largest" ] && largest=$now && echo "$largest" > "$work/largest"
       sleep 1; done) & watcher=$!
    [ "$FILL" = 0 ] || post "$FILL" http://127.0.0.1:18211/hooks/channel_create "${wrk_options[@]}" >/dev/null
    cpu=$(cpu_ticks "$pid"); loops=$(loop_ticks "$pid"); written=$(awk '/^write_bytes/ {print $2}' "/proc/$pid/io")
    read -r rate _ p99 requests < <(
      wrk_post "$DURATION" http://127.0.0.1:18211/hooks/channel_create "${wrk_options[@]}")
    cpu=$(( $(cpu_ticks "$pid") - cpu )); loops=$(( $(loop_ticks "$pid") - loops ))
    written=$(( $(awk '/^write_bytes/ {print $2}' "/proc/$pid/io") - written ))
    end=$(journal_mb)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    wait "$watcher" 2>/dev/null || true
    echo "run $run $binary: ${rate%.*} req/s, 99th percentile $p99 ms; journal at most $(cat "$work/largest") MB, $end MB at the end (cap $CAP)"
    echo "  server CPU $(per_request "$cpu" "$requests") µs a request: the event loops" \
      "$(per_request "$loops" "$requests"), the rest (the journal's threads)" \
      "$(per_request $((cpu - loops)) "$requests"); $((written / requests)) bytes written a request"
    rm -f "$work/largest"
  done
done
