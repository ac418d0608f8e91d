#!/usr/bin/env bash
# Ingest of two (or more) `switchboard` binaries side by side, for judging a change on this noisy machine:
# each binary serves RULES (default scripts/anchor) with the journal JOURNAL (on|off, default on) on a fresh
# data directory, and wrk (1 thread, 32 connections, DURATION s, ../shared/bench/post.lua) measures it;
# the binaries alternate for ROUNDS rounds (default 3) and the medians are printed, with the medians of wrk's
# 90th and 99th latency percentiles (a change to the journal's writer can shorten its pauses, and so the
# answers' tail, without moving requests per second), and the server's CPU time per request (from
# /proc/PID/stat). CONNECTIONS=close sends `Connection: close` with every request (a connection per request,
# as curl and some webhook senders do; default: keep-alive). CALLS=new posts a new call on every request
# (scripts/wrk/new_calls.lua: random call ids, as real traffic has; default: the anchor's one call). Also
# printed: the bytes the server wrote a request (/proc/PID/io). (It builds the release binary first, as the
# other benchmark scripts do: scripts/serve_common.sh.)
#   cp .build/release/switchboard /tmp/before; (change, scripts/build_release.sh)
#   scripts/compare_ingest.sh /tmp/before .build/release/switchboard
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 BINARY BINARY [BINARY...]  (env: RULES JOURNAL ROUNDS DURATION CONNECTIONS CALLS)" >&2; exit 2; }
RULES=${RULES:-scripts/anchor}; JOURNAL=${JOURNAL:-on}; ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-8}
CONNECTIONS=${CONNECTIONS:-keep}
case "$CONNECTIONS" in
  keep) wrk_options=() ;;
  close) wrk_options=(-H "Connection: close") ;;
  *) echo "CONNECTIONS is keep or close, not $CONNECTIONS" >&2; exit 2 ;;
esac
case "${CALLS:-same}" in
  same) ;;
  new) wrk_options+=(-s "$PWD/scripts/wrk/new_calls.lua") ;;
  *) echo "CALLS is same or new, not $CALLS" >&2; exit 2 ;;
esac
source scripts/serve_common.sh
declare -A runs p90s p99s cpus bytes
written() { awk '$1 == "write_bytes:" {print $2}' "/proc/$1/io"; }
for round in $(seq "$ROUNDS"); do
  for binary in "$@"; do
    rm -rf "$work/var"
    "$binary" serve --rules "$RULES" --port 18209 --data-dir "$work/var" --journal "$JOURNAL" --log-level warning & pid=$!
    pids+=("$pid")
    wait_up 18209
    before=$(cpu_ticks "$pid"); before_bytes=$(written "$pid")
    read -r rate p90 p99 requests < <(wrk_post "$DURATION" http://127.0.0.1:18209/hooks/channel_create "${wrk_options[@]}")
    cpu=$(( ($(cpu_ticks "$pid") - before) * 1000000 / ticks_per_second / (requests > 0 ? requests : 1) ))
    wrote=$(( ($(written "$pid") - before_bytes) / (requests > 0 ? requests : 1) ))
    kill "$pid"; wait "$pid" 2>/dev/null || true
    runs[$binary]="${runs[$binary]:-} $rate"; p90s[$binary]="${p90s[$binary]:-} $p90"; p99s[$binary]="${p99s[$binary]:-} $p99"
    cpus[$binary]="${cpus[$binary]:-} $cpu"; bytes[$binary]="${bytes[$binary]:-} $wrote"
    printf 'round %s %-40s %s req/s  p90 %s ms  p99 %s ms  server CPU %s µs/request  %s bytes written/request\n' \
      "$round" "$binary" "$rate" "$p90" "$p99" "$cpu" "$wrote"
  done
done
for binary in "$@"; do
  printf '%-40s median %s req/s  (%s)  p90 %s ms  p99 %s ms  server CPU %s µs/request  %s bytes/request\n' \
    "$binary" "$(median ${runs[$binary]})" "${runs[$binary]# }" "$(median ${p90s[$binary]})" \
    "$(median ${p99s[$binary]})" "$(median ${cpus[$binary]})" "$(median ${bytes[$binary]})"
done
