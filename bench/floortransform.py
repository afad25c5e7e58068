"""The Faust contender of the floor bench's transform rounds: `bench.floorapp`, transforming.

Run as `faust -A bench.floortransform:app worker` with FLOOR_MODE=forward. It is the floor
app itself (same settings, same agent, whatever Faust tuning that app applies) whose
sink transforms each value with `bench.floorcodec` before sending it: the agent's
`await sink.send(key=..., value=...)` then decodes, discounts and re-encodes the record
in the agent, as the other contenders do in their loops. The bench checks the output
topic after each round, so an app that stopped sending through `sink` fails loudly
instead of timing a plain forward.
"""

from __future__ import annotations

from typing import Any

import faust

from bench import floorapp
from bench.floorcodec import OrderCodec


class TransformingSink:
    """A topic's `send`, with the value transformed first."""

    def __init__(self, topic: faust.TopicT, codec: OrderCodec) -> None:
        self.topic, self.codec = topic, codec

    async def send(self, *, key: Any = None, value: bytes, **kwargs: Any) -> Any:
        """Send `codec.transform(value)` where the agent would have sent `value`."""
        return await self.topic.send(key=key, value=self.codec.transform(value), **kwargs)


if not isinstance(getattr(floorapp, "sink", None), faust.TopicT):
    raise RuntimeError("bench.floorapp no longer has a `sink` topic to transform through")
floorapp.sink = TransformingSink(floorapp.sink, OrderCodec())  # type: ignore[assignment]
app = floorapp.app
