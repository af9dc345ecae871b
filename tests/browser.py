"""A real headless Chromium, driven over the DevTools protocol, for the report test."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--remote-debugging-port=0",
    "--window-size=1200,900",
]


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


class Browser:
    """Chromium with a fresh profile; `open(url)` loads a page and returns what it saw."""

    def __init__(self, executable: str):
        self.profile = tempfile.mkdtemp(prefix="moescale-chromium-")
        self.process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        port_file = Path(self.profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.close()
                raise RuntimeError("chromium did not start")
            time.sleep(0.1)
        self.port = int(port_file.read_text().split()[0])

    def _page_socket(self):
        import urllib.request

        import websocket

        targets = json.loads(
            urllib.request.urlopen(f"http://127.0.0.1:{self.port}/json", timeout=10).read()
        )
        page = next(t for t in targets if t["type"] == "page")
        return websocket.create_connection(
            page["webSocketDebuggerUrl"], timeout=30, suppress_origin=True
        )

    def open(self, url: str, screenshot: Path | None = None, probe=None) -> dict:
        """Navigate, wait for the load event, and report console errors, exceptions and the
        state of every image; optionally save a full-page screenshot, and run `probe(call)`
        (call: send one DevTools command, get its result) with its answer under "probe"."""
        ws = self._page_socket()
        counter = iter(range(1, 10_000))
        events: list[dict] = []

        def call(method: str, **params) -> dict:
            ident = next(counter)
            ws.send(json.dumps({"id": ident, "method": method, "params": params}))
            while True:
                message = json.loads(ws.recv())
                if message.get("id") == ident:
                    if "error" in message:
                        raise RuntimeError(f"{method}: {message['error']}")
                    return message.get("result", {})
                events.append(message)

        for domain in ("Page", "Runtime", "Log"):
            call(f"{domain}.enable")
        call("Page.navigate", url=url)
        deadline = time.monotonic() + 60
        while not any(e.get("method") == "Page.loadEventFired" for e in events):
            if time.monotonic() > deadline:
                raise RuntimeError("the page did not finish loading")
            events.append(json.loads(ws.recv()))
        images = call(
            "Runtime.evaluate",
            expression="JSON.stringify(Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})))",
            returnByValue=True,
        )["result"]["value"]
        title = call("Runtime.evaluate", expression="document.title", returnByValue=True)["result"][
            "value"
        ]
        probed = probe(call) if probe is not None else None
        if screenshot is not None:
            call("Runtime.evaluate", expression="window.scrollTo(0, 0)")
            metrics = call("Page.getLayoutMetrics")
            size = metrics.get("cssContentSize") or metrics["contentSize"]
            shot = call(
                "Page.captureScreenshot",
                format="png",
                captureBeyondViewport=True,
                clip={
                    "x": 0,
                    "y": 0,
                    "width": size["width"],
                    "height": min(size["height"], 6000),
                    "scale": 1,
                },
            )
            screenshot.write_bytes(base64.b64decode(shot["data"]))
        ws.close()
        errors = [
            e["params"]["args"][0].get("value", "") if e["params"].get("args") else "console error"
            for e in events
            if e.get("method") == "Runtime.consoleAPICalled" and e["params"]["type"] == "error"
        ]
        errors += [
            e["params"]["exceptionDetails"]["text"]
            for e in events
            if e.get("method") == "Runtime.exceptionThrown"
        ]
        errors += [
            e["params"]["entry"]["text"]
            for e in events
            if e.get("method") == "Log.entryAdded" and e["params"]["entry"]["level"] == "error"
        ]
        return {"title": title, "images": json.loads(images), "errors": errors, "probe": probed}

    def close(self) -> None:
        self.process.kill()
        self.process.wait(timeout=10)
        shutil.rmtree(self.profile, ignore_errors=True)
