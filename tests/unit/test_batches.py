"""Batches of what has arrived, acked after the agent is done; table writes sent by us."""

from __future__ import annotations

import asyncio
import inspect
import json
from collections.abc import AsyncIterator
from typing import Any

import faust.streams
import pytest
from faust.stores.memory import Store as MemoryStore
from faust.streams import Stream

from pipelines.stages import batches


class FakeQueue:
    def __init__(self, items: list[Any]) -> None:
        self.items = items

    def empty(self) -> bool:
        return not self.items


class FakeStream:
    """Hands out events one by one as Faust's stream does, and records acks."""

    def __init__(self, arrivals: list[list[str]]) -> None:
        self.arrivals = arrivals  # events that arrive together
        self.queue = FakeQueue([])
        self.channel = self
        self.current_event: Any = None
        self.enable_acks = True
        self.acked: list[str] = []
        self.log: list[str] = []

    async def __aiter__(self) -> AsyncIterator[Any]:
        for group in self.arrivals:
            self.queue.items = list(group)
            while self.queue.items:
                self.current_event = self.queue.items.pop(0)
                yield self.current_event

    async def ack(self, event: str) -> bool:
        self.acked.append(event)
        self.log.append(f"ack {event}")
        return True


def test_a_batch_is_what_has_arrived_and_is_acked_once_handled() -> None:
    stream = FakeStream([["a", "b", "c"], ["d"], ["e", "f"]])

    async def agent() -> list[list[str]]:
        seen = []
        async for batch in batches.batches(stream, max_events=2):  # type: ignore[arg-type]
            stream.log.append(f"handled {batch}")
            assert not set(batch) & set(stream.acked)  # nothing acked before it is handled
            seen.append(list(batch))
        return seen

    assert asyncio.run(agent()) == [["a", "b"], ["c"], ["d"], ["e", "f"]]
    assert stream.enable_acks is False  # the stream no longer acks on its own
    assert stream.acked == ["a", "b", "c", "d", "e", "f"]
    assert stream.log.index("handled ['c']") < stream.log.index("ack c")


def test_a_batch_the_agent_did_not_finish_is_never_acked() -> None:
    stream = FakeStream([["a", "b"], ["c"]])

    async def agent() -> None:
        async for batch in batches.batches(stream, max_events=10):  # type: ignore[arg-type]
            if "c" in batch:
                raise RuntimeError("crash while handling c")

    with pytest.raises(RuntimeError):
        asyncio.run(agent())
    assert stream.acked == ["a", "b"]


def test_the_faust_internals_batches_rely_on_keep_their_shape() -> None:
    """If one of these fails, faust-streaming changed what `batches` and `as_current` use:
    the stream's `enable_acks` flag (read per event), its channel queue's `empty`, and
    the task-local current event that the RocksDB store reads and writes by."""
    source = inspect.getsource(Stream._py_aiter)
    assert "do_ack = self.enable_acks" in source
    assert "chan_queue.empty" in source
    assert "_current_event_contextvar.set(create_ref(event))" in source
    assert inspect.iscoroutinefunction(Stream.ack)

    class Event:
        pass

    event = Event()
    batches.as_current(event)
    assert faust.streams.current_event() is event
    from faust.stores import rocksdb

    assert "current_event()" in inspect.getsource(rocksdb.Store._set)


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes | None, bytes | None, int | None]] = []

    async def send(self, topic: str, value: Any, *, key: Any, partition: Any, headers: Any) -> Any:
        self.sent.append((topic, key, value, partition))
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        return future


class FakeTable:
    changelog_topic_name = "orders-changelog"

    def __init__(self) -> None:
        self.data: dict[bytes, Any] = {}


class FakeMessage:
    partition = 4


class FakeEvent:
    message = FakeMessage()


def test_a_ledger_write_is_the_table_entry_and_its_changelog_record() -> None:
    ledger = batches.Ledger(app=None)  # type: ignore[arg-type]
    producer = FakeProducer()
    ledger._producer = producer
    table = FakeTable()

    async def run() -> None:
        state = {"order": {"order_id": "O-1"}, "results": {}}
        await ledger.put(table, FakeEvent(), b"O-1", state, batches.dumps(state))
        await ledger.delete(table, 4, b"O-1")
        ledger.remember_offsets()  # an in-memory store: no offsets to keep

    asyncio.run(run())
    topic, key, value, partition = producer.sent[0]
    assert (topic, key, partition) == ("orders-changelog", b"O-1", 4)
    assert value is not None
    assert json.loads(value) == {"order": {"order_id": "O-1"}, "results": {}}
    assert producer.sent[1] == ("orders-changelog", b"O-1", None, 4)  # the tombstone
    assert table.data == {}


def test_only_a_rocksdb_store_has_offsets_to_remember() -> None:
    class Table:
        data = MemoryStore.__new__(MemoryStore)

    assert not batches._on_disk(Table())
