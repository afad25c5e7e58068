"""Why a Kafka client got nowhere: turn librdkafka's connection failures into one line.

A client that cannot log in does not get an exception from librdkafka; it retries and
its request finally times out, which would read as "no broker answered". The reasons
(refused credentials, an untrusted certificate, a plaintext client on a TLS listener)
are in librdkafka's FAIL log lines, so clients log into a `FailureLog` and a timeout is
explained from what it caught. Lines never carry passwords: librdkafka does not log them.
"""

from __future__ import annotations

import logging
import re
import time
from collections import deque
from collections.abc import Callable

from pipelines.errors import AuthenticationFailed, BrokerUnavailable, SluiceError
from pipelines.settings import SecuritySettings

ENV_HINT = (
    "set SLUICE_SECURITY__PROTOCOL, __SASL_MECHANISM, __USERNAME, __PASSWORD and __CA_FILE "
    "(see the README's Security section)"
)


class FailureLog(logging.Handler):
    """Keeps the last connection failures librdkafka logged (its FAIL lines)."""

    def __init__(self, keep: int = 20) -> None:
        super().__init__(logging.DEBUG)
        self.lines: deque[str] = deque(maxlen=keep)

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if message.startswith("FAIL"):
            self.lines.append(message)


def quiet_logger(name: str) -> tuple[logging.Logger, FailureLog]:
    """A logger that shows nothing but remembers failures, for clients that may fail."""
    logger = logging.Logger(name)  # not registered: one per client, collected with it
    failures = FailureLog()
    logger.addHandler(failures)
    logger.propagate = False
    return logger, failures


def explain(bootstrap: str, security: SecuritySettings, lines: list[str]) -> SluiceError | None:
    """The error that the caught failure lines point to, or None if they say nothing clear."""
    for line in reversed(lines):
        if "SASL authentication error" in line:
            return AuthenticationFailed(
                f"authentication failed at {bootstrap} as {security.describe()}: "
                "the broker refused the credentials"
            )
        if "SSL handshake failed" in line:
            reason = line.split("SSL handshake failed:", 1)[1].split(" (after", 1)[0].strip()
            return BrokerUnavailable(
                f"TLS handshake with {bootstrap} failed: {reason.split(': ')[-1]}; "
                "check SLUICE_SECURITY__CA_FILE and the broker's certificate"
            )
        if "APIVERSION_QUERY" in line and not security.uses_tls:
            return BrokerUnavailable(
                f"the broker at {bootstrap} closed the connection of a {security.protocol} "
                f"client during the handshake: it likely requires TLS/SASL; {ENV_HINT}"
            )
    return None


class RepeatFilter(logging.Filter):
    """Lets one of each kind of librdkafka complaint through per `window_s`.

    While a broker restarts, librdkafka logs a failed connect for every retry and every
    client thread: dozens of identical lines for an outage the producer rides out. One
    line per kind (numbers and the thread tag ignored) still says what is happening.
    """

    def __init__(self, window_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.window_s, self.clock = window_s, clock
        self.last_seen: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        kind = _DIGITS.sub("#", _THREAD.sub("", record.getMessage()))
        now = self.clock()
        if now - self.last_seen.get(kind, -self.window_s) < self.window_s:
            return False
        self.last_seen[kind] = now
        return True


_THREAD = re.compile(r"\[[^\]]*\]")
_DIGITS = re.compile(r"\d+")
