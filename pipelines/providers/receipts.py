"""What the local providers received, kept so tests and the demo can check delivery.

Only successful deliveries are receipts; a request the provider failed on purpose is
counted separately and never as received. Counting receipts per notification id is
what lets a test assert "the provider got each notification at most once". The log is
shared by the SMTP and HTTP providers and read from other threads (tests run the
providers in a background loop), so every access holds a lock.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Receipt:
    """One notification a provider accepted."""

    notification_id: str
    channel: str
    recipient: str
    subject: str | None
    body: str
    received_at_ms: int
    provider_id: str


class ReceiptLog:
    """Receipts in memory (and as JSON lines in `path`, if given), plus injected failures."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._receipts: list[Receipt] = []
        self._per_id: Counter[str] = Counter()
        self._failures: Counter[str] = Counter()
        self._serial = 0

    def next_provider_id(self, prefix: str) -> str:
        """A fresh provider message id, like `sms-000042`."""
        with self._lock:
            self._serial += 1
            return f"{prefix}-{self._serial:06d}"

    def record(self, receipt: Receipt) -> None:
        """Keep one accepted notification (and append it to the JSON lines file)."""
        with self._lock:
            self._receipts.append(receipt)
            self._per_id[receipt.notification_id] += 1
            if self.path is not None:
                with self.path.open("a", encoding="utf-8") as out:
                    out.write(json.dumps(asdict(receipt), sort_keys=True) + "\n")

    def failed(self, channel: str, kind: str) -> None:
        """Count a request failed on purpose, e.g. `("SMS", "429")`."""
        with self._lock:
            self._failures[f"{channel}:{kind}"] += 1

    def receipts(self, notification_id: str | None = None) -> list[Receipt]:
        """Every receipt so far, or those of one notification id, in arrival order."""
        with self._lock:
            if notification_id is None:
                return list(self._receipts)
            return [r for r in self._receipts if r.notification_id == notification_id]

    def count(self, notification_id: str) -> int:
        """How often `notification_id` was received (at-most-once means <= 1)."""
        with self._lock:
            return self._per_id[notification_id]

    def duplicates(self) -> dict[str, int]:
        """Notification ids received more than once, with their counts."""
        with self._lock:
            return {nid: n for nid, n in self._per_id.items() if n > 1}

    def failures(self) -> dict[str, int]:
        """Injected failures by `channel:kind`."""
        with self._lock:
            return dict(self._failures)

    def __len__(self) -> int:
        with self._lock:
            return len(self._receipts)

    def stats(self) -> dict[str, Any]:
        """Counts for `GET /stats` and the CLI summary."""
        with self._lock:
            by_channel = Counter(r.channel for r in self._receipts)
            return {
                "received": len(self._receipts),
                "by_channel": dict(by_channel),
                "distinct_notifications": len(self._per_id),
                "duplicates": sum(1 for n in self._per_id.values() if n > 1),
                "failures_injected": dict(self._failures),
            }

    def summary(self) -> str:
        """One line a human reads when the providers stop."""
        stats = self.stats()
        channels = ", ".join(
            f"{ch.lower()} {stats['by_channel'].get(ch, 0)}" for ch in ("EMAIL", "SMS", "PUSH")
        )
        failed = sum(stats["failures_injected"].values())
        return (
            f"received {stats['received']} ({channels}); "
            f"{failed} failed on purpose; {stats['duplicates']} duplicate ids"
        )


def now_ms() -> int:
    """Wall-clock time in epoch milliseconds, as receipts record it."""
    return time.time_ns() // 1_000_000
