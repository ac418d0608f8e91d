#!/usr/bin/env bash
# Ingest of two (or more) `switchboard` binaries side by side, for judging a change on this noisy machine:
# each binary serves RULES (default scripts/anchor) with the journal JOURNAL (on|off, default on) on a fresh
# data directory, and wrk (1 thread, 32 connections, DURATION s, ../shared/bench/post.lua) measures it;
# the binaries alternate for ROUNDS rounds (default 3) and the medians are printed.
#   cp .build/release/switchboard /tmp/before; (change, swift build -c release)
#   scripts/compare_ingest.sh /tmp/before .build/release/switchboard
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}; RULES=${RULES:-scripts/anchor}; JOURNAL=${JOURNAL:-on}
ROUNDS=${ROUNDS:-3}; DURATION=${DURATION:-8}
[ $# -ge 2 ] || { echo "usage: $0 BINARY BINARY [BINARY...]  (env: RULES JOURNAL ROUNDS DURATION)" >&2; exit 2; }
work=$(mktemp -d); pid=""
trap '[ -n "$pid" ] && kill "$pid" 2>/dev/null; rm -rf "$work"' EXIT
declare -A runs
for round in $(seq "$ROUNDS"); do
  for binary in "$@"; do
    rm -rf "$work/var"
    "$binary" serve --rules "$RULES" --port 18209 --data-dir "$work/var" --journal "$JOURNAL" --log-level warning & pid=$!
    for _ in $(seq 100); do curl -s -o /dev/null http://127.0.0.1:18209/healthz && break; sleep 0.1; done
    rate=$(cd "$SHARED/bench" && BENCH_DIR=. wrk -t1 -c32 -d"$DURATION"s -s post.lua http://127.0.0.1:18209/hooks/channel_create | awk '/Requests\/sec/ {print $2}')
    kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""
    runs[$binary]="${runs[$binary]:-} $rate"
    printf 'round %s %-40s %s req/s\n' "$round" "$binary" "$rate"
  done
done
for binary in "$@"; do
  printf '%-40s median %s req/s  (%s)\n' "$binary" \
    "$(printf '%s\n' ${runs[$binary]} | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')" "${runs[$binary]# }"
done
