#!/usr/bin/env bash
# Where a server's CPU goes, thread by thread, under wrk (1 thread, 32 connections, DURATION s, default 8):
# serves RULES (default scripts/anchor) with the journal JOURNAL (on|off, default on) on a fresh data directory,
# samples /proc/PID/task/*/stat every 0.2 s while wrk runs, and prints each thread's share of a core, how busy
# the whole machine was (/proc/stat), requests a second, and CPU microseconds a request for the server and for
# each kind of thread (NIO's event loops, libdispatch's workers: the journal's writer and its log copier).
# libdispatch's threads come and go, so every one seen is counted; one that lived only between two samples is
# missed. CALLS=new posts a new call on every request (scripts/wrk/new_calls.lua). SWITCHBOARD_BINARY:
# another binary (default: the release build, built first; see scripts/serve_common.sh).
#   scripts/thread_cpu.sh; JOURNAL=off scripts/thread_cpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RULES=${RULES:-scripts/anchor}; JOURNAL=${JOURNAL:-on}; DURATION=${DURATION:-8}
wrk_options=()
case "${CALLS:-same}" in
  same) ;;
  new) wrk_options+=(-s "$PWD/scripts/wrk/new_calls.lua") ;;
  *) echo "CALLS is same or new, not $CALLS" >&2; exit 2 ;;
esac
[ -z "${BIN_UNDER_TEST:-}" ] || { echo "BIN_UNDER_TEST is now SWITCHBOARD_BINARY" >&2; exit 2; }
source scripts/serve_common.sh
binary=$BIN
"$binary" serve --rules "$RULES" --port 18229 --data-dir "$work/var" --journal "$JOURNAL" --log-level warning & pid=$!
pids+=("$pid")
wait_up 18229
machine() { awk '/^cpu / {t = 0; for (i = 2; i <= NF; i++) t += $i; print t, $5 + $6}' /proc/stat; }
(
  while kill -0 "$pid" 2>/dev/null; do
    for task in /proc/"$pid"/task/*; do
      # tid, name (spaces taken out), user + system ticks; a thread gone meanwhile is skipped.
      line=$(awk '{print $14 + $15}' "$task/stat" 2>/dev/null) || continue
      echo "${task##*/} $(tr ' ' _ < "$task/comm" 2>/dev/null) $line"
    done
    sleep 0.2
  done
) > "$work/samples" &
sampler=$!
read -r total0 idle0 < <(machine)
read -r rate _ _ requests < <(wrk_post "$DURATION" http://127.0.0.1:18229/hooks/channel_create "${wrk_options[@]}")
read -r total1 idle1 < <(machine)
kill "$sampler" 2>/dev/null || true; wait "$sampler" 2>/dev/null || true
echo "journal $JOURNAL: $rate req/s ($requests requests in ${DURATION} s); the machine $(( 100 - 100 * (idle1 - idle0) / (total1 - total0) ))% busy"
# Each thread's share of a core, busiest first; then CPU a request by kind of thread.
per_thread() {
  awk -v ticks="$ticks_per_second" '{ if (!($1 in first)) first[$1] = $3; last[$1] = $3; name[$1] = $2 }
    END { for (t in last) if (last[t] > first[t]) print t, name[t], (last[t] - first[t]) / ticks }' "$work/samples"
}
per_thread | sort -k3 -gr | awk -v seconds="$DURATION" '{printf "  %-8s %-28s %5.1f%% of a core\n", $1, $2, 100 * $3 / seconds}'
per_thread | awk -v requests="$requests" '
  { kind = $2 ~ /^NIO/ ? "event loops" : $2 ~ /qos/ ? "dispatch workers (journal)" : "other"; used[kind] += $3; all += $3 }
  END { for (k in used) printf "  %-30s %5.1f µs a request\n", k, 1e6 * used[k] / requests
        printf "  %-30s %5.1f µs a request\n", "the server", 1e6 * all / requests }'
