"""`Consumer.getmany` with its per-record bookkeeping done once per fetch.

Faust's `Consumer.getmany` (which the fetch loop iterates) asks, for every record, the
consumer thread for the partition's high-water mark (three calls deep into aiokafka's
subscription state) and hands it to the Monitor, whose only use of it is the web view's
end-offset figure. The mark is read when a fetch's records are taken, so once per
partition per fetch says the same thing. The commit guard's filter
(`pipelines.runtime.commits`) is applied here too, as a plain call per record: another
async-generator layer around this one would cost a suspension per record.

Everything else is Faust's, in its order: the round-robin over partitions, the stops when
the flow is suspended or the consumer generation changes, the active-partition filter,
and the seek back to the committed offsets when called while the flow is stopped.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from faust.types import TP

Keep = Callable[[TP, Any], bool]


async def fetched(consumer: Any, timeout: float, keep: Keep) -> AsyncIterator[tuple[TP, Any]]:
    """The records of one fetch that `keep` accepts, as Faust's `getmany` yields them."""
    records, active = await consumer._wait_next_records(timeout)
    app = consumer.app
    generation_id = app.consumer_generation_id
    if records is None or consumer.should_stop:
        return
    if not consumer.flow_active:
        consumer.log.dev("getmany called while flow not active. Seek back to committed offsets.")
        try:
            await consumer.perform_seek()
        except Exception as exc:  # Faust's own handling: logged, the loop goes on
            consumer.log.warning(f"exception performing seek when flow not active {exc}")
        return
    to_message = consumer._to_message
    buffered = consumer._buffered_partitions
    track_end = app.monitor.track_tp_end_offset
    tracked: set[TP] = set()
    for tp, record in consumer.scheduler.iterate(records):
        if not consumer.flow_active:
            break
        if app.consumer_generation_id != generation_id:
            consumer.log.dev("Generation id changed. Cancelling getmany.")
            break
        if active is None or tp in active or tp in buffered:
            if tp not in tracked:
                tracked.add(tp)
                track_end(tp, consumer.highwater(tp))
            message = to_message(tp, record)
            if keep(tp, message):
                yield tp, message
