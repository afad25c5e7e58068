"""The exception tree: one root, so callers and the CLI can catch Sluice's failures as one.

Every error carries a one-line, human message (the CLI prints it as is, no traceback)
and says whether retrying may help, because retry and DLQ policy depend on that.
Errors about one record keep the record's coordinates and raw bytes, so a dead-letter
queue or a replay tool can act on it later.
"""

from __future__ import annotations

from dataclasses import dataclass


class SluiceError(Exception):
    """Root of every error Sluice raises on purpose."""

    retriable: bool = False
    exit_code: int = 1


class ConfigError(SluiceError):
    """Settings or flags that cannot work together."""

    exit_code = 2


class PrerequisiteError(SluiceError):
    """A tool Sluice needs on this machine (Java, Maven) is missing or too old."""


class LocalKafkaError(SluiceError):
    """The local Apache Kafka could not be started, stopped or inspected."""


class BrokerUnavailable(SluiceError):
    """No broker answered at the bootstrap servers within the timeout."""

    retriable = True


class AuthenticationFailed(SluiceError):
    """The brokers refused the client's credentials (wrong user or password, no SASL)."""


class NotAuthorized(SluiceError):
    """The principal may not do this (a missing ACL): least privilege working as meant."""


class TopicError(SluiceError):
    """A topic is missing, or exists with a shape the catalog does not allow."""


class StorageError(SluiceError):
    """A directory Sluice must write to is unwritable, not a directory, or nearly full."""


@dataclass(frozen=True)
class RecordRef:
    """Where a record came from, and its raw bytes, for DLQs and replay."""

    topic: str
    partition: int
    offset: int
    key: bytes | None = None
    value: bytes | None = None


class RecordError(SluiceError):
    """A failure tied to one record; keeps the record so it can be dead-lettered."""

    def __init__(self, message: str, record: RecordRef | None = None) -> None:
        super().__init__(message)
        self.record = record
