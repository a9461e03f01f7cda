"""A minimal Chrome DevTools Protocol client over `--remote-debugging-pipe` (standard library only).

Chromium reads JSON commands, each ended by a NUL byte, from its fd 3 and writes replies and events
the same way to its fd 4: no websocket, no port, no extra package. Used by the annotation page's
browser test; `find_chromium()` is None where no Chromium is installed (the test then skips).
"""

from __future__ import annotations

import fcntl
import json
import os
import select
import shutil
import subprocess
import time

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_chromium() -> str | None:
    override = os.environ.get("EDITROBUST_CHROMIUM")
    if override:
        return override
    return next((path for path in map(shutil.which, CANDIDATES) if path), None)


def _high_fd(fd: int) -> int:
    high = fcntl.fcntl(fd, fcntl.F_DUPFD, 10)
    os.close(fd)
    return high


class CDPError(RuntimeError):
    pass


class Chromium:
    """A headless Chromium and one page in it (attached with a flat session)."""

    def __init__(self, exe: str, profile_dir, timeout: float = 20.0):
        self.timeout = timeout
        commands_r, commands_w = os.pipe()  # we write, Chromium reads on its fd 3
        events_r, events_w = os.pipe()  # Chromium writes on its fd 4, we read
        # Chromium's ends go to fds >= 10 first, so that putting one on fd 3 cannot overwrite the other.
        commands_r, events_w = (_high_fd(fd) for fd in (commands_r, events_w))
        args = [exe, "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", f"--user-data-dir={profile_dir}", "about:blank"]
        # bash puts the pipe ends on fds 3 and 4, where Chromium looks for them (dash cannot
        # redirect fds above 9).
        self.proc = subprocess.Popen([shutil.which("bash") or "bash", "-c", f'exec "$0" "$@" 3<&{commands_r} 4>&{events_w}', *args],
                                     pass_fds=(commands_r, events_w), stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        os.close(commands_r)
        os.close(events_w)
        self._out = os.fdopen(commands_w, "wb", buffering=0)
        self._in = events_r
        self._buffer = b""
        self._events: list[dict] = []
        self._next_id = 0
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.page("Page.enable")
        self.page("Runtime.enable")

    # --- protocol ---
    def _read_message(self, deadline: float) -> dict:
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._in], [], [], left)[0]:
                raise TimeoutError("no answer from Chromium")
            chunk = os.read(self._in, 1 << 16)
            if not chunk:
                raise CDPError("Chromium closed the pipe")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        self._out.write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout
        while True:
            reply = self._read_message(deadline)
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise CDPError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self._events.append(reply)

    def page(self, method: str, params: dict | None = None) -> dict:
        return self.send(method, params, session=self.session)

    def wait_event(self, method: str, timeout: float | None = None) -> dict:
        deadline = time.monotonic() + (timeout or self.timeout)
        while True:
            for i, event in enumerate(self._events):
                if event.get("method") == method:
                    return self._events.pop(i).get("params", {})
            self._events.append(self._read_message(deadline))

    # --- page helpers ---
    def navigate(self, url: str) -> None:
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        self.page("Page.navigate", {"url": url})
        self.wait_event("Page.loadEventFired")

    def reload(self) -> None:
        self._events = [e for e in self._events if e.get("method") != "Page.loadEventFired"]
        self.page("Page.reload", {"ignoreCache": True})
        self.wait_event("Page.loadEventFired")

    def evaluate(self, expression: str):
        result = self.page("Runtime.evaluate", {"expression": expression, "returnByValue": True,
                                                "awaitPromise": True})
        if "exceptionDetails" in result:
            raise CDPError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10.0):
        """The value of `expression` once it is truthy (polled), e.g. an image having loaded."""
        deadline = time.monotonic() + timeout
        while not (value := self.evaluate(expression)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"still false after {timeout} s: {expression}")
            time.sleep(0.05)
        return value

    def press(self, key: str) -> None:
        """A real key press (keydown with its character, then keyup) on the focused page."""
        self.page("Input.dispatchKeyEvent", {"type": "keyDown", "key": key, "text": key, "unmodifiedText": key})
        self.page("Input.dispatchKeyEvent", {"type": "keyUp", "key": key})

    def click(self, selector: str) -> None:
        """A real mouse click at the centre of the element."""
        box = self.evaluate(f"(() => {{ const e = document.querySelector({json.dumps(selector)}); "
                            "e.scrollIntoView({block: 'center'}); const r = e.getBoundingClientRect(); "
                            "return [r.x + r.width / 2, r.y + r.height / 2]; })()")
        for kind in ("mousePressed", "mouseReleased"):
            self.page("Input.dispatchMouseEvent", {"type": kind, "x": box[0], "y": box[1], "button": "left",
                                                   "clickCount": 1})

    def type_text(self, selector: str, text: str) -> None:
        self.click(selector)
        self.page("Input.insertText", {"text": text})

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (CDPError, TimeoutError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.close()
        os.close(self._in)
