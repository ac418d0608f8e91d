#!/usr/bin/env bash
# The cluster's backlog pass (after a takeover or an outage) as PostgreSQL sees it: N unfinished events beside
# 200,000 done ones, in a throwaway cluster, each way timed as a plpgsql loop (the server's side only):
#   sorted in the node   what ClusterNode runs since 7 December: list (received_at, seq) 512 at a time in seq
#                        order (the pending index), then read the events 32 at a time by seq = ANY(…); the sort
#                        by arrival happens in the node and is not timed here
#   pages by arrival     what it ran before: each page of 32 a query in (received_at, seq) order after the last
#                        one, which sorts every unfinished row again for each page
#   the same, indexed    with an index on (received_at, seq) WHERE NOT done (not made: building it on a large
#                        events table would hold appends back while the migration ran)
#
#   N=50000 scripts/backlog_pass_queries.sh
set -euo pipefail
if [ -z "${SWITCHBOARD_TEST_POSTGRES:-}" ]; then exec "$(dirname "$0")/with_postgres.sh" "$0" "$@"; fi
url=${SWITCHBOARD_TEST_POSTGRES%%\?*}
N=${N:-50000}
psql "$url" -q -v ON_ERROR_STOP=1 <<SQL
CREATE TABLE events (seq BIGSERIAL NOT NULL UNIQUE, id TEXT PRIMARY KEY, received_at DOUBLE PRECISION NOT NULL,
  hook TEXT, format TEXT NOT NULL, body BYTEA NOT NULL, meta TEXT NOT NULL, accepted_by TEXT,
  done BOOLEAN NOT NULL DEFAULT false, done_at DOUBLE PRECISION, name TEXT, call_id TEXT, other_leg TEXT,
  account_id TEXT, outcomes TEXT);
CREATE INDEX events_pending ON events(seq) WHERE NOT done;
INSERT INTO events (id, received_at, format, body, meta, done)
  SELECT 'd' || g, g, 'json', convert_to(repeat('x', 1500), 'UTF8'), '{}', true FROM generate_series(1, 200000) g;
INSERT INTO events (id, received_at, format, body, meta)
  SELECT 'e' || g, 200000 + g + random() * 10, 'json', convert_to(repeat('x', 1500), 'UTF8'), '{}'
  FROM generate_series(1, $N) g;
VACUUM ANALYZE events;

CREATE FUNCTION by_arrival() RETURNS int LANGUAGE plpgsql AS \$\$
DECLARE at float8 := '-Infinity'; s int8 := -9223372036854775808; n int := 0; r record; got int; top int8;
BEGIN
  SELECT coalesce(max(seq), 0) INTO top FROM events;
  LOOP
    got := 0;
    FOR r IN EXECUTE format('SELECT seq, id, received_at, hook, format, body, meta FROM events
        WHERE NOT done AND seq <= %s AND (received_at, seq) > (%L::float8, %s) ORDER BY received_at, seq LIMIT 32',
        top, at, s) LOOP
      at := r.received_at; s := r.seq; got := got + 1;
    END LOOP;
    n := n + got;
    EXIT WHEN got = 0;
  END LOOP;
  RETURN n;
END \$\$;

CREATE FUNCTION sorted_in_node() RETURNS int LANGUAGE plpgsql AS \$\$
DECLARE after int8 := -9223372036854775808; n int := 0; r record; got int; top int8; seqs int8[] := '{}';
  i int := 1; total int;
BEGIN
  SELECT coalesce(max(seq), 0) INTO top FROM events;
  LOOP
    got := 0;
    FOR r IN EXECUTE format('SELECT received_at, seq FROM events
        WHERE NOT done AND seq > %s AND seq <= %s ORDER BY seq LIMIT 512', after, top) LOOP
      seqs := seqs || r.seq; after := r.seq; got := got + 1;
    END LOOP;
    EXIT WHEN got < 512;
  END LOOP;
  total := coalesce(array_length(seqs, 1), 0);
  WHILE i <= total LOOP
    FOR r IN EXECUTE format('SELECT seq, id, received_at, hook, format, body, meta FROM events
        WHERE NOT done AND seq = ANY(%L::int8[])', seqs[i:i + 31]) LOOP
      n := n + 1;
    END LOOP;
    i := i + 32;
  END LOOP;
  RETURN n;
END \$\$;

\echo sorted in the node
\timing on
SELECT sorted_in_node() AS events;
\echo pages by arrival
SELECT by_arrival() AS events;
\timing off
CREATE INDEX events_pending_arrival ON events(received_at, seq) WHERE NOT done;
ANALYZE events;
\echo the same, indexed
\timing on
SELECT by_arrival() AS events;
SQL
