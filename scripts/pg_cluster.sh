#!/usr/bin/env bash
# A throwaway PostgreSQL cluster in a directory, for tests and benchmarks.
#   scripts/pg_cluster.sh start DIR   create it (first time) and start it; prints its URL
#   scripts/pg_cluster.sh stop DIR    stop it (fast shutdown); start again keeps its data and port
#   scripts/pg_cluster.sh destroy DIR stop it and delete DIR
# Installs Debian's postgresql-15 when missing. initdb refuses to run as root, so as root the cluster belongs
# to the `postgres` user (created by the package). It listens on 127.0.0.1 only, on a free port.
set -euo pipefail
cmd=${1:?start, stop or destroy}
dir=${2:?a directory}
bin=/usr/lib/postgresql/15/bin
if [ ! -x "$bin/initdb" ]; then
  echo "Installing from Debian: postgresql-15" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends postgresql-15 >/dev/null
fi
as=()
if [ "$(id -u)" = 0 ]; then as=(runuser -u postgres --); fi
# PostgreSQL's own reason, where whoever ran this sees it.
failed_start() {
  echo "pg_cluster.sh: PostgreSQL did not start in $dir; the end of its log ($dir/log):" >&2
  tail -n 20 "$dir/log" >&2 || true
  exit 1
}
case "$cmd" in
start)
  if [ ! -f "$dir/port" ]; then
    mkdir -p "$dir"
    chmod 755 "$dir"
    [ "$(id -u)" = 0 ] && chown postgres "$dir"
    # A free port below the kernel's ephemeral range (32768 and up): a port the kernel handed out for port 0 was
    # free when asked and could be another process's by the time PostgreSQL bound it (a full test run, with
    # servers on port 0 starting in parallel, once saw "could not start server"), and again while a test keeps
    # the cluster stopped. No bind to port 0 is given one below the range.
    port=$(python3 - <<'PY'
import random, socket
for _ in range(500):
    port = random.randrange(20000, 32000)
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            continue
    print(port)
    break
else:
    raise SystemExit("pg_cluster.sh: no free port between 20000 and 32000 on 127.0.0.1")
PY
)
    "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres -A trust -E UTF8 --no-sync >/dev/null
    # fsync off: a test cluster needs no durability across power loss, and slow disks stay fast.
    cat >>"$dir/data/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
fsync = off
max_connections = 300
CONF
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null || failed_start
    "${as[@]}" "$bin/psql" -q -h 127.0.0.1 -p "$port" -U postgres -c "CREATE ROLE switchboard LOGIN SUPERUSER" \
      -c "CREATE DATABASE switchboard OWNER switchboard" >/dev/null
    echo "$port" >"$dir/port"
  else
    port=$(cat "$dir/port")
    "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w start >/dev/null || failed_start
  fi
  echo "postgres://switchboard@127.0.0.1:$port/switchboard?sslmode=disable"
  ;;
stop)
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
  ;;
destroy)
  "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$dir"
  ;;
*)
  echo "usage: $0 start|stop|destroy DIR" >&2
  exit 2
  ;;
esac
