#!/usr/bin/env bash
# The console's cost to ingest (release build, loopback): ../shared/bench/post.lua through wrk (1 thread,
# 32 connections, 8 s) against the anchor rule with the journal on, three alternating rounds of
#   none     no console open
#   stream   a client reading the live tail's server-sent events (curl -N): the server's side alone
#   chromium the Live page open in headless Chromium (scripts/console_viewer.py): what a person does; the
#            browser runs on the same 2 cores, so this row includes its CPU too
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/serve_common.sh
mkdir -p "$work/anchor"
cp scripts/anchor/anchor.lua "$work/anchor/"
viewers="none stream"
if command -v chromium >/dev/null && /usr/bin/python3 -c 'import selenium' 2>/dev/null; then viewers="$viewers chromium"; fi
echo "== the console's cost: ingest with no console, a live-tail stream reader, and the Live page in Chromium (wrk, 8 s each, 3 alternating rounds)"
for round in 1 2 3; do
  for viewer in $viewers; do
    rm -rf "$work/var"
    "$BIN" serve --rules "$work/anchor" --port 18196 --data-dir "$work/var" --log-level warning & pid=$!
    pids+=("$pid")
    wait_up 18196
    watcher=""
    case "$viewer" in
      stream) curl -sN http://127.0.0.1:18196/console/api/stream >"$work/stream.txt" & watcher=$! ;;
      chromium) /usr/bin/python3 scripts/console_viewer.py http://127.0.0.1:18196 >"$work/viewer.txt" 2>&1 & watcher=$!
        for _ in $(seq 300); do grep -q watching "$work/viewer.txt" && break; sleep 0.1; done ;;
    esac
    rate=$(post 8 http://127.0.0.1:18196/hooks/channel_create)
    seen=""
    if [ -n "$watcher" ]; then
      kill "$watcher" 2>/dev/null || true; wait "$watcher" 2>/dev/null || true
      [ "$viewer" = stream ] && seen=$(printf '; the stream carried %s batches' "$(grep -c '^data:' "$work/stream.txt" || true)")
      [ "$viewer" = chromium ] && seen="; $(tail -1 "$work/viewer.txt")"
    fi
    kill "$pid"; wait "$pid" 2>/dev/null || true
    printf 'round %s console %-8s %s req/s%s\n' "$round" "$viewer" "$rate" "$seen"
  done
done
