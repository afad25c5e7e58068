"""Checks for what the local broker needs on this machine: Java 17+ and Maven.

Each check fails with one sentence that says what is missing and how to get it, because
the first thing a new user runs is `make demo` and a JVM stack trace teaches nothing.
"""

from __future__ import annotations

import re
import shutil
import subprocess

from pipelines.errors import PrerequisiteError
from pipelines.settings import LocalKafkaSettings

MIN_JAVA = 17


def java_executable() -> str:
    """The `java` to run: `$JAVA_HOME/bin/java` when set, else the one on PATH."""
    home = LocalKafkaSettings().java_home
    if home is not None:
        candidate = home / "bin" / "java"
        if candidate.exists():
            return str(candidate)
        raise PrerequisiteError(f"JAVA_HOME is {home} but {candidate} does not exist")
    found = shutil.which("java")
    if found is None:
        raise PrerequisiteError(
            f"Java {MIN_JAVA}+ is required to run Apache Kafka and `java` is not on PATH; "
            "install OpenJDK 17 or newer (e.g. `apt-get install openjdk-17-jre-headless`)"
        )
    return found


def parse_java_major(version_output: str) -> int:
    """The major version from `java -version` output ("1.8.0_392" is 8, "17.0.15" is 17)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if match is None:
        raise PrerequisiteError(f"cannot read the Java version from: {version_output.strip()!r}")
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def check_java() -> str:
    """Return the java executable after checking it is at least Java 17."""
    java = java_executable()
    try:
        proc = subprocess.run(
            [java, "-version"], capture_output=True, text=True, timeout=30, check=False
        )
    except OSError as exc:
        raise PrerequisiteError(f"cannot run {java}: {exc}") from None
    major = parse_java_major(proc.stderr + proc.stdout)
    if major < MIN_JAVA:
        raise PrerequisiteError(
            f"Apache Kafka 4 needs Java {MIN_JAVA}+, but {java} is Java {major}; "
            "install a newer JDK and put it on PATH or set JAVA_HOME"
        )
    return java


def check_maven() -> str:
    """Return the mvn executable, or explain that Maven resolves the Kafka jars."""
    found = shutil.which("mvn")
    if found is None:
        raise PrerequisiteError(
            "Maven (`mvn`) is required once to fetch the Apache Kafka jars and is not on "
            "PATH; install it (e.g. `apt-get install maven`)"
        )
    return found
