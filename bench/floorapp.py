"""The smallest Faust stage: one agent that forwards (or only reads) raw records.

Run by `bench.faust_floor` as `faust -A bench.floorapp:app worker`, configured through
the environment (FLOOR_*). It uses the knobs our stages use where they bear on cost
(at-least-once, raw bytes, the same stream buffer, producer buffer and linger), and no
tables, decoding or metrics: whatever it costs per record, every Faust stage pays. It is
tuned by the stages' runtime (`pipelines.runtime.tune`), as `make_app` tunes every stage,
unless FLOOR_RUNTIME=off (Faust as shipped, for the before/after figures);
FLOOR_SKIP=lever,lever leaves levers out (patch names of `pipelines.runtime`, "uvloop").
When it has handled FLOOR_RECORDS records it writes "<records/s> <CPU s per record>" to
FLOOR_OUT and keeps idling until stopped.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import faust

from pipelines import runtime
from pipelines.runtime.faustapp import Worker
from pipelines.settings import PRODUCER_BATCH_BYTES

RECORDS = int(os.environ.get("FLOOR_RECORDS", "0"))
TOPIC = os.environ.get("FLOOR_TOPIC", "floor")
FORWARD = os.environ.get("FLOOR_MODE", "forward") == "forward"
OUT = Path(os.environ.get("FLOOR_OUT", "floor.out"))
TUNED = os.environ.get("FLOOR_RUNTIME", "on") != "off"

app = faust.App(
    f"floor-{TOPIC}",
    broker=os.environ.get("FLOOR_BROKER", "kafka://127.0.0.1:9092"),
    store="memory://",
    datadir=str(OUT.parent / f"floor-{TOPIC}"),
    web_port=int(os.environ.get("FLOOR_WEB_PORT", "6099")),
    web_bind="127.0.0.1",
    web_host="127.0.0.1",
    processing_guarantee="at_least_once",
    consumer_auto_offset_reset="earliest",
    stream_buffer_maxsize=1000,
    producer_acks=-1,
    producer_linger=0.05,
    producer_max_batch_size=int(os.environ.get("FLOOR_MAX_BATCH", str(PRODUCER_BATCH_BYTES))),
)
if TUNED:
    runtime.tune(app, strict=True, skip=os.environ.get("FLOOR_SKIP", "").split(","))
    app.conf.Worker = Worker  # the stages' worker (no spinner hook turning on DEBUG)
else:
    from faust.transport.producer import ProducerBuffer

    ProducerBuffer.max_messages = 5000  # as the runtime sets it
RAW: dict[str, Any] = {
    "key_type": bytes,
    "value_type": bytes,
    "key_serializer": "raw",
    "value_serializer": "raw",
}
source = app.topic(TOPIC, **RAW)
sink = app.topic(f"{TOPIC}.out", **RAW)


@app.agent(source)
async def forward(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    """Count each record and (in forward mode) send it on unchanged."""
    seen, started, cpu = 0, 0.0, 0.0
    async for event in stream.events():
        if seen == 0:
            started, cpu = time.monotonic(), time.process_time()
        seen += 1
        if FORWARD:
            await sink.send(key=event.key, value=event.value)
        if seen == RECORDS:
            elapsed, used = time.monotonic() - started, time.process_time() - cpu
            OUT.write_text(f"{RECORDS / elapsed:.1f} {used / RECORDS:.9f}\n")
        yield None
