#!/usr/bin/python3
"""The web console in a real browser: headless Chromium driven by Selenium (Debian's chromium,
chromium-driver and python3-selenium), against the real `switchboard serve` on loopback.

    Tests/Browser/console_test.py --binary .build/debug/switchboard
    Tests/Browser/console_test.py --binary .build/debug/switchboard --screenshots docs/console

Checks: the Live page shows a posted event within 2 s; its Event page shows the rule's log line and the failing
rule's file:line; a dead letter is redelivered by a click and reaches a loopback sink (and the page opened right
after is not drawn over by the Deliveries page's reload); Try it shows a dry run
(and sends nothing); every page renders in light and dark at 1280 px and on a phone-sized window without a
script error. With --screenshots, each page is saved in light and dark (and the Live page at phone width).
"""
import argparse
import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

HELLO_RULE = """
return {
  name = "hello",
  on = "channel_create",
  forward = { url = SINK_URL },
  run = function(event)
    log.info("hello from " .. event.call_id, { caller = event.caller_id_number })
    local answer, err = http.get(SINK_URL .. "?n=" .. (event.caller_id_number or ""))
  end,
}
"""
BROKEN_RULE = """return {
  name = "broken",
  on = "channel_create",
  run = function(event)
    local contact = nil
    return contact.name
  end,
}
"""
TICKET_RULE = """return {
  name = "ticket",
  on = "channel_destroy",
  match = { hangup_cause = "NO_ANSWER" },
  run = function(event) log.warn("missed call from " .. (event.caller_id_number or "?")) end,
}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sink(http.server.BaseHTTPRequestHandler):
    """A loopback stand-in for a CRM: answers 503 while `failing`, then 200; records what it accepted."""

    failing = True
    accepted = []
    refused = 0

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if Sink.failing:
            Sink.refused += 1
            self.send_response(503)
        else:
            Sink.accepted.append(body)
            self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def post(base, path, body, content_type="application/json", headers=None):
    request = urllib.request.Request(base + path, data=body, method="POST")
    request.add_header("Content-Type", content_type)
    for name, value in (headers or {}).items():
        request.add_header(name, value)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def get_json(base, path):
    with urllib.request.urlopen(base + path, timeout=10) as response:
        return json.load(response)


def wait(what, condition, seconds=20.0):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)


def sample(root, name, **changes):
    with open(os.path.join(root, "samples", name)) as f:
        body = json.load(f)
    body.update(changes)
    return json.dumps(body).encode()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary", required=True)
    parser.add_argument("--screenshots", help="save each page's screenshot (light and dark) here")
    args = parser.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

    work = tempfile.mkdtemp(prefix="switchboard-console-")
    sink_port = free_port()
    sink = http.server.ThreadingHTTPServer(("127.0.0.1", sink_port), Sink)
    threading.Thread(target=sink.serve_forever, daemon=True).start()
    rules = os.path.join(work, "rules")
    os.makedirs(rules)
    sink_url = "http://127.0.0.1:%d/crm" % sink_port
    with open(os.path.join(rules, "hello.lua"), "w") as f:
        f.write(HELLO_RULE.replace("SINK_URL", json.dumps(sink_url)))
    with open(os.path.join(rules, "broken.lua"), "w") as f:
        f.write(BROKEN_RULE)
    with open(os.path.join(rules, "ticket.lua"), "w") as f:
        f.write(TICKET_RULE)
    os.symlink(os.path.join(root, "samples"), os.path.join(work, "samples"))

    port = free_port()
    base = "http://127.0.0.1:%d" % port
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen(
        [args.binary, "serve", "--rules", rules, "--data-dir", os.path.join(work, "var"), "--port", str(port),
         "--allow-http-to", "127.0.0.0/8", "--forward-attempts", "2", "--forward-backoff", "100ms",
         "--workers", "2"],
        stdout=log, stderr=subprocess.STDOUT)
    driver = None
    failures = []
    try:
        wait("the server", lambda: _answers(base + "/readyz"))
        options = Options()
        options.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
        for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1280,900", "--no-first-run", "--disable-extensions"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        driver = webdriver.Chrome(service=Service(shutil.which("chromedriver") or "/usr/bin/chromedriver"),
                                  options=options)
        driver.set_page_load_timeout(30)

        def check(name, function):
            try:
                function()
                print("ok   " + name)
            except Exception as error:  # a failed check is reported and the others still run
                failures.append(name)
                print("FAIL %s: %s" % (name, error))
                print(open(os.path.join(work, "server.log")).read()[-3000:])

        # 1. Live: a posted event shows within 2 s, with a badge per matching rule.
        call_id = "console-live-1@203.0.113.45"

        def live_shows_event():
            driver.get(base + "/console#/live")
            WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "live-rows"))
            WebDriverWait(driver, 10).until(lambda d: d.execute_script(
                "return document.getElementById('status').textContent") == "live")
            started = time.monotonic()
            status, answer = post(base, "/hooks/channel_create",
                                  sample(root, "channel_create__inbound.json", call_id=call_id))
            assert status == 200, answer
            # Rows are redrawn as batches arrive: read them in one script call, not element by element.
            rows = WebDriverWait(driver, 2, poll_frequency=0.05).until(lambda d: d.execute_script(
                "return [...document.querySelectorAll('#live-rows tr')].map(r => r.innerText)"
                ".filter(t => t.includes(arguments[0]))", call_id))
            print("     the event showed after %.2f s" % (time.monotonic() - started))
            text = rows[0]
            assert "hello · ok" in text, text
            assert "broken · error" in text, text

        check("the Live page shows a posted event within 2 s", live_shows_event)

        def event_page():
            # Open it the way a person does: click the event's link in the live row.
            driver.execute_script(
                "[...document.querySelectorAll('#live-rows tr')].find(r => r.innerText.includes(arguments[0]))"
                ".querySelector(\"a[href^='#/events/']\").click()", call_id)
            WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, ".rule[data-rule=hello]"))
            hello = driver.find_element(By.CSS_SELECTOR, ".rule[data-rule=hello]").text
            assert "hello from " + call_id in hello, hello
            assert "GET " + sink_url + "?n=+14155550123 501" in hello, hello  # its HTTP call (the sink has no GET)
            broken = driver.find_element(By.CSS_SELECTOR, ".rule[data-rule=broken]").text
            assert "broken.lua:6" in broken, broken
            assert "attempt to index a nil value" in broken, broken
            fields = driver.find_element(By.CSS_SELECTOR, "table.fields").text
            assert "caller_id_number" in fields and call_id in fields, fields

        check("the Event page shows the rule's log line and the failing rule's file:line", event_page)

        def call_page():
            # The event page links its call; a Kazoo call id holds '@', which travels percent-encoded.
            driver.execute_script("document.querySelector(\"a[href^='#/calls/']\").click()")
            rows = WebDriverWait(driver, 10).until(lambda d: d.execute_script(
                "return [...document.querySelectorAll('main tbody tr')].map(r => r.innerText)"
                ".filter(t => t.includes('channel_create'))"))
            assert "hello · ok" in rows[0], rows
            assert "@" in driver.find_element(By.CSS_SELECTOR, "main h1").text

        check("the Call page lists the call's events", call_page)

        # 2. A dead letter, redelivered by a click, reaches the sink.
        def redeliver_by_click():
            wait("the forward to die", lambda: get_json(base, "/console/api/deliveries?state=dead")["deliveries"])
            assert Sink.refused >= 2, Sink.refused
            Sink.failing = False
            driver.get(base + "/console#/deliveries/dead")
            # Find and click in one script call: the page may be redrawn between a lookup and a click.
            WebDriverWait(driver, 10).until(lambda d: d.execute_script(
                "const b = document.querySelector('button.redeliver'); if (b) b.click(); return !!b"))
            clicked = time.monotonic()
            # Leave at once: the Deliveries page reloads itself 800 ms after a redelivery, and must not draw over
            # the page opened meanwhile (it once did, over Try it).
            driver.get(base + "/console#/rules")
            wait("the redelivered forward at the sink", lambda: Sink.accepted, 20)
            assert call_id.encode() in Sink.accepted[0], Sink.accepted[0][:200]
            wait("the delivery to show delivered",
                 lambda: get_json(base, "/console/api/deliveries?state=delivered")["deliveries"])
            with open(os.path.join(work, "server.log")) as f:
                assert "console: 1 delivery(ies) queued again" in f.read()
            time.sleep(max(0.0, clicked + 1.5 - time.monotonic()))  # past the reload's 800 ms: it must not come
            heading = driver.execute_script("return document.querySelector('#main h1')?.textContent || ''")
            assert heading.startswith("Rules"), heading

        check("a dead letter is redelivered by a click and reaches the sink", redeliver_by_click)

        # 3. Try it: a dry run shows outcomes and sends nothing.
        def try_it():
            accepted_before = len(Sink.accepted)
            events_before = len(get_json(base, "/console/api/events?limit=1000")["events"])
            driver.get(base + "/console#/try")
            box = WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.ID, "body"))[0]
            body = sample(root, "channel_create__inbound.json", call_id="console-try@test").decode()
            driver.execute_script("arguments[0].value = arguments[1]", box, body)
            driver.find_element(By.ID, "hook").send_keys("channel_create")
            driver.find_element(By.ID, "run").click()
            WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "#result .rule"))
            result = driver.find_element(By.ID, "result").text
            assert "hello from console-try@test" in result, result
            assert "dry run" in result, result  # http.* answered "dry run: not sent"
            assert "broken.lua:6" in result, result
            time.sleep(0.5)  # give a wrongly sent forward a moment to arrive; the assertion is that none does
            assert len(Sink.accepted) == accepted_before
            assert len(get_json(base, "/console/api/events?limit=1000")["events"]) == events_before

        check("Try it shows a dry run and sends nothing", try_it)

        # 4. Every page, light and dark, wide and narrow: rendered, no script errors.
        post(base, "/hooks/channel_destroy", sample(root, "channel_destroy__inbound.json", call_id=call_id,
                                                    hangup_cause="NO_ANSWER"))
        post(base, "/hooks/channel_create", b"{not json", headers={"X-Hook-ID": "hook-1"})
        wait("the destroy", lambda: any(e["name"] == "channel_destroy" and e["state"] == "done"
                                        for e in get_json(base, "/console/api/events")["events"]))
        event_id = get_json(base, "/console/api/events?call_id=" + urllib.request.quote(call_id))["events"][-1]["id"]
        pages = [("live", "#/live", "#live-rows tr"), ("event", "#/events/" + event_id, ".rule"),
                 ("call", "#/calls/" + urllib.request.quote(call_id), "tbody tr a[href^='#/events/']"),
                 ("deliveries", "#/deliveries", "tbody tr"), ("rejected", "#/rejected", "tbody tr"),
                 ("rules", "#/rules", "tbody tr"), ("try", "#/try", "#body"), ("health", "#/health", "svg")]

        def every_page():
            for theme in ["light", "dark"]:
                for width, height, suffix in [(1280, 900, ""), (390, 844, "-phone")]:
                    driver.set_window_size(width, height)
                    for name, fragment, ready in pages:
                        driver.get("about:blank")
                        driver.get(base + "/console?theme=" + theme + fragment)
                        WebDriverWait(driver, 10).until(lambda d: d.find_elements(By.CSS_SELECTOR, "main " + ready))
                        applied = driver.execute_script("return document.documentElement.dataset.theme")
                        assert applied == theme, (name, applied)
                        overflow = driver.execute_script(
                            "return document.documentElement.scrollWidth - document.documentElement.clientWidth")
                        assert overflow <= 1, "%s%s is %d px wider than the window" % (name, suffix, overflow)
                        errors = [e for e in driver.get_log("browser") if e["level"] == "SEVERE"]
                        assert not errors, (name, errors)
                        if args.screenshots and (suffix == "" or name == "live"):
                            os.makedirs(args.screenshots, exist_ok=True)
                            if name == "try":
                                driver.execute_script(
                                    "document.getElementById('hook').value = 'channel_create';"
                                    "document.getElementById('body').value = arguments[0];"
                                    "document.getElementById('run').click()",
                                    sample(root, "channel_create__inbound.json", call_id="try@docs").decode())
                                WebDriverWait(driver, 10).until(
                                    lambda d: d.find_elements(By.CSS_SELECTOR, "#result .rule"))
                            path = os.path.join(args.screenshots, "%s-%s%s.png" % (name, theme, suffix))
                            driver.save_screenshot(path)
            driver.set_window_size(1280, 900)

        check("every page renders in light and dark, at 1280 px and phone width, without script errors", every_page)
    finally:
        if driver:
            driver.quit()
        server.kill()
        server.wait()
        sink.shutdown()
        log.close()
        if failures:
            print("server log kept in " + work)
        else:
            shutil.rmtree(work, ignore_errors=True)
    if failures:
        print("%d browser check(s) failed" % len(failures))
        sys.exit(1)
    print("browser checks: all passed")


def _answers(url):
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except Exception:
        return False


if __name__ == "__main__":
    main()
