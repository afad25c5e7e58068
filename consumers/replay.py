"""`sluice replay`: the analytics aggregation over a past time range, in isolated state.

Start offsets come from the brokers' time index (offsets_for_times); each partition is
read up to the end offset for `--to` as it stood when the replay started, so a replay
is bounded even while producers keep writing. Reading uses explicit assignment and
never commits: no consumer group's offsets move, no live table is touched, nothing is
written to live topics (only to the `--output` topic, which must not be a live one).
State is one small partial per window, so memory grows with the range, not the events.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Message, TopicPartition

from consumers.tail import watermark
from pipelines import admin
from pipelines.catalog import by_name
from pipelines.errors import ConfigError, RecordError, TopicError
from pipelines.runtime.deadletter import redriven_for_another
from pipelines.serde import Serde, serde_for
from pipelines.settings import Settings
from pipelines.stages import windows
from pipelines.stages.windows import WindowConfig

Progress = Callable[[int], None]


@dataclass
class Aggregator:
    """Windows of a set of records, merged per window key (the live stage's merge result)."""

    config: WindowConfig
    partials: dict[str, windows.Partial] = field(default_factory=dict)
    events: int = 0
    undecodable: int = 0
    out_of_range: int = 0  # event time no window can hold: the live stage dead-letters these
    others_redrives: int = 0  # another stage's dead letters redriven to a source topic

    def apply(self, topic: str, record: dict[str, Any], record_ts_ms: int) -> None:
        if windows.unusable_time(topic, record) is not None:
            self.out_of_range += 1
            return
        event_ms = int(record[windows.EVENT_TIME[topic]])
        late = windows.is_late(record_ts_ms, event_ms, self.config)
        partials = self.partials
        for c in windows.contributions(topic, record, self.config):
            partial = partials.get(c.window_key)
            if partial is None:
                partial = partials[c.window_key] = windows.empty()
            windows.add(partial, c, late)
        self.events += 1

    def records(self) -> list[dict[str, Any]]:
        """WindowAggregate records, one per window key, sorted by key."""
        return [
            windows.record(
                key,
                windows.window_size_ms(key.split("|")[0], self.config),
                value,
                self.config.top_n,
            )
            for key, value in sorted(self.partials.items())
        ]


@dataclass(frozen=True)
class ReplayPlan:
    """What to read: per topic and partition, [start, end) offsets."""

    ranges: dict[tuple[str, int], tuple[int, int]]

    @property
    def total(self) -> int:
        return sum(max(0, end - start) for start, end in self.ranges.values())


def plan(settings: Settings, topics: list[str], from_ms: int, to_ms: int) -> ReplayPlan:
    """Offsets for [from, to) on every partition of `topics`, fixed at the start."""
    if from_ms >= to_ms:
        raise ConfigError("--from must be before --to")
    unknown = [t for t in topics if t not in windows.SOURCES]
    if unknown:
        raise TopicError(
            f"cannot replay {', '.join(unknown)}: analytics reads {', '.join(windows.SOURCES)}"
        )
    live = admin.list_topics(settings)
    missing = [t for t in topics if settings.topic(t) not in live]
    if missing:
        raise TopicError(f"unknown topic {', '.join(missing)} on {settings.bootstrap_servers}")
    consumer = _consumer(settings)
    try:
        ranges = {}
        for topic in topics:
            physical = settings.topic(topic)
            for p in range(live[physical].partitions):
                ranges[(topic, p)] = _offsets(consumer, physical, p, from_ms, to_ms)
        return ReplayPlan(ranges)
    finally:
        consumer.close()


def _offsets(
    consumer: Consumer, topic: str, partition: int, from_ms: int, to_ms: int
) -> tuple[int, int]:
    timeout = 10.0
    _low, high = watermark(consumer, TopicPartition(topic, partition), timeout)
    # one call per timestamp: a single request with the same partition twice is deduplicated
    start = _offset_at(consumer, topic, partition, from_ms, high=high, timeout=timeout)
    end = _offset_at(consumer, topic, partition, to_ms, high=high, timeout=timeout)
    return start, min(end, high)


def _offset_at(
    consumer: Consumer, topic: str, partition: int, at_ms: int, *, high: int, timeout: float
) -> int:
    """The first offset at or after `at_ms`, or the log end when there is none."""
    found = consumer.offsets_for_times([TopicPartition(topic, partition, at_ms)], timeout=timeout)
    return int(found[0].offset) if found[0].offset >= 0 else high


def run(
    settings: Settings,
    replay_plan: ReplayPlan,
    config: WindowConfig,
    progress: Progress = lambda _n: None,
) -> Aggregator:
    """Read every planned record once and aggregate it."""
    aggregator = Aggregator(config)
    serde = serde_for(settings)
    schemas = {name: spec.value_schema for name, spec in by_name().items()}
    for topic, msg in _read(settings, replay_plan, progress):
        if redriven_for_another(dict(msg.headers() or ()), "analytics.dlq"):
            aggregator.others_redrives += 1  # skipped live too: the original was counted
            continue
        try:
            record = serde.decode(msg.value() or b"", schemas[topic])
        except RecordError:
            aggregator.undecodable += 1
            continue
        aggregator.apply(topic, record, msg.timestamp()[1])
    return aggregator


def _read(
    settings: Settings, replay_plan: ReplayPlan, progress: Progress
) -> Iterator[tuple[str, Message]]:
    pending = {key: rng for key, rng in replay_plan.ranges.items() if rng[1] > rng[0]}
    if not pending:
        return
    consumer = _consumer(settings)
    consumer.assign(
        [TopicPartition(settings.topic(t), p, start) for (t, p), (start, _end) in pending.items()]
    )
    try:
        while pending:
            batch = consumer.consume(2000, timeout=1.0)
            done = 0
            for msg in batch:
                if msg.error() is not None:
                    continue
                topic = settings.logical_topic(msg.topic() or "")
                key = (topic, msg.partition() or 0)
                if key not in pending or (msg.offset() or 0) >= pending[key][1]:
                    continue
                done += 1
                yield topic, msg
            progress(done)
            _drop_finished(consumer, settings, pending)
    finally:
        consumer.close()


def _drop_finished(
    consumer: Consumer, settings: Settings, pending: dict[tuple[str, int], tuple[int, int]]
) -> None:
    """Stop tracking partitions whose next position reached their end offset."""
    assigned = [TopicPartition(settings.topic(t), p) for t, p in pending]
    try:
        positions = consumer.position(assigned)
    except KafkaException:
        return
    for tp in positions:
        key = (settings.logical_topic(tp.topic), tp.partition)
        if tp.offset >= 0 and tp.offset >= pending[key][1]:
            del pending[key]


def _consumer(settings: Settings) -> Consumer:
    return Consumer(
        settings.confluent(
            **{
                "group.id": f"sluice-replay-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "isolation.level": "read_committed",
                "fetch.max.bytes": 16 * 1024 * 1024,
            }
        )
    )


def write_output(
    settings: Settings, topic: str, records: list[dict[str, Any]], serde: Serde | None = None
) -> int:
    """Write the windows to a replay output topic (never a live pipeline topic)."""
    from producers.sender import EventSender

    if topic in by_name() or settings.logical_topic(topic) in by_name():
        raise ConfigError(f"--output {topic} is a live pipeline topic; choose a replay topic")
    serde = serde or serde_for(settings)
    admin.ensure_topics(settings, [_output_spec(topic)])
    sender = EventSender(settings)
    for rec in records:
        sender.send(
            settings.topic(topic),
            rec["window_key"].encode(),
            serde.encode("sluice.analytics.WindowAggregate", rec, topic=topic),
        )
    return sender.close().acked


def _output_spec(topic: str) -> Any:
    from pipelines.catalog import TopicSpec

    return TopicSpec(
        topic,
        "window_key",
        "sluice.analytics.WindowAggregate",
        "Replay output",
        cleanup_policy="compact",
        partitions=1,
    )


def now_ms() -> int:
    return int(time.time() * 1000)
