#!/usr/bin/env bash
# Runs a command beside a throwaway PostgreSQL cluster (scripts/pg_cluster.sh), deleted afterwards:
#   scripts/with_postgres.sh swift test
# The command sees SWITCHBOARD_TEST_POSTGRES=postgres://switchboard@127.0.0.1:PORT/switchboard?sslmode=disable.
# Tests that stop PostgreSQL start their own cluster with scripts/pg_cluster.sh, so they disturb no other test.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
dir=$(mktemp -d /tmp/switchboard-pg.XXXXXX)
rmdir "$dir"
trap '"$here/pg_cluster.sh" destroy "$dir"' EXIT
SWITCHBOARD_TEST_POSTGRES=$("$here/pg_cluster.sh" start "$dir")
export SWITCHBOARD_TEST_POSTGRES
echo "PostgreSQL for tests: $SWITCHBOARD_TEST_POSTGRES" >&2
"$@"
