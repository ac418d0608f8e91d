#!/usr/bin/python3
"""Keeps the console's Live page open in headless Chromium until stopped (SIGTERM or SIGINT): the "console
open on the live tail" of scripts/console_bench.sh. Prints "watching" once the page's stream is live.

    scripts/console_viewer.py http://127.0.0.1:8080
"""
import signal
import sys
import time

from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.support.ui import WebDriverWait

options = Options()
options.binary_location = "/usr/bin/chromium"
for flag in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", "--window-size=1280,900"]:
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
stop = []
signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
signal.signal(signal.SIGINT, lambda *_: stop.append(1))
try:
    driver.get(sys.argv[1] + "/console#/live")
    WebDriverWait(driver, 30).until(
        lambda d: d.execute_script("return document.getElementById('status').textContent") == "live")
    print("watching", flush=True)
    while not stop:
        time.sleep(0.2)
    rows = driver.execute_script("return document.querySelectorAll('#live-rows tr').length")
    print("the page showed %d rows when stopped" % rows, flush=True)
finally:
    driver.quit()
