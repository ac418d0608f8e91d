#!/usr/bin/env bash
# Several nodes on PostgreSQL beside one node on SQLite (release build, loopback, part of `make bench`).
# Three configurations, the anchor rule (scripts/anchor), each request a call of its own (scripts/calls.lua):
#   sqlite     one node, --data-dir (the embedded default)
#   pg-1node   one node, --store postgres://…
#   pg-2nodes  two nodes on one database, one wrk per node
# Every configuration gets the same client load: two wrk processes (1 thread, 16 connections each, DURATION
# seconds). Two figures per round:
#   ingest     requests answered 200 per second (both wrk processes summed)
#   processed  accepted events whose rule ran, per second from the first request until the last rule run
#              (with several nodes only the node holding the processing lease runs rules)
# Each round starts on a fresh database (or data directory). The throwaway PostgreSQL runs with fsync off,
# as SQLite's default journal does (synchronous = NORMAL: survives a killed process, not a power cut).
# Environment: ROUNDS (default 3), DURATION (s, default 8).
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
source scripts/serve_common.sh
# Its own directory in /tmp: the postgres user (as root) cannot enter mktemp's private $work.
pg=$(mktemp -u /tmp/switchboard-pg.XXXXXX)
trap 'cleanup; scripts/pg_cluster.sh destroy "$pg"' EXIT
url=$(scripts/pg_cluster.sh start "$pg")
port=$(cat "$pg/port")
mkdir -p "$work/anchor"
cp scripts/anchor/anchor.lua "$work/anchor/"

# run CONFIG ROUND: prints "ingest processed" for one round.
run() {
  local config=$1 round=$2 nodes=() ports=()
  case "$config" in
  sqlite)
    "$BIN" serve --rules "$work/anchor" --port 18201 --data-dir "$work/sqlite-$round" --log-level warning & nodes+=($!)
    ports=(18201 18201)
    ;;
  pg-1node | pg-2nodes)
    local db="bench_${config//-/_}_$round"
    psql -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE DATABASE $db OWNER switchboard" >/dev/null
    local store="postgres://switchboard@127.0.0.1:$port/$db?sslmode=disable"
    "$BIN" serve --rules "$work/anchor" --port 18211 --store "$store" --node-name a \
      --data-dir "$work/$db-a" --log-level warning & nodes+=($!)
    ports=(18211 18211)
    if [ "$config" = pg-2nodes ]; then
      "$BIN" serve --rules "$work/anchor" --port 18212 --store "$store" --node-name b \
        --data-dir "$work/$db-b" --log-level warning & nodes+=($!)
      ports=(18211 18212)
    fi
    ;;
  esac
  local p
  for p in "${ports[@]}"; do wait_up "$p" || { echo "$config: a node did not start" >&2; exit 1; }; done
  local start out1="$work/wrk1" out2="$work/wrk2"
  start=$(date +%s.%N)
  BENCH_DIR="$SHARED/bench" wrk -t1 -c16 -d"${DURATION}s" -s scripts/calls.lua "http://127.0.0.1:${ports[0]}/hooks/channel_create" >"$out1" &
  local w1=$!
  BENCH_DIR="$SHARED/bench" wrk -t1 -c16 -d"${DURATION}s" -s scripts/calls.lua "http://127.0.0.1:${ports[1]}/hooks/channel_create" >"$out2" &
  local w2=$!
  wait "$w1" "$w2"
  local unique accepted runs
  mapfile -t unique < <(printf '%s\n' "${ports[@]}" | sort -u)
  sum() { local s=0 q; for q in "${unique[@]}"; do s=$((s + $(metric "$q" "$1"))); done; echo "$s"; }
  accepted=$(sum 'switchboard_events_total')
  while runs=$(sum 'switchboard_rule_runs_total{rule="anchor"'); [ "$runs" -lt "$accepted" ]; do
    sleep 0.02
    if [ "$(echo "$(date +%s.%N) - $start > $DURATION + 300" | bc)" = 1 ]; then
      echo "$config: only $runs of $accepted accepted events ran within 300 s of the load's end" >&2
      exit 1
    fi
  done
  local elapsed ingest
  elapsed=$(echo "$(date +%s.%N) - $start" | bc)
  ingest=$(cat "$out1" "$out2" | awk '/Requests\/sec/ {s += $2} END {printf "%.0f", s}')
  kill "${nodes[@]}"
  wait "${nodes[@]}" 2>/dev/null || true
  printf '%s %.0f %d\n' "$ingest" "$(echo "$accepted / $elapsed" | bc -l)" "$accepted"
}

echo "== several nodes: ingest req/s and processed events/s, SQLite one node, PostgreSQL one and two nodes"
echo "   (two wrk processes, 1 thread and 16 connections each, ${DURATION} s; $ROUNDS rounds; each request its own call)"
declare -A ingest processed
configs=(sqlite pg-1node pg-2nodes)
for round in $(seq "$ROUNDS"); do
  for c in "${configs[@]}"; do
    read -r i p n < <(run "$c" "$round")
    ingest[$c]="${ingest[$c]:-} $i"
    processed[$c]="${processed[$c]:-} $p"
    printf 'round %s %-10s ingest %6s req/s  processed %6s events/s  (%s accepted)\n' "$round" "$c" "$i" "$p" "$n"
  done
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
base_i=$(echo ${ingest[sqlite]} | median)
base_p=$(echo ${processed[sqlite]} | median)
printf '%-10s %14s %6s %20s %6s\n' config 'ingest req/s' ratio 'processed events/s' ratio
for c in "${configs[@]}"; do
  mi=$(echo ${ingest[$c]} | median)
  mp=$(echo ${processed[$c]} | median)
  printf '%-10s %14s %6.2f %20s %6.2f\n' "$c" "$mi" "$(echo "$mi / $base_i" | bc -l)" "$mp" "$(echo "$mp / $base_p" | bc -l)"
done
