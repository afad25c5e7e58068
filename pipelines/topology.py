"""The pipeline's topology, declared once: which stage reads, writes and watches what.

`STAGES` below is the whole pipeline on one screen. Everything else that needs to know
who touches which topic derives from it: the ACL roles (`pipelines.acls`), the
backpressure edges (`pipelines.backpressure`), the Faust app ids and default web ports,
the analytics sources, the channel -> topic map, the DLQ redrive sources, the demo's
and the tests' lag waits. The retry ladder is declared here too, and the delay topics
(catalog entries, ACLs, the relay's subscription) derive from it. Topic names are catalog
(unprefixed) names; `pipelines.catalog` holds each topic's spec (key, schema, retention).
`tests/unit/test_topology.py` checks the views against each other and the catalog.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: The notification delay ladder in seconds: one delay topic per step, shortest first.
RETRY_LADDER_S: tuple[float, ...] = (1.0, 10.0, 60.0)
DELAY_PREFIX = "notifications.retry."


def delay_topic(step_s: float) -> str:
    """The delay topic of one ladder step: 10.0 -> `notifications.retry.10s`."""
    return f"{DELAY_PREFIX}{step_s:g}s"


def channel_topic(channel: str) -> str:
    """The task topic of one notification channel: EMAIL -> `notifications.email`."""
    return f"notifications.{channel.lower()}"


DELAY_TOPICS = tuple(delay_topic(step) for step in RETRY_LADDER_S)
#: Notification channel (as in `pipelines.rules.CHANNELS`) -> the topic of its tasks.
CHANNEL_TOPICS: Mapping[str, str] = {ch: channel_topic(ch) for ch in ("EMAIL", "SMS", "PUSH")}
CHANNELS = tuple(CHANNEL_TOPICS.values())


@dataclass(frozen=True)
class Relay:
    """A consumer group a stage runs besides its Faust app's own (the retry relay)."""

    group: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...] = ()


@dataclass(frozen=True)
class Stage:
    """One stage: the principal it runs as, what its group consumes and what it writes.

    `inputs` are the catalog topics its app's group consumes, `internal_inputs` the
    internal ones (by suffix: each is named `<app_id>-<suffix>`); `reads` are catalog
    topics it reads outside its group (table changelogs it restores from, topics a view
    tails); `creates` are those Faust declares at start; `watches` is the downstream stage
    whose lag it yields to (backpressure); `legacy_writes` are topics it may still write
    (its ACLs grant it) although the code no longer does.
    """

    name: str
    role: str  # the ACL principal
    app_id: str | None = None  # Faust app id = consumer group; None: not a Faust app
    web_port: int | None = None
    inputs: tuple[str, ...] = ()
    internal_inputs: tuple[str, ...] = ()
    outputs: tuple[str, ...] = ()
    dlq: str | None = None
    legacy_writes: tuple[str, ...] = ()
    reads: tuple[str, ...] = ()
    creates: tuple[str, ...] = ()
    relays: tuple[Relay, ...] = ()
    watches: str | None = None


STAGES: tuple[Stage, ...] = (
    Stage(
        "intake",
        role="producer",
        outputs=("orders.placed",),
        reads=("orders.status", "orders.placed"),  # status view; idempotency keys on restart
        watches="orders",
    ),
    Stage(
        "orders",
        role="orders",
        app_id="sluice-orders",
        web_port=6066,
        inputs=("orders.placed", "inventory.reservations", "inventory.results"),
        internal_inputs=("placed-rekeyed", "stock-requests", "stock-results"),
        outputs=("orders.confirmed", "orders.rejected", "orders.status", *CHANNELS),
        dlq="orders.dlq",
        legacy_writes=("inventory.reservations", "inventory.results"),  # v1 stock topics
        reads=("orders.confirmed", "orders.rejected", "orders.status"),  # outcome tables
        creates=("orders.confirmed", "orders.rejected", "orders.status"),
        watches="notifications",
    ),
    Stage(
        "notifications",
        role="notifications",
        app_id="sluice-notifications",
        web_port=6067,
        inputs=CHANNELS,
        outputs=(*DELAY_TOPICS, "notifications.results"),
        dlq="notifications.dlq",
        reads=("notifications.results",),  # the results table's changelog
        creates=("notifications.results",),
        relays=(Relay("sluice-notifications-retry", DELAY_TOPICS, outputs=CHANNELS),),
    ),
    Stage(
        "analytics",
        role="analytics",
        app_id="sluice-analytics",
        web_port=6068,
        inputs=("orders.placed", "orders.confirmed", "orders.rejected", "notifications.results"),
        internal_inputs=("partials",),
        outputs=("analytics.windows",),
        dlq="analytics.dlq",
        reads=("analytics.windows",),  # the windows view
    ),
)


def stage(name: str) -> Stage:
    """One stage by name (KeyError for a name `STAGES` does not have)."""
    return _BY_NAME[name]


_BY_NAME = {s.name: s for s in STAGES}
#: The Faust stages' app ids (before the settings' prefix), one consumer group each.
APP_IDS = {s.name: s.app_id for s in STAGES if s.app_id}
#: The Faust stages' default web ports (`SLUICE_WEB_PORT` or `--web-port` override them).
WEB_PORTS = {s.name: s.web_port for s in STAGES if s.web_port}


def internal(name: str, suffix: str) -> str:
    """A stage's internal topic: named after its app id, so its ACLs' prefix covers it."""
    return f"{APP_IDS[name]}-{suffix}"


def group_inputs(name: str) -> tuple[str, ...]:
    """Every topic a stage's app group consumes, catalog and internal: its lag is on these."""
    found = stage(name)
    return found.inputs + tuple(internal(name, s) for s in found.internal_inputs)


def downstream_topics(name: str) -> tuple[str, ...]:
    """The topics between a stage and the one it watches: its outputs the other consumes."""
    up = stage(name)
    if up.watches is None:
        return ()
    return tuple(t for t in stage(up.watches).inputs if t in up.outputs)


#: The order stage's placements re-keyed by order id (internal).
PLACED_REKEYED = internal("orders", "placed-rekeyed")
#: The order stage's stock requests, batched per SKU-owner partition (internal).
STOCK_REQUESTS = internal("orders", "stock-requests")
#: The stock owner's results, batched per order partition (internal).
STOCK_RESULTS = internal("orders", "stock-results")
#: The analytics stage's window partials, repartitioned by window for the merge (internal).
PARTIALS = internal("analytics", "partials")
