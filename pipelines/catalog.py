"""The topic catalog: every pipeline topic, declared once.

Topic creation, Faust topic declarations, the docs and the tests all read this list, so
a topic's partition count, key and schema cannot drift between the code that writes it
and the code that reads it. Topics whose records meet in one table share a key and a
partition count (co-partitioning); the catalog gives every pipeline topic the same
count for that reason. Which stage reads and writes each topic is `pipelines.topology`
(the app ids and internal topic names are re-exported here for existing callers).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

from pipelines import topology
from pipelines.topology import DELAY_PREFIX, DELAY_TOPICS, internal

DAY_MS = 24 * 3600 * 1000

CleanupPolicy = Literal["delete", "compact", "compact,delete"]


@dataclass(frozen=True)
class TopicSpec:
    """One topic's contract: what it is keyed by, what it carries, how long it lives."""

    name: str
    key: str
    value_schema: str | None
    doc: str
    retention_ms: int = 7 * DAY_MS
    cleanup_policy: CleanupPolicy = "delete"
    partitions: int | None = None  # None: the cluster-wide pipeline partition count
    extra_config: dict[str, str] = field(default_factory=dict)

    def partition_count(self, default: int) -> int:
        """This topic's partition count under the given pipeline default."""
        return self.partitions if self.partitions is not None else default

    def config(self, replication: int) -> dict[str, str]:
        """Topic-level broker configuration for a cluster of the given replication."""
        conf = {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            "min.insync.replicas": str(min_insync_replicas(replication)),
        }
        conf.update(self.extra_config)
        return conf


def replication_for(broker_count: int) -> int:
    """Replication factor for a cluster: every broker up to three copies."""
    return max(1, min(3, broker_count))


def min_insync_replicas(replication: int) -> int:
    """Two in-sync copies where there are three, so one broker may die without data loss."""
    return 2 if replication >= 3 else 1


NS = "sluice"

# Declared in the topology; kept importable from here for the code that reads them here.
APP_IDS = topology.APP_IDS
PLACED_REKEYED = topology.PLACED_REKEYED
STOCK_REQUESTS = topology.STOCK_REQUESTS
STOCK_RESULTS = topology.STOCK_RESULTS
PARTIALS = topology.PARTIALS

CATALOG: tuple[TopicSpec, ...] = (
    TopicSpec(
        "orders.placed",
        "order_id",
        f"{NS}.orders.OrderPlaced",
        "Orders accepted by the intake API or a producer script.",
    ),
    TopicSpec(
        "orders.confirmed",
        "order_id",
        f"{NS}.orders.OrderConfirmed",
        "Orders that reserved stock and were paid: one per order.",
    ),
    TopicSpec(
        "orders.rejected",
        "order_id",
        f"{NS}.orders.OrderRejected",
        "Orders that ended without confirmation, with the reason: one per order.",
    ),
    TopicSpec(
        "orders.status",
        "order_id",
        f"{NS}.orders.OrderStatus",
        "Latest status per order for the intake API; compacted.",
        cleanup_policy="compact",
    ),
    TopicSpec(
        "orders.dlq",
        "order_id",
        None,
        "Records the orders stage could not decode or process, with the reason in headers.",
        retention_ms=30 * DAY_MS,
    ),
    TopicSpec(
        "inventory.reservations",
        "sku",
        f"{NS}.inventory.ReservationRequested",
        "Per-line stock requests, keyed by SKU: restocks (`sluice produce inventory`); the "
        "order stage forwards them to its own batched requests topic.",
    ),
    TopicSpec(
        "inventory.results",
        "order_id",
        f"{NS}.inventory.ReservationResult",
        "Per-line reservation results (v1); read by the saga for records from before "
        "requests were batched, no longer written.",
    ),
    TopicSpec(
        "notifications.email",
        "notification_id",
        f"{NS}.notifications.NotificationRequested",
        "Email notifications to send.",
    ),
    TopicSpec(
        "notifications.sms",
        "notification_id",
        f"{NS}.notifications.NotificationRequested",
        "SMS notifications to send.",
    ),
    TopicSpec(
        "notifications.push",
        "notification_id",
        f"{NS}.notifications.NotificationRequested",
        "Push notifications to send.",
    ),
    *(
        TopicSpec(
            topic,
            "notification_id",
            f"{NS}.notifications.NotificationRequested",
            f"Failed sends waiting about {topic.removeprefix(DELAY_PREFIX)} for their "
            "not-before time (delay topic).",
        )
        for topic in DELAY_TOPICS  # one per step of topology.RETRY_LADDER_S
    ),
    TopicSpec(
        "notifications.results",
        "notification_id",
        f"{NS}.notifications.NotificationResult",
        "One final result per notification: delivered or dead-lettered.",
    ),
    TopicSpec(
        "notifications.dlq",
        "notification_id",
        None,
        "Notifications that exhausted their retries or could not be decoded.",
        retention_ms=30 * DAY_MS,
    ),
    TopicSpec(
        "analytics.dlq",
        "source key",
        None,
        "Records the analytics stage could not decode, with the reason in headers.",
        retention_ms=30 * DAY_MS,
    ),
    TopicSpec(
        "analytics.windows",
        "window_key",
        f"{NS}.analytics.WindowAggregate",
        "Closed event-time windows; compacted so the latest per window is kept.",
        cleanup_policy="compact",
    ),
)


def _changelog(app: str, table: str, doc: str) -> TopicSpec:
    return TopicSpec(
        internal(app, f"{table}-changelog"),
        "table key",
        None,
        doc,
        cleanup_policy="compact",
        retention_ms=-1,
    )


def _leader(app: str) -> TopicSpec:
    return TopicSpec(
        internal(app, "__assignor-__leader"),
        "none",
        None,
        "Faust's leader election topic for the app.",
        partitions=1,
    )


#: Topics Faust needs for each stage's tables, created with the rest so that a worker never
#: auto-creates one with the wrong partition count.
INTERNAL: dict[str, tuple[TopicSpec, ...]] = {
    "orders": (
        _changelog("orders", "orders", "Saga state per order (the orders app's table)."),
        _changelog(
            "orders",
            "inventory",
            "Stock decisions per request, each with the levels it set (the stock per SKU).",
        ),
        TopicSpec(
            PLACED_REKEYED,
            "order_id",
            f"{NS}.orders.OrderPlaced",
            "Placed orders whose record key or partition was not their order id's (keyless, "
            "or from a producer that keys otherwise), re-keyed by order id for the saga.",
        ),
        TopicSpec(
            STOCK_REQUESTS,
            "none (sent to the SKUs' partition)",
            f"{NS}.inventory.StockRequests",
            "The saga's stock requests, one per order and SKU partition, batched per "
            "partition; restocks from inventory.reservations are forwarded here too.",
        ),
        TopicSpec(
            STOCK_RESULTS,
            "none (sent to the orders' partition)",
            f"{NS}.inventory.StockResults",
            "The stock owner's decisions, batched per order partition, for the saga.",
        ),
        _leader("orders"),
    ),
    "notifications": (
        _changelog("notifications", "attempts", "Per notification: attempts so far and in flight."),
        _leader("notifications"),
    ),
    "analytics": (
        _changelog("analytics", "partials", "Per source partition: window partials and offsets."),
        _changelog("analytics", "merged", "Per window: the latest partial of each partition."),
        TopicSpec(
            PARTIALS,
            "window_key",
            None,
            "Window partials, repartitioned by window for the merge.",
            cleanup_policy="compact",
        ),
        _leader("analytics"),
    ),
}


def all_specs() -> tuple[TopicSpec, ...]:
    """The pipeline topics and every stage's internal topics."""
    return CATALOG + tuple(spec for specs in INTERNAL.values() for spec in specs)


def by_name() -> dict[str, TopicSpec]:
    """The catalog indexed by topic name."""
    return {spec.name: spec for spec in CATALOG}


def get(name: str) -> TopicSpec:
    """One topic's spec; a clear error for a name the catalog does not know."""
    from pipelines.errors import TopicError

    try:
        return by_name()[name]
    except KeyError:
        known = ", ".join(sorted(by_name()))
        raise TopicError(f"unknown topic {name!r}; the catalog has: {known}") from None


def value_schemas(names: Iterable[str]) -> dict[str, str]:
    """Each named topic's value schema: for decoding what a stage reads or gating what it
    writes. A topic without one (a DLQ carries raw records) is an error, not a None."""
    from pipelines.errors import TopicError

    found: dict[str, str] = {}
    for name in names:
        schema = get(name).value_schema
        if schema is None:
            raise TopicError(f"topic {name!r} carries raw records: it has no value schema")
        found[name] = schema
    return found
