"""`produce_orders` stamps an order when it is placed: after the rate limiter and the
backpressure throttle (whose lag measurement is a blocking admin query), so the time a
producer spends waiting never shows as the pipeline's latency."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.serde import serde_for
from pipelines.settings import Settings
from producers import orders
from producers.generator import GeneratorConfig, OrderGenerator
from producers.sender import SendStats


class _Sender:
    def __init__(self, _settings: Settings) -> None:
        self.values: list[bytes] = []

    def warm(self, *_args: Any) -> None:
        pass

    def poll(self, _seconds: float = 0.0) -> None:
        pass

    def send(self, _topic: str, _key: bytes, value: bytes) -> None:
        self.values.append(value)

    def close(self) -> SendStats:
        return SendStats()


def test_an_order_is_stamped_after_the_throttle_let_it_go(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000.0]
    senders: list[_Sender] = []

    def sender(settings: Settings) -> _Sender:
        senders.append(_Sender(settings))
        return senders[-1]

    class _Throttle:
        throttled_s = 0.0
        sleep: Any = None

        def __call__(self, _sender: object) -> None:
            now[0] += 5.0  # a slow lag measurement, or a pause on backpressure

    monkeypatch.setattr(orders, "require_topics", lambda *_a: None)
    monkeypatch.setattr(orders, "EventSender", sender)
    monkeypatch.setattr(orders, "OrderGenerator", lambda cfg: OrderGenerator(cfg, lambda: now[0]))
    settings = Settings()
    run = orders.OrderRun(count=2, generator=GeneratorConfig(seed=1))
    orders.produce_orders(settings, run, throttle=_Throttle())  # type: ignore[arg-type]
    serde = serde_for(settings)
    placed = [serde.decode(value)["placed_at"] for value in senders[0].values]
    assert placed == [1_005_000, 1_010_000]
