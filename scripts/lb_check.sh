#!/usr/bin/env bash
# Checks the README's nginx configuration for several nodes (release build, loopback only):
# the ```nginx block of README.md, with its three upstream addresses pointed at three local nodes on one
# throwaway PostgreSQL, plain HTTP on a free port instead of TLS, in front of `switchboard serve --store`.
# Sends events through it, kills one node with SIGKILL (the processing one), sends more, and checks that
# every request got 200 and that every acknowledged event's rule ran exactly as often as it was accepted.
#   scripts/lb_check.sh        (installs nginx-light from Debian when missing)
set -euo pipefail
cd "$(dirname "$0")/.."
command -v nginx >/dev/null || {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nginx-light >/dev/null
}
source scripts/serve_common.sh
pg=$(mktemp -u /tmp/switchboard-pg.XXXXXX)
trap 'cleanup; scripts/pg_cluster.sh destroy "$pg"' EXIT
store=$(scripts/pg_cluster.sh start "$pg")
mkdir -p "$work/rules"
cat >"$work/rules/count.lua" <<'LUA'
return { name = "count", on = "channel_create", run = function(e) store.incr("events") end }
LUA
ports=(18301 18302 18303)
declare -A node
for i in 0 1 2; do
  "$BIN" serve --rules "$work/rules" --port "${ports[$i]}" --store "$store" --node-name "n$i" --lease 2s \
    --data-dir "$work/n$i" --log-level warning & node[$i]=$!
  pids+=("${node[$i]}")
done
for p in "${ports[@]}"; do wait_up "$p"; done
lb=18300
python3 - "$lb" "${ports[@]}" >"$work/nginx.conf" <<'PY'
import re, sys
lb, ports = sys.argv[1], sys.argv[2:]
readme = open("README.md").read()
block = re.search(r"```nginx\n(.*?)```", readme, re.S).group(1)
for n, port in zip(("11", "12", "13"), ports):
    block = block.replace(f"10.0.0.{n}:8080", f"127.0.0.1:{port}")
block = block.replace("listen 443 ssl;", f"listen 127.0.0.1:{lb};")
block = "\n".join(l for l in block.splitlines() if "ssl_certificate" not in l)
print("worker_processes 1;\nerror_log stderr warn;\npid nginx.pid;\nevents {}\nhttp {\naccess_log off;")
print(block)
print("}")
PY
nginx -c "$work/nginx.conf" -p "$work" -g 'daemon off;' & pids+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$lb/hooks" && break; sleep 0.1; done
send() {  # send FROM TO: one event per call id, 8 at a time; prints the status codes
  seq "$1" "$2" | xargs -P 8 -I{} sh -c \
    "sed 's/\"call_id\": \"[^\"]*\"/\"call_id\": \"lb-{}\"/' samples/channel_create__inbound.json |
     curl -s -o /dev/null -w '%{http_code}\n' -H 'Content-Type: application/json' --data-binary @- \
       http://127.0.0.1:$lb/hooks/channel_create"
}
send 1 300 >"$work/codes"
processing=$("$BIN" nodes --store "$store" --lease 2 --json | python3 -c '
import json, sys
print(next(n["name"] for n in json.load(sys.stdin) if n["processing"]))')
victim=${processing#n}
kill -9 "${node[$victim]}"
echo "killed the processing node n$victim (SIGKILL) after 300 events"
send 301 600 >>"$work/codes"
ok=$(grep -c '^200$' "$work/codes" || true)
echo "answers through nginx: $ok of 600 were 200 ($(sort "$work/codes" | uniq -c | tr -s ' ' | tr '\n' ';'))"
survivor=$(( (victim + 1) % 3 ))
total=0
for _ in $(seq 300); do
  total=$(psql -At "${store%%\?*}" -c "SELECT coalesce((SELECT value FROM store WHERE namespace = 'rule:count' AND key = 'events'), '0')" 2>/dev/null || echo 0)
  [ "$total" = 600 ] && break
  sleep 0.1
done
echo "the counter rule's total: $total (expected 600); nodes now:"
"$BIN" nodes --store "$store" --lease 2
[ "$ok" = 600 ] && [ "$total" = 600 ]
echo "OK: the README's nginx configuration kept every request answered 200 through a node's death"
