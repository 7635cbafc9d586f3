"""A headless Chromium driven through the DevTools protocol over pipes (``--remote-debugging-pipe``), for the viewer tests.

No dependency: the protocol's messages are JSON, each ended by a NUL byte, on
the browser's file descriptors 3 (commands in) and 4 (replies and events out).
"""
from __future__ import annotations

import base64
import fcntl
import json
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import time
from typing import Any

CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def find_chromium() -> str | None:
    """The path of a Chromium (or Chrome) executable, or None."""
    for name in CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    return None


class ProtocolError(RuntimeError):
    """The browser answered a command with an error."""


class Browser:
    """One headless browser with one page; ``close()`` ends it.

    Args:
        executable: the Chromium to run.
        width, height: the page's viewport in CSS pixels.
    """

    def __init__(self, executable: str, width: int = 1400, height: int = 900) -> None:
        self._profile = tempfile.mkdtemp(prefix="viewer-chromium-")
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        # the child's ends must not be 3 or 4 themselves, or one redirection would undo the other
        for_child = [fcntl.fcntl(fd, fcntl.F_DUPFD, 10) for fd in (to_browser_r, from_browser_w)]
        os.close(to_browser_r)
        os.close(from_browser_w)
        to_browser_r, from_browser_w = for_child
        # the browser expects its pipes on fds 3 and 4: bash puts them there (dash takes one-digit fds only)
        cmd = ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}', executable,
               "--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run", "--no-default-browser-check",
               "--disable-extensions", "--disable-background-networking", "--disable-sync", "--mute-audio",
               f"--user-data-dir={self._profile}", "--remote-debugging-pipe", f"--window-size={width},{height}",
               "about:blank"]
        self.proc = subprocess.Popen(cmd, pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self._next = 0
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self.events: list[dict[str, Any]] = []
        self._reader = threading.Thread(target=self._read, name="cdp-reader", daemon=True)
        self._reader.start()
        self._stderr: list[bytes] = []
        threading.Thread(target=lambda: self._stderr.extend(self.proc.stderr or ()), daemon=True).start()
        try:
            targets = self.send("Target.getTargets")["targetInfos"]
            page = next(t for t in targets if t["type"] == "page")
            self.session = self.send("Target.attachToTarget", targetId=page["targetId"], flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                self.page(f"{domain}.enable")
            self.page("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)
        except (OSError, ProtocolError) as exc:
            self.close()
            said = b"".join(self._stderr).decode(errors="replace")[-2000:]
            raise ProtocolError(f"{executable} did not start: {exc}\n{said}") from None

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_browser, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                for q in list(self._replies.values()):
                    q.put({"error": {"message": "the browser closed its pipe"}})
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                message = json.loads(raw)
                if "id" in message:
                    with self._lock:
                        q = self._replies.get(message["id"])
                    if q is not None:
                        q.put(message)
                else:
                    self.events.append(message)

    def send(self, method: str, _session: str | None = None, _timeout: float = 60.0, **params: Any) -> dict[str, Any]:
        """Send a command (to the browser, or to the page's session); returns its result.

        Raises:
            ProtocolError: the browser answered with an error, or not within the timeout.
        """
        with self._lock:
            self._next += 1
            ident = self._next
            q: queue.Queue[dict[str, Any]] = queue.Queue()
            self._replies[ident] = q
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if _session:
            message["sessionId"] = _session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        try:
            reply = q.get(timeout=_timeout)
        except queue.Empty:
            raise ProtocolError(f"{method}: no answer in {_timeout} s") from None
        finally:
            with self._lock:
                self._replies.pop(ident, None)
        if "error" in reply:
            raise ProtocolError(f"{method}: {reply['error'].get('message')}")
        return reply.get("result", {})

    def page(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command to the page."""
        return self.send(method, _session=self.session, **params)

    def evaluate(self, expression: str, timeout: float = 60.0) -> Any:
        """The value of a JavaScript expression in the page (promises awaited)."""
        result = self.send("Runtime.evaluate", _session=self.session, _timeout=timeout, expression=expression,
                           returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise ProtocolError(f"{expression[:80]}: {result['exceptionDetails'].get('text')} "
                                f"{result['exceptionDetails'].get('exception', {}).get('description', '')}")
        return result["result"].get("value")

    def open(self, url: str, ready: str, timeout: float = 120.0) -> float:
        """Navigate to ``url`` and wait until the expression ``ready`` is true.

        Returns:
            seconds from the navigation to ready (as seen from here).
        Raises:
            TimeoutError: not ready in time.
        """
        start = time.monotonic()
        self.page("Page.navigate", url=url)
        while time.monotonic() - start < timeout:
            try:
                if self.evaluate(f"!!({ready})"):
                    return time.monotonic() - start
            except ProtocolError:
                pass  # the new document is not there yet
            time.sleep(0.05)
        raise TimeoutError(f"{url} was not ready in {timeout} s")

    def click(self, x: float, y: float) -> None:
        """A left click at page coordinates, as the mouse would make it."""
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    def key(self, key: str, code: str, text: str = "") -> None:
        """Press and release one key in the focused element."""
        self.page("Input.dispatchKeyEvent", type="keyDown", key=key, code=code, text=text)
        self.page("Input.dispatchKeyEvent", type="keyUp", key=key, code=code)

    def screenshot(self, path: str) -> None:
        """Save the page as a PNG."""
        data = self.page("Page.captureScreenshot", format="png")["data"]
        with open(path, "wb") as f:
            f.write(base64.b64decode(data))

    def console_errors(self) -> list[str]:
        """Errors the page logged or threw so far (console.error, uncaught exceptions, failed loads)."""
        out = []
        for e in self.events:
            method, params = e.get("method"), e.get("params", {})
            if method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                out.append(details.get("exception", {}).get("description") or details.get("text", "exception"))
            elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                out.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                out.append(params["entry"].get("text", ""))
        return out

    def close(self) -> None:
        """End the browser and remove its profile."""
        try:
            self.send("Browser.close", _timeout=5)
        except (OSError, ProtocolError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_browser, self._from_browser):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.proc.stderr is not None:
            self.proc.stderr.close()
        shutil.rmtree(self._profile, ignore_errors=True)
