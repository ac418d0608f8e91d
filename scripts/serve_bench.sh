#!/usr/bin/env bash
# Benchmarks of `switchboard serve` (release build), on loopback only:
#  1. N events (default 1000), sent at once by scripts/burst.c (`SENDER=curl`: by one curl per 250, as until
#     the thirty-third session), whose rule calls a loopback upstream answering after 1 s (nginx +
#     lua-nginx-module, `ngx.sleep(1)`): time from the sender's start until the last of the N rule runs ended
#     (the server's `switchboard_rule_last_run_timestamp_seconds`, read once its metrics count N finished runs;
#     issue 17's goal: <= 1.2 s), the same from the first webhook's arrival at the server (the journal's
#     received_at), when the upstream saw the first and the last of the N requests, and the CPU time the
#     server and the sender spent in the round; after each round, the same round for nginx + lua-nginx-module
#     doing the rule's work by hand (scripts/slow_anchor.nginx.conf: the row's anchor, SENDER=burst only).
#     `ONLY=slow` runs this section alone.
#  2. ../shared/bench/anchors.sh against a server running the anchor's rule, then a check that every
#     accepted event's rule really ran, and how long the backlog took to drain after wrk stopped.
#  3. hot reload; 4. ingest with the journal off and on; 5. ingest with the anchor rule alone and beside a
#     rule writing the store on every event (and that its counter equals the accepted events); 6. forwards
#     through the outbox to a loopback upstream: ingest while forwarding, and deliveries per second until
#     every accepted event's is delivered.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${N:-1000}
# UPSTREAM_HOST=localhost: the rule calls the upstream by a name (looked up as the system resolver does, here
# from /etc/hosts) instead of the address 127.0.0.1. The server may call 127.0.0.1 and ::1 (where /etc/hosts
# also gives localhost that address; the upstream listens on 127.0.0.1, which is tried first).
UPSTREAM_HOST=${UPSTREAM_HOST:-127.0.0.1}
[[ $UPSTREAM_HOST =~ ^[A-Za-z0-9.-]+$ ]] || {
  echo "UPSTREAM_HOST must be a host name or an IPv4 address (letters, digits, dots, hyphens), not $UPSTREAM_HOST" >&2
  exit 2
}
source scripts/serve_common.sh

echo "== slow upstream: $N events, each rule waits 1 s on a loopback upstream (nginx + lua, ngx.sleep(1)) at $UPSTREAM_HOST"
# The sender shares the two cores with the server, where Kazoo would send from a machine of its own. Until the
# thirty-third session four curls of 250 parallel transfers each sent the burst (one curl sends at most 300 at
# once, whatever --parallel-max says): they spent 110-180 ms of CPU per round of 1,000, about a third of what
# the server spent, and the burst reached the server that much later. scripts/burst.c builds every request
# before it opens any connection and sends them all from one epoll loop, for 40-60 ms of CPU per round.
# `SENDER=curl` still sends with curl, to compare. The burst opens its 1,000 connections first and then writes
# the requests, so the server reads them in large batches; `BURST_STEP=16` opens 16 at a time and writes those
# up between two steps, so the first request goes out about 20 ms sooner and the requests arrive spread over
# the connects. The server then works in smaller batches and, in most runs, spends more CPU on the same round
# (BENCHMARKS.md, thirty-fifth session).
sender=${SENDER:-burst}
label=$sender; [ "$sender" = curl ] && label=curls
burst_step=()
if [ -n "${BURST_STEP:-}" ]; then
  [ "$sender" = burst ] && [ "$BURST_STEP" -gt 0 ] 2>/dev/null || {
    echo "BURST_STEP must be a positive number, and only with SENDER=burst, not $BURST_STEP" >&2; exit 2; }
  burst_step=("$BURST_STEP")
  echo "   (the burst opens its connections $BURST_STEP at a time)"
fi
case "$sender" in
  burst)
    cc=${CC:-$(command -v cc || command -v clang || true)}
    [ -n "$cc" ] || { echo "serve_bench.sh: no C compiler for scripts/burst.c (set CC, or SENDER=curl)" >&2
      exit 2; }
    "$cc" -O2 -o "$work/burst" scripts/burst.c ;;
  curl) per=250 ;;
  *) echo "SENDER must be burst or curl, not $sender" >&2; exit 2 ;;
esac
# nginx, not scripts/slow_upstream.py: Python used 0.07-0.23 s of CPU per round (/proc/PID/stat) for the 1,000
# connections, on the two cores the server and the sender need; a real upstream runs elsewhere. /arrivals gives
# the first and last time a request arrived since the previous look (and forgets them).
mkdir -p "$work/upstream"
cat >"$work/upstream/nginx.conf" <<'NGINX'
load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;
worker_processes 1;
worker_rlimit_nofile 8192;
daemon off;
pid nginx.pid;
error_log nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  init_by_lua_block { arrivals = {} }
  server {
    listen 127.0.0.1:18181 backlog=4096;
    location /slow {
      content_by_lua_block {
        arrivals[#arrivals + 1] = ngx.now()
        ngx.sleep(1)
        ngx.header.content_type = "application/json"
        ngx.say('{"ok":true}')
      }
    }
    location /arrivals {
      content_by_lua_block {
        if #arrivals > 0 then ngx.say(string.format("%.3f %.3f %d", arrivals[1], arrivals[#arrivals], #arrivals)) end
        arrivals = {}
      }
    }
  }
}
NGINX
nginx -c "$work/upstream/nginx.conf" -p "$work/upstream" >"$work/upstream/out" 2>&1 & pids+=($!)
for _ in $(seq 50); do curl -s -o /dev/null http://127.0.0.1:18181/arrivals && break; sleep 0.1; done
mkdir -p "$work/slow"
cat > "$work/slow/slow.lua" <<LUA
return { name = "slow", on = "channel_create", run = function()
  local r, err = http.get("http://$UPSTREAM_HOST:18181/slow", { timeout = 10 })
  if not r then error(err) end
end }
LUA
"$BIN" serve --rules "$work/slow" --port 18182 --allow-http-to 127.0.0.1/32 --allow-http-to ::1/128 --data-dir "$work/var1" --log-level warning & pids+=($!)
server=$!
wait_up 18182
# Each event its own call (events of one call run one after another, as Kazoo's calls do).
mkdir -p "$work/bodies"
for i in $(seq "$N"); do
  sed "s/\"call_id\": \"[^\"]*\"/\"call_id\": \"bench-$i\"/" samples/channel_create__inbound.json >"$work/bodies/$i.json"
  if [ "$sender" = burst ]; then
    # burst reads its bodies from one file, each ended by a NUL byte.
    { cat "$work/bodies/$i.json"; printf '\0'; } >>"$work/bodies.nul"
  else
    part="$work/urls.$(( (i - 1) / per )).cfg"
    [ $(( (i - 1) % per )) = 0 ] || echo next >>"$part"
    printf 'url = "http://127.0.0.1:18182/hooks/channel_create"\noutput = "/dev/null"\nheader = "Content-Type: application/json"\ndata-binary = "@%s"\nwrite-out = "%%{http_code}\\n"\n' "$work/bodies/$i.json" >>"$part"
  fi
done
# timed COMMAND...: runs it, its user and system CPU time appended to $work/sender.times ("USER SYSTEM").
timed() { /usr/bin/time -a -o "$work/sender.times" -f '%U %S' "$@"; }
# send [PORT]: the burst of N webhooks to the server (to PORT, with SENDER=burst), each answer's status code on
# a line of $work/codes.txt, and the CPU time the senders used in $work/sender.times.
send() {
  rm -f "$work/sender.times"
  if [ "$sender" = burst ]; then
    timed "$work/burst" "${1:-18182}" /hooks/channel_create "$work/bodies.nul" "${burst_step[@]}" \
      >"$work/codes.txt"
    return
  fi
  local senders=() part
  for part in "$work"/urls.*.cfg; do
    timed curl -s --no-progress-meter --parallel --parallel-immediate --parallel-max "$per" -K "$part" \
      >"$part.codes" &
    senders+=($!)
  done
  wait "${senders[@]}"
  cat "$work"/urls.*.cfg.codes >"$work/codes.txt"
}
# received DB SINCE N: "FIRST LAST COUNT", the earliest and latest received_at of the journal's events received
# since SINCE (Unix seconds), once N of them are in the journal's database (the server copies its accepted log
# there in the background), or what is there after 10 s. Only accepted events are journaled: a round with
# refused requests shows fewer, after that wait.
received() {
  python3 - "$@" <<'PY'
import sqlite3, sys, time
path, since, want = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
deadline = time.time() + 10
while True:
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    first, last, count = db.execute(
        "SELECT min(received_at), max(received_at), count(*) FROM events WHERE received_at >= ?", (since,)).fetchone()
    db.close()
    if count >= want or time.time() > deadline:
        break
    time.sleep(0.05)
if count:
    print(f"{first:.6f} {last:.6f} {count}")
PY
}
# until_upstream_slept START: sleeps until 1 s after START (Unix seconds). No run can end before the
# upstream's 1 s sleep has: the polls for the round's end (a curl, an awk and a bc every 5 ms) start then, not
# while the server is still opening upstream connections on the same two cores (until the thirty-fourth
# session they ran from the burst's end, and took 10-30% of the machine in the last 100 ms of round 1's
# sending, which sets when the round ends).
until_upstream_slept() { sleep "$(echo "x = 1 - ($(date +%s.%N) - $1); if (x > 0) x else 0" | bc)"; }
# past_30s START: whether 30 s have passed since START (a round's polls give up then).
past_30s() { [ "$(echo "$(date +%s.%N) - $1 > 30" | bc)" = 1 ]; }
# sender_ms: the CPU time the round's senders used, in ms ($work/sender.times, from `timed`).
sender_ms() { awk '{ s += $1 + $2 } END { printf "%d", s * 1000 }' "$work/sender.times"; }
# upstream_saw START: how many requests the upstream saw since its previous look, and when the first and the last
# arrived, after START.
upstream_saw() {
  local first last seen
  read -r first last seen < <(curl -s http://127.0.0.1:18181/arrivals) || true
  if [ -n "${seen:-}" ]; then
    printf '         the upstream saw %d requests, the first %.3f s and the last %.3f s after the %s started\n' \
      "$seen" "$(echo "$first - $1" | bc)" "$(echo "$last - $1" | bc)" "$label"
  fi
}
# server_round N: round N of the server's: the burst, the wait for its N rule runs, and what they took.
server_round() {
  local round=$1 before server_cpu start answered seen_done ok ended got_first got_last got
  before=$(metric 18182 'switchboard_rule_runs_total{rule="slow",outcome="ok"}')
  server_cpu=$(cpu_ticks "$server")
  start=$(date +%s.%N)
  send
  answered=$(date +%s.%N)
  until_upstream_slept "$start"
  while [ "$(metric 18182 'switchboard_rule_runs_total{rule="slow",outcome="ok"}')" -lt $((before + N)) ]; do
    sleep 0.005
    past_30s "$start" && break
  done
  seen_done=$(date +%s.%N)
  server_cpu=$(( ($(cpu_ticks "$server") - server_cpu) * 1000 / ticks_per_second ))
  ok=$(( $(metric 18182 'switchboard_rule_runs_total{rule="slow",outcome="ok"}') - before ))
  # When the last run really ended, by the server's clock (the same machine's): the poll above sees it up to one
  # poll later (a curl, an awk and a bc: 10-20 ms on this machine).
  ended=$(metric 18182 'switchboard_rule_last_run_timestamp_seconds{rule="slow"}')
  server_took[$round]=$(printf '%.3f' "$(echo "$ended - $start" | bc)")
  printf 'round %d: %d of %d answered 200 in %.3f s; %d/%d rule runs finished ok, the last %.3f s after the %s started (issue 17 goal: <= 1.2 s every round); the poll saw it at %.3f s\n' \
    "$round" "$(grep -c '^200$' "$work/codes.txt")" "$N" "$(echo "$answered - $start" | bc)" "$ok" "$N" \
    "$(echo "$ended - $start" | bc)" "$label" "$(echo "$seen_done - $start" | bc)"
  printf '         CPU time in the round: the server %d ms (until the poll saw the last run), the %s %d ms\n' \
    "$server_cpu" "$label" "$(sender_ms)"
  # When the round's first and last webhooks reached the server: the journal's received_at (the server's clock,
  # taken as each request is read). The burst's first request reaches the server 24-39 ms after its start on
  # this machine (its start, the bodies mapped, 1,000 connects; 6-14 ms with BURST_STEP=16; curl reads its
  # 1,000-transfer config too, 33-41 ms), which the figure above counts.
  read -r got_first got_last got < <(received "$work/var1/switchboard.sqlite" "$start" "$N") || true
  if [ -n "${got:-}" ]; then
    printf '         the server received %d of them, the first %.3f s and the last %.3f s after the %s started: the last run ended %.3f s after the first webhook arrived\n' \
      "$got" "$(echo "$got_first - $start" | bc)" "$(echo "$got_last - $start" | bc)" "$label" "$(echo "$ended - $got_first" | bc)"
  fi
  upstream_saw "$start"
}
# anchor_round N: the same round for nginx-lua doing the same by hand (scripts/slow_anchor.nginx.conf).
anchor_round() {
  local round=$1 before=0 count=0 last=0 start answered cpu
  read -r before _ < <(curl -sf http://127.0.0.1:18187/done) || true
  count=$before
  cpu=$(cpu_ticks "$anchor")
  start=$(date +%s.%N)
  send 18187
  answered=$(date +%s.%N)
  until_upstream_slept "$start"
  # (A failed call is not counted: the wait then ends after 30 s, and the line says how many succeeded.)
  while read -r count last < <(curl -sf http://127.0.0.1:18187/done) && [ "$count" -lt $((before + N)) ]; do
    sleep 0.005
    past_30s "$start" && break
  done
  cpu=$(( ($(cpu_ticks "$anchor") - cpu) * 1000 / ticks_per_second ))
  anchor_took[$round]=$(printf '%.3f' "$(echo "$last - $start" | bc)")
  printf '  nginx-lua round %d: %d of %d answered 200 in %.3f s; %d/%d calls succeeded, the last %.3f s after the %s started; its CPU time %d ms, the %s %d ms\n' \
    "$round" "$(grep -c '^200$' "$work/codes.txt")" "$N" "$(echo "$answered - $start" | bc)" "$((count - before))" "$N" \
    "$(echo "$last - $start" | bc)" "$label" "$cpu" "$label" \
    "$(sender_ms)"
  upstream_saw "$start"
}
# The anchor for these rounds: nginx-lua doing the rule's work by hand, on the same upstream (by its address:
# nginx resolves names only through a `resolver` it is given, not /etc/hosts), each of its rounds right after the
# server's, with the burst alone (SENDER=curl leaves it out). Port 18187; stopped after the rounds.
if [ "$sender" = burst ]; then
  mkdir -p "$work/slow_anchor"
  cp scripts/slow_anchor.nginx.conf "$work/slow_anchor/nginx.conf"
  nginx -c "$work/slow_anchor/nginx.conf" -p "$work/slow_anchor" >"$work/slow_anchor/out" 2>&1 & pids+=($!)
  anchor=$!
  for _ in $(seq 50); do curl -sf -o /dev/null http://127.0.0.1:18187/done && break; sleep 0.1; done
  if ! kill -0 "$anchor" 2>/dev/null || ! curl -sf -o /dev/null http://127.0.0.1:18187/done; then
    echo "serve_bench.sh: the nginx-lua anchor (scripts/slow_anchor.nginx.conf) did not start on port 18187:" >&2
    cat "$work/slow_anchor/out" "$work/slow_anchor/nginx-error.log" >&2 2>/dev/null || true
    exit 2
  fi
  echo "   each round of the server's is followed by the same round for nginx-lua doing the rule's work by hand (scripts/slow_anchor.nginx.conf, no journal)"
fi
declare -a server_took anchor_took
for round in 1 2 3; do
  server_round "$round"
  if [ "$sender" = burst ]; then anchor_round "$round"; fi
done
# The row as the issue's table has it: each round's end, the server's beside the anchor's.
printf 'slow upstream, the last run'"'"'s end after the %s started (issue 17: <= 1.2 s every round):' "$label"
for round in 1 2 3; do
  printf '%s round %d %s s' "$([ "$round" = 1 ] || echo ';')" "$round" "${server_took[$round]}"
  if [ -n "${anchor_took[$round]:-}" ]; then printf ' (nginx-lua %s s)' "${anchor_took[$round]}"; fi
done
echo
if [ "$sender" = burst ]; then kill "$anchor"; wait "$anchor" 2>/dev/null || true; fi
# `ONLY=slow scripts/serve_bench.sh` stops here.
[ "${ONLY:-}" = slow ] && exit 0

echo
echo "== HTTP ingest beside the anchors (../shared/bench/anchors.sh)"
mkdir -p "$work/anchor"
cp scripts/anchor/anchor.lua "$work/anchor/"
"$BIN" serve --rules "$work/anchor" --port 18183 --data-dir "$work/var2" --log-level warning & pids+=($!)
wait_up 18183
"$SHARED/bench/anchors.sh" http://127.0.0.1:18183/hooks/channel_create | tee "$work/anchors.txt"
ended=$(date +%s.%N)
accepted=$(metric 18183 'switchboard_events_total')
while [ "$(metric 18183 'switchboard_rule_runs_total{rule="anchor"')" -lt "$accepted" ]; do sleep 0.01; done
drained=$(echo "$(date +%s.%N) - $ended" | bc)
runs=$(metric 18183 'switchboard_rule_runs_total{rule="anchor",outcome="ok"}')
printf 'switchboard accepted %d events during the run; %d anchor rule runs finished ok; the backlog drained %.3f s after the load stopped\n' \
  "$accepted" "$runs" "$drained"

echo
echo "== hot reload"
python3 scripts/reload_bench.py "$BIN"

echo
echo "== the journal's cost: ingest with it off and on, same rule, same run (wrk, 8 s each, 3 alternating rounds)"
for round in 1 2 3; do
  for journal in off on; do
    rm -rf "$work/var-$journal"
    "$BIN" serve --rules "$work/anchor" --port 18185 --data-dir "$work/var-$journal" --journal "$journal" --log-level warning & pid=$!
    wait_up 18185
    printf 'round %s journal %-3s %s\n' "$round" "$journal" "$(post 8 http://127.0.0.1:18185/hooks/channel_create) req/s"
    kill "$pid"; wait "$pid" 2>/dev/null || true
  done
done

echo
echo "== the store's cost: ingest (journal on) with the anchor rule alone, and beside a rule that writes the store on every event (wrk, 8 s each, 3 alternating rounds)"
mkdir -p "$work/store"
cp "$work/anchor/anchor.lua" "$work/store/"
cat > "$work/store/count.lua" <<'LUA'
return { name = "count", on = "channel_create", run = function(e) store.incr("events"); call.set("last", e.name) end }
LUA
for round in 1 2 3; do
  for rules in anchor store; do
    rm -rf "$work/var-$rules"
    "$BIN" serve --rules "$work/$rules" --port 18186 --data-dir "$work/var-$rules" --log-level warning & pid=$!
    wait_up 18186
    rate=$(post 8 http://127.0.0.1:18186/hooks/channel_create)
    accepted=$(settled 18186 anchor)
    kill "$pid"; wait "$pid" 2>/dev/null || true
    extra=""
    if [ "$rules" = store ]; then
      extra=$(printf '; store counter %s of %s accepted' "$("$BIN" store get --rule count events --json --data-dir "$work/var-$rules")" "$accepted")
    fi
    printf 'round %s %-22s %s req/s%s\n' "$round" "$([ "$rules" = anchor ] && echo 'anchor rule' || echo 'anchor + store rule')" "$rate" "$extra"
  done
done

echo
echo "== forwards through the outbox: 3 s of wrk on a rule that forwards every event to a loopback upstream"
python3 scripts/slow_upstream.py 18191 0 & up=$!
mkdir -p "$work/fwd"
cat > "$work/fwd/fwd.lua" <<'LUA'
return { name = "fwd", on = "channel_create", transform = function(e) return { call_id = e.call_id } end,
  forward = "http://127.0.0.1:18191/sink" }
LUA
"$BIN" serve --rules "$work/fwd" --port 18192 --data-dir "$work/var-fwd" --allow-http-to 127.0.0.1/32 --log-level warning & pid=$!
wait_up 18192
start=$(date +%s.%N)
BENCH_DIR="$SHARED/bench" wrk -t1 -c16 -d3s -s "$SHARED/bench/post.lua" http://127.0.0.1:18192/hooks/channel_create | awk '/Requests\/sec/ {print "ingest while forwarding: " $2 " req/s"}'
accepted=$(settled 18192 fwd)
while [ "$(metric 18192 'switchboard_deliveries_total{result="delivered"}')" -lt "$accepted" ]; do
  sleep 0.05
  [ "$(echo "$(date +%s.%N) - $start > 120" | bc)" = 1 ] && break
done
delivered=$(metric 18192 'switchboard_deliveries_total{result="delivered"}')
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
printf '%s accepted, %s delivered (2xx) %.2f s after the first request: %.0f deliveries/s\n' "$accepted" "$delivered" "$elapsed" "$(echo "$delivered / $elapsed" | bc -l)"
kill "$pid" "$up"; wait "$pid" "$up" 2>/dev/null || true
