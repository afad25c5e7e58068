"""Driving a stage app's agents in process: no broker, real encoded events.

A stage built by its module's `create_app` (or its stage class) is run agent by agent
through Faust's `agent.test_context()`. `RecordingProducer` stands in for the app's
aiokafka producer, the one seam every output of a stage goes through (`DirectSender`,
`Ledger.write`, `Outbox.send`), and keeps what was sent.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import faust
from faust.events import Event
from faust.types import Message


@dataclass(frozen=True)
class Sent:
    """One record a stage handed to the producer."""

    topic: str
    partition: int | None
    key: bytes | None
    value: bytes | None
    headers: dict[str, bytes]


@dataclass(frozen=True)
class Delivered:
    """What the producer's delivery future resolves to (the offset is what is read)."""

    topic: str
    partition: int
    offset: int


class _Batch:
    def __init__(self) -> None:
        self.records: list[tuple[bytes | None, bytes | None]] = []

    def append(self, *, timestamp: Any, key: bytes | None, value: bytes | None) -> Any:
        self.records.append((key, value))
        return object()  # never full

    def close(self) -> None:
        pass

    def record_count(self) -> int:
        return len(self.records)


class RecordingProducer:
    """The parts of aiokafka's producer the stages use; every send is delivered at once."""

    def __init__(self) -> None:
        self.sent: list[Sent] = []

    def _delivered(self, topic: str, partition: int | None) -> asyncio.Future[Delivered]:
        future: asyncio.Future[Delivered] = asyncio.get_running_loop().create_future()
        future.set_result(Delivered(topic, partition or 0, len(self.sent)))
        return future

    async def send(
        self,
        topic: str,
        value: bytes | None,
        *,
        key: bytes | None = None,
        partition: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Delivered]:
        self.sent.append(Sent(topic, partition, key, value, dict(headers or [])))
        return self._delivered(topic, partition)

    def create_batch(self) -> _Batch:
        return _Batch()

    async def send_batch(
        self, batch: _Batch, topic: str, *, partition: int
    ) -> asyncio.Future[Delivered]:
        self.sent.extend(Sent(topic, partition, k, v, {}) for k, v in batch.records)
        return self._delivered(topic, partition)

    def on(self, topic: str) -> list[Sent]:
        """What was sent to `topic` (physical name), in order."""
        return [sent for sent in self.sent if sent.topic == topic]


def bound_stage(app: faust.App, agent: str) -> Any:
    """The stage object an app's agent is a method of, or a closure made by (one agent
    per channel): the app holds its stage through its agents."""
    fun = app.agents[agent].fun
    owner = getattr(fun, "__self__", None)
    if owner is None:
        cells = dict(zip(fun.__code__.co_freevars, fun.__closure__ or (), strict=True))
        owner = cells["self"].cell_contents
    return owner


def app_topics(app: faust.App) -> set[str]:
    """Every topic an app consumes or keeps a table in (physical names)."""
    topics = {t for agent in app.agents.values() for t in agent.channel.topics}
    return topics | {table.changelog_topic.get_topic_name() for table in app.tables.values()}


PREFIXES = ("a.", "b.")


def built_apart(
    create_app: Callable[[str], faust.App], agent: str, parts: Iterable[str]
) -> tuple[Any, Any]:
    """The stages of two apps built with the topic prefixes `PREFIXES`, checked to share
    nothing: each its own group, its topics all under its own prefix, and none of `parts`
    (attributes of the stage) the same object in both."""
    apps = [create_app(prefix) for prefix in PREFIXES]
    for prefix, app in zip(PREFIXES, apps, strict=True):
        assert app.conf.id.startswith(prefix)
        topics = app_topics(app)
        assert topics, app
        assert all(topic.startswith(prefix) for topic in topics), topics
    one, two = (bound_stage(app, agent) for app in apps)
    for part in parts:
        assert getattr(one, part) is not getattr(two, part), part
    return one, two


def record_sends(app: faust.App) -> RecordingProducer:
    """Make `app`'s outputs go to a `RecordingProducer` (returned) instead of Kafka."""
    producer = RecordingProducer()
    app.producer._ensure_producer = lambda: producer  # type: ignore[attr-defined]
    return producer


def event(
    app: faust.App,
    topic: str,
    partition: int,
    offset: int,
    value: bytes,
    at_ms: int,
    *,
    key: bytes = b"k",
    headers: Iterable[tuple[str, bytes]] = (),
) -> Event:
    """A Faust event as the consumer would hand it over (timestamped 5 ms after `at_ms`)."""
    message = Message(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=(at_ms + 5) / 1000,
        timestamp_type=0,
        headers=list(headers),
        key=key,
        value=value,
        checksum=None,
        generation_id=app.consumer_generation_id,  # an older generation would be dropped
    )
    return Event(app, key, value, message.headers, message)


async def until(ctx: Any, condition: Callable[[], bool], what: str, timeout: float = 15.0) -> None:
    """Wait until `condition` holds; fail at once if the agent under test crashed."""
    deadline = time.monotonic() + timeout
    while not condition():
        if ctx._crash_reason is not None:
            raise ctx._crash_reason
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout} s: {what}")
        await asyncio.sleep(0.01)


async def run(agent: Any, events: Iterable[Event], done: Callable[[], bool], what: str) -> None:
    """Put `events` on `agent`'s test channel and wait until `done` holds."""
    async with agent.test_context() as ctx:
        channel = ctx.stream().channel
        for item in events:
            await channel.put(item)
        await until(ctx, done, what)


def drive(agent: Any, events: Iterable[Event], done: Callable[[], bool], what: str) -> None:
    """`run` on a loop of its own (from a synchronous test)."""
    asyncio.run(run(agent, events, done, what))
