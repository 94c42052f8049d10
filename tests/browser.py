"""Headless Debian Chromium for tests: open a page, collect console errors, take a screenshot.

Speaks the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages separated by NUL
on file descriptors 3 and 4), so it needs nothing beyond the standard library: no websocket
client, no driver binary, no port to race for. Errors are what DevTools would show in red:
``console.error``/``console.assert`` calls, uncaught exceptions, and browser log entries at
level ``error`` (failed resource loads, blocked requests, CSP violations). Every URL the page
requested is recorded too, so a test can prove that a page is self-contained.

>>> with Browser(size=(1280, 800)) as b:  # doctest: +SKIP
...     b.goto("report/index.html")
...     b.evaluate("document.title")
...     b.screenshot("test-output/page.png")
...     assert not b.errors
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--hide-scrollbars", "--mute-audio", "--no-default-browser-check",
]
MAX_SCREENSHOT_HEIGHT = 16_384  # Skia's texture limit: taller captures come back blank


class BrowserError(RuntimeError):
    """Chromium did not start, answered with an error, or did not answer in time."""


@dataclass
class ConsoleResult:
    """What one page load left behind."""

    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed loads
    messages: list[str] = field(default_factory=list)  # every console/log line, "level: text"
    requests: list[str] = field(default_factory=list)  # every URL the page asked for
    screenshot: Path | None = None


def available() -> bool:
    return CHROMIUM.exists()


def as_url(url_or_path: str | Path) -> str:
    text = str(url_or_path)
    if "://" in text or text.startswith(("about:", "data:")):
        return text
    return Path(text).resolve().as_uri()


def screenshot(url_or_path: str | Path, out_png: str | Path, size: tuple[int, int] = (1280, 2000),
               *, full_page: bool = True, timeout: float = 60.0) -> ConsoleResult:
    """Load a page, save a PNG (the whole page unless ``full_page=False``), return its console."""
    with Browser(size=size, timeout=timeout) as browser:
        browser.goto(url_or_path)
        browser.screenshot(out_png, full_page=full_page)
        return browser.result


class Browser:
    """One headless Chromium with one page; a context manager."""

    def __init__(self, size: tuple[int, int] = (1280, 2000), *, timeout: float = 60.0):
        if not available():
            raise BrowserError(f"{CHROMIUM} is missing: apt-get install chromium")
        self.size, self.timeout = size, timeout
        self.result = ConsoleResult()
        self._profile = tempfile.mkdtemp(prefix="pairsift-chromium-")
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        self._start()
        target = self._call("Target.createTarget", url="about:blank")["targetId"]
        self._session = self._call("Target.attachToTarget", targetId=target,
                                   flatten=True)["sessionId"]
        for method in ("Page.enable", "Runtime.enable", "Log.enable", "Network.enable"):
            self.call(method)
        self.call("Page.setLifecycleEventsEnabled", enabled=True)
        self.call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1],
                  deviceScaleFactor=1, mobile=False)

    @property
    def errors(self) -> list[str]:
        return self.result.errors

    def goto(self, url_or_path: str | Path, *, wait_until: str = "networkIdle") -> None:
        """Navigate and wait for a lifecycle event of the new document.

        ``networkIdle`` (no request for 500 ms) suits pages that fetch after loading;
        ``load`` suits pages that keep polling.
        """
        self._events.clear()
        answer = self.call("Page.navigate", url=as_url(url_or_path))
        if answer.get("errorText"):
            self.result.errors.append(f"navigation failed: {answer['errorText']}")
            return
        frame, loader = answer["frameId"], answer.get("loaderId")
        self.wait_for(lambda e: e.get("method") == "Page.lifecycleEvent"
                      and e["params"]["frameId"] == frame
                      and e["params"].get("loaderId") == loader
                      and e["params"]["name"] == wait_until)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression (awaited if it is a promise)."""
        answer = self.call("Runtime.evaluate", expression=expression, returnByValue=True,
                           awaitPromise=True)
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression!r} threw: {_exception_text(answer)}")
        return answer["result"].get("value")

    def screenshot(self, out_png: str | Path, *, full_page: bool = True) -> Path:
        width, height = self.size
        if full_page:
            content = self.call("Page.getLayoutMetrics")["cssContentSize"]
            height = min(int(content["height"]) + 1, MAX_SCREENSHOT_HEIGHT)
        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=full_page,
                         clip={"x": 0, "y": 0, "width": width, "height": height, "scale": 1})
        out = Path(out_png)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(base64.b64decode(shot["data"]))
        self.result.screenshot = out
        return out

    def call(self, method: str, **params: Any) -> dict:
        """Send a command to the page and return its result."""
        return self._call(method, session=self._session, **params)

    def wait_for(self, predicate: Callable[[dict], bool]) -> dict:
        """The first event (already received or coming) for which ``predicate`` is true."""
        deadline = time.monotonic() + self.timeout
        for event in self._events:
            if predicate(event):
                return event
        while True:
            message = self._receive(deadline)
            if "id" not in message and predicate(message):
                return message

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError):
            self._send("Browser.close", {})
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        for fd in (self._write_fd, self._read_fd):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._log.close()
        shutil.rmtree(self._profile, ignore_errors=True)

    def __enter__(self) -> Browser:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the pipe ------------------------------------------------------------------------------
    def _start(self) -> None:
        """Start Chromium with our pipe ends on its fds 3 (commands) and 4 (answers)."""
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        # park the child's ends above 4 so that placing them on 3 and 4 cannot clobber one
        child_in = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_out = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        for fd in (to_child_r, from_child_w):
            os.close(fd)

        def place_fds() -> None:
            os.dup2(child_in, 3)
            os.dup2(child_out, 4)

        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - closed in close()
        args = [str(CHROMIUM), *FLAGS, f"--user-data-dir={self._profile}",
                f"--window-size={self.size[0]},{self.size[1]}", "--remote-debugging-pipe",
                "about:blank"]
        self._process = subprocess.Popen(args, stdin=subprocess.DEVNULL,
                                         stdout=subprocess.DEVNULL, stderr=self._log,
                                         pass_fds=(3, 4), preexec_fn=place_fds)
        os.close(child_in)
        os.close(child_out)
        self._write_fd, self._read_fd = to_child_w, from_child_r

    def _call(self, method: str, session: str | None = None, **params: Any) -> dict:
        self._next_id += 1
        wanted = self._next_id
        self._send(method, params, session)
        deadline = time.monotonic() + self.timeout
        while True:
            message = self._receive(deadline)
            if message.get("id") == wanted:
                if "error" in message:
                    raise BrowserError(f"{method}: {message['error'].get('message')}")
                return message.get("result", {})

    def _send(self, method: str, params: dict, session: str | None = None) -> None:
        message = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        data = json.dumps(message).encode() + b"\0"
        while data:
            data = data[os.write(self._write_fd, data):]

    def _receive(self, deadline: float) -> dict:
        """The next message from Chromium; events are recorded on the way."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._read_fd], [], [], left)[0]:
                raise BrowserError(f"no answer from Chromium in {self.timeout:.0f}s")
            chunk = os.read(self._read_fd, 1 << 20)
            if not chunk:
                raise BrowserError(f"Chromium exited: {self._stderr_tail()}")
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message = json.loads(raw)
        if "method" in message:
            self._events.append(message)
            self._record(message)
        return message

    def _record(self, event: dict) -> None:
        method, params = event["method"], event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(a) for a in params.get("args", []))
            self._note(params["type"], text, params["type"] in ("error", "assert"))
        elif method == "Runtime.exceptionThrown":
            self._note("exception", _exception_text(params), True)
        elif method == "Log.entryAdded":
            entry = params["entry"]
            text = entry["text"] + (f" ({entry['url']})" if entry.get("url") else "")
            self._note(entry["level"], text, entry["level"] == "error")
        elif method == "Network.requestWillBeSent":
            self.result.requests.append(params["request"]["url"])

    def _note(self, level: str, text: str, is_error: bool) -> None:
        self.result.messages.append(f"{level}: {text}")
        if is_error:
            self.result.errors.append(text)

    def _stderr_tail(self) -> str:
        self._log.seek(0)
        return self._log.read().decode(errors="replace")[-2000:]


def _remote_text(arg: dict) -> str:
    return str(arg["value"]) if "value" in arg else arg.get("description", arg.get("type", ""))


def _exception_text(params: dict) -> str:
    details = params["exceptionDetails"]
    return details.get("exception", {}).get("description") or details.get("text", "")
