#!/usr/bin/env bash
# Issue 17's ingest and memory rows in one run (release build, loopback only):
#  - ingest of ../shared/bench/post.lua (wrk: 1 thread, 32 connections, DURATION s) by nginx + lua-nginx-module
#    (../shared/bench/nginx.conf, the anchor's rule) and by `switchboard serve` with the anchor's rule, the
#    journal on and off; ROUNDS alternating rounds, medians and the ratios to nginx-lua; then nginx-lua and the
#    journal-on server again with `Connection: close` on every request (a connection per request, as curl
#    and some webhook senders do; not an issue 17 row, a guard on what a new connection costs), and with a new
#    call on every request (scripts/wrk/new_calls.lua: random call ids, as real traffic has; also a guard), and
#    once more after the journal's file has reached its cap (1,024 MB, the default --journal-max-mb), where a
#    production journal lives and retention deletes as much as comes in (filled for up to CAP_FILL s first);
#  - the resident memory of `switchboard serve` with 20 rules loaded (the anchor's, 10 on other events, 9 on
#    channel_create that decline it at `match`): idle after start, and after EVENTS accepted events (their
#    rules all finished).
# Environment: ROUNDS (3), DURATION (8), EVENTS (1000000), CAP_FILL (120), SHARED (../shared); ONLY=memory
# measures the memory rows alone (about a minute: for judging a change to what the server keeps).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-8}; EVENTS=${EVENTS:-1000000}; ONLY=${ONLY:-}; CAP_FILL=${CAP_FILL:-120}
[[ $CAP_FILL =~ ^[0-9]+$ ]] || { echo "CAP_FILL is a number of seconds, not $CAP_FILL" >&2; exit 2; }
case "$ONLY" in "" | memory) ;; *) echo "ONLY is memory or unset, not $ONLY" >&2; exit 2 ;; esac
source scripts/serve_common.sh
# status_mb PID FIELD: a line of /proc/PID/status in MB. VmRSS is the resident memory, VmHWM its peak, RssAnon
# the part of it that is the process's own; the rest is code and data mapped from files (the binary, Swift's
# and Foundation's libraries), shared with other processes and dropped first under pressure.
status_mb() { awk -v f="$2:" '$1 == f {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

if [ "$ONLY" != memory ]; then
cp "$SHARED/bench/nginx.conf" "$work/nginx.conf"
nginx -c "$work/nginx.conf" -p "$work" >"$work/nginx.out" 2>&1 & pids+=($!)
mkdir -p "$work/anchor"
cp scripts/anchor/anchor.lua "$work/anchor/"
"$BIN" serve --rules "$work/anchor" --port 18201 --data-dir "$work/var-on" --log-level warning & pids+=($!)
"$BIN" serve --rules "$work/anchor" --port 18202 --data-dir "$work/var-off" --journal off --log-level warning & pids+=($!)
wait_up 18201; wait_up 18202
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18081/hooks && break; sleep 0.1; done
declare -A url=([nginx-lua]=http://127.0.0.1:18081/hooks [journal-on]=http://127.0.0.1:18201/hooks/channel_create
  [journal-off]=http://127.0.0.1:18202/hooks/channel_create)
declare -A runs
# journal_bytes: the size of the journal-on server's journal: its SQLite file and the accepted-event log's files,
# which hold the bodies (0 before they exist).
journal_bytes() {
  # A file missing (none yet, or one freed meanwhile) is left out, not an error.
  { stat -c %s "$work/var-on/switchboard.sqlite" "$work/var-on"/accepted-*.log 2>/dev/null || true; } |
    awk '{s += $1} END {print s + 0}'
}
# rounds SUFFIX "TARGET..." [WRK OPTIONS...]: ROUNDS alternating rounds over the targets; each rate is added to
# runs[TARGETSUFFIX].
rounds() {
  local suffix=$1 targets=$2 round target rate grown
  shift 2
  for round in $(seq "$ROUNDS"); do
    for target in $targets; do
      rate=$(post "$DURATION" "${url[$target]}" "$@")
      runs[$target$suffix]="${runs[$target$suffix]:-} $rate"
      # The journal-on server's cost a request grows with its file, and retention starts once the file passes
      # --journal-max-mb (1,024): each round is printed with the file's size after it.
      grown=
      if [ "$target" = journal-on ]; then
        grown="   (journal files $(( $(journal_bytes) / 1048576 )) MB after it)"
      fi
      printf 'round %s %-12s %s req/s%s\n' "$round" "$target" "$rate" "$grown"
    done
  done
}
echo "== ingest beside nginx-lua (wrk -t1 -c32 -d${DURATION}s, $ROUNDS alternating rounds)"
rounds "" "nginx-lua journal-on journal-off"
nginx=$(median ${runs[nginx-lua]}); on=$(median ${runs[journal-on]}); off=$(median ${runs[journal-off]})
echo "== the same with Connection: close (a connection per request)"
rounds -close "nginx-lua journal-on" -H "Connection: close"
nginx_close=$(median ${runs[nginx-lua-close]}); on_close=$(median ${runs[journal-on-close]})
echo "== the same with a new call on every request (scripts/wrk/new_calls.lua)"
rounds -calls "nginx-lua journal-on" -s "$PWD/scripts/wrk/new_calls.lua"
nginx_calls=$(median ${runs[nginx-lua-calls]}); on_calls=$(median ${runs[journal-on-calls]})
# A journal in production lives at its cap, where retention deletes as much as comes in; the journal-on rounds
# above ran on a file growing from empty and reach it only in the later ones (BENCHMARKS.md, forty-second session).
# The same rounds again once the file has reached the cap (the default --journal-max-mb, 1,024 MB): the file
# then stops growing there. Filled first if it has not, for up to CAP_FILL seconds.
echo "== the same once the journal's file has reached its cap (1,024 MB; retention deletes as much as comes in)"
cap_bytes=$((1024 * 1048576)); fill_until=$((SECONDS + CAP_FILL))
while [ "$(journal_bytes)" -lt "$cap_bytes" ] && [ "$SECONDS" -lt "$fill_until" ]; do
  post 5 "${url[journal-on]}" >/dev/null
done
at_cap=yes
if [ "$(journal_bytes)" -lt "$cap_bytes" ]; then
  at_cap=no
  echo "   the file is $(( $(journal_bytes) / 1048576 )) MB, still short of the cap after $CAP_FILL s:"
  echo "   the row below is not at the cap"
fi
rounds -cap "nginx-lua journal-on"
nginx_cap=$(median ${runs[nginx-lua-cap]}); on_cap=$(median ${runs[journal-on-cap]})
# The memory server below starts from a binary with no pages in the page cache, and the kernel keeps the pages
# of a file some process has mapped: the ingest servers go first.
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait "${pids[@]}" 2>/dev/null || true
pids=()
fi

echo
echo "== memory with 20 rules, idle and after $EVENTS events (journal on)"
mkdir -p "$work/twenty"
cp scripts/anchor/anchor.lua "$work/twenty/"
i=0
for name in channel_answer channel_bridge channel_destroy parking.* sms mms notifications.low_balance \
  notifications.missed_call notifications.voicemail_new object.doc_created; do
  i=$((i + 1))
  printf 'return { name = "other%s", on = "%s", transform = function(e) return { id = e.call_id } end }\n' \
    "$i" "$name" >"$work/twenty/other$i.lua"
done
for i in $(seq 9); do
  printf 'return { name = "out%s", on = "channel_create", match = { call_direction = "outbound" }, transform = function(e) return { id = e.call_id } end }\n' \
    "$i" >"$work/twenty/out$i.lua"
done
"$BIN" check --rules "$work/twenty" >"$work/check.txt" || { cat "$work/check.txt" >&2; exit 1; }
# Most of an idle server's RSS is the binary's own pages (about 32 of 38 MB; RssAnon is about 6), and how the
# kernel holds the file in its page cache moves that by up to 5 MB. The same binary, 5 December 2026: 37.8-38.2
# MB when its pages come from disk as the server touches them (the first start after a boot), 41.0-41.4 MB right
# after `cp` wrote it, 42.4-43.0 MB after it was read whole (presumably the kernel mapping large folios whole on a
# fault). Every run measures the first case: the binary's pages are dropped from the page cache first.
sync
python3 -c 'import os, sys; fd = os.open(sys.argv[1], os.O_RDONLY); os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)' "$BIN"
cached=$(fincore -bno RES "$BIN" 2>/dev/null || echo unknown)
echo "the binary's bytes in the page cache before the server starts: $cached (0 is the case measured)"
"$BIN" serve --rules "$work/twenty" --port 18203 --data-dir "$work/var-20" --log-level warning & pid=$!; pids+=($pid)
wait_up 18203
sleep 2
idle=$(status_mb "$pid" VmRSS); idle_anon=$(status_mb "$pid" RssAnon)
start=$(date +%s)
while [ "$(metric 18203 switchboard_events_total)" -lt "$EVENTS" ]; do
  post 5 http://127.0.0.1:18203/hooks/channel_create >/dev/null
  [ $(($(date +%s) - start)) -gt 900 ] && { echo "stopped after 900 s" >&2; break; }
done
accepted=$(metric 18203 switchboard_events_total)
while [ "$(metric 18203 'switchboard_rule_runs_total{rule="anchor"')" -lt "$accepted" ]; do sleep 0.1; done
sleep 2
after=$(status_mb "$pid" VmRSS); after_anon=$(status_mb "$pid" RssAnon)
peak=$(status_mb "$pid" VmHWM)
echo "accepted $accepted events in $(($(date +%s) - start)) s; every anchor rule run finished"

echo
printf '%-44s %12s %8s   %s\n' figure value ratio 'issue 17 goal'
if [ "$ONLY" != memory ]; then
printf '%-44s %12s %8s   %s\n' 'nginx + lua-nginx-module, req/s' "$nginx" 1.00 ''
printf '%-44s %12s %8.2f   %s\n' 'switchboard ingest, journal on, req/s' "$on" "$(echo "$on / $nginx" | bc -l)" '>= 0.5'
printf '%-44s %12s %8.2f   %s\n' 'switchboard ingest, journal off, req/s' "$off" "$(echo "$off / $nginx" | bc -l)" '>= 0.7'
printf '%-44s %12s %8s   %s\n' 'nginx-lua, Connection: close, req/s' "$nginx_close" 1.00 ''
printf '%-44s %12s %8.2f   %s\n' 'journal on, Connection: close, req/s' "$on_close" \
  "$(echo "$on_close / $nginx_close" | bc -l)" '(no goal: a guard)'
printf '%-44s %12s %8s   %s\n' 'nginx-lua, a new call per request, req/s' "$nginx_calls" 1.00 ''
printf '%-44s %12s %8.2f   %s\n' 'journal on, a new call per request, req/s' "$on_calls" \
  "$(echo "$on_calls / $nginx_calls" | bc -l)" '(no goal: a guard)'
printf '%-44s %12s %8s   %s\n' 'nginx-lua, beside the full journal, req/s' "$nginx_cap" 1.00 ''
cap_label='journal on, its file at the cap, req/s'
[ "$at_cap" = yes ] || cap_label='journal on, file short of the cap, req/s'
printf '%-44s %12s %8.2f   %s\n' "$cap_label" "$on_cap" "$(echo "$on_cap / $nginx_cap" | bc -l)" \
  '(no goal: the steady state of a full journal)'
fi
printf '%-44s %12s %8s   %s\n' 'RSS, 20 rules, idle, MB' "$idle" '' "<= 40 (anonymous: $idle_anon)"
printf '%-44s %12s %8s   %s\n' "RSS after $accepted events, MB" "$after" '' "<= 60 (anonymous: $after_anon; peak RSS $peak)"
