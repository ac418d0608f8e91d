#!/usr/bin/env bash
# Ingest against a journal held at a small size cap, for judging a change to retention: for each binary in
# turn (RUNS times, alternating), one `switchboard serve` with the anchor's rule on a fresh data directory and
# `--journal-max-mb CAP`, then one wrk run (1 thread, 32 connections, DURATION s) against it, so retention
# deletes beside the load for most of the run. Each run prints requests/s, wrk's 99th percentile, and the
# journal's size (`switchboard.sqlite` and its write-ahead log, read every second): its largest and at the
# end. CALLS=new posts a new call on every request (scripts/wrk/new_calls.lua), which the call index's
# retention work depends on.
#   CAP=400 CALLS=new scripts/capped_journal.sh /tmp/before .build/release/switchboard
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 BINARY [BINARY...]  (env: CAP RUNS DURATION CALLS)" >&2; exit 2; }
CAP=${CAP:-200}; RUNS=${RUNS:-3}; DURATION=${DURATION:-30}
case "${CALLS:-same}" in
  same) wrk_options=() ;;
  new) wrk_options=(-s "$PWD/scripts/wrk/new_calls.lua") ;;
  *) echo "CALLS is same or new, not $CALLS" >&2; exit 2 ;;
esac
source scripts/serve_common.sh
journal_mb() { cat "$work/var/switchboard.sqlite" "$work/var/switchboard.sqlite-wal" 2>/dev/null | wc -c | awk '{printf "%d", $1 / 1048576}'; }
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
    read -r rate _ p99 _ < <(wrk_post "$DURATION" http://127.0.0.1:18211/hooks/channel_create "${wrk_options[@]}")
    end=$(journal_mb)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    wait "$watcher" 2>/dev/null || true
    echo "run $run $binary: ${rate%.*} req/s, 99th percentile $p99 ms; journal at most $(cat "$work/largest") MB, $end MB at the end (cap $CAP)"
    rm -f "$work/largest"
  done
done
