"""Resolve the broker's classpath from the pinned `deploy/local/pom.xml` with Maven.

Maven downloads the jars into its own repository (`~/.m2`) on first use; we keep only
the resulting classpath string, cached per pom content, so a warm start does not run
Maven at all. Nothing is downloaded by our code and no URL is written here: Maven uses
whatever repositories the user's Maven is configured for.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from pipelines.errors import LocalKafkaError
from pipelines.localkafka.prereq import check_maven
from pipelines.settings import LocalKafkaSettings

REPO_ROOT = Path(__file__).resolve().parents[2]
_POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def local_dir() -> Path:
    """`deploy/local`, or `$SLUICE_KAFKA_DEPLOY_DIR` when Sluice runs outside its checkout."""
    path = LocalKafkaSettings().deploy_dir or REPO_ROOT / "deploy" / "local"
    if not (path / "pom.xml").is_file():
        raise LocalKafkaError(
            f"no pom.xml in {path}; run from a Sluice checkout or set SLUICE_KAFKA_DEPLOY_DIR "
            "to a directory holding deploy/local's pom.xml and log4j2.properties"
        )
    return path


def kafka_version(pom: Path) -> str:
    """The Kafka release the pom pins (its `kafka.version` property)."""
    root = ET.parse(pom).getroot()
    node = root.find("m:properties/m:kafka.version", _POM_NS)
    if node is None or not node.text:
        raise LocalKafkaError(f"{pom} does not set the kafka.version property")
    return node.text.strip()


def cache_dir() -> Path:
    """Where resolved classpaths are remembered between runs."""
    return LocalKafkaSettings().cache_home / "sluice"


def classpath(pom: Path, progress: Callable[[str], None] = lambda _msg: None) -> str:
    """The broker's runtime classpath; runs Maven only when the cached one is stale.

    A cached classpath is reused while every jar it names still exists, so deleting
    `~/.m2` is noticed and repaired rather than failing with ClassNotFoundException.
    """
    digest = hashlib.sha256(pom.read_bytes()).hexdigest()[:16]
    cached = cache_dir() / f"kafka-classpath-{digest}.txt"
    if cached.is_file():
        entries = cached.read_text().strip()
        if entries and all(Path(p).is_file() for p in entries.split(os.pathsep)):
            return entries
    progress(f"Resolving Apache Kafka {kafka_version(pom)} jars with Maven (first run only)...")
    _run_maven(pom, cached)
    return cached.read_text().strip()


def _run_maven(pom: Path, output: Path) -> None:
    mvn = check_maven()
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_suffix(".tmp")
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(pom),
        "dependency:build-classpath",
        f"-Dmdep.outputFile={tmp}",
        "-Dmdep.includeScope=runtime",
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    except subprocess.TimeoutExpired:
        raise LocalKafkaError("Maven did not resolve the Kafka jars within 30 minutes") from None
    if proc.returncode != 0 or not tmp.is_file():
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-5:])
        raise LocalKafkaError(
            f"Maven could not resolve the Kafka jars from {pom} (exit {proc.returncode}): "
            f"{tail or 'no output'}; check network access to your Maven repository"
        )
    tmp.replace(output)
