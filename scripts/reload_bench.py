#!/usr/bin/env python3
"""Hot-reload latency: time from a rename-save of a rule file to the first event handled by the new rule,
20 times, against the release `switchboard serve` on loopback. Prints each and the median (goal <= 100 ms).

    scripts/reload_bench.py .build/release/switchboard
"""
import http.client, os, statistics, subprocess, sys, tempfile, time

BINARY = sys.argv[1]
PORT = 18184
HERE = os.path.dirname(os.path.abspath(__file__))
BODY = open(os.path.join(HERE, "..", "samples", "channel_create__inbound.json"), "rb").read()
rules = tempfile.mkdtemp()


def rule(name):
    return f'return {{ name = "{name}", on = "channel_create", run = function() end }}\n'


def save(name):
    """Writes beside the file and renames it into place, as editors do."""
    temporary = os.path.join(rules, ".r.lua.tmp")
    with open(temporary, "w") as f:
        f.write(rule(name))
    os.rename(temporary, os.path.join(rules, "r.lua"))


with open(os.path.join(rules, "r.lua"), "w") as f:
    f.write(rule("r0"))
server = subprocess.Popen([BINARY, "serve", "--rules", rules, "--port", str(PORT), "--data-dir", tempfile.mkdtemp(),
                           "--log-level", "warning"])
try:
    connection = None
    for _ in range(100):
        try:
            connection = http.client.HTTPConnection("127.0.0.1", PORT, timeout=5)
            connection.request("GET", "/healthz")
            connection.getresponse().read()
            break
        except OSError:
            time.sleep(0.1)
    latencies = []
    for i in range(1, 21):
        save(f"r{i}")
        started = time.monotonic()
        while True:
            connection.request("POST", "/hooks/channel_create", BODY, {"Content-Type": "application/json"})
            connection.getresponse().read()
            connection.request("GET", "/metrics")
            text = connection.getresponse().read().decode()
            if f'switchboard_rule_runs_total{{rule="r{i}"' in text:
                latencies.append((time.monotonic() - started) * 1000)
                break
            if time.monotonic() - started > 10:
                latencies.append(float("inf"))
                break
        time.sleep(0.3)  # let the watcher settle between saves
    print("reload latencies (ms):", " ".join(f"{x:.0f}" for x in latencies))
    print(f"reload: rename-save to the first event handled by the new rule, median of 20: "
          f"{statistics.median(latencies):.0f} ms (goal <= 100 ms)")
finally:
    server.terminate()
    server.wait(timeout=20)
