# Sourced by the benchmark scripts: the release binary (built; or SWITCHBOARD_BINARY's), a scratch directory and the
# processes to stop at exit, and helpers: `metric PORT NAME` sums a /metrics series, `wait_up PORT` waits for
# /healthz, `post SECONDS URL [WRK OPTIONS...]` is wrk's requests/s for ../shared/bench/post.lua (1 thread, 32
# connections) and `wrk_post SECONDS URL [WRK OPTIONS...]` the same run's requests/s with its 90th and 99th latency
# percentiles and its count of requests, `median N...` the median of its arguments, `cpu_ticks PID` the user and
# system time PID has used, in clock ticks of `ticks_per_second`.
SHARED=${SHARED:-../shared}
ulimit -n "$(ulimit -Hn)"
scripts/deps.sh bench
# SWITCHBOARD_BINARY=PATH (relative to the repository's root) runs that binary, a copy of an earlier build to
# compare side by side, instead of building.
if [ -n "${SWITCHBOARD_BINARY:-}" ]; then
  [ -f "$SWITCHBOARD_BINARY" ] && [ -x "$SWITCHBOARD_BINARY" ] || {
    echo "SWITCHBOARD_BINARY=$SWITCHBOARD_BINARY is not an executable file (from $PWD)" >&2; exit 2; }
  BIN=$(realpath -- "$SWITCHBOARD_BINARY")
else
  BIN=.build/release/switchboard
  scripts/build_release.sh switchboard
fi
work=$(mktemp -d); pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
# (Whole counts print as integers; a timestamp keeps 15 digits, not awk's default 6.)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
ticks_per_second=$(getconf CLK_TCK)
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v m="$2" 'index($0, m) == 1 {s += $NF} END {printf "%.15g\n", s}'; }
wait_up() { for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$1/healthz" && return 0; sleep 0.1; done; return 1; }
# wrk_post SECONDS URL [WRK OPTIONS...]: "REQ/S P90 P99 REQUESTS" from the same wrk run, the latency percentiles
# in ms.
wrk_post() {
  local seconds=$1 url=$2; shift 2
  (cd "$SHARED/bench" && BENCH_DIR=. wrk -t1 -c32 -d"$seconds"s -s post.lua --latency "$@" "$url") | awk '
    function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v + 0 }
    /Requests\/sec/ { r = $2 } $1 == "90%" { p90 = ms($2) } $1 == "99%" { p99 = ms($2) } / requests in / { n = $1 }
    END { printf "%s %.2f %.2f %d\n", r, p90, p99, n }'
}
post() { wrk_post "$@" | cut -d' ' -f1; }
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
# settled PORT RULE: switchboard_events_total once it has stopped moving and RULE has run on every accepted event.
# Requests wrk leaves in flight when it stops are still committed (a group commit of a few dozen may be under way)
# and counted after it has exited.
settled() {
  local before now
  now=$(metric "$1" switchboard_events_total)
  while :; do
    sleep 0.2
    before=$now; now=$(metric "$1" switchboard_events_total)
    [ "$before" = "$now" ] && [ "$(metric "$1" "switchboard_rule_runs_total{rule=\"$2\"")" -ge "$now" ] && break
  done
  echo "$now"
}
