"""The image recipe and the compose forwarder, checked without a container engine."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from types import ModuleType

import pytest
from packaging.specifiers import SpecifierSet

from pipelines.cli.config import env_names

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
IGNORE = ROOT / "deploy" / "Dockerfile.dockerignore"
K8S_USER = 10001


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for raw in joined.splitlines():
        line = raw.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def base_image() -> str:
    args = dict(a.split("=", 1) for w, a in instructions() if w == "ARG" and "=" in a)
    image = final_stage()[0][1]
    return re.sub(r"\$\{(\w+)\}", lambda m: args[m.group(1)], image)


def test_base_is_a_slim_python_the_project_supports() -> None:
    image = base_image()
    match = re.fullmatch(r"python:(\d+\.\d+)-slim(-\w+)?", image)
    assert match, image
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert match.group(1) + ".0" in SpecifierSet(project["requires-python"])


def test_runs_as_the_non_root_user_kubernetes_expects() -> None:
    users = [a for w, a in final_stage() if w == "USER"]
    assert users
    assert users[-1].split(":")[0] == str(K8S_USER)


def test_entry_point_is_the_cli() -> None:
    (entry,) = [a for w, a in final_stage() if w == "ENTRYPOINT"]
    assert json.loads(entry) == ["sluice"]


def test_dependencies_install_before_the_source_is_copied() -> None:
    steps = instructions()
    copies = [i for i, (w, a) in enumerate(steps) if w == "COPY" and "--from" not in a]
    deps = next(i for i, (w, a) in enumerate(steps) if w == "RUN" and "requirements.txt" in a)
    pyproject = next(i for i in copies if steps[i][1].startswith("pyproject.toml"))
    source = [i for i in copies if steps[i][1].split()[0] in ("pipelines", "producers")]
    assert pyproject < deps < min(source)
    # Nothing but pyproject.toml may be copied before the dependency layer.
    assert [i for i in copies if i < deps] == [pyproject]


def test_the_dependency_step_installs_exactly_the_project_dependencies(tmp_path: Path) -> None:
    run = next(a for w, a in instructions() if w == "RUN" and "requirements.txt" in a)
    code = re.search(r'python -c "([^"]+)"', run)
    assert code
    (tmp_path / "pyproject.toml").write_bytes((ROOT / "pyproject.toml").read_bytes())
    script = code.group(1).replace("/tmp/requirements.txt", str(tmp_path / "req.txt"))
    subprocess.run([sys.executable, "-c", script], cwd=tmp_path, check=True, timeout=60)
    wanted = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert (tmp_path / "req.txt").read_text().split() == wanted


def test_env_names_are_settings_or_read_by_the_code() -> None:
    source = "\n".join(p.read_text() for p in (ROOT / "pipelines").rglob("*.py"))
    read_directly = set(re.findall(r"environ\.get\(\s*\"(SLUICE_\w+)\"", source))
    for word, args in instructions():
        if word == "ENV":
            for name in re.findall(r"(\w+)=", args):
                if name.startswith("SLUICE_"):
                    assert name in env_names() | read_directly, name


def test_dockerignore_lets_every_copied_path_in_and_keeps_the_rest_out() -> None:
    rules = [r for r in IGNORE.read_text().splitlines() if r and not r.startswith("#")]
    assert rules[0] == "*"
    allowed = {r[1:].rstrip("/") for r in rules if r.startswith("!")}
    for word, args in instructions():
        if word == "COPY" and "--from" not in args:
            for source in args.split()[:-1]:
                assert source.rstrip("/") in allowed, source
    assert not {".venv", ".git", "tests", "deploy"} & allowed


def _forward_module() -> ModuleType:
    path = ROOT / "deploy" / "compose" / "forward.py"
    spec = importlib.util.spec_from_file_location("sluice_compose_forward", path)
    assert spec
    assert spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_forwarder_splices_a_connection_to_loopback() -> None:
    forward = _forward_module()

    async def scenario() -> bytes:
        async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            writer.write(b"echo:" + await reader.readline())
            await writer.drain()
            writer.close()

        upstream = await asyncio.start_server(echo, "127.0.0.1", 0)
        target = upstream.sockets[0].getsockname()[1]
        front = await asyncio.start_server(forward.handler(target), "127.0.0.1", 0)
        port = front.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"hello\n")
        await writer.drain()
        answer = await reader.read()
        writer.close()
        front.close()
        upstream.close()
        return bytes(answer)

    assert asyncio.run(asyncio.wait_for(scenario(), timeout=10)) == b"echo:hello\n"


def test_forwarder_refuses_malformed_pairs() -> None:
    forward = _forward_module()
    assert forward.parse(["18025:8025", "18026:8026"]) == [(18025, 8025), (18026, 8026)]
    with pytest.raises(SystemExit):
        forward.parse(["18025"])
