"""`sluice produce orders`: synthetic orders onto orders.placed, at a steady rate.

Records are keyed by order id: the order stage needs all events of one order in one
partition and in order, and nothing needs two orders of one customer to be ordered
against each other, so the order id spreads load evenly over partitions.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pipelines.catalog import get as topic_spec
from pipelines.progress import Reporter
from pipelines.serde import serde_for
from pipelines.settings import Settings
from producers.generator import GeneratorConfig, OrderGenerator
from producers.sender import EventSender, RateLimiter, SendStats, require_topics
from producers.throttle import Throttle

TOPIC = "orders.placed"


@dataclass(frozen=True)
class OrderRun:
    """One `produce orders` invocation."""

    count: int
    rate: float = 0.0
    generator: GeneratorConfig = field(default_factory=GeneratorConfig)
    start_index: int = 0


def produce_orders(
    settings: Settings,
    run: OrderRun,
    reporter: Reporter | None = None,
    throttle: Throttle | None = None,
) -> SendStats:
    """Generate and send `run.count` orders; returns the delivery statistics."""
    require_topics(settings, TOPIC)
    schema = topic_spec(TOPIC).value_schema
    assert schema is not None
    serde = serde_for(settings)
    topic = settings.topic(TOPIC)
    generator = OrderGenerator(run.generator)
    limiter = RateLimiter(run.rate)
    sender = EventSender(settings)
    sender.warm(topic, settings.request_timeout_s)
    try:
        for n in range(run.start_index, run.start_index + run.count):
            limiter.acquire(idle=sender.poll)
            if throttle is not None:
                throttle.sleep = sender.poll  # keep serving delivery reports while waiting
                throttle(sender)  # may measure the lag first: a blocking admin query
            order = generator.make(n)  # stamped now, when it is placed, not before the waits
            value = serde.encode(schema, order, topic=topic)
            sender.send(topic, order["order_id"].encode(), value)
            if reporter is not None:
                reporter.advance()
    finally:
        stats = sender.close()
    if throttle is not None:
        stats.throttled_s = throttle.throttled_s
    return stats
