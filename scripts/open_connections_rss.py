#!/usr/bin/env python3
"""What open connections cost a server in memory: `scripts/open_connections_rss.py BINARY [N] [PORT]`.

Starts BINARY (`switchboard serve`, the anchor's rule, journal on, a scratch data directory) on loopback, posts one
hook on each of N (default 2,000) short connections, then reads the server's RSS; then opens N connections that
each post one hook and stay open, and reads it again. Prints both and the difference per connection. Compare two
binaries by running it for each, alternately: RSS moves by a few hundred KB from run to run.
"""

import os
import resource
import shutil
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    binary = sys.argv[1]
    count = int(sys.argv[2]) if len(sys.argv) > 2 else 2000
    port = int(sys.argv[3]) if len(sys.argv) > 3 else 18410
    # Each open connection is a descriptor here and in the server (which inherits this limit).
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    work = tempfile.mkdtemp()
    os.makedirs(os.path.join(work, "anchor"))
    shutil.copy(os.path.join(ROOT, "scripts/anchor/anchor.lua"), os.path.join(work, "anchor"))
    server = subprocess.Popen(
        [binary, "serve", "--rules", os.path.join(work, "anchor"), "--port", str(port), "--data-dir",
         os.path.join(work, "var"), "--journal", "on", "--log-level", "warning"], cwd=ROOT)
    try:
        for _ in range(100):
            try:
                socket.create_connection(("127.0.0.1", port)).close()
                break
            except OSError:
                time.sleep(0.1)
        with open(os.path.join(ROOT, "samples/channel_create__inbound.json"), "rb") as f:
            body = f.read()
        request = (b"POST /hooks/channel_create HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                   b"Content-Length: %d\r\n\r\n" % len(body)) + body

        def rss_mb() -> float:
            with open(f"/proc/{server.pid}/status") as status:
                for line in status:
                    if line.startswith("VmRSS:"):
                        return int(line.split()[1]) / 1024
            raise RuntimeError("no VmRSS")

        for _ in range(count):  # the same work on short connections first: pools and caches grown
            with socket.create_connection(("127.0.0.1", port)) as s:
                s.sendall(request)
                s.recv(4096)
        time.sleep(1)
        before = rss_mb()
        held = []
        for _ in range(count):
            s = socket.create_connection(("127.0.0.1", port))
            s.sendall(request)
            held.append(s)
        for s in held:
            s.recv(4096)
        time.sleep(1)
        after = rss_mb()
        print(f"{binary}: RSS {before:.1f} MB; with {count} open connections {after:.1f} MB "
              f"({(after - before) * 1024 / count:.1f} KB a connection)")
        for s in held:
            s.close()
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
