"""`pipelines/stages/` holds pure logic only: no module there imports a Kafka, Faust or
HTTP client, nor the runtime that drives it. That is what lets saga, stock, notify and
windows be tested without a broker; a runtime import there would undo it quietly.

The check reads the source with `ast` (it imports nothing), so an import inside a function
or under `if TYPE_CHECKING:` counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import pipelines.stages

STAGES_DIR = Path(pipelines.stages.__file__).parent
#: Top-level packages (and `pipelines.runtime`) a pure stage module must not import.
FORBIDDEN = ("faust", "mode", "aiokafka", "confluent_kafka", "aiohttp", "pipelines.runtime")


def _is_forbidden(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in FORBIDDEN)


def _absolute(node: ast.ImportFrom, package: str) -> str:
    """The module a `from` import reads, with a relative one resolved against `package`."""
    if node.level == 0:
        return node.module or ""
    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
    return ".".join(parts + ([node.module] if node.module else []))


def forbidden_imports(
    source: str, filename: str = "<source>", package: str = "pipelines.stages"
) -> list[str]:
    """Every forbidden import in `source`, as `line: module` (empty when it is pure).

    `from pipelines import runtime` names the package through its parent, so each
    imported name is checked as `<module>.<name>` as well; `from .. import runtime` in
    `package` is resolved first.
    """
    found: list[str] = []
    for node in ast.walk(ast.parse(source, filename)):
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, package)
            modules = [base] + [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found += [f"{node.lineno}: {m}" for m in modules if _is_forbidden(m)][:1]
    return found


def stage_modules() -> list[Path]:
    return sorted(STAGES_DIR.glob("*.py"))


def test_the_walk_sees_the_stage_modules() -> None:
    names = {path.stem for path in stage_modules()}
    assert {"saga", "stock", "notify", "windows"} <= names


@pytest.mark.parametrize("path", stage_modules(), ids=lambda path: path.name)
def test_stage_module_is_pure(path: Path) -> None:
    found = forbidden_imports(path.read_text(), str(path))
    assert found == [], f"{path.name} is not pure, it imports runtime: {found}"


@pytest.mark.parametrize(
    "line",
    [
        "import faust",
        "import mode.utils",
        "import aiokafka as kafka",
        "from confluent_kafka.admin import AdminClient",
        "from aiohttp import web",
        "from faust.types import TP",
        "from pipelines.runtime import commits",
        "from pipelines.runtime.faustapp import StageMetrics",
        "from pipelines import runtime",
        "from .. import runtime",
        "from ..runtime.commits import hold_partitions",
        "import pipelines.runtime.batches",
        "def f():\n    import faust\n",
        "if TYPE_CHECKING:\n    from aiokafka import TopicPartition\n",
    ],
)
def test_each_forbidden_import_is_caught(line: str) -> None:
    assert len(forbidden_imports(f"from __future__ import annotations\n{line}\n")) == 1


@pytest.mark.parametrize(
    "line",
    [
        "import modest",
        "import faustish",
        "from pipelines import topology",
        "from pipelines.stages import windows",
        "from . import windows",
        "from .saga import Saga",
        "import pydantic",
    ],
)
def test_lookalikes_are_allowed(line: str) -> None:
    assert forbidden_imports(line) == []
