"""A one-agent Faust app for the foundation test: upper-cases records from one topic to another.

Configured by environment so the test can point it at unique topics on the session broker.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import faust

app = faust.App(
    os.environ.get("ECHO_APP_ID", "sluice-test-echo"),
    broker=os.environ["ECHO_BROKER"],
    store="memory://",
    web_enabled=False,
    datadir=os.environ.get("ECHO_DATADIR", "/tmp/sluice-test-echo"),
    topic_allow_declare=False,
)
source = app.topic(
    os.environ["ECHO_IN"], value_type=bytes, value_serializer="raw", key_serializer="raw"
)
sink = app.topic(
    os.environ["ECHO_OUT"], value_type=bytes, value_serializer="raw", key_serializer="raw"
)


@app.agent(source)
async def echo(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    async for event in stream.events():
        await sink.send(key=event.key, value=event.value.upper())
        yield None
