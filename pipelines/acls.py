"""Least-privilege ACLs, one role per principal, derived from the pipeline's topology.

Each stage may read its inputs, write its outputs, use its own consumer group(s) and
its own internal topics (changelogs, repartition and leader topics, all named after its
Faust app id), and nothing else. The roles derive from `pipelines.topology.STAGES`, so a
review of who may touch what is that one screen; `grants()` turns them into ACL entries
for a topic prefix, and `apply_acls()` creates them through the admin principal.

Why some entries exist:
- a stage READs the catalog topics its tables use as changelogs (it restores from them)
  and holds CREATE on them, because Faust declares every table's changelog at start
  (a no-op for an existing topic, but an authorized request all the same);
- an upstream stage DESCRIBEs the downstream group it watches for backpressure (its
  committed offsets), and nothing more of it; the watched topics are ones it writes;
- the producer principal also serves the intake API, which reads `orders.status` and,
  after a restart, re-reads its own recent writes on `orders.placed` (idempotency keys).
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal, cast

from confluent_kafka import KafkaException
from confluent_kafka.admin import (
    AclBinding,
    AclBindingFilter,
    AclOperation,
    AclPermissionType,
    AdminClient,
    ResourcePatternType,
    ResourceType,
)

from pipelines import topology
from pipelines.admin import admin_client
from pipelines.catalog import CATALOG, INTERNAL, TopicSpec
from pipelines.errors import SluiceError
from pipelines.settings import Settings
from pipelines.topology import STAGES, Stage

Resource = Literal["topic", "group", "transactional_id"]
Pattern = Literal["literal", "prefixed"]

CHANNELS = topology.CHANNELS


@dataclass(frozen=True)
class Role:
    """What one principal may do, in catalog (unprefixed) names."""

    reads: tuple[str, ...] = ()
    writes: tuple[str, ...] = ()
    creates: tuple[str, ...] = ()
    groups: tuple[str, ...] = ()
    watches_groups: tuple[str, ...] = ()
    app_id: str | None = None  # owns the internal topics, group and transactional ids


def role_of(found: Stage) -> Role:
    """A stage's role: it reads what its groups consume and what it restores or tails,
    writes its and its relays' outputs and its DLQ, and may DESCRIBE the group of the
    stage it watches."""
    relayed = tuple(t for relay in found.relays for t in relay.inputs)
    relays_to = tuple(t for relay in found.relays for t in relay.outputs)
    dlq = (found.dlq,) if found.dlq else ()
    return Role(
        reads=_unique(found.inputs + relayed + found.reads),
        writes=_unique(found.outputs + relays_to + found.legacy_writes + dlq),
        creates=found.creates,
        groups=tuple(relay.group for relay in found.relays),
        watches_groups=(_app_id(found.watches),) if found.watches else (),
        app_id=found.app_id,
    )


def _app_id(name: str) -> str:
    app_id = topology.stage(name).app_id
    assert app_id is not None, f"stage {name} is watched but has no consumer group"
    return app_id


def _unique(names: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(names))


#: Principal -> role, one per stage of the topology.
ROLES: dict[str, Role] = {s.role: role_of(s) for s in STAGES}


def stage_specs(stage: str) -> list[TopicSpec]:
    """The topics one stage touches (its role's catalog topics and its internal ones).

    A worker makes sure these exist before it starts; asking for the whole catalog would
    fail under ACLs, since a stage may not even see the other stages' topics.
    """
    role = ROLES[stage]
    names = {*role.reads, *role.writes, *role.creates}
    return [spec for spec in CATALOG if spec.name in names] + list(INTERNAL[stage])


@dataclass(frozen=True)
class Grant:
    """One ACL entry: allow `principal` to do `operation` on a resource from any host."""

    principal: str
    resource: Resource
    name: str
    pattern: Pattern
    operation: str

    def binding(self) -> AclBinding:
        """The entry as the admin API's AclBinding."""
        return AclBinding(
            _RESOURCES[self.resource],
            self.name,
            _PATTERNS[self.pattern],
            f"User:{self.principal}",
            "*",
            AclOperation[self.operation],
            AclPermissionType.ALLOW,
        )


_PATTERNS = {"literal": ResourcePatternType.LITERAL, "prefixed": ResourcePatternType.PREFIXED}
_RESOURCES = {
    "topic": ResourceType.TOPIC,
    "group": ResourceType.GROUP,
    "transactional_id": ResourceType.TRANSACTIONAL_ID,
}


def grants(prefix: str = "", roles: dict[str, Role] | None = None) -> list[Grant]:
    """Every ACL entry of every role, with the pipeline's topic/group prefix applied."""
    found: list[Grant] = []
    for principal, role in (roles or ROLES).items():
        found += _role_grants(principal, role, prefix)
    return found


def _role_grants(principal: str, role: Role, prefix: str) -> list[Grant]:
    def each(
        resource: Resource, names: Iterable[str], op: str, pattern: Pattern = "literal"
    ) -> list[Grant]:
        return [Grant(principal, resource, prefix + n, pattern, op) for n in names]

    topics = {*role.reads, *role.writes, *role.creates}
    out = each("topic", sorted(topics), "DESCRIBE")
    out += each("topic", role.reads, "READ")
    out += each("topic", role.writes, "WRITE")
    out += each("topic", role.creates, "CREATE")
    out += each("group", role.groups, "READ")
    out += each("group", role.watches_groups, "DESCRIBE")
    if role.app_id:
        # the app's own group, and its internal topics, all named after the app id
        out += each("group", [role.app_id], "READ")
        out += each("topic", [role.app_id + "-"], "ALL", "prefixed")
        out += each("transactional_id", [role.app_id], "ALL", "prefixed")
    return out


def apply_acls(admin: Settings, prefix: str | None = None) -> int:
    """Create every role's ACLs through the admin principal; returns how many entries.

    Creating an ACL that exists is a no-op on the broker, so this is safe to repeat.
    """
    entries = [g.binding() for g in grants(admin.topic_prefix if prefix is None else prefix)]
    client = admin_client(admin)  # kept referenced until every future is done
    futures = client.create_acls(entries, request_timeout=admin.request_timeout_s)
    for binding, future in futures.items():
        try:
            future.result(timeout=admin.request_timeout_s + 5)
        except KafkaException as exc:
            raise SluiceError(f"could not create ACL {binding}: {exc.args[0].str()}") from None
    _wait_enforced(client, entries, admin.request_timeout_s)
    return len(entries)


def _wait_enforced(client: AdminClient, entries: list[AclBinding], timeout: float) -> None:
    """Wait until a broker lists every new entry: ACLs reach brokers through the metadata
    log, a moment after the controller accepted them, and a client starting right away
    would otherwise be refused by a broker that has not seen its ACLs yet."""
    wanted = set(entries)
    deadline = time.monotonic() + timeout
    while True:
        found = client.describe_acls(_EVERYTHING, request_timeout=timeout).result(timeout + 5)
        if wanted <= set(found):
            return
        if time.monotonic() > deadline:
            raise SluiceError(
                f"{len(wanted - set(found))} new ACL entries not visible after {timeout:.0f}s"
            )
        time.sleep(0.2)


_ANY = cast(str, None)  # the admin API's "match any" for names, principals and hosts
_EVERYTHING = AclBindingFilter(
    ResourceType.ANY,
    _ANY,
    ResourcePatternType.ANY,
    _ANY,
    _ANY,
    AclOperation.ANY,
    AclPermissionType.ANY,
)
