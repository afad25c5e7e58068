"""Quix Streams' own venv for the floor bench, created on first use.

Quix Streams pins an older confluent-kafka than Sluice, so it can never share the
project's environment. The bench makes a venv of its own (by default under the user's
cache directory, outside the repository), installs the pinned `QUIX_SPEC` into it with
pip's default index, and remembers the spec in a marker file, so later runs start at
once and a changed pin rebuilds it. When the venv cannot be made (offline, pip failing)
the bench gets one line saying why and runs the other contenders.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

# The Quix Streams release the table was measured with; [avro] brings fastavro,
# which bench.floorcodec needs for the transform rounds.
QUIX_SPEC = "quixstreams[avro]==3.28.1"
MARKER = ".sluice-bench-spec"


def default_venv() -> Path:
    """Where the venv lives unless told otherwise: $XDG_CACHE_HOME/sluice/bench-quix-venv."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "sluice" / "bench-quix-venv"


def ready(venv: Path, spec: str = QUIX_SPEC) -> bool:
    """Whether `venv` has a Python and was completed for exactly `spec`."""
    marker = venv / MARKER
    python = venv / "bin" / "python"
    return python.exists() and marker.exists() and marker.read_text().strip() == spec


def last_line(text: str) -> str:
    """The last non-blank line of a tool's output, for a one-line reason."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else "no output"


def quix_python(venv: Path, spec: str = QUIX_SPEC, timeout: float = 900) -> Path | str:
    """The venv's Python, creating the venv first if needed; or why it could not be made."""
    python = venv / "bin" / "python"
    if ready(venv, spec):
        return python
    print(f"Quix Streams: creating its venv in {venv} ({spec}), once", flush=True)
    steps = [
        [sys.executable, "-m", "venv", "--clear", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", spec],
    ]
    for step in steps:
        try:
            done = subprocess.run(
                step, check=False, capture_output=True, text=True, timeout=timeout
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"{Path(step[0]).name} {step[2]}: {exc}"
        if done.returncode != 0:
            return f"{step[2]} {step[-1]} failed: {last_line(done.stderr + done.stdout)}"
    (venv / MARKER).write_text(spec + "\n")
    return python
