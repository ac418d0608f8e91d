#!/usr/bin/env bash
# The Lua bridge and the JSON reader under AddressSanitizer: the JSONCore, KazooEvents, LuaRuntime, RuleEngine,
# RuleTesting and FuzzRegression tests, and the accepted-event log's record tests, built with --sanitize=address
# in their own scratch path (.build-asan, ignored by git). A use-after-free or overflow in Switchboard's C shim or
# Swift code (the JSON reader's and writer's, the key interner's and the log record's unsafe pointers among it)
# fails it. Debian's liblua5.4 is not instrumented, so the shim reads each coroutine's thread and state before
# resuming it (sb_touch), where a closed one is reported.
set -euo pipefail
cd "$(dirname "$0")/.."
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:halt_on_error=1:abort_on_error=1}
swift build --build-tests --sanitize=address --scratch-path .build-asan >/dev/null
swift test --skip-build --sanitize=address --scratch-path .build-asan \
  --filter 'JSONCoreTests|KazooEventsTests|LuaRuntimeTests|RuleEngineTests|RuleTestingTests|FuzzRegressionTests|AcceptedLogTests/(recordsReadBackFieldForField|aRecordIsLaidOut|aCutOrDamagedRecord)'
