"""The HTML report in headless Chromium (Debian's ``chromium``), driven over the DevTools protocol:
it loads with no console error and no network request, and a screenshot of each chart is of the
chart's size and not blank. Without chromium the test skips locally and fails under CI
(tests/fixture_files.py ``in_ci``; .ci/run installs it)."""

from __future__ import annotations

import json
import re
import shutil
import struct
import subprocess
import time
import zlib
from base64 import b64decode
from datetime import timedelta
from pathlib import Path

import pytest

from fixture_files import in_ci
from flows.pipeline import process_page
from flows.report import report_data, write_report
from flows.report_html import CHART_WIDTH
from flows.sync import _context
from sandbox import start_sandbox
from sandbox.environment import environment, sandbox_environment
from state.schema import make_engine

CHARTS = ("chart-funnel", "chart-channels", "chart-calibration", "chart-stalls")


def _chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        message = "chromium is not installed (Debian: apt-get install -y chromium)"
        if in_ci():
            pytest.fail(f"{message}: required under CI", pytrace=False)
        pytest.skip(message)
    return path


class Browser:
    """One headless Chromium page over the DevTools protocol (loopback websocket)."""

    def __init__(self, binary: str, profile: Path):
        self.process = subprocess.Popen(
            [binary, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-extensions",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={profile}", "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0",
             "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.port = self._port()
        self.ws = self._page_socket()
        self.next_id = 0
        self.events: list[dict] = []

    def _port(self) -> int:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = self.process.stderr.readline()
            found = re.search(r"DevTools listening on ws://127\.0\.0\.1:(\d+)/", line or "")
            if found:
                return int(found.group(1))
            if not line and self.process.poll() is not None:
                break
        raise RuntimeError("chromium did not start its DevTools endpoint")

    def _page_socket(self):
        import httpx
        from websockets.sync.client import connect

        for _ in range(50):
            pages = [t for t in httpx.get(f"http://127.0.0.1:{self.port}/json/list").json() if t["type"] == "page"]
            if pages:
                return connect(pages[0]["webSocketDebuggerUrl"], max_size=None)
            time.sleep(0.1)
        raise RuntimeError("chromium opened no page")

    def call(self, method: str, **params):
        self.next_id += 1
        ident = self.next_id
        self.ws.send(json.dumps({"id": ident, "method": method, "params": params}))
        while True:
            message = json.loads(self.ws.recv(timeout=60))
            if message.get("id") == ident:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            self.events.append(message)

    def wait_for(self, event: str, timeout: float = 30) -> None:
        if any(e.get("method") == event for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = json.loads(self.ws.recv(timeout=timeout))
            self.events.append(message)
            if message.get("method") == event:
                return
        raise TimeoutError(event)

    def open(self, url: str) -> None:
        for domain in ("Page", "Network", "Runtime", "Log"):
            self.call(f"{domain}.enable")
        self.call("Emulation.setDeviceMetricsOverride", width=1000, height=1200, deviceScaleFactor=1, mobile=False)
        self.call("Page.navigate", url=url)
        self.wait_for("Page.loadEventFired")
        time.sleep(0.3)  # late console messages and requests
        self.call("Runtime.evaluate", expression="1")

    def requests(self) -> list[str]:
        return [e["params"]["request"]["url"] for e in self.events if e.get("method") == "Network.requestWillBeSent"]

    def errors(self) -> list[str]:
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(str(params.get("args")))
            elif method == "Runtime.exceptionThrown":
                out.append(str(params.get("exceptionDetails")))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                out.append(params["entry"].get("text", ""))
            elif method == "Network.loadingFailed":
                out.append(f"request failed: {params.get('errorText')}")
        return out

    def rect(self, element_id: str) -> dict:
        expression = (f"(() => {{ const r = document.getElementById({json.dumps(element_id)}).getBoundingClientRect();"
                      " return {x: r.x + window.scrollX, y: r.y + window.scrollY, width: r.width, height: r.height}; })()")
        return self.call("Runtime.evaluate", expression=expression, returnByValue=True)["result"]["value"]

    def screenshot(self, rect: dict) -> bytes:
        clip = {**rect, "scale": 1}
        data = self.call("Page.captureScreenshot", format="png", clip=clip, captureBeyondViewport=True)["data"]
        return b64decode(data)

    def close(self) -> None:
        try:
            self.ws.close()
        finally:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()


def decode_png(data: bytes) -> tuple[int, int, list[tuple[int, ...]]]:
    """(width, height, pixels) of an 8-bit, non-interlaced RGB or RGBA PNG (Chromium's screenshots)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        chunk = data[pos + 8:pos + 8 + length]
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        pos += 12 + length
    width, height, depth, colour, _c, _f, interlace = header
    assert depth == 8 and colour in (2, 6) and interlace == 0, header
    channels = 3 if colour == 2 else 4
    raw, stride = zlib.decompress(idat), width * channels
    rows, previous, offset = [], bytearray(stride), 0
    for _ in range(height):
        kind, line = raw[offset], bytearray(raw[offset + 1:offset + 1 + stride])
        offset += 1 + stride
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up, corner = previous[i], previous[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                line[i] = (line[i] + (left if pa <= pb and pa <= pc else up if pb <= pc else corner)) & 0xFF
        rows.append(bytes(line))
        previous = line
    pixels = [tuple(row[i:i + 3]) for row in rows for i in range(0, stride, channels)]
    return width, height, pixels


@pytest.fixture(scope="module")
def report_html(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("browser")
    url = f"sqlite:///{folder / 'state.db'}"
    with start_sandbox(300, random_seed=7) as handle:
        env = {**sandbox_environment(handle), "LEADFLOW_DATABASE_URL": url, "LEADFLOW_HOME": str(folder)}
        with environment(env):
            engine = make_engine(url)
            ctx = _context("salesforce", "sync_leads", "run-browser", False, engine)
            for page in ctx.connector.iter_pages(None, None):
                process_page(ctx, page)
            report = report_data(engine, "salesforce", model=ctx.model, now=ctx.now + timedelta(days=31))
            engine.dispose()
    return Path(write_report(report, folder / "report")["html"])


@pytest.fixture()
def browser(tmp_path):
    handle = Browser(_chromium(), tmp_path / "profile")
    yield handle
    handle.close()


def test_the_html_report_opens_offline_with_no_console_error_and_no_request(report_html, browser):
    browser.open(report_html.as_uri())
    assert browser.requests() == [report_html.as_uri()]
    assert browser.errors() == []
    html = report_html.read_text()
    for chart in CHARTS:
        rect = browser.rect(chart)
        height = int(re.search(rf'<svg id="{chart}"[^>]* height="(\d+)"', html).group(1))
        assert (round(rect["width"]), round(rect["height"])) == (CHART_WIDTH, height), chart
        width, shot_height, pixels = decode_png(browser.screenshot(rect))
        assert (width, shot_height) == (CHART_WIDTH, height), chart
        inked = sum(1 for p in pixels if p != (255, 255, 255))
        assert inked / len(pixels) > 0.01, f"{chart} rendered blank"
        assert len(set(pixels)) >= 3, f"{chart} has no drawing"


def test_the_browser_checks_catch_a_request_and_a_console_error(browser, tmp_path):
    page = tmp_path / "bad.html"
    page.write_text('<!DOCTYPE html><html><body><img src="http://127.0.0.1:9/x.png">'
                    "<script>console.error('boom')</script></body></html>")
    browser.open(page.as_uri())
    assert "http://127.0.0.1:9/x.png" in browser.requests()
    assert any("boom" in e for e in browser.errors())
