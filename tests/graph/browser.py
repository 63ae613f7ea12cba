#!/usr/bin/python3
"""Drives headless Chromium through the DevTools protocol over --remote-debugging-pipe (fd 3 for
commands, fd 4 for replies, JSON messages ended by NUL): the Python standard library alone, no
websockets, no driver binary.

    browser.py PAGE.html SCRIPT.json SCREENSHOT.png

SCRIPT is a list of steps run in order on the loaded page (file://):
    {"click": "CSS selector"}      a real mouse click (pressed and released) at the element's centre
    {"key": "Enter"}               a key pressed and released (to the focused element)
    {"eval": "JS expression", "as": "key"}   the value, kept in the result under `key`
    {"screenshot": true}           the page as PNG into SCREENSHOT
Prints the result as JSON: {"values": {...}, "requests": [every URL the page asked for]}.
Exits 77 (skip) when no Chromium can be started, 1 on any other failure."""
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time

TIMEOUT = 90  # seconds for the whole run


def find_chromium():
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    def __init__(self, exe, profile):
        cmd_r, self.cmd_w = os.pipe()
        self.res_r, res_w = os.pipe()

        def child_fds():  # fd 3: the commands it reads; fd 4: the replies it writes
            # (through fds above 10 first, so that neither dup2 overwrites the other's source;
            # dup2 makes them inheritable, and close_fds=False leaves them open across exec)
            a, b = fcntl.fcntl(cmd_r, fcntl.F_DUPFD, 10), fcntl.fcntl(res_w, fcntl.F_DUPFD, 10)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
                "--disable-sync", "--disable-dev-shm-usage", "--remote-debugging-pipe",
                "--window-size=1400,1000", "--user-data-dir=" + profile, "about:blank"]
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, preexec_fn=child_fds, close_fds=False)
        os.close(cmd_r)
        os.close(res_w)
        self.buf = b""
        self.next_id = 0
        self.events = []
        self.deadline = time.time() + TIMEOUT

    def _read_message(self):
        while b"\0" not in self.buf:
            left = self.deadline - time.time()
            if left <= 0:
                raise RuntimeError("timed out waiting for Chromium")
            ready, _, _ = select.select([self.res_r], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.res_r, 1 << 20)
            if not chunk:
                err = self.proc.stderr.read().decode(errors="replace")[-2000:] if self.proc.poll() is not None else ""
                raise EOFError("Chromium closed the pipe" + (": " + err if err else ""))
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def send(self, method, params=None, session=None):
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.cmd_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read_message()
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method, session):
        while True:
            for k, e in enumerate(self.events):
                if e.get("method") == method and e.get("sessionId") == session:
                    return self.events.pop(k)
            self.events.append(self._read_message())

    def close(self):
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def main():
    page, script_path, shot = sys.argv[1:4]
    exe = find_chromium()
    if not exe:
        print("SKIP: no Chromium on PATH (Debian package chromium)", file=sys.stderr)
        return 77
    steps = json.load(open(script_path))
    profile = tempfile.mkdtemp(prefix="nabla-chromium-")
    try:
        try:
            b = Browser(exe, profile)
            b.send("Browser.getVersion")
        except (OSError, EOFError, RuntimeError) as e:
            print(f"SKIP: Chromium ({exe}) did not start: {e}", file=sys.stderr)
            return 77
        try:
            target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            s = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Network"):
                b.send(domain + ".enable", session=s)
            b.send("Page.navigate", {"url": "file://" + os.path.abspath(page)}, session=s)
            b.wait_event("Page.loadEventFired", s)
            values = {}
            for step in steps:
                if "click" in step:
                    sel = json.dumps(step["click"])
                    r = b.send("Runtime.evaluate", {"expression": f"""(() => {{
                        const e = document.querySelector({sel}); if (!e) return null;
                        e.scrollIntoView({{block: 'center', inline: 'center'}});
                        const r = e.getBoundingClientRect(); return [r.x + r.width / 2, r.y + r.height / 2]; }})()""",
                                                        "returnByValue": True}, session=s)
                    at = r["result"].get("value")
                    if not at:
                        raise RuntimeError(f"nothing to click: no element matches {step['click']}")
                    for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
                        b.send("Input.dispatchMouseEvent", {"type": kind, "x": at[0], "y": at[1], "button": "left",
                                                            "clickCount": 0 if kind == "mouseMoved" else 1}, session=s)
                if "key" in step:  # a key pressed and released, sent to the focused element
                    for kind in ("keyDown", "keyUp"):
                        b.send("Input.dispatchKeyEvent", {"type": kind, "key": step["key"], "code": step["key"],
                                                          "windowsVirtualKeyCode": 13 if step["key"] == "Enter" else 0},
                               session=s)
                if "eval" in step:
                    r = b.send("Runtime.evaluate", {"expression": step["eval"], "returnByValue": True}, session=s)
                    if "exceptionDetails" in r:
                        raise RuntimeError(f"{step['eval']}: {r['exceptionDetails']}")
                    values[step["as"]] = r["result"].get("value")
                if step.get("screenshot"):
                    png = b.send("Page.captureScreenshot", {"format": "png"}, session=s)["data"]
                    with open(shot, "wb") as f:
                        f.write(base64.b64decode(png))
            requests = [e["params"]["request"]["url"] for e in b.events
                        if e.get("method") == "Network.requestWillBeSent"]
            print(json.dumps({"values": values, "requests": requests}))
            return 0
        finally:
            b.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except Exception as e:  # a failure of the page or the browser: the test fails, with the reason
        print(f"browser.py: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
