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

from pipelines import runtime
from pipelines.runtime import batches


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
    """If one of these fails, faust-streaming changed what `batches` and `runtime.make_current` use:
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
    runtime.make_current(event)
    assert faust.streams.current_event() is event
    from faust.stores import rocksdb

    assert "current_event()" in inspect.getsource(rocksdb.Store._set)


class FakeBatch:
    def __init__(self, room: int) -> None:
        self.room, self.records, self.closed = room, [], False

    def append(self, *, timestamp: Any, key: Any, value: Any) -> Any:
        if self.closed or len(self.records) >= self.room:
            return None
        self.records.append((key, value))
        return object()

    def close(self) -> None:
        self.closed = True

    def record_count(self) -> int:
        return len(self.records)


class FakeProducer:
    def __init__(self, room: int = 100) -> None:
        self.room = room
        self.sent: list[tuple[str, int, list[Any], bool]] = []

    def create_batch(self) -> FakeBatch:
        return FakeBatch(self.room)

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, batch.records, batch.closed))
        return asyncio.get_running_loop().create_future()


class FakeTable:
    changelog_topic_name = "orders-changelog"

    def __init__(self) -> None:
        self.data: dict[bytes, Any] = {}


class FakeMessage:
    partition = 4


class FakeEvent:
    message = FakeMessage()


def _outbox(producer: FakeProducer) -> batches.Outbox:
    ledger = batches.Ledger(app=None)  # type: ignore[arg-type]
    ledger._producer = producer
    return ledger.outbox()


def test_an_outbox_write_is_the_table_entry_and_its_changelog_record() -> None:
    producer = FakeProducer()
    outbox = _outbox(producer)
    table = FakeTable()
    state = {"order": {"order_id": "O-1"}, "results": {}}
    outbox.put(table, FakeEvent(), b"O-1", state, batches.dumps(state))
    assert table.data == {b"O-1": state}  # in the store at once
    outbox.add("orders.status", 4, b"O-1", b"status")
    outbox.delete(table, 4, b"O-1")
    assert table.data == {}
    asyncio.run(outbox.send())
    changelog, status = producer.sent
    assert changelog[:2] == ("orders-changelog", 4)
    (key, value), tombstone = changelog[2]
    assert key == b"O-1"
    assert json.loads(value) == state
    assert tombstone == (b"O-1", None)
    assert status == ("orders.status", 4, [(b"O-1", b"status")], True)
    assert all(closed for *_rest, closed in producer.sent)  # closed: no linger


def test_a_full_producer_batch_is_sent_and_the_rest_goes_in_the_next() -> None:
    producer = FakeProducer(room=2)
    outbox = _outbox(producer)
    for n in range(5):
        outbox.add("t", 1, None, bytes([n]))
    asyncio.run(outbox.send())
    assert [len(records) for _t, _p, records, _c in producer.sent] == [2, 2, 1]
    assert [v for *_x, records, _c in producer.sent for _k, v in records] == [
        bytes([n]) for n in range(5)
    ]


def test_a_write_now_stores_and_sends_into_the_open_batch_and_hands_back_its_future() -> None:
    """`Ledger.write` (a notification's attempt, result and tombstone): the store at once,
    the record through the producer's `send` (appended to the open batch with concurrent
    writers' records, not a batch of its own), the delivery future to the caller."""
    sent: list[tuple[Any, ...]] = []

    class Producer:
        async def send(self, topic: str, value: Any, *, key: Any, partition: int) -> Any:
            sent.append((topic, partition, key, value))
            return asyncio.get_running_loop().create_future()

    ledger = batches.Ledger(app=None)  # type: ignore[arg-type]
    ledger._producer = Producer()
    table = FakeTable()

    async def write_then_delete() -> list[Any]:
        first = await ledger.write(table, 3, b"N-1", {"attempt": 1}, b'{"attempt":1}')
        stored = dict(table.data)
        second = await ledger.write(table, 3, b"N-1", None, None)
        return [first, stored, second]

    first, stored, second = asyncio.run(write_then_delete())
    assert stored == {b"N-1": {"attempt": 1}}
    assert table.data == {}
    assert sent == [
        ("orders-changelog", 3, b"N-1", b'{"attempt":1}'),
        ("orders-changelog", 3, b"N-1", None),
    ]
    assert isinstance(first, asyncio.Future)
    assert second is not first


def test_only_a_rocksdb_store_has_offsets_to_remember() -> None:
    class Table:
        data = MemoryStore.__new__(MemoryStore)

    assert not batches._on_disk(Table())


def test_a_closed_producer_batch_does_not_wait_out_the_linger() -> None:
    """What `Outbox.send` relies on in aiokafka: a closed batch is ready to go at once."""
    from aiokafka.producer.message_accumulator import BatchBuilder, MessageBatch
    from aiokafka.structs import TopicPartition

    async def check() -> None:  # a MessageBatch makes its future on the running loop
        builder = BatchBuilder(16384, 0)
        assert builder.append(timestamp=None, key=b"k", value=b"v") is not None
        lingering = MessageBatch(TopicPartition("t", 0), builder, 60.0, 0.05)
        assert lingering.remaining_linger() is not None
        builder.close()
        assert lingering.remaining_linger() is None

    asyncio.run(check())


def test_the_fetch_wait_it_caps_is_still_where_it_was() -> None:
    """Faust still hard-codes the worker consumer's long poll, and aiokafka's fetcher
    still builds its requests from the attribute `short_fetch_waits` sets."""
    from aiokafka.consumer import fetcher
    from faust.transport.drivers import aiokafka as driver

    assert "fetch_max_wait_ms=1500" in inspect.getsource(driver.AIOKafkaConsumerThread)
    assert "self._fetch_max_wait_ms" in inspect.getsource(fetcher.Fetcher._get_actions_per_node)
