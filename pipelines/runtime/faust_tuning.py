"""Everything Sluice changes in Faust, in one place, applied once when an app is made.

Faust's per-record machinery costs ten times the work of a bare aiokafka loop
(`/work/shared/notes/faust-cost.md`, `bench/faust_floor.py`). A stage stays a Faust app
(agents, tables, changelogs, rebalancing, `faust -A ... worker`, web views); what it stops
paying for is listed in `PATCHES` (class-level replacements, each with the fingerprint of
the source it replaces) and done per app by `tune`. Faust's internals are not an
interface, so this is written for the versions in `WRITTEN_FOR` and refuses any other:
`check_versions` raises `UnsupportedFaust`, which the stage worker turns into one line
and exit code 1 before anything starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib.metadata
import inspect
from collections.abc import Collection
from typing import Any

import faust
from aiokafka import partitioner as aiokafka_partitioner
from aiokafka.consumer.fetcher import Fetcher
from aiokafka.producer.producer import AIOKafkaProducer
from faust import streams
from faust.transport import consumer as faust_consumer
from faust.transport.conductor import Conductor
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.transport.producer import ProducerBuffer
from mode.utils.logging import CompositeLogger

from pipelines.errors import PrerequisiteError
from pipelines.runtime import drain, partition, quiet, raw, send
from pipelines.runtime.patching import Patch, Target, apply, original, shipped_source

try:  # shipped compiled in faust-streaming's wheels; check_versions requires them
    from faust._cython import streams as cython_streams
    from faust.transport._cython import conductor as cython_conductor
except ImportError:  # pragma: no cover - a source build without Cython
    cython_streams = cython_conductor = None

# What this module was written and measured against: the patches replace these exact
# functions. A new version needs its fingerprints re-read and the crash tests re-run.
WRITTEN_FOR = {"faust-streaming": "0.15.3", "mode-streaming": "0.7.1"}
PRODUCER_BUFFER_MAX = 5000
GC_YOUNG = 20_000  # allocations between young-generation collections (Python: 700)


class UnsupportedFaust(PrerequisiteError):
    """The installed Faust (or mode) is not a version the runtime's patches were written for."""


def check_versions() -> None:
    """Raise `UnsupportedFaust` unless every distribution in `WRITTEN_FOR` is that version."""
    for dist, wanted in WRITTEN_FOR.items():
        try:
            found = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            found = "none"
        if found != wanted:
            raise UnsupportedFaust(
                f"{dist} {found} is installed, but Sluice's Faust runtime was written for "
                f"{wanted} (it replaces some of its internals): install {dist}=={wanted}"
            )
    if cython_streams is None or cython_conductor is None:
        raise UnsupportedFaust(
            "faust-streaming's compiled Cython extensions are missing (a source build?): "
            "install its binary wheel"
        )


def _idempotent_producer(base: Any) -> tuple[Any]:
    """Give every Faust producer `enable_idempotence` (faust-streaming does only in
    transactions). When a broker dies mid-request the producer retries the batch; without
    idempotence the retry can append it twice, and an outcome record (our table changelog
    *is* the output topic) would appear twice. Found by the broker-failover test."""

    def settings_extra(self: Any) -> Any:
        return {**base(self), "acks": "all", "enable_idempotence": True}

    return (settings_extra,)


def _started_producer(base: Any) -> tuple[Any]:
    """`Topic._get_producer` without three event-loop turns per send once started.

    Every `Topic.publish_message` (each `topic.send`, each table changelog record) asks
    for the producer through `App.maybe_start_producer`, a `stampede` wrapper that awaits
    `sleep(0)` up to three times per call even when the producer runs already. Once it
    has started (and no transaction picks another producer) it is returned as is."""

    async def _get_producer(self: Any) -> Any:
        app = self.app
        producer = app._producer
        if producer is not None and producer.started and not app.in_transaction:
            return producer
        return await base(self)

    return (_get_producer,)


def _kept(*originals: Any) -> tuple[Any, ...]:
    """For changes made per app or by subclassing: nothing replaced at class level, but
    the fingerprints say when what they rely on has changed."""
    return originals


def _source_of(owner: Any, name: str) -> Any:
    return lambda: inspect.getsource(original(owner, name))


PATCHES: tuple[Patch, ...] = (
    Patch(
        "inline_drain",
        "hand records to the conductor inline; Faust's wait_first race only when it would block",
        (
            Target(faust_consumer.Consumer, "_drain_messages", "44a2500309e83c63"),
            # kept: the inline hand-over reads the handler map the way on_message does
            Target(Conductor, "_compile_message_handler", "9fbc0538097aa4ec"),
        ),
        lambda _original, handler: (drain.drain_messages, handler),
    ),
    Patch(
        "raw_decode",
        "a raw-bytes topic builds its events directly, without the codec round trip",
        (Target(faust.Schema, "compile", "d46eec5ce3195b2c"),),
        raw.raw_decode,
    ),
    Patch(
        "partition_lists_per_metadata",
        "a keyed send reuses the topic's partition lists until the metadata is refreshed",
        (Target(AIOKafkaProducer, "_partition", "e45fa9c539d431d1"),),
        partition.partition_lists_per_metadata,
    ),
    Patch(
        "unpacked_murmur2",
        "Kafka's key hash reads the key's words with one struct call (same partitions)",
        (
            Target(aiokafka_partitioner, "murmur2", "62179ca184949379"),
            # kept: the default partitioner calls the module's murmur2 by name
            Target(aiokafka_partitioner.DefaultPartitioner, "__call__", "4911320054e76343"),
        ),
        lambda _murmur2, call: (partition.murmur2, call),
    ),
    Patch(
        "quick_ebb",
        "the conductor's per-record producer-buffer check without a settings lookup",
        (Target(ProducerBuffer, "wait_until_ebb", "758dd5744044071b"),),
        quiet.quick_ebb,
    ),
    Patch(
        "log_if_enabled",
        "build mode's service-prefixed log messages only for enabled levels",
        (Target(CompositeLogger, "log", "04776bdb461b1905"),),
        quiet.log_if_enabled,
    ),
    Patch(
        "stream_sleep",
        "the stream iterator turns the event loop every 100 records, not every record",
        (
            Target(
                cython_streams,
                "sleep",
                "0041622f4a251188",
                shipped_source(cython_streams, "streams.pyx"),
            ),
        ),
        quiet.stream_sleep,
    ),
    Patch(
        "producer_buffer_bound",
        "table writes queue in the producer buffer; at Faust's 100 every busy agent stalls "
        "on 0.1 s waits, 5,000 keeps memory bounded still",
        (
            Target(
                ProducerBuffer,
                "max_messages",
                "758dd5744044071b",
                _source_of(ProducerBuffer, "wait_until_ebb"),
            ),
        ),
        lambda _original: (PRODUCER_BUFFER_MAX,),
    ),
    Patch(
        "started_producer",
        "a send gets the running producer without the start-up stampede's loop turns",
        (Target(faust.Topic, "_get_producer", "93292ab6a147592f"),),
        _started_producer,
    ),
    Patch(
        "lean_topic_send",
        "topic.send without FutureMessage and its callback when nothing needs them",
        (Target(faust.Topic, "send", "723a74d7c6897101"),),
        send.lean_send,
    ),
    Patch(
        "direct_produce",
        "a plain record goes from the driver to aiokafka's accumulator (runtime.send)",
        (Target(faust_aiokafka.Producer, "send", "0b5bd08f52e5e2a9"),),
        send.direct_produce,
    ),
    Patch(
        "idempotent_producer",
        "every producer is idempotent (acks=all): a retried batch is never appended twice",
        (Target(faust_aiokafka.Producer, "_settings_extra", "a4c7bc41b6382223"),),
        _idempotent_producer,
    ),
    Patch(
        "quiet_sensors",
        "no Monitor, and no per-record sensor calls while no sensor is installed (per app)",
        (
            Target(faust.App, "on_init_dependencies", "7621a70a9b01f93f"),
            Target(faust.Stream, "__init__", "8a6dea3405cd68e6"),
        ),
        _kept,
    ),
    Patch(
        "cython_optimizations",
        "the Cython stream iterator and conductor take their repaired fast paths (per app)",
        (
            Target(
                cython_conductor,
                "ConductorHandler",
                "dde1f974267881cf",
                shipped_source(cython_conductor, "conductor.pyx"),
            ),
            Target(
                cython_streams,
                "StreamIterator",
                "0041622f4a251188",
                shipped_source(cython_streams, "streams.pyx"),
            ),
        ),
        _kept,
    ),
    Patch(
        "no_spinner",
        "the stage Worker drops Faust's spinner log hook, which turns the root logger to "
        "DEBUG (pipelines.runtime.faustapp.Worker)",
        (Target(faust.Worker, "_setup_spinner_handler", "18cb28ef5b3de212"),),
        _kept,
    ),
    Patch(
        "acting_for_an_event",
        "a batch writes each table key for its own event (pipelines.runtime.context)",
        (Target(streams, "current_event", "3b821f1a78d86a58"),),
        _kept,
    ),
    Patch(
        "short_fetch_wait",
        "a batching app caps its fetch long-poll and untaken records' hold (runtime.fetch)",
        (Target(Fetcher, "__init__", "bf21ecb7e0f210b7"),),
        _kept,
    ),
    Patch(
        "backpressure_resume_guard",
        "the backpressure controller wraps each consumer's resume_partitions (per app)",
        (Target(faust_consumer.Consumer, "resume_partitions", "afe6b7c02a41d63c"),),
        _kept,
    ),
)


def all_patches() -> tuple[Patch, ...]:
    from pipelines.runtime import commits  # it registers through this package

    return PATCHES + commits.PATCHES


def apply_patches(skip: Collection[str] = ()) -> None:
    """Apply every class-level patch (once per process); `skip` is for benchmarks only."""
    for patch in all_patches():
        if patch.name not in skip:
            apply(patch)


def use_uvloop() -> bool:
    """Make uvloop the event loop of the worker about to start (both `sluice worker` and
    `faust -A ... worker` make their loop after importing the app). Left alone when a
    loop is already running: a running loop cannot be swapped."""
    with contextlib.suppress(RuntimeError):
        asyncio.get_running_loop()
        return False
    import uvloop

    if not isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy):
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def use_gc_thresholds() -> None:
    """Collect the young generation every `GC_YOUNG` allocations instead of Python's 700.

    Every record allocates a dozen short-lived objects (message, event, futures, tuples),
    so at the default a worker runs a young-generation collection every few dozen records,
    each walking whatever survived since. Measured on the floor forwarder: 27.4 -> 25.9 µs
    per record (medians of 5); memory stays bounded, collections just come in larger steps.
    """
    _young, middle, old = gc.get_threshold()
    gc.set_threshold(GC_YOUNG, middle, old)


def tune(app: faust.App, *, strict: bool = False, skip: Collection[str] = ()) -> bool:
    """Apply the runtime to `app` (before its agents and tables are made).

    On an unsupported Faust nothing is changed and False is returned (`strict`: raise):
    the stage worker's start-up refuses to run then (`check_versions`). `skip` names
    levers to leave out (patch names, "uvloop" or "gc_thresholds"): the benchmarks
    measure each lever that way; the stages never skip any.
    """
    try:
        check_versions()
    except UnsupportedFaust:
        if strict:
            raise
        return False
    apply_patches(skip)
    if "quiet_sensors" not in skip:
        app.sensors = quiet.QuietSensors(app)
    if "cython_optimizations" not in skip:
        app.conf.cython_optimizations = True
    if "uvloop" not in skip:
        use_uvloop()
    if "gc_thresholds" not in skip:
        use_gc_thresholds()
    return True
