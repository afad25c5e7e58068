"""A one-agent stage app for the health test: its agent raises on the value b"poison".

Built like the real stages (`make_app`, `install_web`), so it has their worker, start-up
checks and /health; configured from the environment (Settings, FRAGILE_IN for its input).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import faust

from pipelines.runtime.faustapp import RAW, StageMetrics, install_web, make_app
from pipelines.settings import get_settings

settings = get_settings()
app = make_app("analytics", settings)
source = app.topic(os.environ["FRAGILE_IN"], partitions=settings.partitions, **RAW)
install_web(app, StageMetrics("analytics"))


@app.agent(source)
async def fragile(stream: faust.StreamT[bytes]) -> AsyncIterator[None]:
    async for value in stream:
        if value == b"poison":
            raise ValueError(f"poison value {value!r}")
        yield None
