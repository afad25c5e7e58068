"""Batches of a Faust stream's events, and table writes the agent sends itself.

`batches` hands an agent every event that has already arrived (up to a bound), without
waiting for more: under load a batch is whatever queued while the last one was handled,
and when the stage is idle a batch is one event, so it adds no latency (Faust's
`take(n, within)` always waits `within` for a batch that is not full). The events are
acknowledged together once the agent asks for the next batch, that is after it has
handled and sent everything for them; a batch the agent did not finish (a crash, a
cancelled actor) is never acknowledged, and is read again.

An `Outbox` writes a table entry to the table's store and queues its changelog record
for the app's own producer in the same step, instead of Faust's per-write
send_soon/FutureMessage/ProducerBuffer path. The agent sends a batch's outbox before
the batch is acknowledged, and Faust's commit flushes that producer before it commits
offsets, so a committed offset never runs ahead of the changelog: the at-least-once
contract of Faust's own table writes, at a fraction of the cost.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import faust
from faust.types import TP

from pipelines.runtime.context import make_current

PATIENCE = 4  # event-loop turns to wait for the next event before a batch goes


async def batches(
    stream: faust.StreamT[Any], max_events: int, patience: int = PATIENCE
) -> AsyncIterator[list[Any]]:
    """Events in batches of what has arrived; each batch acked when the next is asked for.

    Faust's fetcher hands records to the stream one at a time, each after a few turns of
    the event loop, so "what has arrived" is looked at again after up to `patience`
    turns while more keeps coming; when nothing comes, the batch goes.
    """
    stream.enable_acks = False  # acked here, after the agent is done with a whole batch
    queue = stream.channel.queue  # type: ignore[attr-defined]
    batch: list[Any] = []
    async for _value in stream:
        event = stream.current_event
        if event is None:
            continue
        batch.append(event)
        if len(batch) < max_events and await _more_coming(queue, patience):
            continue
        yield batch
        for done in batch:
            await stream.ack(done)
        batch = []


async def _more_coming(queue: Any, patience: int) -> bool:
    """Whether another event is in the queue within `patience` turns of the event loop."""
    for _ in range(patience):
        if not queue.empty():
            return True
        await asyncio.sleep(0)
    return not queue.empty()


def dumps(value: Any) -> bytes:
    """A JSON table value as Faust's `json` codec reads it back when restoring."""
    return json.dumps(value, separators=(",", ":")).encode()


class Ledger:
    """The app's aiokafka producer, for records an agent sends itself."""

    def __init__(self, app: faust.App) -> None:
        self.app = app
        self._producer: Any = None

    def producer(self) -> Any:
        producer = self._producer
        if producer is None:
            producer = self._producer = self.app.producer._ensure_producer()  # type: ignore[attr-defined]
        return producer

    def outbox(self) -> Outbox:
        """An empty outbox for one batch."""
        return Outbox(self)

    async def write(
        self, table: Any, partition: int, key: bytes, value: Any, encoded: bytes | None
    ) -> Any:
        """`table[key] = value` (`None`: delete) now, for a write that cannot wait for a
        batch; its changelog record (`encoded`) joins the producer's open batch of that
        partition, with whatever concurrent writers appended (one request for all of
        them). Returns the delivery future: await it when the write must be durable
        before going on (an attempt before its send)."""
        if value is None:
            table.data.pop(key, None)
        else:
            table.data[key] = value
        topic = table.changelog_topic_name
        future = await self.producer().send(topic, encoded, key=key, partition=partition)
        if _on_disk(table):
            future.add_done_callback(_persist(table, TP(topic, partition), 1))
        return future


Record = tuple[bytes | None, bytes | None]


class Outbox:
    """What one batch of events makes an agent send, table writes included.

    Records are gathered per topic partition and go out as closed producer batches: a
    closed batch does not wait out the producer's linger, and appending to a batch costs
    a fraction of a `send()` per record. Faust's commit waits for them like for any
    other record of the producer.
    """

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.records: dict[tuple[str, int], list[Record]] = defaultdict(list)
        self._tables: dict[tuple[str, int], Any] = {}

    def add(self, topic: str, partition: int, key: bytes | None, value: bytes | None) -> None:
        self.records[(topic, partition)].append((key, value))

    def put(self, table: Any, event: Any, key: bytes, value: Any, encoded: bytes) -> None:
        """`table[key] = value` in the partition of `event`, changelog record included."""
        make_current(event)
        table.data[key] = value
        where = (table.changelog_topic_name, event.message.partition)
        self.records[where].append((key, encoded))
        self._tables[where] = table

    def delete(self, table: Any, partition: int, key: bytes) -> None:
        """`del table[key]` (a tombstone in the changelog partition it was written to)."""
        table.data.pop(key, None)
        where = (table.changelog_topic_name, partition)
        self.records[where].append((key, None))
        self._tables[where] = table

    def __len__(self) -> int:
        return sum(len(records) for records in self.records.values())

    async def send(self) -> None:
        """Queue every record with the producer (returns before they are delivered)."""
        producer = self.ledger.producer()
        for (topic, partition), records in self.records.items():
            future = None
            batch = producer.create_batch()
            for key, value in records:
                if batch.append(timestamp=None, key=key, value=value) is None:
                    batch.close()
                    await producer.send_batch(batch, topic, partition=partition)
                    batch = producer.create_batch()
                    batch.append(timestamp=None, key=key, value=value)
            batch.close()
            future = await producer.send_batch(batch, topic, partition=partition)
            table = self._tables.get((topic, partition))
            if table is not None and _on_disk(table):
                future.add_done_callback(
                    _persist(table, TP(topic, partition), batch.record_count())
                )
        self.records.clear()


def _on_disk(table: Any) -> bool:
    return type(table.data).__module__ == "faust.stores.rocksdb"


def _persist(table: Any, tp: TP, count: int) -> Any:
    """Record, as Faust's own writes do, the changelog offset a RocksDB partition has
    applied once the last of `count` records is delivered: a clean restart reads on from
    there instead of from the start. (An in-memory store has no offsets to keep.)"""

    def done(future: Any) -> None:
        if future.cancelled() or future.exception() is not None or future.result() is None:
            return  # not delivered: the commit that follows fails, and nothing is lost
        try:
            table.data.set_persisted_offset(tp, future.result().offset + count - 1)
        except Exception:  # the store closed meanwhile (a rebalance or a stop)
            return

    return done
