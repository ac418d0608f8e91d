#!/usr/bin/env bash
# Installs what Switchboard needs from Debian when it is missing. Safe to run again: it only acts on gaps.
#   scripts/deps.sh          build and test needs: liblua5.4-dev, libsqlite3-dev, libmimalloc-dev, pkg-config,
#                            tzdata, python3
#   scripts/deps.sh bench    also the benchmarks' tools and anchors: lua5.4, lua-cjson, wrk, nginx with lua, valgrind
#   scripts/deps.sh browser  also the console's browser tests: chromium, chromium-driver, python3-selenium
set -euo pipefail
need=()
pkg-config --version >/dev/null 2>&1 || need+=(pkg-config)
if ! pkg-config --exists lua5.4 2>/dev/null; then need+=(liblua5.4-dev); fi
if ! pkg-config --exists sqlite3 2>/dev/null; then need+=(libsqlite3-dev); fi
# The allocator release builds link (scripts/build_release.sh) and `make test` runs the Swift tests on.
dpkg-query -W -f='${Status}' libmimalloc-dev 2>/dev/null | grep -q 'ok installed' || need+=(libmimalloc-dev)
# Time zones for cron = ... with timezone = "Europe/Berlin" (Foundation reads the tz database).
[ -f /usr/share/zoneinfo/Europe/Berlin ] || need+=(tzdata)
# Tests check signatures with Python's hmac and mock Kazoo's crossbar API in Python.
command -v python3 >/dev/null || need+=(python3)
if [ "${1:-}" = browser ]; then
  command -v chromium >/dev/null || need+=(chromium)
  command -v chromedriver >/dev/null || need+=(chromium-driver)
  # Debian's Python (not one first on PATH, such as pyenv's) with Debian's Selenium.
  { [ -x /usr/bin/python3 ] && /usr/bin/python3 -c 'import selenium' 2>/dev/null; } || need+=(python3 python3-selenium)
fi
if [ "${1:-}" = bench ]; then
  command -v lua5.4 >/dev/null || need+=(lua5.4)
  [ -f /usr/lib/x86_64-linux-gnu/lua/5.4/cjson.so ] || need+=(lua-cjson)
  command -v valgrind >/dev/null || need+=(valgrind)
  command -v curl >/dev/null || need+=(curl)
  command -v bc >/dev/null || need+=(bc)
  # serve_bench.sh times its senders with GNU time, and builds scripts/burst.c with cc (or the toolchain's clang).
  [ -x /usr/bin/time ] || need+=(time)
  # The server benchmarks' load and their anchor (../shared/bench/anchors.sh installs the same when it runs).
  command -v wrk >/dev/null || need+=(wrk)
  command -v nginx >/dev/null || need+=(nginx-light)
  [ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || need+=(libnginx-mod-http-lua)
fi
[ ${#need[@]} -eq 0 ] && exit 0
echo "Installing from Debian: ${need[*]}" >&2
sudo=""
if [ "$(id -u)" != 0 ]; then
  command -v sudo >/dev/null || { echo "need root (or sudo) to install: ${need[*]}" >&2; exit 1; }
  sudo=sudo
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
