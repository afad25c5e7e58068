"""Cluster and topic administration through the Kafka admin API.

`ensure_topics` is how pipeline topics come to exist: created from the catalog with the
right partition count before any worker starts (Faust refuses tables whose changelog and
source disagree), and verified, never altered, when they already exist.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterable
from dataclasses import dataclass

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, ConfigResource, NewTopic

from pipelines.catalog import TopicSpec, all_specs, replication_for
from pipelines.clientdiag import explain, quiet_logger
from pipelines.errors import BrokerUnavailable, SluiceError, TopicError
from pipelines.settings import Settings

# Admin probes of a broker that may be down would log a connection error per retry; they
# log into a FailureLog instead, which explains a timeout (refused login, TLS trouble).
_quiet, _failures = quiet_logger("sluice.kafka.admin")


@dataclass(frozen=True)
class ClusterInfo:
    """What the cluster says about itself."""

    cluster_id: str | None
    controller_id: int | None
    brokers: tuple[tuple[int, str], ...]
    topic_count: int


@dataclass(frozen=True)
class TopicState:
    """A topic as it exists on the cluster."""

    name: str
    partitions: int
    replication: int


@dataclass(frozen=True)
class EnsureResult:
    """What `ensure_topics` did, per topic."""

    created: tuple[str, ...]
    existing: tuple[str, ...]


def admin_client(settings: Settings) -> AdminClient:
    """An admin client whose connection noise goes to a silent logger, not stderr."""
    return AdminClient(settings.confluent(logger=_quiet))


def describe_cluster(settings: Settings, timeout: float | None = None) -> ClusterInfo:
    """Brokers, controller and topic count; BrokerUnavailable if nobody answers."""
    timeout = timeout if timeout is not None else settings.request_timeout_s
    admin = admin_client(settings)
    try:
        desc = admin.describe_cluster(request_timeout=timeout).result(timeout=timeout + 1)
        metadata = admin.list_topics(timeout=timeout)
    except (KafkaException, TimeoutError) as exc:
        raise _unavailable(settings, exc, admin) from None
    brokers = tuple(sorted((n.id, f"{n.host}:{n.port}") for n in desc.nodes))
    controller = desc.controller.id if desc.controller is not None else None
    topics = [t for t in metadata.topics if not t.startswith("__")]
    return ClusterInfo(desc.cluster_id, controller, brokers, len(topics))


def list_topics(settings: Settings) -> dict[str, TopicState]:
    """Every topic on the cluster (internal ones excluded) with its shape."""
    client = admin_client(settings)
    try:
        metadata = client.list_topics(timeout=settings.request_timeout_s)
    except KafkaException as exc:
        raise _unavailable(settings, exc, client) from None
    states: dict[str, TopicState] = {}
    for name, topic in metadata.topics.items():
        if name.startswith("__") or topic.error is not None:
            continue
        replicas = max((len(p.replicas) for p in topic.partitions.values()), default=0)
        states[name] = TopicState(name, len(topic.partitions), replicas)
    return states


def unauthorized_topics(settings: Settings, names: Iterable[str]) -> list[str]:
    """Those of `names` this principal may not even describe (an ACL keeps them hidden).

    Listing all topics silently leaves such topics out, which would read as "unknown
    topic"; asking for each by name returns the authorization error instead.
    """
    client = admin_client(settings)
    denied = []
    for name in names:
        try:
            topic = client.list_topics(topic=name, timeout=settings.request_timeout_s).topics.get(
                name
            )
        except KafkaException as exc:
            raise _unavailable(settings, exc, client) from None
        error = topic.error if topic is not None else None
        if error is not None and error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            denied.append(name)
    return denied


def ensure_topics(
    settings: Settings, specs: Iterable[TopicSpec] | None = None, *, broker_count: int | None = None
) -> EnsureResult:
    """Create missing catalog topics; verify existing ones and refuse mismatches.

    A topic that exists with another partition count is reported as a TopicError and
    left alone: changing it would move keys between partitions under running consumers.
    """
    specs = [_physical(settings, s) for s in (all_specs() if specs is None else specs)]
    if broker_count is None:
        broker_count = len(describe_cluster(settings).brokers)
    replication = replication_for(broker_count)
    existing = list_topics(settings)
    _check_existing(settings, specs, existing)
    missing = [s for s in specs if s.name not in existing]
    if missing:
        _create(settings, missing, replication)
        wait_for_leaders(settings, [s.name for s in missing])
    return EnsureResult(
        created=tuple(s.name for s in missing),
        existing=tuple(s.name for s in specs if s.name in existing),
    )


def _physical(settings: Settings, spec: TopicSpec) -> TopicSpec:
    """The spec under its physical name (the settings' topic prefix applied)."""
    if not settings.topic_prefix:
        return spec
    return dataclasses.replace(spec, name=settings.topic(spec.name))


def _check_existing(
    settings: Settings, specs: list[TopicSpec], existing: dict[str, TopicState]
) -> None:
    problems = []
    for spec in specs:
        state = existing.get(spec.name)
        wanted = spec.partition_count(settings.partitions)
        if state is not None and state.partitions != wanted:
            problems.append(f"{spec.name} has {state.partitions} partitions, catalog says {wanted}")
    if problems:
        raise TopicError(
            "existing topics do not match the catalog (left unchanged): " + "; ".join(problems)
        )


def _create(settings: Settings, specs: list[TopicSpec], replication: int) -> None:
    new = [
        NewTopic(
            s.name,
            num_partitions=s.partition_count(settings.partitions),
            replication_factor=replication,
            config=s.config(replication),
        )
        for s in specs
    ]
    client = admin_client(settings)  # must outlive its futures
    futures = client.create_topics(new, request_timeout=settings.request_timeout_s)
    errors = []
    for name, future in futures.items():
        try:
            future.result(timeout=settings.request_timeout_s + 5)
        except KafkaException as exc:
            err = exc.args[0]
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                continue
            errors.append(f"{name}: {_reason(exc)}")
    if errors:
        raise TopicError("could not create topics: " + "; ".join(errors))


_LEADER_CHANGES = frozenset(
    {
        KafkaError.NOT_LEADER_FOR_PARTITION,
        KafkaError.LEADER_NOT_AVAILABLE,
        KafkaError.UNKNOWN_TOPIC_OR_PART,
        KafkaError._UNKNOWN_PARTITION,
    }
)


def passing(error: object) -> bool:
    """Whether a Kafka error will pass if asked again: what librdkafka marks retriable,
    and the leader changes it does not mark (a topic created a moment ago, a leader
    moving after a broker restart)."""
    if not isinstance(error, KafkaError):
        return False
    return bool(error.retriable()) or error.code() in _LEADER_CHANGES


def wait_for_leaders(settings: Settings, names: list[str], timeout: float = 30.0) -> None:
    """Block until every partition of `names` has a leader, so the next client call works.

    A freshly created topic exists before its partitions have leaders everywhere; clients
    that ask too early get NOT_LEADER errors they would otherwise have to retry.
    """
    client = admin_client(settings)
    deadline = time.monotonic() + timeout
    pending = set(names)
    while pending and time.monotonic() < deadline:
        metadata = client.list_topics(timeout=settings.request_timeout_s)
        for name in list(pending):
            topic = metadata.topics.get(name)
            if (
                topic is not None
                and topic.error is None
                and topic.partitions
                and all(p.leader >= 0 for p in topic.partitions.values())
            ):
                pending.discard(name)
        if pending:
            time.sleep(0.1)
    if pending:
        raise TopicError(
            f"topics without partition leaders after {timeout:.0f}s: {sorted(pending)}"
        )


def topic_config(settings: Settings, name: str) -> dict[str, str]:
    """The broker's effective configuration of one topic."""
    resource = ConfigResource(ConfigResource.Type.TOPIC, name)
    client = admin_client(settings)
    futures = client.describe_configs([resource])
    entries = futures[resource].result(timeout=settings.request_timeout_s)
    return {key: entry.value for key, entry in entries.items()}


def delete_topics(settings: Settings, names: Iterable[str]) -> None:
    """Delete topics, ignoring ones already gone (used by tests and `--purge`)."""
    names = list(names)
    if not names:
        return
    client = admin_client(settings)
    for future in client.delete_topics(names).values():
        try:
            future.result(timeout=settings.request_timeout_s)
        except KafkaException as exc:
            err = exc.args[0]
            if not (isinstance(err, KafkaError) and err.code() == KafkaError.UNKNOWN_TOPIC_OR_PART):
                raise TopicError(f"could not delete topic: {_reason(exc)}") from None


def _reason(exc: BaseException) -> str:
    err = exc.args[0] if exc.args else exc
    return err.str() if isinstance(err, KafkaError) else str(err)


def _unavailable(settings: Settings, exc: BaseException, client: AdminClient) -> SluiceError:
    """Why the cluster did not answer: a refused login or TLS failure if the log says so."""
    _failures.lines.clear()
    client.poll(0.2)  # librdkafka hands its log lines over on poll
    found = explain(settings.bootstrap_servers, settings.security, list(_failures.lines))
    if found is not None:
        return found
    return BrokerUnavailable(
        f"no Kafka broker answered at {settings.bootstrap_servers} ({_reason(exc)}); "
        "start one with `sluice kafka up` or set KAFKA_BOOTSTRAP_SERVERS"
    )
