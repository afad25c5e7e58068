"""Broker-backed fixtures: one Kafka per session, unique topics per test, worker processes."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from pipelines import admin
from pipelines.catalog import TopicSpec
from pipelines.settings import Settings
from tests.support.brokers import session_kafka


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Bootstrap servers of a real Kafka for the whole session (see tests/support/brokers.py)."""
    with session_kafka(tmp_path_factory.mktemp("kafka")) as (bootstrap, origin):
        print(f"\nKafka for this session: {bootstrap} ({origin})")
        yield bootstrap


@pytest.fixture
def settings(kafka_bootstrap: str, tmp_path: Path) -> Settings:
    """Settings pointing at the session broker, with a private data dir."""
    return Settings(bootstrap_servers=kafka_bootstrap, data_dir=tmp_path / "sluice")


@pytest.fixture
def pipeline_settings(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Settings]:
    """Settings with a private topic prefix and every catalog topic created under it.

    Each test gets its own copy of the pipeline's topics (and group names), so tests never
    see each other's records even though the stages use the catalog's fixed names.
    """
    prefix = f"t{uuid.uuid4().hex[:8]}."
    settings = Settings(
        bootstrap_servers=kafka_bootstrap,
        data_dir=tmp_path / "sluice",
        topic_prefix=prefix,
        partitions=3,
    )
    created = admin.ensure_topics(settings).created
    yield settings
    admin.delete_topics(settings, created)


@pytest.fixture
def topic_factory(settings: Settings) -> Iterator[Callable[..., str]]:
    """Create uniquely named topics for one test; delete them afterwards."""
    created: list[str] = []

    def make(prefix: str = "t", partitions: int = 3, compact: bool = False) -> str:
        name = f"test.{prefix}.{uuid.uuid4().hex[:10]}"
        spec = TopicSpec(
            name,
            "key",
            None,
            "test topic",
            partitions=partitions,
            cleanup_policy="compact" if compact else "delete",
        )
        admin.ensure_topics(settings, [spec])
        created.append(name)
        return name

    yield make
    admin.delete_topics(settings, created)
