"""`sluice produce inventory`: starting stock for every SKU, as RESTOCK requests.

Stock lives in the order stage's table, whose only writer is the agent consuming
inventory.reservations; seeding through that same topic (keyed by SKU) keeps one writer
per SKU and puts restocks in order with reservations. Each restock carries a stable
adjustment id (`restock-<batch>-<sku>`), which the stage deduplicates, so seeding the
same batch twice does not double the stock.
"""

from __future__ import annotations

import time

from pipelines import domain
from pipelines.catalog import get as topic_spec
from pipelines.progress import Reporter
from pipelines.serde import serde_for
from pipelines.settings import Settings
from producers.sender import EventSender, SendStats, require_topics

TOPIC = "inventory.reservations"


def restock_request(sku: str, quantity: int, batch: str, now_ms: int) -> dict[str, object]:
    """One RESTOCK request in the ReservationRequested shape."""
    return {
        "order_id": f"restock-{batch}-{sku}",
        "sku": sku,
        "quantity": quantity,
        "line_index": 0,
        "line_count": 1,
        "action": "RESTOCK",
        "requested_at": now_ms,
    }


def seed_inventory(
    settings: Settings,
    skus: int,
    batch: str = "initial",
    reporter: Reporter | None = None,
    scale: int = 1,
) -> SendStats:
    """Send the starting stock (`domain.initial_stock` times `scale`) of the first `skus` SKUs."""
    require_topics(settings, TOPIC)
    schema = topic_spec(TOPIC).value_schema
    assert schema is not None
    serde = serde_for(settings)
    sender = EventSender(settings)
    topic = settings.topic(TOPIC)
    now_ms = int(time.time() * 1000)
    try:
        for index in range(skus):
            sku = domain.sku_code(index)
            record = restock_request(sku, domain.initial_stock(sku) * scale, batch, now_ms)
            sender.send(topic, sku.encode(), serde.encode(schema, record, topic=topic))
            if reporter is not None:
                reporter.advance()
    finally:
        stats = sender.close()
    return stats
