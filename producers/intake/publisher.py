"""One long-lived idempotent producer, awaited per record from asyncio.

librdkafka reports deliveries through callbacks that run inside `poll()`. A dedicated
thread polls, and each callback resolves the asyncio future of its record with
`call_soon_threadsafe`; `produce()` itself only queues, so the event loop never blocks
on the network. An HTTP answer therefore waits for the broker's acknowledgement
(`acks=all`, idempotence on, Java-compatible partitioning from `Settings`) without
holding up any other request.

Nothing can be half-written: an order is one record, and a Kafka append of one record
is atomic, so the broker has either all of it or none of it. What a failure leaves
uncertain is only *whether* it was appended (a timeout may hide a successful write);
the caller handles that by retrying with the same order id, which the order stage
deduplicates.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

from confluent_kafka import KafkaError, KafkaException, Producer

from pipelines.errors import SluiceError
from pipelines.settings import Settings

Headers = Sequence[tuple[str, bytes]]


class PublishFailed(SluiceError):
    """The broker did not acknowledge a record (unreachable, timed out, refused)."""

    retriable = True


class Delivered(NamedTuple):
    """Where the broker put a record (a named tuple: one per record, cheap to build)."""

    partition: int
    offset: int


class Publisher(Protocol):
    """What the intake needs from a producer: publish and await, and a clean close."""

    async def publish(self, key: bytes, value: bytes, headers: Headers = ()) -> Delivered: ...

    async def close(self) -> None: ...

    def queued(self) -> int: ...


class KafkaPublisher:
    """An idempotent confluent-kafka Producer with a polling thread, for one topic.

    Delivery reports are collected during each `poll()` and handed to the event loop in
    one `call_soon_threadsafe` per batch: one wake-up of the loop for many answers.
    """

    def __init__(
        self, settings: Settings, topic: str, *, linger_ms: float, delivery_timeout_s: float
    ) -> None:
        conf = settings.confluent_producer(
            **{
                "linger.ms": linger_ms,
                "message.timeout.ms": int(delivery_timeout_s * 1000),
                "queue.buffering.max.messages": 100_000,
            }
        )
        self.topic = topic
        self.producer = Producer(conf)
        self._reports: list[Report] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="intake-producer", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            self.producer.poll(0.05)
            self._hand_over()

    def _hand_over(self) -> None:
        """Pass the reports collected by the last poll to the loop (only one thread polls)."""
        if not self._reports or self._loop is None:
            return
        batch, self._reports = self._reports, []
        # a closed loop (RuntimeError) means nobody waits for these answers any more
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(_settle_all, batch)

    async def publish(self, key: bytes, value: bytes, headers: Headers = ()) -> Delivered:
        """Queue one record and wait for its delivery report; PublishFailed if it failed."""
        loop = self._loop = asyncio.get_running_loop()
        future: asyncio.Future[Delivered] = loop.create_future()

        def delivered(err: KafkaError | None, msg: Any) -> None:
            self._reports.append((future, err, msg))

        try:
            self.producer.produce(
                self.topic, value, key, headers=list(headers), on_delivery=delivered
            )
        except BufferError:
            raise PublishFailed(
                "the producer's local queue is full; the broker is behind"
            ) from None
        except KafkaException as exc:
            raise PublishFailed(f"cannot queue the record: {exc.args[0].str()}") from None
        return await future

    def queued(self) -> int:
        """Records waiting for a delivery report."""
        return len(self.producer)

    async def close(self, timeout: float = 10.0) -> None:
        """Stop polling, then deliver what is queued (answering those requests)."""
        loop = asyncio.get_running_loop()
        self._stop.set()
        await loop.run_in_executor(None, self._thread.join, 2.0)
        await loop.run_in_executor(None, self.producer.flush, timeout)
        self._hand_over()


Report = tuple["asyncio.Future[Delivered]", KafkaError | None, Any]


def _settle_all(batch: list[Report]) -> None:
    for future, err, msg in batch:
        if future.done():  # its request went away; the record was still handled
            continue
        if err is not None:
            future.set_exception(PublishFailed(f"the broker did not acknowledge: {err.str()}"))
        else:
            future.set_result(Delivered(msg.partition(), msg.offset()))
