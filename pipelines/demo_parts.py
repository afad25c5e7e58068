"""The demo's helpers: local providers when none answer, settled windows, replay check."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from consumers.replay import plan, run
from consumers.tail import StartAt, read
from pipelines import lag
from pipelines.catalog import APP_IDS
from pipelines.delivery import DeliverySettings
from pipelines.errors import SluiceError
from pipelines.runner import free_port
from pipelines.settings import Settings
from pipelines.stages.windows import SOURCES, WindowConfig

Note = Callable[[str], None]


class DemoProviders:
    """The SMTP and HTTP providers: the configured ones if they answer, else our own."""

    def __init__(self, settings: Settings, failure_rate: float, note: Note) -> None:
        self.settings, self.failure_rate, self.note = settings, failure_rate, note
        self.proc: subprocess.Popen[bytes] | None = None
        self.delivery = settings.delivery
        self._health = _health_url(settings.delivery.http.sms_url)
        if not _answers(self._health):
            self.delivery = _local_delivery(free_port(), free_port())
            self._health = _health_url(self.delivery.http.sms_url)

    def start(self) -> None:
        """Start `sluice providers up` in a child process unless providers already answer."""
        if _answers(self._health):
            self.note(f"using the providers at {self._health.rsplit('/', 1)[0]}")
            return
        smtp_port = str(self.delivery.smtp.port)
        http_port = str(urllib.parse.urlsplit(self.delivery.http.sms_url).port)
        cmd = [sys.executable, "-m", "pipelines.cli", "providers", "up", "--smtp-port", smtp_port,
               "--http-port", http_port, "--failure-rate", str(self.failure_rate)]  # fmt: skip
        log = self.settings.data_dir / "demo" / "providers.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=os.environ
            )
        deadline = time.monotonic() + 30
        while not _answers(self._health):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise SluiceError(f"the local providers did not start; see {log}")
            time.sleep(0.2)
        self.note(
            f"providers: SMTP 127.0.0.1:{smtp_port}, HTTP 127.0.0.1:{http_port} "
            f"(failure rate {self.failure_rate:.0%})"
        )

    def stop(self) -> None:
        """Stop the providers this demo started (and only those)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def detach(self) -> None:
        """Leave the providers running (`--keep`)."""
        if self.proc is not None:
            self.note(f"  providers: pid {self.proc.pid}, {self._health.rsplit('/', 1)[0]}")
        self.proc = None


def _local_delivery(smtp_port: int, http_port: int) -> DeliverySettings:
    base = f"http://127.0.0.1:{http_port}"
    return DeliverySettings.model_validate(
        {
            "smtp": {"host": "127.0.0.1", "port": smtp_port},
            "http": {"sms_url": f"{base}/sms", "push_url": f"{base}/push", "timeout_s": 5.0},
        }
    )


def _health_url(sms_url: str) -> str:
    parts = urllib.parse.urlsplit(sms_url)
    return f"{parts.scheme}://{parts.netloc}/health"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return int(response.status) == 200
    except OSError:
        return False


def live_windows(settings: Settings) -> dict[str, dict[str, Any]]:
    """The latest record per window key on analytics.windows."""
    latest: dict[str, dict[str, Any]] = {}
    for row in read(settings, "analytics.windows", StartAt("beginning")):
        if row.get("value"):
            latest[row["value"]["window_key"]] = row["value"]
    return latest


def settle_windows(
    settings: Settings, config: WindowConfig, timeout: float = 300
) -> dict[str, dict[str, Any]]:
    """analytics.windows once the analytics group caught up, every window closed, and the
    topic stopped changing (a window is re-published when a straggler changes it)."""
    deadline = time.monotonic() + timeout
    group = settings.group(APP_IDS["analytics"])
    inputs = [settings.topic(t) for t in SOURCES]
    while time.monotonic() < deadline and lag.total(lag.group_lag(settings, group, inputs)):
        time.sleep(1)
    time.sleep(max(config.hopping_s, config.tumbling_s) + config.lateness_s + 2)
    previous = live_windows(settings)
    while time.monotonic() < deadline:
        time.sleep(3)
        current = live_windows(settings)
        if current and current == previous:
            return current
        previous = current
    return previous


def compare_replay(
    settings: Settings, live: dict[str, dict[str, Any]], from_ms: int, note: Note
) -> tuple[bool, str]:
    """Replay [from_ms, now) in isolated state; equal when every window matches live."""
    to_ms = int(time.time() * 1000)
    aggregator = run(settings, plan(settings, list(SOURCES), from_ms, to_ms), settings.analytics)
    replayed = {w["window_key"]: w for w in aggregator.records()}
    differing = sorted(k for k in live.keys() | replayed.keys() if live.get(k) != replayed.get(k))
    detail = (
        f"{len(replayed)} windows from {aggregator.events} events, all equal"
        if not differing and live
        else f"{len(differing)} of {len(live | replayed)} windows differ, e.g. {differing[:3]}"
    )
    note(f"replay: {detail}")
    return bool(live) and not differing, detail
