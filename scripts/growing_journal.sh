#!/usr/bin/env bash
# Journal-on ingest while the journal grows, for judging a change to what the journal writes or keeps: for
# each binary in turn (RUNS times, alternating), one `switchboard serve` with the anchor's rule on a fresh
# data directory, then ROUNDS wrk runs (1 thread, 32 connections, DURATION s) against it one after the other,
# so each round finds the file larger. Each round prints requests/s, the server's CPU time a request
# (/proc/PID/stat) and the file's size; each run ends with the part of `switchboard.sqlite` in the page cache
# (fincore). compare_ingest.sh starts a fresh server every round, which measures a small file only; the speed
# table's journal-on server keeps its file across its rounds, as this does. CALLS=new posts a new call on
# every request (scripts/wrk/new_calls.lua). Past --journal-max-mb (1024 MB) retention deletes beside the load.
#   scripts/growing_journal.sh /tmp/before .build/release/switchboard
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { echo "usage: $0 BINARY [BINARY...]  (env: ROUNDS RUNS DURATION CALLS)" >&2; exit 2; }
ROUNDS=${ROUNDS:-3}; RUNS=${RUNS:-3}; DURATION=${DURATION:-8}
case "${CALLS:-same}" in
  same) wrk_options=() ;;
  new) wrk_options=(-s "$PWD/scripts/wrk/new_calls.lua") ;;
  *) echo "CALLS is same or new, not $CALLS" >&2; exit 2 ;;
esac
source scripts/serve_common.sh
for run in $(seq "$RUNS"); do
  for binary in "$@"; do
    rm -rf "$work/var"
    "$binary" serve --rules scripts/anchor --port 18210 --data-dir "$work/var" --log-level warning & pid=$!
    pids+=("$pid")
    wait_up 18210
    line="run $run $binary:"
    for round in $(seq "$ROUNDS"); do
      before=$(cpu_ticks "$pid")
      read -r rate _ _ requests < <(wrk_post "$DURATION" http://127.0.0.1:18210/hooks/channel_create "${wrk_options[@]}")
      cpu=$(( ($(cpu_ticks "$pid") - before) * 1000000 / ticks_per_second / (requests > 0 ? requests : 1) ))
      size=$(( $(stat -c %s "$work/var/switchboard.sqlite") / 1048576 ))
      line+=" | ${rate%.*} req/s ${cpu} µs ${size} MB"
    done
    cached=$(fincore --bytes --noheadings --output RES "$work/var/switchboard.sqlite" | awk '{printf "%d", $1 / 1048576}')
    kill "$pid"; wait "$pid" 2>/dev/null || true
    echo "$line | cached ${cached} MB"
  done
done
