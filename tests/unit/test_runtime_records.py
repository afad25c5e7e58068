"""The runtime's per-record shortcuts (`pipelines.runtime.raw`, `.records`, `.quiet`): each
gives what Faust's own path gives, and steps aside whenever it might not."""

from __future__ import annotations

import asyncio
import gc
import random
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import faust
import pytest
from aiokafka import partitioner
from faust.types import TP
from faust.types.tuples import Message

from pipelines import runtime
from pipelines.runtime import partition, quiet, raw, records
from pipelines.runtime.faust_tuning import GC_YOUNG
from pipelines.runtime.faustapp import RAW, make_app
from pipelines.runtime.patching import original
from pipelines.settings import Settings

TP0, TP1 = TP("t.orders.placed", 0), TP("t.orders.placed", 1)


@pytest.fixture
def app(tmp_path: Path) -> faust.App:
    return make_app("orders", Settings(data_dir=tmp_path, topic_prefix="t."))


def _message(key: Any, value: Any, offset: int = 7) -> Message:
    headers: Any = [(b"h", b"1")]
    return Message(TP0.topic, TP0.partition, offset, 0.0, 0, headers, key, value, None)


async def _decode(topic: Any, message: Message) -> Any:
    return await topic.decode(message, propagate=True)


def test_a_raw_topic_builds_its_events_directly(app: faust.App) -> None:
    runtime.apply_patches()
    topic = app.topic("t.raw", **RAW)
    assert topic.decode.__name__ == "raw_event"
    event = asyncio.run(_decode(topic, _message(b"k", b"v")))
    assert (event.key, event.value, event.message.offset) == (b"k", b"v", 7)
    faust_decode = original(faust.Schema, "compile")(topic.schema, app)
    for key, value in ((b"k", b"v"), (None, None), (b"k", None)):
        ours = asyncio.run(_decode(topic, _message(key, value)))
        theirs = asyncio.run(faust_decode(_message(key, value)))
        assert (ours.key, ours.value, ours.headers) == (theirs.key, theirs.value, theirs.headers)
        assert type(ours) is type(theirs)


def test_a_str_payload_on_a_raw_topic_takes_fausts_path(app: faust.App) -> None:
    runtime.apply_patches()
    topic = app.topic("t.raw", **RAW)
    event = asyncio.run(_decode(topic, _message("k", "v")))
    assert (event.key, event.value) == (b"k", b"v")  # Faust's raw codec makes them bytes


def test_only_a_plain_raw_schema_is_raw(app: faust.App) -> None:
    runtime.apply_patches()

    class Headered(faust.Schema[bytes, bytes]):
        def on_dumps_value_prepare_headers(self, value: Any, headers: Any) -> Any:
            return {**headers, "x": b"1"}

    assert raw.is_raw(app.topic("t.a", **RAW).schema, app)
    assert not raw.is_raw(app.topic("t.b", **{**RAW, "value_serializer": "json"}).schema, app)
    assert not raw.is_raw(app.topic("t.c", key_type=bytes, value_type=str).schema, app)
    headered = Headered(key_type=bytes, value_type=bytes, key_serializer="raw",
                        value_serializer="raw")  # fmt: skip
    assert not raw.is_raw(headered, app)
    json_topic = app.topic("t.d", value_type=bytes, value_serializer="json")
    assert json_topic.decode.__name__ != "raw_event"


def test_the_raw_send_check_follows_the_topics_schema(app: faust.App) -> None:
    check = raw.raw_topic
    topic = app.topic("t.raw", **RAW)
    assert check(topic)
    topic.schema = faust.Schema(key_type=bytes, value_type=bytes, value_serializer="json")
    assert not check(topic)  # judged again: the schema changed

    class Prefixed(faust.Topic):
        def prepare_key(self, *args: Any, **kwargs: Any) -> Any:
            return (b"p", {})

    assert not check(Prefixed(app, topics=["t.p"], **RAW))


def test_a_raw_send_with_bytes_skips_the_encoders(app: faust.App) -> None:
    runtime.apply_patches()
    topic = app.topic("t.raw", **RAW)
    encoded: list[str] = []

    def encoder(part: str, result: bytes) -> Any:
        def encode(*_args: Any, **_kwargs: Any) -> tuple[bytes, dict[str, Any]]:
            encoded.append(part)
            return result, {}

        return encode

    topic.prepare_key = encoder("key", b"K")  # type: ignore[method-assign]
    topic.prepare_value = encoder("value", b"V")  # type: ignore[method-assign]
    sent: list[tuple[Any, ...]] = []

    class _Producer:
        started = True

        async def send(self, *args: Any, **kwargs: Any) -> str:
            sent.append(args)
            return "future"

    app._producer = cast(Any, _Producer())
    asyncio.run(topic.send(key=b"k", value=b"v"))
    asyncio.run(topic.send(key="k", value=b"v"))  # a str key: Faust's encoders
    assert sent == [("t.raw", b"k", b"v"), ("t.raw", b"K", b"V")]
    assert encoded == ["key", "value"]


def _buffer(threaded: bool, pending: int) -> Any:
    return SimpleNamespace(
        app=SimpleNamespace(conf=SimpleNamespace(producer_threaded=threaded)),
        pending=SimpleNamespace(_queue=deque(range(pending))),
        max_messages=10,
    )


@pytest.mark.parametrize(
    ("threaded", "pending", "waits"),
    [(False, 10, False), (False, 11, True), (True, 0, True)],
)
def test_the_producer_ebb_check_waits_only_over_the_mark(
    threaded: bool, pending: int, waits: bool
) -> None:
    waited: list[Any] = []

    async def faust_wait(buffer: Any) -> None:
        waited.append(buffer)

    (wait_until_ebb,) = quiet.quick_ebb(faust_wait)
    buffer = _buffer(threaded, pending)
    asyncio.run(wait_until_ebb(buffer))
    assert bool(waited) is waits


class _Consumer:
    """What `records.fetched` reads of Faust's consumer."""

    def __init__(self, fetch: dict[TP, list[int]], active: set[TP] | None = None) -> None:
        self.fetch, self.active = fetch, active
        self.app = SimpleNamespace(
            consumer_generation_id=1,
            monitor=SimpleNamespace(track_tp_end_offset=self.track),
        )
        self.flow_active, self.should_stop = True, False
        self._buffered_partitions: set[TP] = set()
        self.scheduler = SimpleNamespace(iterate=self.round_robin)
        self.asked: list[TP] = []
        self.tracked: list[tuple[TP, int]] = []
        self.sought = 0
        self.log = SimpleNamespace(dev=lambda *_a: None, warning=lambda *_a: None)

    async def _wait_next_records(self, timeout: float) -> Any:
        return self.fetch, self.active

    def round_robin(self, fetch: dict[TP, list[int]]) -> Any:
        its = {tp: iter(offsets) for tp, offsets in fetch.items()}
        while its:
            for tp in list(its):
                offset = next(its[tp], None)
                if offset is None:
                    del its[tp]
                else:
                    yield tp, offset

    def highwater(self, tp: TP) -> int:
        self.asked.append(tp)
        return 100 + tp.partition

    def track(self, tp: TP, offset: int) -> None:
        self.tracked.append((tp, offset))

    def _to_message(self, tp: TP, offset: int) -> Any:
        if offset == 3:
            self.app.consumer_generation_id = 2  # a rebalance while handing over
        return SimpleNamespace(tp=tp, offset=offset)

    async def perform_seek(self) -> None:
        self.sought += 1


def _take(consumer: _Consumer, keep: records.Keep = lambda _tp, _m: True) -> list[Any]:
    async def run() -> list[Any]:
        return [(tp.partition, m.offset) async for tp, m in records.fetched(consumer, 1.0, keep)]

    return asyncio.run(run())


def test_a_fetch_asks_each_partitions_end_offset_once() -> None:
    consumer = _Consumer({TP0: [10, 11, 12], TP1: [20, 21]})
    assert _take(consumer) == [(0, 10), (1, 20), (0, 11), (1, 21), (0, 12)]
    assert consumer.asked == [TP0, TP1]
    assert consumer.tracked == [(TP0, 100), (TP1, 101)]


def test_a_fetch_yields_only_what_the_filter_keeps_and_active_partitions() -> None:
    consumer = _Consumer({TP0: [10, 11], TP1: [20]}, active={TP0})
    assert _take(consumer, lambda _tp, m: m.offset != 11) == [(0, 10)]


def test_a_fetch_stops_when_the_generation_changes() -> None:
    consumer = _Consumer({TP0: [1, 2, 3, 4]})
    assert _take(consumer) == [(0, 1), (0, 2), (0, 3)]  # 3 was in hand; 4 is not given


def test_a_fetch_while_the_flow_is_stopped_seeks_back_instead() -> None:
    consumer = _Consumer({TP0: [1]})
    consumer.flow_active = False
    assert _take(consumer) == []
    assert consumer.sought == 1


def test_the_key_hash_is_kafkas_murmur2_on_every_length() -> None:
    aiokafka_murmur2 = original(partitioner, "murmur2")
    rng = random.Random(16)
    for length in range(70):
        for _ in range(20):
            key = rng.randbytes(length)
            assert partition.murmur2(key) == aiokafka_murmur2(key), key


class _Metadata:
    def __init__(self) -> None:
        self.builds = 0
        self.refresh()

    def refresh(self) -> None:
        leader = SimpleNamespace(leader=1)
        self._partitions = {"t.out": {0: leader, 1: leader, 2: SimpleNamespace(leader=-1)}}

    def partitions_for_topic(self, topic: str) -> set[int]:
        self.builds += 1
        return set(self._partitions[topic])

    def available_partitions_for_topic(self, topic: str) -> set[int]:
        return {p for p, meta in self._partitions[topic].items() if meta.leader != -1}


def test_a_keyed_send_reuses_the_partition_lists_until_the_metadata_changes() -> None:
    asked: list[tuple[Any, ...]] = []

    def partitioner(key: bytes, all_partitions: list[int], available: list[int]) -> int:
        asked.append((key, all_partitions, available))
        return 1

    producer = SimpleNamespace(_metadata=_Metadata(), _partitioner=partitioner)

    def faust_partition(self: Any, topic: str, partition: int | None, *_rest: Any) -> int:
        return -1 if partition is None else partition

    (choose,) = partition.partition_lists_per_metadata(faust_partition)
    for key in (b"a", b"b"):
        assert choose(producer, "t.out", None, key, b"v", key, b"v") == 1
    assert producer._metadata.builds == 1
    assert asked[0] == (b"a", [0, 1, 2], [0, 1])
    producer._metadata.refresh()  # aiokafka replaces the topic's partitions on refresh
    choose(producer, "t.out", None, b"c", b"v", b"c", b"v")
    assert producer._metadata.builds == 2
    assert choose(producer, "t.out", 2, b"d", b"v", b"d", b"v") == 2  # explicit: aiokafka's
    assert choose(producer, "t.unknown", None, b"e", b"v", b"e", b"v") == -1  # aiokafka's


def test_a_stage_app_collects_the_young_generation_less_often(app: faust.App) -> None:
    assert gc.get_threshold()[0] == GC_YOUNG > 700
