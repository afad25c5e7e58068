"""The stage runtime (`pipelines.runtime`): each patch still fits the Faust it replaces,
the version guard refuses other versions in one line, and each change does what it says."""

from __future__ import annotations

import asyncio
import importlib.metadata
import inspect
import io
import logging
from collections import deque
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import faust
import pytest
from faust.sensors import Monitor, Sensor
from faust.transport.consumer import Consumer
from faust.transport.producer import ProducerBuffer
from faust.types import TP
from faust.utils.optin import cython_optimizations_enabled
from mode.utils.logging import CompositeLogger

from pipelines import runtime
from pipelines.runtime import drain, quiet
from pipelines.runtime.faust_tuning import WRITTEN_FOR, UnsupportedFaust, check_versions
from pipelines.runtime.faustapp import make_app
from pipelines.runtime.patching import drifted, is_applied, original
from pipelines.runtime.startup import exit_with
from pipelines.settings import Settings

TP0 = TP("t.orders.placed", 0)


@pytest.mark.parametrize("patch", runtime.all_patches(), ids=lambda p: p.name)
def test_each_patch_still_fits_the_faust_it_replaces(patch: Any) -> None:
    """A changed upstream source means the replacement may drop the change: re-read it,
    re-run the crash tests, then update the fingerprint."""
    assert drifted(patch) == [], f"{patch.name}: Faust changed what it replaces ({patch.why})"


def test_patch_names_are_unique_and_each_target_replaced_once() -> None:
    patches = runtime.all_patches()
    assert len({p.name for p in patches}) == len(patches)
    labels = [(id(t.owner), t.attribute) for p in patches for t in p.targets]
    assert len(set(labels)) == len(labels)


@pytest.fixture
def app(tmp_path: Path) -> faust.App:
    return make_app("orders", Settings(data_dir=tmp_path, topic_prefix="t."))


def test_making_a_stage_app_applies_every_patch(app: faust.App) -> None:
    assert all(is_applied(p) for p in runtime.all_patches())
    assert Consumer._drain_messages is drain.drain_messages
    assert ProducerBuffer.max_messages == 5000
    runtime.apply_patches()  # once: applying again wraps nothing twice
    assert Consumer._drain_messages is drain.drain_messages


def test_the_running_versions_are_the_ones_written_for() -> None:
    check_versions()
    for dist, version in WRITTEN_FOR.items():
        assert importlib.metadata.version(dist) == version


def test_another_faust_version_is_refused_in_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda dist: "0.16.0" if dist == "faust-streaming" else real(dist),
    )
    with pytest.raises(UnsupportedFaust) as refused:
        check_versions()
    assert runtime.tune(faust.App("refused", broker="kafka://127.0.0.1:1")) is False
    stream = io.StringIO()
    with pytest.raises(SystemExit) as info:
        exit_with(refused.value, stream)
    assert info.value.code == 1
    assert stream.getvalue() == (
        "error: faust-streaming 0.16.0 is installed, but Sluice's Faust runtime was written "
        "for 0.15.3 (it replaces some of its internals): install faust-streaming==0.15.3\n"
    )


def test_the_idempotent_producer_patch_sets_idempotence_and_acks(app: faust.App) -> None:
    from faust.transport.drivers import aiokafka as faust_aiokafka

    extra = faust_aiokafka.Producer._settings_extra(SimpleNamespace(app=app))
    assert extra["enable_idempotence"] is True
    assert extra["acks"] == "all"


def test_cython_fast_paths_are_on_for_stage_apps(app: faust.App) -> None:
    from faust import streams
    from faust.transport import conductor

    assert streams._CStreamIterator is not None  # the compiled extensions are in use
    assert conductor.ConductorHandler is not None
    assert cython_optimizations_enabled(app.conf)

    async def built() -> tuple[bool, bool]:
        topic = app.topic("t.orders.placed")
        iterator = streams._CStreamIterator(app.stream(topic))
        handler = conductor.ConductorHandler(app.topics, TP0, {topic})
        return iterator.cython_optimizations, handler.cython_optimizations

    assert asyncio.run(built()) == (True, True)  # what the running stage really takes


# -- quiet sensors -------------------------------------------------------------------


class _Counting(Sensor):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        self.seen.append("in")

    def on_stream_event_out(self, *args: Any, **kwargs: Any) -> None:
        self.seen.append("out")


def test_stage_apps_keep_the_monitor_off_the_hot_path(app: faust.App) -> None:
    sensors = app.sensors
    assert isinstance(sensors, quiet.QuietSensors)
    sensors.add(app.monitor)  # what Faust does when the app starts
    assert list(sensors) == []
    assert sensors.on_stream_event_in(TP0, 1, None, None) is None
    assert isinstance(app.monitor, Monitor)  # still there for whoever asks for it
    # what the driver's stalled-stream check reads is still kept
    assert TP0 in app.monitor.stream_inbound_time


def test_an_added_sensor_still_gets_every_call(app: faust.App) -> None:
    sensor = _Counting()
    app.sensors.add(sensor)
    app.sensors.on_message_in(TP0, 1, None)
    app.sensors.on_stream_event_out(TP0, 1, None, None, None)
    assert sensor.seen == ["in", "out"]


# -- log formatting ------------------------------------------------------------------


def test_service_logs_are_formatted_only_when_the_level_is_enabled(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime.apply_patches()
    formatted: list[str] = []

    def formatter(severity: int, message: str, *args: Any, **kwargs: Any) -> str:
        formatted.append(message)
        return f"[svc]: {message}"

    logger = logging.getLogger("sluice-test-composite")
    composite = CompositeLogger(logger, formatter=formatter)
    with caplog.at_level(logging.INFO, logger=logger.name):
        composite.debug("per record %r", 1)
        assert formatted == []
        composite.info("kept %r", 2)
    assert formatted == ["kept %r"]
    [record] = caplog.records
    assert record.getMessage() == "[svc]: kept 2"
    assert record.funcName == "test_service_logs_are_formatted_only_when_the_level_is_enabled"
    assert original(CompositeLogger, "log") is not CompositeLogger.log


# -- stream sleep --------------------------------------------------------------------


def test_the_stream_sleep_turns_the_loop_once_per_hundred_records() -> None:
    async def count_turns() -> int:
        turns = 0
        ticking = True

        async def ticker() -> None:
            nonlocal turns
            while ticking:
                turns += 1
                await asyncio.sleep(0)

        task = asyncio.ensure_future(ticker())
        await asyncio.sleep(0)
        turns = 0
        for _ in range(quiet.YIELD_EVERY * 5):
            await quiet.rare_sleep(0)
        ticking = False
        await task
        return turns

    assert asyncio.run(count_turns()) in (5, 6)
    assert asyncio.run(_slept(quiet.rare_sleep(0.01, "late"))) == "late"


async def _slept(awaitable: Any) -> Any:
    return await awaitable


# -- inline drain --------------------------------------------------------------------


class _Queue:
    """A stream buffer that, once waited on, drains when `drains` says so."""

    def __init__(self, full: bool = False) -> None:
        self._full = full
        self.drains = True

    def full(self) -> bool:
        return self._full

    def in_pressure_high_state(self, callback: Any) -> bool:
        if self.drains:  # the agent takes records: Faust calls back at the drop mark

            def drained() -> None:
                self._full = False
                callback()

            asyncio.get_running_loop().call_later(0.01, drained)
        return True


class _Event:
    def __init__(self, value: bool = False) -> None:
        self.value = value

    def is_set(self) -> bool:
        return self.value

    async def wait(self) -> None:
        while not self.value:
            await asyncio.sleep(0.001)


def _fake_consumer(records: list[tuple[TP, int]], full_at: int = 2) -> Any:
    """A consumer with just what the drain loop touches: Faust's bookkeeping, a conductor
    with one channel per partition, a flow switch and a producer buffer."""
    queue = _Queue()
    flow = SimpleNamespace(active=True)
    stopped = _Event()
    calls: list[tuple[str, int]] = []
    consumer = SimpleNamespace(
        _read_offset={TP0: None},
        _commit_every=None,
        _n_acked=0,
        _stopped=stopped,
        suspend_flow=_Event(),
        should_stop=False,
        diag=SimpleNamespace(set_flag=lambda _f: None, unset_flag=lambda _f: None),
        gaps=[],
        calls=calls,
        queue=queue,
        flow=flow,
    )
    consumer.app = SimpleNamespace(
        flow_control=SimpleNamespace(is_active=lambda: flow.active),
        topics=SimpleNamespace(
            _tp_to_callback_lock=asyncio.Lock(),
            _tp_index={TP0: [SimpleNamespace(queue=queue)]},
            acks_enabled_for=lambda _topic: True,
        ),
        producer=SimpleNamespace(
            buffer=SimpleNamespace(pending=SimpleNamespace(_queue=deque()), max_messages=10)
        ),
        conf=SimpleNamespace(producer_threaded=False),
    )

    async def callback(message: Any) -> None:  # Conductor.on_message: takes the lock
        async with consumer.app.topics._tp_to_callback_lock:
            calls.append(("delivered", message.offset))

    async def handler(message: Any) -> None:  # the partition's handler, read directly
        calls.append(("handled", message.offset))

    consumer.app.topics.on_message = callback
    consumer.app.topics._tp_to_callback = {TP0: handler}

    async def getmany(timeout: float) -> Any:
        for tp, offset in records:
            if offset == full_at:
                queue._full = True  # the stream buffer fills up before this offset
            yield tp, SimpleNamespace(offset=offset, topic=tp.topic, tp=tp)
        stopped.value = True

    async def wait_first(*coros: Any) -> None:
        calls.append(("raced", -1))
        tasks = [asyncio.ensure_future(c) for c in coros]
        _done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()

    async def add_gap(tp: TP, start: int, end: int) -> None:
        consumer.gaps.append((start, end))

    async def sleep(_s: float) -> None:
        await asyncio.sleep(0)

    consumer.callback = callback
    consumer.getmany = getmany
    consumer.wait_first = wait_first
    consumer._add_gap = add_gap
    consumer.sleep = sleep
    return consumer


def test_the_drain_loop_hands_over_inline_and_races_only_when_it_would_block() -> None:
    consumer = _fake_consumer([(TP0, 0), (TP0, 1), (TP0, 0), (TP0, 2)])
    fetcher = SimpleNamespace(_stopped=_Event())
    asyncio.run(drain.drain_messages(consumer, fetcher))
    assert consumer.calls == [
        ("handled", 0),  # inline, straight to the partition's handler
        ("handled", 1),  # then offset 0 again, behind the read offset: dropped
        ("raced", -1),  # the buffer is full: wait for room, abandonable on a rebalance
        ("handled", 2),  # room again: inline
    ]
    assert consumer._read_offset[TP0] == 2
    assert consumer.gaps == []


def _log_consumer(fetches: list[list[int]], log: list[int]) -> Any:
    """A consumer whose fetches are `fetches`, and after a seek the records of `log` from
    the sought offset on, with the commit guard's filter: records of a fetch in hand
    past a sought offset are stale until the one sought comes."""
    consumer = _fake_consumer([], full_at=-1)
    pending = [list(f) for f in fetches]
    sought: list[int] = []

    async def seek(tp: TP, offset: int) -> None:
        sought.append(offset)
        consumer._read_offset[tp] = offset
        pending[:] = [[o for o in log if o >= offset]]

    async def getmany(timeout: float) -> Any:
        if not pending:
            consumer._stopped.value = True
            return
        batch = pending.pop(0)
        wanted = sought[-1] if sought else None
        for offset in batch:
            if sought and sought[-1] != wanted:
                return  # sought meanwhile: the rest of this fetch is stale
            yield TP0, SimpleNamespace(offset=offset, topic=TP0.topic, tp=TP0)

    consumer.seek, consumer.getmany, consumer.sought = seek, getmany, sought
    return consumer


def test_records_a_fetch_skipped_are_read_again_not_committed_past() -> None:
    """Faust would record 2..4 as a gap and commit across it: those orders would never
    be processed. The drain loop seeks back instead and hands them over."""
    consumer = _log_consumer([[0, 1, 5, 6]], log=list(range(8)))
    asyncio.run(drain.drain_messages(consumer, SimpleNamespace(_stopped=_Event())))
    handled = [offset for what, offset in consumer.calls if what == "handled"]
    assert consumer.sought == [1]
    assert handled == [0, 1, 1, 2, 3, 4, 5, 6, 7]  # 1 again: the read offset after a seek
    assert consumer.gaps == []


def test_records_still_missing_when_read_again_are_gone_and_become_a_gap() -> None:
    """Deleted by retention: read again once, then Faust's gap, and the stage goes on."""
    consumer = _log_consumer([[0, 1, 5, 6]], log=[0, 1, 5, 6, 7])
    asyncio.run(drain.drain_messages(consumer, SimpleNamespace(_stopped=_Event())))
    handled = [offset for what, offset in consumer.calls if what == "handled"]
    assert consumer.sought == [1]
    assert handled == [0, 1, 1, 5, 6, 7]
    assert consumer.gaps == [(2, 5)]


def test_a_rebalance_while_the_buffer_is_full_falls_back_to_faust_race() -> None:
    consumer = _fake_consumer([(TP0, 0), (TP0, 1)], full_at=1)
    consumer.queue.drains = False  # the agent is stuck: only the suspension ends the wait

    async def run() -> None:
        fetcher = SimpleNamespace(_stopped=_Event())
        loop = asyncio.get_running_loop()
        loop.call_later(0.05, lambda: setattr(consumer.suspend_flow, "value", True))
        await drain.drain_messages(consumer, fetcher)

    asyncio.run(run())
    # the wait for room and then Faust's own race, whose put waits for the full buffer
    assert consumer.calls[:3] == [("handled", 0), ("raced", -1), ("raced", -1)]


def test_the_drain_loop_is_not_ready_while_anything_would_block() -> None:
    async def check() -> list[bool]:
        consumer = _fake_consumer([])
        ready = drain.ready_check(consumer)
        seen = [ready(TP0)]
        consumer.flow.active = False  # flow control suspended (a rebalance)
        seen.append(ready(TP0))
        consumer.flow.active = True
        consumer.app.producer.buffer.pending._queue.extend(range(11))  # over its bound
        seen.append(ready(TP0))
        consumer.app.producer.buffer.pending._queue.clear()
        consumer.suspend_flow.value = True
        seen.append(ready(TP0))
        consumer.suspend_flow.value = False
        async with consumer.app.topics._tp_to_callback_lock:  # re-indexing partitions
            seen.append(ready(TP0))
        consumer.queue._full = True
        seen.append(ready(TP0))
        consumer.queue._full = False
        seen.append(ready(TP("other", 0)))  # no channel: the callback's own KeyError
        return seen

    assert asyncio.run(check()) == [True, False, False, False, False, False, True]


# -- the running producer ------------------------------------------------------------


def test_a_send_gets_the_running_producer_without_the_start_up_stampede(app: faust.App) -> None:
    runtime.apply_patches()
    topic = app.topic("t.orders.placed")
    running = SimpleNamespace(started=True)
    app._producer = running
    assert asyncio.run(topic._get_producer()) is running
    starting = SimpleNamespace(started=False)
    app._producer = starting
    asked: list[str] = []

    async def maybe_start_producer() -> Any:
        asked.append("stampede")
        return starting

    app.maybe_start_producer = maybe_start_producer
    assert asyncio.run(topic._get_producer()) is starting
    assert asked == ["stampede"]  # not started yet: Faust's own path


def test_a_plain_topic_send_goes_straight_to_the_running_producer(app: faust.App) -> None:
    runtime.apply_patches()
    topic = app.topic("t.orders.placed", key_type=bytes, value_type=bytes,
                      key_serializer="raw", value_serializer="raw")  # fmt: skip
    sent: list[tuple[Any, ...]] = []

    class _Producer:
        started = True

        async def send(self, *args: Any, **kwargs: Any) -> asyncio.Future[str]:
            sent.append((*args, kwargs))
            delivery: asyncio.Future[str] = asyncio.get_running_loop().create_future()
            delivery.set_result("metadata")
            return delivery

    async def send_twice() -> tuple[Any, Any]:
        plain = await topic.send(key=b"k", value=b"v")
        called = await topic.send(key=b"k", value=b"v", callback=lambda _fut: None)
        return plain, called

    app._producer = _Producer()
    plain, called = asyncio.run(send_twice())
    assert plain.result() == called.result() == "metadata"  # the producer's own future
    assert sent[0] == (
        "t.orders.placed",
        b"k",
        b"v",
        {"partition": None, "timestamp": None, "headers": None},
    )
    # a callback needs Faust's FutureMessage: Faust's own path (its empty header dict)
    assert sent[1][-1]["headers"] == {}


def test_a_stage_worker_on_another_faust_refuses_to_start_in_one_line(
    app: faust.App, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pipelines.runtime.faustapp import Worker

    real = importlib.metadata.version
    monkeypatch.setattr(
        importlib.metadata,
        "version",
        lambda dist: "0.8.0" if dist == "mode-streaming" else real(dist),
    )
    stream = io.StringIO()
    loop = asyncio.new_event_loop()
    try:
        worker = Worker(app, loglevel="warn", loop=loop, stderr=stream)
        with pytest.raises(SystemExit) as info:
            worker.execute_from_commandline()
    finally:
        loop.close()
    assert info.value.code == 1
    assert stream.getvalue() == (
        "error: mode-streaming 0.8.0 is installed, but Sluice's Faust runtime was written "
        "for 0.7.1 (it replaces some of its internals): install mode-streaming==0.7.1\n"
    )


def test_the_runtime_exports_a_small_api() -> None:
    assert runtime.__all__ == [
        "PATCHES",
        "UnsupportedFaust",
        "acting_for",
        "all_patches",
        "apply_patches",
        "check_versions",
        "make_current",
        "short_fetch_waits",
        "tune",
    ]


def test_acting_for_an_event_makes_it_current_for_the_block_only() -> None:
    from faust.streams import current_event

    class _Event:  # weak-referenceable, as Faust's events are
        pass

    outer, inner = _Event(), _Event()
    assert current_event() is None
    with runtime.acting_for(outer):
        assert current_event() is outer
        with runtime.acting_for(inner):
            assert current_event() is inner  # tables write to this event's partition
        assert current_event() is outer
    assert current_event() is None


def test_short_fetch_waits_caps_the_running_fetchers_long_poll(app: faust.App) -> None:
    fetcher = SimpleNamespace(_fetch_max_wait_ms=1500, _prefetch_backoff=0.1)
    consumer = SimpleNamespace(_thread=SimpleNamespace(_consumer=SimpleNamespace(_fetcher=fetcher)))
    runtime.short_fetch_waits(app, wait_ms=7, backoff_s=0.002)
    app._consumer = consumer  # type: ignore[attr-defined]
    asyncio.run(app.on_partitions_assigned.send(set()))
    assert (fetcher._fetch_max_wait_ms, fetcher._prefetch_backoff) == (7, 0.002)


def test_the_fetchers_attributes_the_cap_sets_still_exist() -> None:
    from aiokafka.consumer.fetcher import Fetcher

    source = inspect.getsource(original(Fetcher, "__init__"))
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in source
    assert "self._prefetch_backoff = prefetch_backoff" in source
