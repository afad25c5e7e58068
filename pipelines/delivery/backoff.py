"""When to try a failed notification again, and which delay topic holds it meanwhile.

Retries walk a short ladder of delays (1 s, 10 s, 60 s by default, then 60 s again),
spread by random jitter so that a burst of failures does not come back as a burst.
The result is never earlier than the ladder's lower jitter bound and never earlier than
a provider's Retry-After. Each ladder step has its own delay topic; a message goes to
the smallest step that covers its wait, which bounds how long one message at a
partition's head can hold up those behind it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

from pipelines.topology import RETRY_LADDER_S

DEFAULT_DELAYS_S = RETRY_LADDER_S  # the delay topics' ladder, declared in the topology

_default_rng = random.Random()


def next_attempt(
    attempt: int,
    now_ms: int,
    *,
    delays_s: Sequence[float] = DEFAULT_DELAYS_S,
    jitter: float = 0.2,
    rng: random.Random | None = None,
    retry_after_s: float | None = None,
) -> int:
    """The not-before time (epoch ms) for the try after failed attempt `attempt` (1-based).

    The delay is `delays_s[attempt - 1]` (the last step once the ladder runs out), scaled
    by a uniform factor in `[1 - jitter, 1 + jitter]`, rounded up to whole milliseconds,
    and raised to `retry_after_s` when the provider asked for longer.
    """
    _check_ladder(delays_s)
    if attempt < 1:
        raise ValueError(f"attempt counts from 1, got {attempt}")
    if not 0 <= jitter < 1:
        raise ValueError(f"jitter must be in [0, 1), got {jitter}")
    base = delays_s[min(attempt, len(delays_s)) - 1]
    factor = 1.0 + (rng or _default_rng).uniform(-jitter, jitter) if jitter else 1.0
    delay_ms = math.ceil(base * factor * 1000)
    if retry_after_s is not None and retry_after_s > 0:
        delay_ms = max(delay_ms, math.ceil(retry_after_s * 1000))
    return now_ms + delay_ms


def delay_topic_for(
    not_before_ms: int, now_ms: int, ladder: Sequence[float] = DEFAULT_DELAYS_S
) -> str:
    """The delay-topic suffix (`"1s"`, `"10s"`, `"60s"`) for a message due at `not_before_ms`.

    The smallest step at least as long as the remaining wait; waits beyond the ladder go to
    the last step (its consumer still holds them until `not_before`).
    """
    _check_ladder(ladder)
    wait_s = max(0, not_before_ms - now_ms) / 1000
    step = next((s for s in ladder if s >= wait_s), ladder[-1])
    return suffix(step)


def delay_topic_suffixes(ladder: Sequence[float] = DEFAULT_DELAYS_S) -> list[str]:
    """Every suffix `delay_topic_for` can return for `ladder`, for declaring the topics."""
    _check_ladder(ladder)
    return [suffix(s) for s in ladder]


def suffix(step_s: float) -> str:
    """A ladder step as a topic suffix: 1 -> `"1s"`, 0.5 -> `"0.5s"`."""
    return f"{step_s:g}s"


def _check_ladder(ladder: Sequence[float]) -> None:
    if not ladder or any(s <= 0 for s in ladder) or list(ladder) != sorted(ladder):
        raise ValueError(f"a delay ladder is positive and increasing, got {list(ladder)}")
