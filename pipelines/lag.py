"""Consumer-group lag: log-end offset minus committed offset, per group, topic and partition.

The same figure `kafka-consumer-groups --describe` prints. Per poll: one OffsetFetch for
all partitions of the group and one `list_offsets` request for their ends, so the cost of
watching lag does not grow with the number of partitions.

Committed offsets are read through a consumer that carries the group's id but never
subscribes (so it never joins the group or commits for it), not through the admin API:
librdkafka's admin ListConsumerGroupOffsets dereferences a missing group handle when the
broker answers NOT_COORDINATOR (a fresh cluster, a broker restart, a coordinator move) and
the whole process dies with SIGSEGV (confluent-kafka-python issue 1982, librdkafka issue
5040). A consumer's own group handle retries that answer.

Who holds which partition comes from the admin DescribeConsumerGroups call, which is
safe where ListConsumerGroupOffsets is not: its response parser turns a group's error
code (NOT_COORDINATOR included) into an error on the result and never touches a group
handle. On a fresh broker it does answer NOT_COORDINATOR until the offsets topic is up;
`LagReader.describe` retries that within its timeout.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from types import TracebackType

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import OffsetSpec

from pipelines.admin import admin_client
from pipelines.clientdiag import quiet_logger
from pipelines.errors import BrokerUnavailable
from pipelines.settings import Settings

Partition = tuple[str, int]

#: Answers that mean "ask again shortly": the group's coordinator is moving or loading.
_COORDINATOR_MOVES = frozenset(
    {
        KafkaError.NOT_COORDINATOR,
        KafkaError.COORDINATOR_NOT_AVAILABLE,
        KafkaError.COORDINATOR_LOAD_IN_PROGRESS,
    }
)


@dataclass(frozen=True)
class Member:
    """The group member a partition is assigned to, as Kafka's tool shows it."""

    consumer_id: str
    host: str
    client_id: str


@dataclass(frozen=True)
class PartitionLag:
    """One row of a lag report."""

    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group has never committed on this partition
    end_offset: int
    log_start: int = 0  # the oldest retained offset (read only where nothing is committed)
    member: Member | None = None  # who holds the partition now; None: nobody

    @property
    def lag(self) -> int:
        """Records the group has still to take, for controllers and totals.

        A partition never committed counts every retained record: a Sluice stage reads
        from the earliest offset (`auto.offset.reset=earliest`), so that is its backlog.
        """
        start = self.committed if self.committed is not None else self.log_start
        return max(0, self.end_offset - start)

    @property
    def reported_lag(self) -> int | None:
        """The lag `kafka-consumer-groups --describe` prints: unknown ("-") before a commit.

        Where a member starts on a partition it never committed depends on its own
        `auto.offset.reset`, which only the client knows, so the report does not guess.
        """
        return None if self.committed is None else self.end_offset - self.committed


@dataclass(frozen=True)
class GroupReport:
    """What Kafka knows of one group: its state, and the rows its tool would print."""

    group: str
    state: str  # "stable", "empty", "preparing_rebalance", ..., "dead" (no such group)
    rows: list[PartitionLag] = field(default_factory=list)

    @property
    def exists(self) -> bool:
        """A group exists while it has members or committed offsets (Kafka says "dead")."""
        return self.state != "dead" or any(r.committed is not None for r in self.rows)


class LagReader:
    """Reads one group's lag; keep it open to poll (one client, not one per poll)."""

    def __init__(self, settings: Settings, group: str, timeout: float = 10.0) -> None:
        if not group or any(ord(ch) < 32 for ch in group):  # librdkafka aborts on these
            raise ValueError(f"not a usable consumer group name: {group!r}")
        self.settings, self.group, self.timeout = settings, group, timeout
        self._admin = admin_client(settings)
        quiet, _failures = quiet_logger("sluice.kafka.lag")
        self._consumer = Consumer(
            settings.confluent(
                **{
                    "group.id": group,
                    "client.id": f"sluice-lag-{uuid.uuid4().hex[:6]}",
                    "enable.auto.commit": False,
                    "enable.auto.offset.store": False,
                    "logger": quiet,
                }
            )
        )

    def rows(self, topics: Iterable[str] | None = None) -> list[PartitionLag]:
        """Lag on `topics` (physical names), or the rows Kafka's own tool prints.

        Without `topics`: every partition the group committed on or has assigned to a
        member, exactly what `kafka-consumer-groups --describe` lists. With `topics`
        (backpressure watches a group's inputs): every partition of them, a
        never-committed one counting all its retained records.
        """
        if topics is None:
            return self.report().rows
        try:
            wanted = _partitions(self._admin, set(topics), self.timeout)
            return self._rows(wanted, self._committed(wanted), {})
        except KafkaException as exc:
            raise self._unavailable(exc) from None

    def report(self) -> GroupReport:
        """The group's state and its rows as `kafka-consumer-groups --describe` has them."""
        try:
            # offsets first: on a fresh cluster the consumer's coordinator lookup brings
            # the offsets topic up in a second or two, where the admin's waits it out
            committed = self._committed(_partitions(self._admin, None, self.timeout))
            state, members = self.describe()
            wanted = set(committed) | set(members)
            return GroupReport(self.group, state, self._rows(wanted, committed, members))
        except KafkaException as exc:
            raise self._unavailable(exc) from None

    def describe(self) -> tuple[str, dict[Partition, Member]]:
        """The group's state ("dead" when there is no such group) and who holds what."""
        deadline = time.monotonic() + self.timeout
        while True:
            futures = self._admin.describe_consumer_groups(
                [self.group], request_timeout=self.timeout
            )
            try:
                desc = futures[self.group].result(timeout=self.timeout + 1)
                break
            except KafkaException as exc:
                error = exc.args[0]
                if error.code() == KafkaError.GROUP_ID_NOT_FOUND:
                    return "dead", {}
                if error.code() not in _COORDINATOR_MOVES or time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        members = {
            (tp.topic, tp.partition): Member(m.member_id, m.host, m.client_id)
            for m in desc.members
            for tp in (m.assignment.topic_partitions if m.assignment else [])
        }
        return desc.state.name.lower(), members

    def _rows(
        self,
        wanted: set[Partition],
        committed: dict[Partition, int],
        members: dict[Partition, Member],
    ) -> list[PartitionLag]:
        ends = _offsets(self._admin, wanted, OffsetSpec.latest(), self.timeout)  # type: ignore[no-untyped-call]
        unread = {p for p in wanted if p not in committed}
        starts = _offsets(self._admin, unread, OffsetSpec.earliest(), self.timeout)  # type: ignore[no-untyped-call]
        return [
            PartitionLag(
                self.group,
                *tp,
                committed=committed.get(tp),
                end_offset=ends[tp],
                log_start=starts.get(tp, 0),
                member=members.get(tp),
            )
            for tp in sorted(wanted)
        ]

    def _committed(self, partitions: set[Partition]) -> dict[Partition, int]:
        if not partitions:
            return {}
        request = [TopicPartition(t, p) for t, p in sorted(partitions)]
        out: dict[Partition, int] = {}
        for tp in self._consumer.committed(request, timeout=self.timeout):
            if tp.error is not None:
                raise KafkaException(tp.error)
            if tp.offset >= 0:
                out[(tp.topic, tp.partition)] = tp.offset
        return out

    def _unavailable(self, exc: KafkaException) -> BrokerUnavailable:
        reason = exc.args[0]
        text = reason.str() if isinstance(reason, KafkaError) else str(reason)
        return BrokerUnavailable(
            f"cannot read the lag of group {self.group} at {self.settings.bootstrap_servers}: "
            f"{text}"
        )

    def close(self) -> None:
        """Close the consumer (it never joined the group: this leaves nothing behind)."""
        self._consumer.close()

    def __enter__(self) -> LagReader:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def group_lag(
    settings: Settings, group: str, topics: Iterable[str] | None = None, timeout: float = 10.0
) -> list[PartitionLag]:
    """Lag of `group` on `topics` once (see `LagReader.rows`)."""
    with LagReader(settings, group, timeout) as reader:
        return reader.rows(topics)


def group_report(settings: Settings, group: str, timeout: float = 10.0) -> GroupReport:
    """One group's state and rows once (see `LagReader.report`)."""
    with LagReader(settings, group, timeout) as reader:
        return reader.report()


def _partitions(client: object, topics: set[str] | None, timeout: float) -> set[Partition]:
    """Partitions of `topics`, or of every non-internal topic when None."""
    metadata = client.list_topics(timeout=timeout)  # type: ignore[attr-defined]
    names = topics if topics is not None else {n for n in metadata.topics if not n.startswith("__")}
    return {
        (name, p)
        for name in names
        if name in metadata.topics
        for p in metadata.topics[name].partitions
    }


def _offsets(
    client: object, partitions: set[Partition], spec: OffsetSpec, timeout: float
) -> dict[Partition, int]:
    """The offsets `spec` names (latest, earliest) of `partitions`, in one request."""
    if not partitions:
        return {}
    request = {TopicPartition(t, p): spec for t, p in partitions}
    futures = client.list_offsets(request, request_timeout=timeout)  # type: ignore[attr-defined]
    return {
        (tp.topic, tp.partition): future.result(timeout=timeout + 1).offset
        for tp, future in futures.items()
    }


def total(rows: Iterable[PartitionLag]) -> int:
    """Summed lag of some rows."""
    return sum(row.lag for row in rows)
