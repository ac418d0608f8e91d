#!/usr/bin/env python3
"""Replays the journal's writes with Debian's SQLite (the library the server links) and compares layouts.

For N events (default 60,000) of ../shared/bench/event.json: appends B to a transaction (default 6, about what
one commit holds under `wrk -t1 -c32`), done records 128 to a transaction with the anchor rule's outcome, a
passive checkpoint every 200 events (LogCopier.everyEvents), in WAL mode with synchronous NORMAL and the
journal's checkpoint size. Prints the process's CPU time and the bytes written (/proc/self/io) per event for
each layout named:

  current   the journal's schema until the fiftieth session: the body in `events`, `events_done` keyed by the
            event's text id, the call index (leg, id) staged by a trigger and merged in key order
            (EventStore/CallIndex.swift: a sixteenth of the index at a time, 8,192 to 32,768 legs, 256 a slice)
  indexes   the schema before it: two indexes on `events_done(call_id)` and `(other_leg)`
  rowid     `indexes` with `events_done` keyed by the event's rowid instead
  segments  `indexes` with bodies in append-only files (one write per commit), `events` holding where they are
  current-segments  `current` with its bodies kept as `segments` keeps them
  batched   `current` with the call index keyed by (batch, leg, id): each merge's sorted legs go in under a batch
            number one above the last, so they are appended at the index's end whatever the call ids; retention
            drops a batch whole (after checking none of its events is left) once its newest event is deleted,
            instead of sweeping; orphans wait for their batch (a plan, not the server's layout)
  batched-sweep  the server's layout since the fiftieth session: `batched`'s keys, with `current`'s merges
            (legs at or before the newest id deleted left out) and its sweep of orphans along the index in key
            order (batch, leg, id), the batches it leaves empty dropped at its end, instead of dropping batches

CALLS=same (the default) gives every event the anchor's call ids; CALLS=new a new call id and other leg each,
as real traffic has (random ids: each index entry lands on its own page).

CAP=K replays a journal kept at its cap, as `--journal-max-mb` keeps one under a steady load: once it holds
K events, each time it holds 500 more, retention deletes the oldest 500 done events in one transaction
(EventJournal.pruneBatch): their done records and rows, and in the `current` layouts and `batched-sweep` a
slice of the call index's sweep (four entries read in key order an event deleted; a deleted event's staged legs are not
merged). The figures printed are those of the events after the K-th alone. The `segments` layouts keep
their bodies in files of SEGMENT events (default 25,000), each deleted whole once retention has deleted all
its events. Freed pages are zeroed and written, as Debian's SQLite does (secure_delete); SECURE_DELETE=0
turns that off, to compare.

Python's own cost per statement is the same in every layout, so the differences are SQLite's and the
kernel's. This machine's speed moves by a fifth from one run to the next: alternate the layouts, run each
several times and compare the lowest CPU figures; the bytes written do not move.
Usage: [N=…] [B=…] [CALLS=same|new] [CAP=K [SEGMENT=…] [SECURE_DELETE=0]] scripts/journal_layouts.py [LAYOUT...]
"""
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time


def count(name, default=None):
    """The environment's NAME as a number above 0 (`default` when unset; None when that is too), or the
    script stops saying what it wants."""
    text = os.environ.get(name) or default
    if text is None:
        return None
    if not text.isdigit() or int(text) == 0:
        sys.exit(f"{name} must be a number above 0, not {text}")
    return int(text)


N = count("N", "60000")
B = count("B", "6")
HERE = os.path.dirname(os.path.abspath(__file__))
BODY = open(os.path.join(HERE, "..", "..", "shared", "bench", "event.json"), "rb").read()
META = json.dumps({"id": "0" * 36, "received_at": 1.0, "hook": "channel_create", "method": "POST",
                   "format": "json", "peer": "127.0.0.1"})
OUTCOMES = ('[{"rule":"anchor","outcome":"ok","stage":null,"forwards":[],"http":[],"logs":[],"error":null,'
            '"file":"anchor.lua","seconds":1.2e-05}]')
CALL = "NDlkNGI3OTZlMDgzNWQxNGYxNTA3NjQ4NDZjNDFkOTc"
ACCOUNT = "91eb05e5c68d7ca05e7618b6821d2d16"
OTHER_LEG = "af1e1e12f1bcf519a96f2235ab8eeec4"
CALLS = os.environ.get("CALLS", "same")
LAYOUTS = ("current", "indexes", "rowid", "segments", "current-segments", "batched", "batched-sweep")
SLICE = 256
CAP = count("CAP")
SEGMENT = count("SEGMENT", "25000")
PRUNE_BATCH = 500
if CAP is not None and CAP >= N:
    sys.exit(f"CAP must be below N ({N}), not {CAP}")


def written():
    with open("/proc/self/io") as io:
        for line in io:
            if line.startswith("wchar"):
                return int(line.split()[1])


def event_ids():
    """Time-ordered ids shaped like the server's (version 7 UUIDs: 50 events a millisecond)."""
    start = int(time.time() * 1000)
    return ["%012x-7%03x-8%03x-%012x" % (start + i // 50, i % 4096, (i * 7) % 4096, i) for i in range(N)]


def schema(db, layout):
    if layout.endswith("segments"):
        db.execute("CREATE TABLE events (id TEXT PRIMARY KEY, received_at REAL NOT NULL, hook TEXT, "
                   "format TEXT NOT NULL, segment INTEGER, offset INTEGER, length INTEGER, meta TEXT NOT NULL)")
    else:
        db.execute("CREATE TABLE events (id TEXT PRIMARY KEY, received_at REAL NOT NULL, hook TEXT, "
                   "format TEXT NOT NULL, body BLOB NOT NULL, meta TEXT NOT NULL, done INTEGER NOT NULL DEFAULT 0, "
                   "done_at REAL)")
    key = "event INTEGER PRIMARY KEY" if layout == "rowid" else "id TEXT PRIMARY KEY"
    rowid = "" if layout == "rowid" else " WITHOUT ROWID"
    db.execute(f"CREATE TABLE events_done ({key}, done_at REAL NOT NULL, name TEXT, call_id TEXT, other_leg TEXT, "
               f"account_id TEXT, outcomes TEXT){rowid}")
    if layout.startswith("batched"):
        db.executescript("""
            CREATE TABLE call_index (batch INTEGER NOT NULL, leg TEXT NOT NULL, id TEXT NOT NULL,
              PRIMARY KEY (batch, leg, id)) WITHOUT ROWID;
            CREATE TABLE call_batches (batch INTEGER PRIMARY KEY, newest TEXT NOT NULL);""")
    if layout.startswith("current") or layout.startswith("batched"):
        db.executescript("""
            CREATE TABLE call_legs (leg TEXT NOT NULL, id TEXT NOT NULL, PRIMARY KEY (leg, id)) WITHOUT ROWID;
            CREATE TABLE call_legs_staged (call_id TEXT, other_leg TEXT, id TEXT NOT NULL);
            CREATE TRIGGER events_done_legs AFTER INSERT ON events_done
            WHEN new.call_id IS NOT NULL OR new.other_leg IS NOT NULL BEGIN
              INSERT INTO call_legs_staged (call_id, other_leg, id) VALUES (new.call_id, new.other_leg, new.id);
            END;""")
    else:
        db.execute("CREATE INDEX events_done_call ON events_done(call_id) WHERE call_id IS NOT NULL")
        db.execute("CREATE INDEX events_done_other_leg ON events_done(other_leg) WHERE other_leg IS NOT NULL")


class Merge:
    """The journal's merge of staged legs into `call_legs` (or `call_index`, batched): read and sorted (in the
    server on the log copier's connection, sorted by a C helper; here by SQLite), inserted a slice per writer
    turn from memory; the last slice deletes the staged rows it covered."""

    def __init__(self, batched=False, leave_out=True):
        self.staged, self.indexed, self.legs, self.next, self.through = 0, 0, [], 0, 0
        # `batched`: the legs go into `call_index` under batch number `batch`; with `leave_out` (as the server
        # does), those at or before the newest id retention deleted are left out.
        self.batched, self.batch, self.leave_out = batched, 0, leave_out
        # The newest event id retention has deleted: legs at or before it are not merged (CallIndexMerge).
        self.deleted_through = ""
        # Where the call index's sweep stopped (its start again after its end).
        self.swept_to = ("", "")
        self.swept_batched = (-1, "", "")

    def sweep_batched(self, db, entries):
        """`sweep` over `call_index`, in (batch, leg, id) order."""
        orphaned = "id <= ? AND NOT EXISTS (SELECT 1 FROM events_done d WHERE d.id = call_index.id)"
        last = db.execute("SELECT batch, leg, id FROM call_index WHERE (batch, leg, id) > (?, ?, ?) "
                          "ORDER BY batch, leg, id LIMIT 1 OFFSET ?", (*self.swept_batched, entries - 1)).fetchone()
        if last is None:
            db.execute(f"DELETE FROM call_index WHERE (batch, leg, id) > (?, ?, ?) AND {orphaned}",
                       (*self.swept_batched, self.deleted_through))
            db.execute("DELETE FROM call_batches WHERE NOT EXISTS "
                       "(SELECT 1 FROM call_index i WHERE i.batch = call_batches.batch)")
            self.swept_batched = (-1, "", "")
        else:
            db.execute(f"DELETE FROM call_index WHERE (batch, leg, id) > (?, ?, ?) AND (batch, leg, id) <= (?, ?, ?) "
                       f"AND {orphaned}", (*self.swept_batched, *last, self.deleted_through))
            self.swept_batched = tuple(last)

    def sweep(self, db, entries):
        orphaned = "id <= ? AND NOT EXISTS (SELECT 1 FROM events_done d WHERE d.id = call_legs.id)"
        last = db.execute("SELECT leg, id FROM call_legs WHERE (leg, id) > (?, ?) ORDER BY leg, id LIMIT 1 OFFSET ?",
                          (*self.swept_to, entries - 1)).fetchone()
        if last is None:
            db.execute(f"DELETE FROM call_legs WHERE (leg, id) > (?, ?) AND {orphaned}",
                       (*self.swept_to, self.deleted_through))
            self.swept_to = ("", "")
        else:
            db.execute(f"DELETE FROM call_legs WHERE (leg, id) > (?, ?) AND (leg, id) <= (?, ?) AND {orphaned}",
                       (*self.swept_to, *last, self.deleted_through))
            self.swept_to = tuple(last)

    def step(self, db):
        if self.next == len(self.legs):
            if self.staged < min(max(self.indexed // 16, 8192), 32768):
                return
            self.through = db.execute("SELECT max(rowid) FROM call_legs_staged").fetchone()[0]
            self.legs = db.execute(
                "SELECT leg, id FROM ("
                "SELECT call_id AS leg, id FROM call_legs_staged WHERE rowid <= ?1 AND call_id IS NOT NULL "
                "UNION ALL SELECT other_leg, id FROM call_legs_staged WHERE rowid <= ?1 AND other_leg IS NOT NULL)"
                " ORDER BY leg, id", (self.through,)).fetchall()
            self.next = 0
            if not self.legs:
                self.staged = 0
                return
        end = min(self.next + SLICE, len(self.legs))
        db.execute("BEGIN IMMEDIATE")
        if self.batched:
            kept = self.legs[self.next:end]
            if self.leave_out:
                kept = [leg for leg in kept if leg[1] > self.deleted_through]
            if kept:
                values = ", ".join(["(?, ?, ?)"] * len(kept))
                db.execute(f"INSERT OR IGNORE INTO call_index (batch, leg, id) VALUES {values}",
                           [value for leg in kept for value in (self.batch, *leg)])
        else:
            kept = [leg for leg in self.legs[self.next:end] if leg[1] > self.deleted_through]
            if kept:
                values = ", ".join(["(?, ?)"] * len(kept))
                db.execute(f"INSERT OR IGNORE INTO call_legs (leg, id) VALUES {values}",
                           [value for leg in kept for value in leg])
        if end == len(self.legs):
            db.execute("DELETE FROM call_legs_staged WHERE rowid <= ?", (self.through,))
            if self.batched:
                db.execute("INSERT OR REPLACE INTO call_batches (batch, newest) VALUES (?, ?)",
                           (self.batch, max(leg[1] for leg in self.legs)))
                self.batch += 1
        db.execute("COMMIT")
        self.next = end
        if end == len(self.legs):
            self.staged -= len(self.legs)
            self.indexed += len(self.legs)
            self.legs, self.next = [], 0


def replay(layout, directory):
    db = sqlite3.connect(os.path.join(directory, "switchboard.sqlite"), isolation_level=None)
    for pragma in ("journal_mode = WAL", "synchronous = NORMAL", "wal_autocheckpoint = 4000", "temp_store = MEMORY"):
        db.execute("PRAGMA " + pragma)
    if os.environ.get("SECURE_DELETE"):
        db.execute("PRAGMA secure_delete = " + ("ON" if os.environ["SECURE_DELETE"] != "0" else "OFF"))
    secure_delete = db.execute("PRAGMA secure_delete").fetchone()[0]
    schema(db, layout)
    db.execute("CREATE TEMP TABLE pruning (id PRIMARY KEY) WITHOUT ROWID")
    segments = Segments(directory)
    key = "event" if layout == "rowid" else "id"
    source = "rowid" if layout == "rowid" else "id"
    done_sql = (f"INSERT OR REPLACE INTO events_done ({key}, done_at, name, call_id, other_leg, account_id, outcomes) "
                f"SELECT {source}, ?, ?, ?, ?, ?, ? FROM events WHERE id = ?")
    ids = event_ids()
    legs = {ident: (CALL, OTHER_LEG) if CALLS == "same" else ("%032x" % random.getrandbits(128),
                                                             "%032x" % random.getrandbits(128)) for ident in ids}
    merge = Merge(batched=layout.startswith("batched"), leave_out=layout != "batched")
    finished = []
    deleted = 0
    measured_from = CAP or 0
    before_bytes = before_cpu = None
    for start in range(0, N, B):
        if before_cpu is None and start >= measured_from:
            measured_from = start
            before_bytes, before_cpu = written(), time.process_time()
        batch = ids[start:start + B]
        if layout.endswith("segments"):
            number, offset = segments.append(start, len(batch))
        db.execute("BEGIN IMMEDIATE")
        for ident in batch:
            if layout.endswith("segments"):
                db.execute("INSERT INTO events (id, received_at, hook, format, segment, offset, length, meta) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (ident, 1.0, "channel_create", "json", number, offset, len(BODY), META))
                offset += len(BODY)
            else:
                db.execute("INSERT INTO events (id, received_at, hook, format, body, meta) VALUES (?, ?, ?, ?, ?, ?)",
                           (ident, 1.0, "channel_create", "json", BODY, META))
        db.execute("COMMIT")
        if layout.startswith("current") or layout.startswith("batched"):
            merge.step(db)
        finished += batch
        if len(finished) >= 128:
            db.execute("BEGIN IMMEDIATE")
            for ident in finished:
                db.execute(done_sql, (2.0, "channel.channel_create", *legs[ident], ACCOUNT, OUTCOMES, ident))
                merge.staged += 2
            db.execute("COMMIT")
            finished = []
        if start % 200 < B:
            db.execute("PRAGMA wal_checkpoint(PASSIVE)")
        while CAP is not None and start + len(batch) - deleted >= CAP + PRUNE_BATCH:
            deleted += prune(db, layout, merge)
            segments.drop(deleted)
    cpu, written_bytes = time.process_time() - before_cpu, written() - before_bytes
    db.close()
    segments.close()
    events = N - measured_from
    capped = f" CAP={CAP} secure_delete={secure_delete}" if CAP is not None else ""
    print(f"{layout:16s} CALLS={CALLS} B={B}{capped}: {cpu / events * 1e6:6.1f} µs CPU an event, "
          f"{written_bytes / events:7.0f} bytes written an event ({events} events)")


class Segments:
    """The `segments` layout's bodies: a file of SEGMENT events after another, written once a commit, each
    deleted whole once retention has deleted every event in it."""

    def __init__(self, directory):
        self.directory, self.files = directory, {}

    def path(self, number):
        return os.path.join(self.directory, f"segment{number}")

    def append(self, first, events):
        """Writes the bodies of events first…first+events-1 (one commit's, in the segment of the first);
        returns the segment's number and where in it they start."""
        number = first // SEGMENT
        if number not in self.files:
            self.files[number] = [os.open(self.path(number), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), 0]
        entry = self.files[number]
        offset = entry[1]
        os.write(entry[0], BODY * events)
        entry[1] += len(BODY) * events
        return number, offset

    def drop(self, deleted):
        for number in [n for n in self.files if (n + 1) * SEGMENT <= deleted]:
            os.close(self.files.pop(number)[0])
            os.unlink(self.path(number))

    def close(self):
        for descriptor, _ in self.files.values():
            os.close(descriptor)


def prune(db, layout, merge):
    """One batch of retention, as `EventJournal.deleteBatch` does it: the oldest done events' keys into a
    temporary table, then their done records and rows; in `current` and `batched-sweep`, a slice of the call
    index's sweep (`sweepSlice`: four entries read in key order for each event deleted, from where the last
    slice stopped, those whose done record is gone deleted)."""
    db.execute("BEGIN IMMEDIATE")
    if layout == "rowid":
        db.execute(f"INSERT INTO pruning (id) SELECT event FROM events_done ORDER BY event LIMIT {PRUNE_BATCH}")
        db.execute("DELETE FROM events_done WHERE event IN (SELECT id FROM pruning)")
        db.execute("DELETE FROM events WHERE rowid IN (SELECT id FROM pruning)")
    else:
        db.execute(f"INSERT INTO pruning (id) SELECT id FROM events_done ORDER BY id LIMIT {PRUNE_BATCH}")
        if layout.startswith("current") or layout.startswith("batched"):
            merge.deleted_through = db.execute("SELECT max(id) FROM pruning").fetchone()[0] or merge.deleted_through
        db.execute("DELETE FROM events_done WHERE id IN (SELECT id FROM pruning)")
        db.execute("DELETE FROM events WHERE id IN (SELECT id FROM pruning)")
    pruned = db.execute("SELECT count(*) FROM pruning").fetchone()[0]
    db.execute("DELETE FROM pruning")
    if layout.startswith("current"):
        merge.sweep(db, 4 * pruned)
    elif layout == "batched-sweep":
        merge.sweep_batched(db, 4 * pruned)
    elif layout == "batched":
        # Batches whose newest event retention has passed, dropped whole once none of their events is left.
        for (batch,) in db.execute("SELECT batch FROM call_batches WHERE newest <= ?",
                                   (merge.deleted_through,)).fetchall():
            if db.execute("SELECT EXISTS (SELECT 1 FROM call_index l JOIN events_done d ON d.id = l.id "
                          "WHERE l.batch = ?)", (batch,)).fetchone()[0]:
                continue
            db.execute("DELETE FROM call_index WHERE batch = ?", (batch,))
            db.execute("DELETE FROM call_batches WHERE batch = ?", (batch,))
    db.execute("COMMIT")
    return pruned


def main():
    layouts = sys.argv[1:] or LAYOUTS
    for layout in layouts:
        if layout not in LAYOUTS:
            sys.exit(f"unknown layout {layout!r}: {', '.join(LAYOUTS)}")
    for layout in layouts:
        directory = tempfile.mkdtemp(prefix="switchboard-layout-")
        try:
            replay(layout, directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    main()
