#!/usr/bin/env bash
# Runs COMMAND with Debian's mimalloc preloaded: the allocator release builds link (scripts/build_release.sh),
# so a debug build, and the Swift tests (`make test`), run on the allocator the release binary ships with.
#
#   scripts/on_mimalloc.sh COMMAND [ARGUMENT...]
#
# The dynamic loader only warns when a preload cannot be loaded, and runs the command on glibc's allocator
# anyway; this stops instead, so nothing passes on an allocator it did not mean to use.
set -euo pipefail
[ $# -gt 0 ] || { echo "usage: $0 COMMAND [ARGUMENT...]" >&2; exit 2; }
library=libmimalloc.so.2
said=$(env LD_PRELOAD="$library" MIMALLOC_VERBOSE=1 /bin/true 2>&1 || true)
if ! grep -q '^mimalloc: ' <<<"$said"; then
  echo "scripts/on_mimalloc.sh: $library cannot be preloaded; install it with scripts/deps.sh (libmimalloc-dev)" >&2
  exit 1
fi
export LD_PRELOAD="$library${LD_PRELOAD:+ $LD_PRELOAD}"
exec "$@"
