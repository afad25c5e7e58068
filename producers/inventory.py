"""`sluice produce inventory`: starting stock for every SKU, as RESTOCK requests.

Stock lives in the order stage's table, whose only writer is the stock owner, and every
change of a SKU reaches it through one partition of one topic: the orders app's stock
requests topic (`catalog.STOCK_REQUESTS`), where the saga sends reservations and
releases. Seeding writes its restocks there, in the SKU's partition, so they come before
the requests of any order produced after the seed was acknowledged. (Seeding through
inventory.reservations, which the stock owner forwards into that topic, raced the orders:
a reservation could overtake the first restock of its SKU and end the order
`INVALID: UNKNOWN_SKU`.) Each restock carries a stable adjustment id
(`restock-<batch>-<sku>`), which the stage deduplicates, so seeding the same batch twice
does not double the stock.
"""

from __future__ import annotations

import time

from pipelines import domain
from pipelines.catalog import STOCK_REQUESTS
from pipelines.progress import Reporter
from pipelines.serde import serde_for
from pipelines.settings import Settings
from pipelines.stages import stock
from producers.sender import EventSender, SendStats, require_topics

TOPIC = STOCK_REQUESTS
SCHEMA = "sluice.inventory.StockRequests"


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
    serde = serde_for(settings)
    sender = EventSender(settings)
    topic = settings.topic(TOPIC)
    now_ms = int(time.time() * 1000)
    try:
        for index in range(skus):
            sku = domain.sku_code(index)
            record = restock_request(sku, domain.initial_stock(sku) * scale, batch, now_ms)
            value = serde.encode(SCHEMA, {"requests": [stock.as_group(record)]}, topic=topic)
            partition = stock.sku_partition(sku, settings.partitions)
            sender.send(topic, sku.encode(), value, partition=partition)
            if reporter is not None:
                reporter.advance()
    finally:
        stats = sender.close()
    return stats
