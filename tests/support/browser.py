"""Load a page in headless Chromium over the DevTools protocol and report what happened.

No browser driver is needed: Chromium is started with a DevTools port on loopback and
driven over its WebSocket with aiohttp, collecting console errors and uncaught
exceptions, then evaluating an expression in the page.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp

FLAGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
]


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@dataclass
class PageReport:
    errors: list[str] = field(default_factory=list)
    value: Any = None


def load(url: str, expression: str, settle_s: float = 6.0) -> PageReport:
    """Open `url`, wait `settle_s`, return console errors/exceptions and `expression`'s value."""
    binary = chromium()
    assert binary, "chromium is not installed (make test installs Debian's chromium)"
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.Popen(
            [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            endpoint = _devtools_endpoint(proc)
            return asyncio.run(_drive(endpoint, url, expression, settle_s))
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _devtools_endpoint(proc: subprocess.Popen[str]) -> str:
    deadline = time.monotonic() + 30
    assert proc.stderr is not None
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        match = re.search(r"DevTools listening on (ws://\S+)", line)
        if match:
            return match.group(1)
    raise AssertionError("chromium did not open its DevTools port")


async def _drive(browser_ws: str, url: str, expression: str, settle_s: float) -> PageReport:
    http = browser_ws.replace("ws://", "http://").split("/devtools")[0]
    report = PageReport()
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{http}/json/list") as response:
            page = next(t for t in await response.json() if t["type"] == "page")
        async with session.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
            ids = itertools.count(1)

            async def call(method: str, **params: Any) -> dict[str, Any]:
                msg_id = next(ids)
                await ws.send_json({"id": msg_id, "method": method, "params": params})
                while True:
                    msg = json.loads((await ws.receive()).data)
                    _collect(msg, report)
                    if msg.get("id") == msg_id:
                        return dict(msg.get("result", {}))

            for domain in ("Runtime.enable", "Log.enable", "Page.enable"):
                await call(domain)
            await call("Page.navigate", url=url)
            deadline = time.monotonic() + settle_s
            while time.monotonic() < deadline:
                try:
                    msg = await asyncio.wait_for(ws.receive(), timeout=0.5)
                    _collect(json.loads(msg.data), report)
                except TimeoutError:
                    pass
            result = await call("Runtime.evaluate", expression=expression, returnByValue=True)
            report.value = result.get("result", {}).get("value")
    return report


def _collect(msg: dict[str, Any], report: PageReport) -> None:
    method, params = msg.get("method"), msg.get("params", {})
    if method == "Runtime.exceptionThrown":
        report.errors.append(str(params.get("exceptionDetails", {}).get("text")))
    elif method == "Runtime.consoleAPICalled" and params.get("type") == "error":
        report.errors.append(" ".join(str(a.get("value")) for a in params.get("args", [])))
    elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
        report.errors.append(str(params["entry"].get("text")))
