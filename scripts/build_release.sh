#!/usr/bin/env bash
# The release build of PRODUCTs (default: switchboard), as `make release`, `make bench` and the benchmark
# scripts make it: Swift's runtime and Foundation linked into the binary (--static-swift-stdlib).
#
#   scripts/build_release.sh [PRODUCT...]      (then .build/release/PRODUCT)
#
# Why static: calls into Swift's runtime (swift_retain, swift_release, the metadata caches) become direct calls
# instead of going through the PLT, and the dynamic loader has far fewer relocations to apply at start. Measured
# on 2 December 2026 against the same code linked dynamically: ingest +6-13%, the engine row 93k -> 112k
# events/s, idle RSS with 20 rules 40.9 -> 37.5-39.0 MB (BENCHMARKS.md, "Ingest and memory beside nginx-lua"). The
# binary then needs only Debian's libraries (libsqlite3, liblua5.4, libmimalloc2.0, libstdc++, zlib, glibc) at
# run time, not the toolchain's, so it can be copied to a server as it is.
#
# Without Swift's run-time exclusivity checks (`-enforce-exclusivity=unchecked`, for every module, SwiftNIO's
# included): a release build otherwise calls into the runtime at each access to a class's stored property or
# a global that the compiler cannot prove exclusive (SwiftNIO's selector, channels and byte buffers, most of
# all), about 10,600 of the 147,000 instructions a hooks request takes (callgrind,
# scripts/count_request_instructions.sh; 3 December 2026). The checks trap on two overlapping accesses to the
# same variable on one thread, a programmer's error; without them such an error is undefined behaviour
# instead. Every build `make test` makes keeps them: the debug builds of the Swift tests and the ASan run, and
# the fuzzers' own release build (scripts/fuzz.sh). The compile-time checks, and Swift 6's data-race checks,
# are not affected. EXCLUSIVITY=checked keeps them here too.
#
# Linked with Debian's mimalloc (libmimalloc.so.2), which then serves every malloc and free in the process:
# Swift's, SwiftNIO's, SQLite's and Lua's. ALLOCATOR=glibc leaves glibc's allocator in place. Measured on 3
# December 2026, the same code linked both ways: BENCHMARKS.md, "Release builds link mimalloc". `make test` runs the
# Swift tests on the same library (scripts/on_mimalloc.sh), so the release binary's allocator is the one the
# tests ran on.
#
# Switching between this and a plain `swift build -c release`, or between EXCLUSIVITY settings, rebuilds
# every module (about 10 minutes here): use this script for every release build. The compiler's output is
# shown only when the build fails; otherwise one line a product says how it was built.
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -gt 0 ] || set -- switchboard
# Lua's and SQLite's headers from Debian when they are missing: this script is also run on its own.
scripts/deps.sh
case "${EXCLUSIVITY:-unchecked}" in
  unchecked) flags=(-Xswiftc -enforce-exclusivity=unchecked) ;;
  checked) flags=() ;;
  *) echo "scripts/build_release.sh: EXCLUSIVITY is checked or unchecked, not $EXCLUSIVITY" >&2; exit 2 ;;
esac
case "${ALLOCATOR:-mimalloc}" in
  mimalloc) flags+=(-Xlinker -lmimalloc) ;;
  glibc) ;;
  *) echo "scripts/build_release.sh: ALLOCATOR is mimalloc or glibc, not $ALLOCATOR" >&2; exit 2 ;;
esac
for product in "$@"; do
  if ! out=$(swift build -c release --static-swift-stdlib "${flags[@]}" --product "$product" 2>&1); then
    printf '%s\n' "$out" >&2
    echo "scripts/build_release.sh: the release build of $product failed (output above)" >&2
    exit 1
  fi
  # One line for the benchmark logs: what the figures below it were measured on.
  echo "release build of $product: allocator ${ALLOCATOR:-mimalloc}, exclusivity checks ${EXCLUSIVITY:-unchecked}"
done
