"""The consumer's fetch loop, handing records to the streams without a task per record.

Faust's `Consumer._drain_messages` hands every fetched record to the conductor through
`Service.wait_first(callback(message), suspend_flow.wait())`: two tasks, two more for the
service's stop and crash events, an `asyncio.wait` and four cancellations, per record,
so that a hand-over blocked on a full stream buffer can be abandoned when a rebalance
suspends the flow. That race is what most records pay for and almost none need: the
conductor's callback only blocks when the flow is suspended, the producer buffer is over
its bound, the conductor is re-indexing its partitions, or a stream buffer of the
record's partition is full. When none of that holds, the callback runs to its end
without suspending, so it is awaited inline; otherwise Faust's race is used, as before.

A full stream buffer is the steady state of a backlog (the fetcher is faster than the
agent), and racing per record there would put the race back on every record. So a full
buffer is waited out once, until it has drained to Faust's own pressure-drop mark (the
queue's `in_pressure_high_state` callback), in a race with the flow's suspension like
Faust's; the records after it go inline again.

Everything else is Faust's loop, in its order: the commit every `broker_commit_every`
acknowledgements, the read offset set after the hand-over, and records behind the read
offset dropped. One thing is not: where the offsets of a stream input jump, Faust records
a gap and later commits across it; here the skipped records are read again first
(`reread_skipped`), since on a stage input a jump means records nobody processed. The
commit guard's filters (`pipelines.runtime.commits`) sit in `getmany`, below this loop,
and see every record.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from faust.transport.consumer import CONSUMER_FETCHING
from faust.types import TP

log = logging.getLogger(__name__)

YIELD_EVERY = 100  # records handed over between two turns of the event loop (Faust's)
REREAD_S = 300.0  # a skipped range read again and still missing this soon after is gone


async def wait_for_room(consumer: Any, tp: TP) -> None:
    """Wait until the full stream buffers of `tp` have drained to their pressure-drop mark
    (or the flow is suspended, or the consumer stops: `wait_first` returns then)."""
    full = [
        channel.queue
        for channel in consumer.app.topics._tp_index.get(tp, ())
        if channel.queue.full()
    ]
    if not full:
        return
    room = asyncio.Event()
    for queue in full:
        queue.in_pressure_high_state(room.set)  # called back at the pressure-drop mark
    await consumer.wait_first(room.wait(), consumer.suspend_flow.wait())


def ready_check(consumer: Any) -> Callable[[TP], bool]:
    """A test, per record's partition, that the conductor's callback cannot block now."""
    app = consumer.app
    flow_active = app.flow_control.is_active
    flow_suspended = consumer.suspend_flow.is_set
    conductor = app.topics
    lock_held = conductor._tp_to_callback_lock.locked
    channels_of = conductor._tp_index.get
    buffer = app.producer.buffer
    if app.conf.producer_threaded:
        return lambda _tp: False  # its buffer's size is not ours to read: always race

    pending = buffer.pending._queue  # the deque behind ProducerBuffer.size

    def ready(tp: TP) -> bool:
        if flow_suspended() or not flow_active() or lock_held():
            return False
        if len(pending) > buffer.max_messages:
            return False  # the callback would wait for the producer buffer to ebb
        for channel in channels_of(tp, ()):  # noqa: SIM110 - a loop, not all(): runs per record
            if channel.queue.full():
                return False
        return True

    return ready


async def room_made(consumer: Any, tp: TP, ready: Callable[[TP], bool]) -> bool:
    """Wait out full stream buffers of `tp` once; whether the hand-over is inline now."""
    await wait_for_room(consumer, tp)
    return ready(tp)


def direct_hand_over(consumer: Any) -> Callable[[Any], Awaitable[None]]:
    """The conductor's callback without its lock, for a record `ready` has cleared.

    `Conductor.on_message` takes the partition-map lock only to read the record's
    handler; `ready` has just seen that lock free, and nothing has yielded since, so the
    handler is read directly (the map is updated in place, never replaced). Any other
    consumer callback is called as is."""
    conductor = consumer.app.topics
    if consumer.callback is not conductor.on_message:
        return cast(Callable[[Any], Awaitable[None]], consumer.callback)
    handler_of = conductor._tp_to_callback.__getitem__

    def hand_over(message: Any) -> Awaitable[None]:
        return cast(Awaitable[None], handler_of(message.tp)(message))

    return hand_over


async def reread_skipped(consumer: Any, tp: TP, last: int, offset: int) -> bool:
    """Records between the last one handed over and `offset` never reached a stream: seek
    back and read them; False when that was tried for this point already (they are gone).

    Faust records such a jump as a *gap* and later commits across it as if its records
    had been processed. On a stage input (neither compacted nor transactional) a jump
    means records were skipped: a fetch cut short by a stop of the flow, or records left
    stale by a seek that raced with the fetch (the recovery's seek to the committed
    offsets at the end of a rebalance does). Seeking back to `last` (read again too: just
    after a seek Faust's read offset names the next record, not the last) fetches them
    again; the commit guard's filter drops the rest of the fetch in hand. Should the same
    jump come back within `REREAD_S` (retention deleted the records), it is Faust's gap.
    """
    tried: dict[tuple[TP, int], float] = consumer.__dict__.setdefault("_sluice_rereads", {})
    now = time.monotonic()
    if now - tried.get((tp, last), -REREAD_S) < REREAD_S:
        log.warning(
            "%s[%d]: offsets %d..%d are still missing after reading them again; "
            "going on from %d (deleted by retention?)",
            tp.topic,
            tp.partition,
            last + 1,
            offset - 1,
            offset,
        )
        return False
    for key in [key for key, at in tried.items() if now - at >= REREAD_S]:
        del tried[key]  # bounded: only this window's attempts are remembered
    tried[(tp, last)] = now
    log.info(
        "%s[%d]: offsets %d..%d were skipped by the fetch; reading again from %d",
        tp.topic,
        tp.partition,
        last + 1,
        offset - 1,
        last,
    )
    await consumer.seek(tp, last)
    return True


async def drain_messages(self: Any, fetcher: Any) -> None:
    """`Consumer._drain_messages`, with the inline hand-over (see the module docstring)."""
    try:
        await _drain(self, fetcher)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise


async def _drain(self: Any, fetcher: Any) -> None:
    callback = self.callback
    getmany = self.getmany
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    set_flag = self.diag.set_flag
    unset_flag = self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    suspend_flow = self.suspend_flow
    ready = ready_check(self)
    hand_over = direct_hand_over(self)
    since_yield = 0
    sleep = asyncio.sleep
    while not (consumer_should_stop() or fetcher_should_stop()):
        set_flag(CONSUMER_FETCHING)
        ait = cast(AsyncIterator[tuple[TP, Any]], getmany(timeout=1.0))
        await self.sleep(0)  # getmany may not yield at all (Faust's comment)
        if self.should_stop:
            continue
        async for tp, message in ait:
            since_yield += 1
            if since_yield > YIELD_EVERY:
                await sleep(0)
                since_yield = 0
            offset = message.offset
            r_offset = get_read_offset(tp)
            if r_offset is not None and offset < r_offset:
                continue  # already read (Faust logs it at its dev level only)
            gap = offset - (r_offset or 0)
            if gap > 1 and r_offset and acks_enabled_for(message.topic):
                if await reread_skipped(self, tp, r_offset, offset):
                    continue  # sought back: this record comes again, after the skipped ones
                await self._add_gap(tp, r_offset + 1, offset)
            if commit_every is not None and self._n_acked >= commit_every:
                self._n_acked = 0
                await self.commit()
            if ready(tp) or await room_made(self, tp, ready):
                await hand_over(message)
            else:  # suspended, or blocked on the producer buffer: Faust's race
                await self.wait_first(callback(message), suspend_flow.wait())
            set_read_offset(tp, offset)
        unset_flag(CONSUMER_FETCHING)
