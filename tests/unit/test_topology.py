"""The topology is declared once: every view derived from it agrees with it and the catalog.

A stage or topic added to `pipelines.topology.STAGES` must show up in the ACLs, the
backpressure edges, the lag waits and the redrive sources without another edit; these
tests fail where one of those views (or the catalog) was left behind.
"""

from __future__ import annotations

import pytest

from consumers import redrive
from pipelines import acls, demo_watch, rules, topology
from pipelines.backpressure import EDGES
from pipelines.catalog import CATALOG, INTERNAL, by_name, value_schemas
from pipelines.delivery import backoff
from pipelines.errors import TopicError
from pipelines.runtime.faustapp import DEFAULT_WEB_PORTS, StageMetrics
from pipelines.runtime.relay import GROUP as RETRY_GROUP
from pipelines.runtime.relay import DelayRelay
from pipelines.serde import serde_for
from pipelines.settings import NotificationSettings, Settings
from pipelines.stages import notify, windows
from pipelines.topology import STAGES, Relay, Stage, stage
from tests.support import pipeline

FAUST_STAGES = [s for s in STAGES if s.app_id]


def _may(principal: str, operation: str, topic: str) -> bool:
    """Whether the grants let `principal` do `operation` on catalog topic `topic`."""
    for g in acls.grants():
        if (
            g.principal != principal
            or g.resource != "topic"
            or g.operation
            not in (
                operation,
                "ALL",
            )
        ):
            continue
        if topic == g.name if g.pattern == "literal" else topic.startswith(g.name):
            return True
    return False


def _named(found: Stage) -> set[str]:
    relayed = {t for r in found.relays for t in (*r.inputs, *r.outputs)}
    return {
        *found.inputs,
        *found.outputs,
        *found.reads,
        *found.creates,
        *found.legacy_writes,
        *relayed,
        *((found.dlq,) if found.dlq else ()),
    }


def test_every_topic_the_topology_names_is_in_the_catalog() -> None:
    catalog = {spec.name for spec in CATALOG}
    for found in STAGES:
        assert _named(found) <= catalog, found.name
        internal = {spec.name for spec in INTERNAL.get(found.name, ())}
        assert set(topology.group_inputs(found.name)) - set(found.inputs) <= internal


def test_internal_topics_and_app_ids_are_the_faust_stages() -> None:
    assert set(INTERNAL) == set(topology.APP_IDS) == {s.name for s in FAUST_STAGES}
    assert set(DEFAULT_WEB_PORTS) == set(topology.APP_IDS)
    assert len(set(DEFAULT_WEB_PORTS.values())) == len(DEFAULT_WEB_PORTS)
    for name, specs in INTERNAL.items():
        assert all(spec.name.startswith(topology.APP_IDS[name] + "-") for spec in specs)


@pytest.mark.parametrize("found", STAGES, ids=lambda s: s.name)
def test_each_role_reads_exactly_its_inputs_and_writes_exactly_its_outputs(found: Stage) -> None:
    relayed = {t for r in found.relays for t in r.inputs}
    readable = {*found.inputs, *found.reads, *relayed}
    relays_to = {t for r in found.relays for t in r.outputs}
    writable = {*found.outputs, *relays_to, *found.legacy_writes}
    writable |= {found.dlq} if found.dlq else set()
    for spec in CATALOG:
        assert _may(found.role, "READ", spec.name) == (spec.name in readable), spec.name
        assert _may(found.role, "WRITE", spec.name) == (spec.name in writable), spec.name
    for topic in topology.group_inputs(found.name):
        assert _may(found.role, "READ", topic), topic


def test_a_new_stage_gets_its_role_from_its_declaration_alone() -> None:
    extra = Stage(
        "fraud",
        role="fraud",
        app_id="sluice-fraud",
        inputs=("orders.placed",),
        outputs=("fraud.flags",),
        dlq="fraud.dlq",
        relays=(Relay("sluice-fraud-slow", ("fraud.slow",), outputs=("fraud.rechecked",)),),
        watches="orders",
    )
    role = acls.role_of(extra)
    assert role.reads == ("orders.placed", "fraud.slow")
    assert role.writes == ("fraud.flags", "fraud.rechecked", "fraud.dlq")
    assert role.groups == ("sluice-fraud-slow",)
    assert role.watches_groups == (topology.APP_IDS["orders"],)
    assert role.app_id == "sluice-fraud"


def test_backpressure_edges_are_the_declared_downstreams() -> None:
    watching = {s.name for s in STAGES if s.watches}
    assert set(EDGES) == watching == {"intake", "orders"}
    for name in watching:
        up, down = stage(name), stage(str(stage(name).watches))
        edge = EDGES[name]
        assert edge.group == down.app_id
        assert edge.topics  # an edge with no topic between would watch nothing
        assert set(edge.topics) <= set(up.outputs) & set(down.inputs)
    assert tuple(EDGES["orders"].topics) == topology.CHANNELS


def test_lag_waits_and_redrive_sources_cover_each_group() -> None:
    assert set(pipeline.STAGE_INPUTS) == set(demo_watch.STAGE_INPUTS) == set(topology.APP_IDS)
    for found in FAUST_STAGES:
        assert demo_watch.STAGE_INPUTS[found.name] == found.inputs
        assert pipeline.STAGE_INPUTS[found.name][: len(found.inputs)] == found.inputs
    assert {
        "orders.dlq": stage("orders").inputs,
        "analytics.dlq": stage("analytics").inputs,
    } == redrive.SOURCES


def test_channels_are_the_rules_channels_and_flow_from_orders_to_notifications() -> None:
    assert tuple(topology.CHANNEL_TOPICS) == rules.CHANNELS
    assert stage("notifications").inputs == topology.CHANNELS
    assert set(topology.CHANNELS) <= set(stage("orders").outputs)
    assert acls.CHANNELS == topology.CHANNELS


def test_analytics_sources_each_have_an_event_time_and_a_schema() -> None:
    assert set(windows.SOURCES) == set(windows.EVENT_TIME)
    assert value_schemas(windows.SOURCES) == {
        "orders.placed": "sluice.orders.OrderPlaced",
        "orders.confirmed": "sluice.orders.OrderConfirmed",
        "orders.rejected": "sluice.orders.OrderRejected",
        "notifications.results": "sluice.notifications.NotificationResult",
    }
    with pytest.raises(TopicError, match="no value schema"):
        value_schemas(["analytics.dlq"])


def test_delay_topics_are_the_ladder() -> None:
    ladder = topology.RETRY_LADDER_S
    assert topology.DELAY_TOPICS == (
        "notifications.retry.1s",
        "notifications.retry.10s",
        "notifications.retry.60s",
    )
    suffixes = backoff.delay_topic_suffixes(ladder)
    assert [topology.DELAY_PREFIX + s for s in suffixes] == list(topology.DELAY_TOPICS)
    retry_specs = [s.name for s in CATALOG if s.name.startswith(topology.DELAY_PREFIX)]
    assert retry_specs == list(topology.DELAY_TOPICS)
    assert all(by_name()[t].value_schema for t in topology.DELAY_TOPICS)
    # every wait lands in one of them, the longest ones in the last
    waits = [0, 1, 999, 1000, 1001, 9_999, 10_001, 60_000, 3_600_000]
    assert {notify.delay_topic(w, 0) for w in waits} == set(topology.DELAY_TOPICS)
    assert notify.delay_topic(3_600_000, 0) == topology.DELAY_TOPICS[-1]


def test_the_ladder_has_one_declaration_and_its_defaults_follow_it() -> None:
    ladder = topology.RETRY_LADDER_S
    assert ladder == backoff.DEFAULT_DELAYS_S
    assert notify.Policy().delays_s == ladder
    assert tuple(NotificationSettings().retry_delays_s) == ladder


def test_the_relay_reads_the_delay_topics_in_its_own_group() -> None:
    relays = stage("notifications").relays
    assert [r.group for r in relays] == [RETRY_GROUP]
    assert relays[0].inputs == topology.DELAY_TOPICS
    settings = Settings(topic_prefix="t.")
    relay = DelayRelay(settings, serde_for(settings), StageMetrics("topology"))
    assert relay.sources == ["t." + t for t in topology.DELAY_TOPICS]
    assert RETRY_GROUP in acls.ROLES["notifications"].groups


def test_the_relay_may_write_the_channel_topics_it_sends_due_retries_to() -> None:
    """The relay re-publishes each due retry to its channel topic as the notifications
    principal: without WRITE there, every retry under ACLs would fail in the relay."""
    (relay,) = stage("notifications").relays
    assert relay.outputs == topology.CHANNELS
    for topic in topology.CHANNELS:
        assert _may("notifications", "WRITE", topic), topic
    assert not _may("notifications", "WRITE", "orders.placed")
