"""Stock per SKU, owned by one partition, changed once per request however often it arrives.

A request is one order's lines on one SKU-owner partition (see `saga.requests`); its
decision is one record of the inventory table, under `req:<order>:<lines>:<action>`, and
it carries everything a restart needs: the answer for each line, and the new level of
every SKU it changed with that SKU's version (one more than the SKU's last decision).
So a decision and the stock change it made are one changelog record: no crash can land
one without the other. The per-SKU levels (`StockBook`) live in memory only, and are
rebuilt from the decisions after every recovery: a SKU's level is the one of its
highest version. A request that arrives again finds its decision and gets the same
answer; it never takes stock twice. Pruning old decisions must keep each SKU's latest
(`StockBook.pins`), or its level would be lost.

Tables written by the stage before requests were grouped hold `stock:<sku>` levels and
per-line decisions without levels; both are still read (a `stock:` level as version 0).
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from pipelines.stages.homing import home_partition

Decision = dict[str, Any]
LEGACY_STOCK = "stock:"


@dataclass
class Level:
    """A SKU's units available, the version of its last change, and which decision made it."""

    version: int
    available: int
    key: str


class StockBook:
    """The level of every SKU this worker owns, kept from its decisions."""

    def __init__(self) -> None:
        self.levels: dict[str, Level] = {}

    def available(self, sku: str) -> int | None:
        level = self.levels.get(sku)
        return None if level is None else level.available

    def version(self, sku: str) -> int:
        level = self.levels.get(sku)
        return 0 if level is None else level.version

    def index(self, key: str, decision: Mapping[str, Any]) -> None:
        """Take in the levels a decision set (where newer than what is known)."""
        for sku, (version, available) in (decision.get("levels") or {}).items():
            level = self.levels.get(sku)
            if level is None or version > level.version:
                self.levels[sku] = Level(int(version), int(available), key)

    def index_legacy(self, key: str, value: Mapping[str, Any]) -> None:
        """A `stock:<sku>` record of the old layout: a level older than any decision's."""
        sku = key[len(LEGACY_STOCK) :]
        if sku not in self.levels:
            self.levels[sku] = Level(0, int(value["available"]), key)

    def rebuild(self, entries: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
        """Every level again, from the table's records (after a recovery)."""
        self.levels.clear()
        legacy = []
        for key, value in entries:
            if key.startswith(LEGACY_STOCK):
                legacy.append((key, value))
            else:
                self.index(key, value)
        for key, value in legacy:
            self.index_legacy(key, value)

    def pins(self, key: str, skus: Iterable[str]) -> bool:
        """Whether decision `key` (which set `skus`) holds the latest level of one of them."""
        for sku in skus:
            level = self.levels.get(sku)
            if level is not None and level.key == key:
                return True
        return False


@dataclass
class StockStep:
    """The decision to store (None when replayed) and the result to send back."""

    key: str
    decision: Decision | None = None
    result: dict[str, Any] | None = None
    replayed: bool = False


@lru_cache(maxsize=65536)
def sku_partition(sku: str, partitions: int) -> int:
    """The partition that owns a SKU's stock: where a record keyed by the SKU would go."""
    return home_partition(sku.encode(), partitions)


def request_key(request: Mapping[str, Any]) -> str:
    """`req:<order>:<line indexes>:<action>`; a one-line request keeps the v1 key."""
    lines = ",".join(str(line["line_index"]) for line in request["lines"])
    return f"req:{request['order_id']}:{lines}:{request['action']}"


def as_group(request: Mapping[str, Any]) -> dict[str, Any]:
    """A v1 ReservationRequested (one line: restocks, or from before grouping) as a group."""
    line = {k: request[k] for k in ("line_index", "sku", "quantity")}
    return {
        "order_id": request["order_id"],
        "action": request["action"],
        "line_count": request["line_count"],
        "requested_at": request["requested_at"],
        "lines": [line],
    }


def handle(
    request: Mapping[str, Any], book: StockBook, decided: Mapping[str, Any] | None, *, now_ms: int
) -> StockStep:
    """Decide a request's lines one by one (each on its own, as separate requests would
    be), exactly once; the book takes in the new levels at once."""
    key = request_key(request)
    if decided is not None:
        return StockStep(key, result=_result(request, decided), replayed=True)
    action = request["action"]
    changed: dict[str, int] = {}
    lines = []
    for line in request["lines"]:
        sku, quantity = line["sku"], line["quantity"]
        have = changed[sku] if sku in changed else book.available(sku)
        ok, outcome, available = _decide(action, quantity, have)
        if ok:
            changed[sku] = available
        lines.append([line["line_index"], sku, quantity, ok, outcome, available])
    levels = {sku: [book.version(sku) + 1, level] for sku, level in changed.items()}
    decision: Decision = {"lines": lines, "levels": levels, "at": now_ms}
    book.index(key, decision)
    return StockStep(key, decision=decision, result=_result(request, decision))


def _decide(action: str, quantity: int, have: int | None) -> tuple[bool, str, int]:
    if quantity <= 0:
        return False, "INVALID_QUANTITY", have or 0
    if action == "RESTOCK":
        return True, "APPLIED", (have or 0) + quantity
    if have is None:
        return False, "UNKNOWN_SKU", 0
    if action == "RELEASE":
        return True, "APPLIED", have + quantity
    if have >= quantity:
        return True, "APPLIED", have - quantity
    return False, "INSUFFICIENT_STOCK", have


def decided_lines(request: Mapping[str, Any], decided: Mapping[str, Any]) -> list[list[Any]]:
    """A decision's lines; an old per-line decision answers its request's one line."""
    if "lines" in decided:
        return list(decided["lines"])
    line = request["lines"][0]
    return [
        [
            line["line_index"],
            line["sku"],
            line["quantity"],
            decided["ok"],
            decided["outcome"],
            decided["available"],
        ]
    ]


def _result(request: Mapping[str, Any], decided: Mapping[str, Any]) -> dict[str, Any] | None:
    if request["action"] == "RESTOCK":
        return None  # restocks answer nobody
    return {
        "order_id": request["order_id"],
        "action": request["action"],
        "line_count": request["line_count"],
        "decided_at": decided["at"],
        "lines": [
            {
                "line_index": index,
                "sku": sku,
                "quantity": quantity,
                "ok": ok,
                "outcome": outcome,
                "available": available,
            }
            for index, sku, quantity, ok, outcome, available in decided_lines(request, decided)
        ],
    }


def partition_of(key: str, value: Mapping[str, Any], partitions: int) -> int | None:
    """The partition a table record belongs to (its SKUs'), or None for an old per-line
    decision (which names no SKU; nothing needs its partition)."""
    if key.startswith(LEGACY_STOCK):
        return sku_partition(key[len(LEGACY_STOCK) :], partitions)
    lines = value.get("lines")
    return sku_partition(lines[0][1], partitions) if lines else None


Pending = tuple[int, str, tuple[str, ...]]  # decided at (ms), key, the SKUs it set


class Pruning:
    """Forgets stock decisions older than the retention (they only guard against replays),
    except the latest of each SKU, which holds the SKU's level."""

    def __init__(self, retention_ms: int) -> None:
        self.retention_ms = retention_ms
        self.queues: dict[int, deque[Pending]] = defaultdict(deque)
        self._added: dict[int, int] = defaultdict(int)

    def add(self, partition: int, key: str, decision: Mapping[str, Any]) -> None:
        """A new decision (never a restock's: re-seeding a batch must stay a no-op)."""
        if not key.endswith(":RESTOCK"):
            skus = tuple(decision.get("levels") or ())
            self.queues[partition].append((int(decision["at"]), key, skus))
            self._added[partition] += 1

    def rebuild(self, entries: Iterable[tuple[str, Mapping[str, Any]]], partitions: int) -> None:
        """The queues of the partitions this worker owns, from its table (after a recovery)."""
        self.queues.clear()
        found = []
        for key, value in entries:
            partition = partition_of(key, value, partitions)
            if partition is not None and key.startswith("req:") and "at" in value:
                found.append((partition, key, value))
        for partition, key, value in sorted(found, key=lambda item: int(item[2]["at"])):
            self.add(partition, key, value)

    def due(self, partition: int, book: StockBook, now_ms: int) -> list[str]:
        """Keys to delete now: old, and no SKU's latest (those wait another retention)."""
        queue = self.queues[partition]
        budget = 16 + 2 * self._added.pop(partition, 0)
        horizon = now_ms - self.retention_ms
        out: list[str] = []
        while queue and budget and queue[0][0] < horizon:
            pending = queue.popleft()
            budget -= 1
            _at, key, skus = pending
            if book.pins(key, skus):
                queue.append((now_ms, key, skus))
            else:
                out.append(key)
        return out

    def prune(self, partition: int, book: StockBook, outbox: Any, table: Any, now_ms: int) -> None:
        """Delete the due decisions of `partition` (tombstones in its changelog partition)."""
        for key in self.due(partition, book, now_ms):
            outbox.delete(table, partition, key.encode())
