#!/usr/bin/env python3
"""Replays the journal's writes with Debian's SQLite (the library the server links) and compares layouts.

For N events (default 60,000) of ../shared/bench/event.json: appends B to a transaction (default 6, about what
one commit holds under `wrk -t1 -c32`), done records 128 to a transaction with the anchor rule's outcome, a
passive checkpoint every 200 events (LogCopier.everyEvents), in WAL mode with synchronous NORMAL and the
journal's checkpoint size. Prints the process's CPU time and the bytes written (/proc/self/io) per event for
each layout named:

  current   the journal's schema: the body in `events`, `events_done` keyed by the event's text id, the call
            index staged by a trigger and merged in key order (EventStore/CallIndex.swift: a sixteenth of the
            index at a time, 8,192 to 32,768 legs, 256 a slice)
  indexes   the schema before it: two indexes on `events_done(call_id)` and `(other_leg)`
  rowid     `indexes` with `events_done` keyed by the event's rowid instead
  segments  `indexes` with bodies in an append-only file (one write per commit), `events` holding where they are

CALLS=same (the default) gives every event the anchor's call ids; CALLS=new a new call id and other leg each,
as real traffic has (random ids: each index entry lands on its own page).

Python's own cost per statement is the same in every layout, so the differences are SQLite's and the
kernel's. Usage: [N=…] [B=…] [CALLS=same|new] scripts/journal_layouts.py [LAYOUT...]
"""
import json
import os
import random
import shutil
import sqlite3
import sys
import tempfile
import time

N = int(os.environ.get("N", 60000))
B = int(os.environ.get("B", 6))
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
LAYOUTS = ("current", "indexes", "rowid", "segments")
SLICE = 256


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
    if layout == "segments":
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
    if layout == "current":
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
    """The journal's merge of staged legs into `call_legs`: read and sorted (in the server on the log copier's
    connection, sorted by a C helper; here by SQLite), inserted a slice per writer turn from memory; the last
    slice deletes the staged rows it covered."""

    def __init__(self):
        self.staged, self.indexed, self.legs, self.next, self.through = 0, 0, [], 0, 0

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
        values = ", ".join(["(?, ?)"] * (end - self.next))
        db.execute(f"INSERT OR IGNORE INTO call_legs (leg, id) VALUES {values}",
                   [value for leg in self.legs[self.next:end] for value in leg])
        if end == len(self.legs):
            db.execute("DELETE FROM call_legs_staged WHERE rowid <= ?", (self.through,))
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
    schema(db, layout)
    segment = os.open(os.path.join(directory, "segment"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    key = "event" if layout == "rowid" else "id"
    source = "rowid" if layout == "rowid" else "id"
    done_sql = (f"INSERT OR REPLACE INTO events_done ({key}, done_at, name, call_id, other_leg, account_id, outcomes) "
                f"SELECT {source}, ?, ?, ?, ?, ?, ? FROM events WHERE id = ?")
    ids = event_ids()
    legs = {ident: (CALL, OTHER_LEG) if CALLS == "same" else ("%032x" % random.getrandbits(128),
                                                             "%032x" % random.getrandbits(128)) for ident in ids}
    merge = Merge()
    finished = []
    offset = 0
    before_bytes, before_cpu = written(), time.process_time()
    for start in range(0, N, B):
        batch = ids[start:start + B]
        if layout == "segments":
            os.write(segment, BODY * len(batch))
        db.execute("BEGIN IMMEDIATE")
        for ident in batch:
            if layout == "segments":
                db.execute("INSERT INTO events (id, received_at, hook, format, segment, offset, length, meta) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                           (ident, 1.0, "channel_create", "json", 1, offset, len(BODY), META))
                offset += len(BODY)
            else:
                db.execute("INSERT INTO events (id, received_at, hook, format, body, meta) VALUES (?, ?, ?, ?, ?, ?)",
                           (ident, 1.0, "channel_create", "json", BODY, META))
        db.execute("COMMIT")
        if layout == "current":
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
    cpu, written_bytes = time.process_time() - before_cpu, written() - before_bytes
    db.close()
    os.close(segment)
    print(f"{layout:9s} CALLS={CALLS} B={B}: {cpu / N * 1e6:6.1f} µs CPU an event, {written_bytes / N:7.0f} bytes written an event")


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
