"""What every benchmark shares: a broker, interleaved rounds, and honest reporting.

These machines are noisy, so a benchmark never reports one absolute time on its own:
it runs our code and a peer side by side, alternating rounds, and prints the ratio of
medians.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from pipelines import admin
from pipelines.localkafka import LocalCluster, free_base_port
from pipelines.settings import Settings


@contextlib.contextmanager
def broker() -> Iterator[str]:
    """KAFKA_BOOTSTRAP_SERVERS if set, else a local broker in a temp dir for this run."""
    env = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
    if env:
        yield env
        return
    with tempfile.TemporaryDirectory(prefix="sluice-bench-") as tmp:
        cluster = LocalCluster(Path(tmp), 1, free_base_port(2))
        cluster.up()
        try:
            yield cluster.bootstrap
        finally:
            cluster.down()


def machine() -> str:
    """One line on what ran the benchmark."""
    cpu = platform.processor() or platform.machine()
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def rounds(contenders: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each contender `repeats` times, interleaved; each returns events per second."""
    results: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            results[name].append(run())
    return results


def report(title: str, results: dict[str, list[float]], ours: str, unit: str = "events/s") -> None:
    """Print each contender's median (and spread) and our ratio against each peer."""
    print(f"\n{title}  ({machine()})")
    medians = {name: statistics.median(values) for name, values in results.items()}
    for name, values in results.items():
        spread = f"{min(values):,.0f}..{max(values):,.0f}"
        print(f"  {name:<34} {medians[name]:>12,.0f} {unit}   (runs: {spread})")
    for name, median in medians.items():
        if name != ours and median:
            print(f"  ratio {ours} / {name}: {medians[ours] / median:.2f}")


def timed(count: int, body: Callable[[], None]) -> float:
    """Events per second of `body`, which handles `count` events."""
    started = time.perf_counter()
    body()
    return count / (time.perf_counter() - started)


def drop_topics(settings: Settings) -> None:
    """Delete a round's topics (its prefix), best effort: a bench leaves the broker clean."""
    with contextlib.suppress(Exception):
        names = [t for t in admin.list_topics(settings) if t.startswith(settings.topic_prefix)]
        admin.delete_topics(settings, names)
