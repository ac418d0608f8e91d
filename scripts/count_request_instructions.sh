#!/usr/bin/env bash
# User-space instructions per request of `switchboard serve` on the hooks path, counted by
# `valgrind --tool=callgrind`: the server runs the anchor's rule (scripts/anchor) with the journal off (JOURNAL=on
# to count the journal's writer too: one request at a time, so each commit holds one event) and takes
# N and 3N POSTs of ../shared/bench/event.json over one keep-alive connection from 127.0.0.1; the difference
# over the extra 2N requests is the per-request count (start-up and shutdown cancel out). It covers the whole
# request: HTTP parsing, decoding, the engine's hand-off, the rule's run on the loop, the answer's encoding,
# metrics and the console feed; the kernel's share (the sockets) is not counted. Counts move by a few hundred
# between runs where req/s on this 2-core machine moves by a tenth or more: use it to judge a change to the
# request path. A second line gives the event loops' share (everything under SwiftNIO's loops). With the journal
# on, the whole count moves by thousands between runs of one build (how the writer's commits and the log's copies
# fall depends on timing), and the loops' share does not: judge a change to the loops' side by that line.
#
#   [JOURNAL=on] scripts/count_request_instructions.sh [BINARY...]   (default: the release switchboard, built first)
#
# UPSTREAM=keepalive or UPSTREAM=close counts a rule's HTTP call too: the server runs a rule that GETs a
# loopback nginx (an 11-byte answer) on every event, and the requests are one call's events (one call_id, each
# its own timestamp), which run one after another, so the calls do too. With `keepalive` nginx keeps the
# connection for the next call; with `close` it closes it after each answer, so every call opens a new
# connection. The count is then the whole event with its call, and `close` less `keepalive` is the server's
# side of a new upstream connection (the connect, the HTTP client's set-up of the connection, the close).
#
# CONNECTIONS=close (as in compare_ingest.sh; default keep) sends each request on a new connection, with
# `Connection: close` (as curl and some webhook senders do): the count is then the request with its connection's
# accept, set-up and close, and `close` less the default is the server's side of a new inbound connection.
#
# BODY=form (default json) posts the event form-encoded, as Kazoo's default `form-data` format writes it
# (`custom_channel_vars[owner_id]=…`, values percent-encoded with `+` for a space).
#
# Each BINARY is copied and stripped of its DWARF first: valgrind 3.19 gives up on Swift's debug info.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
N=${N:-1000}
JOURNAL=${JOURNAL:-off}
PORT=${PORT:-18309}
UPSTREAM=${UPSTREAM:-}
case "$UPSTREAM" in "" | keepalive | close) ;; *) echo "UPSTREAM is keepalive, close or unset, not $UPSTREAM" >&2; exit 2 ;; esac
BODY=${BODY:-json}
case "$BODY" in json | form) ;; *) echo "BODY is json or form, not $BODY" >&2; exit 2 ;; esac
CONNECTIONS=${CONNECTIONS:-keep}
case "$CONNECTIONS" in keep | close) ;; *) echo "CONNECTIONS is keep or close, not $CONNECTIONS" >&2; exit 2 ;; esac
scripts/deps.sh bench
if [ $# -eq 0 ]; then
  scripts/build_release.sh switchboard
  set -- .build/release/switchboard
fi
work=$(mktemp -d); server=; upstream=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; [ -n "$upstream" ] && kill "$upstream" 2>/dev/null; rm -rf "$work"' EXIT
rules=scripts/anchor
if [ -n "$UPSTREAM" ]; then
  up_port=$((PORT + 1))
  keepalive=60; [ "$UPSTREAM" = close ] && keepalive=0
  mkdir -p "$work/upstream" "$work/rules"
  cat >"$work/upstream/nginx.conf" <<NGINX
worker_processes 1;
daemon off;
pid nginx.pid;
error_log error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  server {
    listen 127.0.0.1:$up_port;
    keepalive_timeout $keepalive;
    keepalive_requests 1000000;
    location / { return 200 '{"ok":true}'; }
  }
}
NGINX
  nginx -c "$work/upstream/nginx.conf" -p "$work/upstream" >"$work/upstream/out" 2>&1 &
  upstream=$!
  for _ in $(seq 50); do curl -sf -o /dev/null "http://127.0.0.1:$up_port/" && break; sleep 0.1; done
  curl -sf -o /dev/null "http://127.0.0.1:$up_port/" || {
    echo "count_request_instructions.sh: the upstream nginx did not start on port $up_port:" >&2
    cat "$work/upstream/out" "$work/upstream/error.log" >&2 2>/dev/null || true
    exit 2
  }
  cat >"$work/rules/call.lua" <<LUA
return { name = "call", on = "channel_create", run = function()
  local r, err = http.get("http://127.0.0.1:$up_port/", { timeout = 30 })
  if not r then error(err) end
end }
LUA
  rules=$work/rules
fi
# count BINARY REQUESTS: the total instructions of a server that started, took REQUESTS requests and stopped,
# and those of its event loops.
count() {
  rm -rf "$work/var"
  valgrind --tool=callgrind --callgrind-out-file="$work/out" "$1" serve --rules "$rules" --port "$PORT" \
    --data-dir "$work/var" --journal "$JOURNAL" --log-level warning --allow-http-to 127.0.0.1/32 \
    >/dev/null 2>"$work/valgrind.txt" &
  server=$!
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.2; done
  local failed=
  python3 - "$2" "$PORT" "$SHARED/bench/event.json" "$UPSTREAM" "$CONNECTIONS" "$BODY" <<'PY' || failed=1
import http.client, json, re, sys, time, urllib.parse, urllib.request
requests, port, path, upstream, connections = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
body = open(path, 'rb').read()
headers = {'Content-Type': 'application/json'}
if sys.argv[6] == 'form':
    # As FormEncoder (and Kazoo's kz_http_util:json_to_querystring/1) writes it: nulls left out, an empty object
    # or list an empty segment, objects inside lists JSON-encoded, nested lists joined into one. (Floats are
    # written as Python writes them; event.json has none.)
    def escape(value):
        text = {True: 'true', False: 'false'}[value] if isinstance(value, bool) else str(value)
        return urllib.parse.quote_plus(text, safe='~')
    def elements(value, key):
        if isinstance(value, list):
            return [p for v in value for p in elements(v, key)]
        if value is None:
            return []
        if isinstance(value, dict):
            return [f'{key}[]={escape(json.dumps(value, separators=(",", ":"), ensure_ascii=False))}']
        return [f'{key}[]={escape(value)}']
    def pairs(value, key):
        if isinstance(value, dict):
            return [p for k, v in value.items() for p in pairs(v, f'{key}[{k}]')] or ['']
        if isinstance(value, list):
            return elements(value, key) or ['']
        return [] if value is None else [f'{key}={escape(value)}']
    body = '&'.join(p for k, v in json.loads(body).items() for p in pairs(v, k)).encode()
    headers = {'Content-Type': 'application/x-www-form-urlencoded'}
if connections == 'close':
    headers['Connection'] = 'close'
connection = http.client.HTTPConnection('127.0.0.1', port)
for i in range(requests):
    if connections == 'close':
        connection.close()
        connection = http.client.HTTPConnection('127.0.0.1', port)
    if upstream:
        # One call's events, each its own timestamp (so none would count as a resend if the server's
        # --dedupe-window were on).
        body = re.sub(rb'"timestamp": *"[0-9]+"', b'"timestamp": "%d"' % (63800000000 + i), body)
    connection.request('POST', '/hooks/channel_create', body, headers)
    answer = connection.getresponse()
    answer.read()
    if answer.status != 200:
        sys.exit(f'the server answered {answer.status}')
def runs():
    text = urllib.request.urlopen(f'http://127.0.0.1:{port}/metrics').read().decode()
    return {m.group(1): float(m.group(2)) for m in
            re.finditer(r'^switchboard_rule_runs_total\{rule="call",outcome="(\w+)"\} (\S+)$', text, re.M)}
if upstream:
    # Every call ends before the server stops (its instructions counted), and each must have succeeded.
    deadline = time.time() + 600
    while sum(runs().values()) < requests:
        if time.time() > deadline:
            sys.exit(f'the rule ran {sum(runs().values()):.0f} of {requests} times in 10 minutes')
        time.sleep(0.2)
    if runs().get('ok', 0) != requests:
        sys.exit(f'not every call succeeded: {runs()}')
PY
  kill -INT "$server"; wait "$server" || true; server=
  [ -z "$failed" ] || return 1  # (the caller's $(...) fails, and set -e stops the script)
  # The whole process's count, then the event loops' (everything under SwiftNIO's loop, inclusive).
  printf '%s %s\n' "$(awk '/refs:/ {gsub(",", "", $4); print $4}' "$work/valgrind.txt")" \
    "$(callgrind_annotate --inclusive=yes --threshold=100 "$work/out" 2>/dev/null |
      awk '/SelectableEventLoopC3runyyKF / {gsub(",", "", $1); print $1; exit}')"
}
for binary in "$@"; do
  cp "$binary" "$work/switchboard" && strip -g "$work/switchboard"
  # Each count in a variable first: a failed `count` stops the script there (a failure inside a here-string's
  # substitution would not).
  first=$(count "$work/switchboard" "$N")
  third=$(count "$work/switchboard" $((3 * N)))
  read -r a loops_a <<<"$first"
  read -r b loops_b <<<"$third"
  : "${a:?valgrind printed no instruction count}" "${b:?valgrind printed no instruction count}"
  : "${loops_a:?no event loop in callgrind_annotate's output}" "${loops_b:?no event loop in callgrind_annotate's output}"
  printf '%-48s %8d instructions per request%s%s\n' "$binary" $(((b - a) / (2 * N))) \
    "${UPSTREAM:+ (each with a call to an upstream, UPSTREAM=$UPSTREAM)}" \
    "$([ "$CONNECTIONS" = close ] && echo " (each on a new connection)")"
  printf '%-48s %8d of them on the event loops\n' "" $(((loops_b - loops_a) / (2 * N)))
done
