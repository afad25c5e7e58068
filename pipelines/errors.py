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


def explain(exc: BaseException) -> tuple[str, int]:
    """One human line and an exit code for any failure, for every entry point's boundary.

    The CLI, `sluice worker` and a Faust worker's start-up all end in the same place:
    whatever went wrong becomes one line (never a traceback, which belongs in the debug
    log) and a code: 2 for bad settings or flags, 1 for everything else. Errors Sluice
    raises on purpose say what to do themselves; settings errors name the field; an
    OSError names the file or the address; anything else is named by its type, since
    it is a bug worth reporting.
    """
    if isinstance(exc, SluiceError):
        return str(exc), exc.exit_code
    settings_problem = _settings_problem(exc)
    if settings_problem is not None:
        return "invalid settings: " + settings_problem, 2
    if isinstance(exc, OSError):
        return _os_problem(exc), 1
    detail = str(exc).strip().splitlines()
    text = f"{type(exc).__name__}: {detail[0]}" if detail else type(exc).__name__
    return f"unexpected error ({text}); run with -vv for the traceback", 1


def _settings_problem(exc: BaseException) -> str | None:
    """The fields a settings error is about, or None when `exc` is no settings error."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    if isinstance(exc, ValidationError):
        lines = []
        for item in exc.errors():
            where = ".".join(str(p) for p in item["loc"]) or "settings"
            lines.append(f"{where}: {item['msg']}")
        return "; ".join(lines)
    if isinstance(exc, SettingsError):
        # "error parsing value for field "backpressure" from source "EnvSettingsSource""
        cause = exc.__cause__
        reason = f" ({cause})" if cause is not None else ""
        example = "SLUICE_BACKPRESSURE='{\"high\": 5000}'"
        return f"{exc}{reason}; nested settings take JSON, e.g. {example}"
    return None


def _os_problem(exc: OSError) -> str:
    import errno

    if exc.errno == errno.ENOSPC:
        return f"the disk is full: {exc.filename or exc}"
    if exc.errno == errno.EADDRINUSE:
        return f"address already in use: {exc.strerror or exc}"
    return str(exc)
