#!/usr/bin/env bash
# `make fuzz`: the libFuzzer targets, each for SECONDS (default 300), seeded from samples/ and the regression
# inputs in Tests/FuzzRegressionTests/inputs/<target>/. `make test` runs them briefly.
#   scripts/fuzz.sh [SECONDS] [TARGET...]     targets: json-reader event-decoder lua-bridge
# A crash or hang stops with exit 1 and names the input: copy it into Tests/FuzzRegressionTests/inputs/<target>/
# so every `make test` replays it, and fix the cause. The corpus grows in .build-fuzz/corpus/<target>/.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-300}
shift || true
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=(json-reader event-decoder lua-bridge)
scratch=.build-fuzz
mkdir -p "$scratch"
# Release: the decoders run about ten times as many inputs a second as in a debug build.
swift build -c release --sanitize=fuzzer -Xswiftc -DFUZZING --scratch-path "$scratch" --product SwitchboardFuzz \
  >"$scratch/build.log" 2>&1 || { cat "$scratch/build.log" >&2; exit 1; }
status=0
for target in "${targets[@]}"; do
  corpus="$scratch/corpus/$target"
  artifacts="$scratch/artifacts/$target"
  mkdir -p "$corpus" "$artifacts"
  cp -n samples/* "$corpus/" 2>/dev/null || true
  cp -n "Tests/FuzzRegressionTests/inputs/$target/"* "$corpus/" 2>/dev/null || true
  log="$scratch/$target.log"
  set +e
  SWITCHBOARD_FUZZ_TARGET="$target" "$scratch/release/SwitchboardFuzz" -max_total_time="$seconds" -timeout=10 \
    -rss_limit_mb=4096 -max_len=65536 -print_final_stats=1 -artifact_prefix="$artifacts/" "$corpus" >"$log" 2>&1
  rc=$?
  set -e
  runs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  cov=$(grep -E '^#[0-9]+' "$log" | tail -1 | sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+) corp: ([0-9]+).*/cov \1, features \2, corpus \3/')
  echo "$target: ${runs:-0} executions in ${seconds}s, $cov (log: $log)"
  if [ $rc -ne 0 ]; then
    status=1
    echo "$target: FOUND A CRASH OR HANG (exit $rc):" >&2
    grep -E 'ERROR|==[0-9]+==|Fatal error|Test unit written|artifact_prefix' "$log" | head -20 >&2
  fi
done
exit $status
