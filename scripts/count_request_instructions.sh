#!/usr/bin/env bash
# User-space instructions per request of `switchboard serve` on the hooks path, counted by
# `valgrind --tool=callgrind`: the server runs the anchor's rule (scripts/anchor) with the journal off (JOURNAL=on
# to count the journal's writer too: one request at a time, so each commit holds one event) and takes
# N and 3N POSTs of ../shared/bench/event.json over one keep-alive connection from 127.0.0.1; the difference
# over the extra 2N requests is the per-request count (start-up and shutdown cancel out). It covers the whole
# request: HTTP parsing, decoding, the engine's hand-off, the rule's run on the loop, the answer's encoding,
# metrics and the console feed; the kernel's share (the sockets) is not counted. Counts move by a few hundred
# between runs where req/s on this 2-core machine moves by a tenth or more: use it to judge a change to the
# request path.
#
#   [JOURNAL=on] scripts/count_request_instructions.sh [BINARY...]   (default: the release switchboard, built first)
#
# Each BINARY is copied and stripped of its DWARF first: valgrind 3.19 gives up on Swift's debug info.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${SHARED:-../shared}
N=${N:-1000}
JOURNAL=${JOURNAL:-off}
PORT=${PORT:-18309}
scripts/deps.sh bench
if [ $# -eq 0 ]; then
  scripts/build_release.sh switchboard
  set -- .build/release/switchboard
fi
work=$(mktemp -d); server=
trap '[ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"' EXIT
# count BINARY REQUESTS: the total instructions of a server that started, took REQUESTS requests and stopped.
count() {
  rm -rf "$work/var"
  valgrind --tool=callgrind --callgrind-out-file="$work/out" "$1" serve --rules scripts/anchor --port "$PORT" \
    --data-dir "$work/var" --journal "$JOURNAL" --log-level warning >/dev/null 2>"$work/valgrind.txt" &
  server=$!
  for _ in $(seq 300); do curl -s -o /dev/null "http://127.0.0.1:$PORT/healthz" && break; sleep 0.2; done
  python3 - "$2" "$PORT" "$SHARED/bench/event.json" <<'PY'
import http.client, sys
requests, port, path = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
body = open(path, 'rb').read()
connection = http.client.HTTPConnection('127.0.0.1', port)
for _ in range(requests):
    connection.request('POST', '/hooks/channel_create', body, {'Content-Type': 'application/json'})
    answer = connection.getresponse()
    answer.read()
    if answer.status != 200:
        sys.exit(f'the server answered {answer.status}')
PY
  kill -INT "$server"; wait "$server" || true; server=
  awk '/refs:/ {gsub(",", "", $4); print $4}' "$work/valgrind.txt"
}
for binary in "$@"; do
  cp "$binary" "$work/switchboard" && strip -g "$work/switchboard"
  a=$(count "$work/switchboard" "$N")
  b=$(count "$work/switchboard" $((3 * N)))
  printf '%-48s %8d instructions per request\n' "$binary" $(((b - a) / (2 * N)))
done
