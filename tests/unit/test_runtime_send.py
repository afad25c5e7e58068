"""`pipelines.runtime.send.direct_produce`: a plain record lands where the Faust driver's
own `send` puts it (same accumulator, same partition, a delivery future), and every
record that might need the driver's path (a header, a timestamp, a transaction, a
signal receiver, a topic whose metadata is not known yet) takes it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust
import pytest
from aiokafka.errors import KafkaTimeoutError
from aiokafka.producer.producer import AIOKafkaProducer
from aiokafka.structs import PartitionMetadata, TopicPartition
from faust.exceptions import ProducerSendError
from faust.transport.drivers import aiokafka as faust_aiokafka

from pipelines import runtime
from pipelines.runtime import send
from pipelines.runtime.faustapp import make_app
from pipelines.runtime.patching import original
from pipelines.settings import Settings

TOPIC = "t.orders.status"


@pytest.fixture
def app(tmp_path: Path) -> faust.App:
    return make_app("orders", Settings(data_dir=tmp_path, topic_prefix="t."))


def _with_producer(app: faust.App) -> AIOKafkaProducer:
    """An aiokafka producer (never started: nothing leaves the accumulator) that knows
    six partitions of TOPIC, behind the app's Faust driver producer."""
    aio = AIOKafkaProducer(bootstrap_servers="127.0.0.1:9")
    aio.client.cluster._partitions[TOPIC] = {
        p: PartitionMetadata(TOPIC, p, 0, [0], [0], None) for p in range(6)
    }
    app.producer._producer = aio  # type: ignore[attr-defined]
    aio._closed = True  # never started, so nothing to close (and no warning when collected)
    return aio


def _queued(aio: AIOKafkaProducer) -> dict[TopicPartition, int]:
    batches = aio._message_accumulator._batches
    return {tp: sum(b.record_count for b in queue) for tp, queue in batches.items() if queue}


def test_the_patch_replaces_the_drivers_send(app: faust.App) -> None:
    runtime.apply_patches()
    assert faust_aiokafka.Producer.send is not original(faust_aiokafka.Producer, "send")


def test_a_plain_record_lands_where_the_drivers_own_send_puts_it(app: faust.App) -> None:
    driver_send = original(faust_aiokafka.Producer, "send")

    async def both() -> tuple[dict[TopicPartition, int], dict[TopicPartition, int], Any]:
        aio = _with_producer(app)
        keys = [f"order-{i}".encode() for i in range(40)]
        for key in keys:
            await driver_send(app.producer, TOPIC, key, b"v", None, None, None)
        theirs = _queued(aio)
        aio = _with_producer(app)
        futures = [await app.producer.send(TOPIC, key, b"v", None, None, None) for key in keys]
        return theirs, _queued(aio), futures[0]

    runtime.apply_patches()
    theirs, ours, future = asyncio.run(both())
    assert ours == theirs  # same partitions, same counts
    assert sum(ours.values()) == 40
    assert len(ours) > 1
    assert isinstance(future, asyncio.Future)  # the accumulator's delivery future


@pytest.mark.parametrize(
    "case",
    ["headers", "timestamp", "unknown topic", "receiver", "transactional id"],
)
def test_a_record_that_may_need_the_driver_takes_its_path(app: faust.App, case: str) -> None:
    seen: list[Any] = []
    topic, headers, timestamp, txn = TOPIC, None, None, None
    if case == "headers":
        headers = [("h", b"1")]
    elif case == "timestamp":
        timestamp = 1700000000.0
    elif case == "unknown topic":
        topic = "t.not.known.yet"
    elif case == "receiver":
        app.on_produce_message.connect(lambda *a, **kw: seen.append(kw))
    else:
        txn = "tx-1"

    async def driver_path(*args: Any, **kwargs: Any) -> str:
        seen.append("driver")
        return "driver future"

    async def one() -> Any:
        _with_producer(app)
        install = send.direct_produce(driver_path)[0]
        return await install(
            app.producer, topic, b"k", b"v", None, timestamp, headers, transactional_id=txn
        )

    assert asyncio.run(one()) == "driver future"
    assert "driver" in seen


def test_a_kafka_error_surfaces_as_the_drivers_error(app: faust.App) -> None:
    async def full(*args: Any, **kwargs: Any) -> Any:
        raise KafkaTimeoutError()

    async def one() -> Any:
        aio = _with_producer(app)
        aio._message_accumulator.add_message = full  # type: ignore[method-assign]
        install = send.direct_produce(original(faust_aiokafka.Producer, "send"))[0]
        return await install(app.producer, TOPIC, b"k", b"v", None, None, None)

    with pytest.raises(ProducerSendError, match="KafkaTimeoutError"):
        asyncio.run(one())
