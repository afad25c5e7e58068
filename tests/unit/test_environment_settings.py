"""The variables read outside the pipeline `Settings`: the local broker's, the schemas
directory; and the worker's own identity, which is not handed on to other processes."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.localkafka import jars, prereq
from pipelines.localkafka.cluster import LocalCluster
from pipelines.settings import LocalKafkaSettings, Settings, schemas_dir_override

LOCAL_KAFKA = ("SLUICE_KAFKA_HEAP_MB", "SLUICE_KAFKA_DEPLOY_DIR", "JAVA_HOME", "XDG_CACHE_HOME")


@pytest.fixture
def bare(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in (*LOCAL_KAFKA, "SLUICE_SCHEMAS_DIR"):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_local_kafka_defaults(bare: pytest.MonkeyPatch) -> None:
    local = LocalKafkaSettings()
    assert (local.heap_mb, local.deploy_dir, local.java_home) == (None, None, None)
    assert local.cache_home == Path.home() / ".cache"
    assert jars.cache_dir() == Path.home() / ".cache" / "sluice"
    assert jars.local_dir() == jars.REPO_ROOT / "deploy" / "local"


def test_local_kafka_reads_its_variables(bare: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "pom.xml").write_text("<project/>")
    bare.setenv("SLUICE_KAFKA_HEAP_MB", "300")
    bare.setenv("SLUICE_KAFKA_DEPLOY_DIR", str(tmp_path))
    bare.setenv("JAVA_HOME", str(tmp_path / "jdk"))
    bare.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert LocalKafkaSettings() == LocalKafkaSettings(
        heap_mb=300,
        deploy_dir=tmp_path,
        JAVA_HOME=tmp_path / "jdk",
        XDG_CACHE_HOME=tmp_path / "cache",
    )
    assert jars.local_dir() == tmp_path
    assert jars.cache_dir() == tmp_path / "cache" / "sluice"
    assert LocalCluster(tmp_path / "kafka", 1).heap_mb == 300
    assert LocalCluster(tmp_path / "kafka", 1, heap_mb=200).heap_mb == 200  # the flag wins
    with pytest.raises(prereq.PrerequisiteError, match=r"JAVA_HOME is .* does not exist"):
        prereq.java_executable()


def test_empty_or_zero_counts_as_unset(bare: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in LOCAL_KAFKA:
        bare.setenv(name, "")
    assert LocalKafkaSettings() == LocalKafkaSettings(heap_mb=None)
    bare.setenv("SLUICE_KAFKA_HEAP_MB", "0")
    assert LocalCluster(tmp_path / "one", 1).heap_mb == 384
    assert LocalCluster(tmp_path / "three", 3).heap_mb == 256


def test_the_schemas_directory_override(bare: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert schemas_dir_override() is None
    bare.setenv("SLUICE_SCHEMAS_DIR", "")
    assert schemas_dir_override() is None
    bare.setenv("SLUICE_SCHEMAS_DIR", str(tmp_path))
    assert schemas_dir_override() == tmp_path


def test_a_workers_identity_is_its_own(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLUICE_WEB_PORT", "16170")
    monkeypatch.setenv("SLUICE_WEB_BIND", "0.0.0.0")
    monkeypatch.setenv("SLUICE_WORKER_NAME", "w1")
    settings = Settings()
    assert (settings.web_port, settings.web_bind, settings.worker_name) == (16170, "0.0.0.0", "w1")
    handed_on = settings.as_env()
    assert not {"SLUICE_WEB_PORT", "SLUICE_WEB_BIND", "SLUICE_WORKER_NAME"} & set(handed_on)
