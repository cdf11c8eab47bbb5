"""A small Chrome DevTools Protocol client over ``--remote-debugging-pipe`` (fd 3 in, fd 4 out,
NUL-terminated JSON), enough to load a page in headless Chromium, collect its console errors,
uncaught exceptions and log errors (CSP violations among them), and take a screenshot.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT = 60.0  # seconds for any one reply: the shared CI machine can be slow


class BrowserUnavailable(Exception):
    """Chromium is not installed or cannot start here (a reason to skip, not a failure)."""


@dataclass
class PageResult:
    errors: list[str] = field(default_factory=list)
    screenshot: bytes = b""
    title: str = ""
    text: str = ""


def find_browser() -> str | None:
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    def __init__(self) -> None:
        binary = find_browser()
        if binary is None:
            raise BrowserUnavailable("no chromium binary on PATH (Debian package 'chromium')")
        self._profile = tempfile.mkdtemp(prefix="ci-report-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()

        def wire_pipes() -> None:  # in the child: the protocol pipes become fds 3 and 4
            # Copies above 10 first, so neither dup2 overwrites the other pipe's end; dup2
            # leaves 3 and 4 inheritable, every other descriptor of ours is close-on-exec.
            read_end = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
            write_end = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
            os.dup2(read_end, 3)
            os.dup2(write_end, 4)

        args = [
            binary,
            "--headless",
            "--remote-debugging-pipe",
            "--disable-gpu",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-extensions",
            "--disable-dev-shm-usage",
            f"--user-data-dir={self._profile}",
            "about:blank",
        ]
        if os.geteuid() == 0:
            args.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root
        try:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                close_fds=False,  # closing would run after wire_pipes and take 3 and 4
                preexec_fn=wire_pipes,  # noqa: PLW1509 - no threads hold locks we need here
            )
        except OSError as exc:
            self._cleanup()
            raise BrowserUnavailable(f"cannot start {binary}: {exc}") from None
        finally:
            os.close(to_browser_r)
            os.close(from_browser_w)
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict] = []
        try:
            self.call("Browser.getVersion")
        except (OSError, TimeoutError, RuntimeError) as exc:
            stderr = self._stop()
            raise BrowserUnavailable(f"chromium did not start: {exc}; {stderr[-500:]}") from None

    # --- protocol ----------------------------------------------------------------------------
    def call(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        ident = self._next_id
        message: dict = {"id": ident, "method": method, "params": params or {}}
        if session is not None:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT
        while True:
            reply = self._read(deadline)
            if reply.get("id") == ident:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def _read(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no reply from chromium")
            ready, _, _ = select.select([self._from_browser], [], [], left)
            if ready:
                chunk = os.read(self._from_browser, 1 << 20)
                if not chunk:
                    raise OSError("chromium closed the protocol pipe")
                self._buffer += chunk
        message, _, self._buffer = self._buffer.partition(b"\0")
        return json.loads(message)

    def wait_for(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + TIMEOUT
        while True:
            for event in self._events:
                if event.get("method") == method and event.get("sessionId") == session:
                    return event
            self._events.append(self._read(deadline))

    # --- one page ----------------------------------------------------------------------------
    def load(self, url: str, *, width: int = 1280, height: int = 900) -> PageResult:
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            self.call(f"{domain}.enable", session=session)
        self.call(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
            session=session,
        )
        self._events.clear()
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        evaluated = self.call(
            "Runtime.evaluate",
            {
                "expression": "JSON.stringify([document.title, document.body.innerText])",
                "returnByValue": True,
            },
            session=session,
        )
        title, text = json.loads(evaluated["result"]["value"])
        shot = self.call(
            "Page.captureScreenshot",
            {
                "format": "png",
                "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1},
            },
            session=session,
        )
        # Let late console messages arrive, then collect everything about this page.
        self.call("Runtime.evaluate", {"expression": "1"}, session=session)
        result = PageResult(screenshot=base64.b64decode(shot["data"]), title=title, text=text)
        for event in self._events:
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                values = [str(a.get("value", a.get("description", ""))) for a in params["args"]]
                result.errors.append("console: " + " ".join(values))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                result.errors.append("exception: " + str(details.get("text", details)))
            elif method == "Log.entryAdded" and params["entry"].get("level") == "error":
                result.errors.append("log: " + params["entry"].get("text", ""))
        self.call("Target.closeTarget", {"targetId": target})
        return result

    def print_pdf(self, url: str) -> bytes:
        """The page printed to PDF (A4, print media styles), as Chromium's print does."""
        target = self.call("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.call("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.call("Page.enable", session=session)
        self.call("Page.navigate", {"url": url}, session=session)
        self.wait_for("Page.loadEventFired", session)
        pdf = self.call(
            "Page.printToPDF",
            {"paperWidth": 8.27, "paperHeight": 11.69, "printBackground": False},
            session=session,
        )
        self.call("Target.closeTarget", {"targetId": target})
        return base64.b64decode(pdf["data"])

    # --- teardown ----------------------------------------------------------------------------
    def _stop(self) -> str:
        try:
            os.write(
                self._to_browser,
                json.dumps({"id": 0, "method": "Browser.close", "params": {}}).encode() + b"\0",
            )
        except OSError:
            pass
        try:
            _, stderr = self._proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            _, stderr = self._proc.communicate()
        self._cleanup()
        return stderr.decode("utf-8", "replace")

    def _cleanup(self) -> None:
        for name in ("_to_browser", "_from_browser"):
            fd = getattr(self, name, None)
            if fd is not None:
                setattr(self, name, None)
                try:
                    os.close(fd)
                except OSError:
                    pass
        shutil.rmtree(self._profile, ignore_errors=True)

    def close(self) -> None:
        self._stop()

    def __enter__(self) -> Chromium:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def file_url(path: Path) -> str:
    return path.resolve().as_uri()
