"""Per-record work Faust does for nobody in a Sluice stage, and what replaces it.

* Sensors: every record passes four sensor calls on the way in and out of a stream (and
  table writes and sends more), each fanned out to Faust's Monitor, which keeps
  per-partition, per-stream and per-table statistics in dicts and deques. A stage's
  figures are its own Prometheus counters (`StageMetrics`), so the Monitor is kept out of
  the sensor set, and the per-record calls return at once while no sensor is installed.
  A sensor added on purpose (OpenTelemetry, a user's) still gets every call. One
  Monitor figure is kept: when a stream last took an event per partition, which the
  aiokafka driver's stalled-stream check reads (without it, any partition with lag would
  be reported as a stream that never started).
* Log formatting: mode's `CompositeLogger.log` builds the service-prefixed message before
  the logger decides whether the level is enabled; `Agent._slurp` logs one debug line per
  record, so every record paid for a message nobody reads. The replacement asks first.
* The stream iterator's `await sleep(0)` before every record: a full turn of the event
  loop per record. The replacement turns it once per `YIELD_EVERY` records (as Faust's
  own fetch loop does), so a stream with records waiting takes them in a run, and the
  loop still gets its turns.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator
from time import monotonic
from typing import Any

from faust.sensors import Monitor, SensorDelegate

YIELD_EVERY = 100


class QuietSensors(SensorDelegate):
    """Faust's sensor delegate without the Monitor, and free while no sensor is added."""

    _inbound: dict[Any, float] | None = None  # the Monitor's stream_inbound_time

    def add(self, sensor: Any) -> None:
        if type(sensor) is Monitor and sensor is self.app.monitor:
            return  # Faust adds its default Monitor at start: not on our hot path
        super().add(sensor)

    def on_message_in(self, tp: Any, offset: int, message: Any) -> None:
        if self._sensors:
            super().on_message_in(tp, offset, message)

    def on_stream_event_in(self, tp: Any, offset: int, stream: Any, event: Any) -> Any:
        if self._sensors:
            return super().on_stream_event_in(tp, offset, stream, event)
        inbound = self._inbound
        if inbound is None:
            inbound = self._inbound = self.app.monitor.stream_inbound_time
        inbound[tp] = monotonic()
        return None

    def on_stream_event_out(
        self, tp: Any, offset: int, stream: Any, event: Any, state: Any = None
    ) -> None:
        if self._sensors:
            super().on_stream_event_out(tp, offset, stream, event, state)

    def on_message_out(self, tp: Any, offset: int, message: Any) -> None:
        if self._sensors:
            super().on_message_out(tp, offset, message)

    def on_table_get(self, table: Any, key: Any) -> None:
        if self._sensors:
            super().on_table_get(table, key)

    def on_table_set(self, table: Any, key: Any, value: Any) -> None:
        if self._sensors:
            super().on_table_set(table, key, value)

    def on_table_del(self, table: Any, key: Any) -> None:
        if self._sensors:
            super().on_table_del(table, key)

    def on_send_initiated(self, producer: Any, topic: str, *args: Any, **kwargs: Any) -> Any:
        if self._sensors:
            return super().on_send_initiated(producer, topic, *args, **kwargs)
        return None

    def on_send_completed(self, producer: Any, state: Any, metadata: Any) -> None:
        if self._sensors:
            super().on_send_completed(producer, state, metadata)


def log_if_enabled(_original: Any) -> tuple[Any]:
    """`CompositeLogger.log` that formats only what the logger will emit."""

    def log(self: Any, severity: int, message: str, *args: Any, **kwargs: Any) -> None:
        logger = self.logger
        if logger.isEnabledFor(severity):
            kwargs.setdefault("stacklevel", 2)
            logger.log(severity, self.format(severity, message, *args, **kwargs), *args, **kwargs)

    return (log,)


class _Done:
    """An awaitable that is already complete: awaiting it does not suspend."""

    __slots__ = ()

    def __await__(self) -> Generator[Any, None, None]:
        return iter(())  # type: ignore[return-value]


_DONE = _Done()
_turns = [0]


def rare_sleep(delay: float, result: Any = None) -> Any:
    """`asyncio.sleep`, except that `sleep(0)` yields only every `YIELD_EVERY` calls."""
    if delay:
        return asyncio.sleep(delay, result)
    _turns[0] += 1
    if _turns[0] >= YIELD_EVERY:
        _turns[0] = 0
        return asyncio.sleep(0)
    return _DONE


def stream_sleep(original: Any) -> tuple[Any]:
    if original is not asyncio.sleep:  # the .pyx fingerprint covers how it is used
        raise RuntimeError("faust._cython.streams.sleep is not asyncio.sleep")
    return (rare_sleep,)


def quick_ebb(base: Any) -> tuple[Any]:
    """`ProducerBuffer.wait_until_ebb` that answers "below the mark" without reading
    `app.conf` (a settings lookup per record: the conductor awaits it for every record).
    Whether the buffer is threaded is read once per buffer; over the mark, or threaded,
    Faust's own wait runs."""

    async def wait_until_ebb(self: Any) -> None:
        threaded = self.__dict__.get("_sluice_threaded")
        if threaded is None:
            threaded = self.__dict__["_sluice_threaded"] = bool(self.app.conf.producer_threaded)
        if threaded or len(self.pending._queue) > self.max_messages:
            await base(self)

    return (wait_until_ebb,)
