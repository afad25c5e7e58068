"""Only the settings module reads the environment.

Every variable a Sluice process honours is then typed, validated and found in one place
(`pipelines/settings.py`), and `sluice config` can list it. Passing the environment on
whole to a child process (`{**os.environ, ...}`, `env=os.environ`) is not a read.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("pipelines", "producers", "consumers")
SETTINGS_MODULE = ROOT / "pipelines" / "settings.py"
READERS = {"environ", "getenv", "environb", "getenvb"}


class _EnvironmentReads(ast.NodeVisitor):
    """Collects each line that reads the environment through `os`, however imported."""

    def __init__(self) -> None:
        self.lines: list[int] = []
        self._os_names = {"os"}
        self._passed_whole: set[int] = set()  # ids of `os.environ` nodes handed on whole

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name == "os":
                self._os_names.add(alias.asname or "os")

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module == "os" and any(a.name in READERS for a in node.names):
            self.lines.append(node.lineno)

    def visit_Dict(self, node: ast.Dict) -> None:
        for key, value in zip(node.keys, node.values, strict=True):
            if key is None:  # {**os.environ, ...}
                self._passed_whole.add(id(value))
        self.generic_visit(node)

    def visit_keyword(self, node: ast.keyword) -> None:
        self._passed_whole.add(id(node.value))  # env=os.environ
        self.generic_visit(node)

    def visit_Attribute(self, node: ast.Attribute) -> None:
        if (
            node.attr in READERS
            and isinstance(node.value, ast.Name)
            and node.value.id in self._os_names
            and id(node) not in self._passed_whole
        ):
            self.lines.append(node.lineno)
        self.generic_visit(node)


def environment_reads(source: str) -> list[int]:
    """The lines of `source` that read the environment (not merely pass it on)."""
    visitor = _EnvironmentReads()
    visitor.visit(ast.parse(source))
    return sorted(visitor.lines)


def test_only_the_settings_module_reads_the_environment() -> None:
    offenders = [
        f"{path.relative_to(ROOT)}:{line}"
        for folder in FOLDERS
        for path in sorted((ROOT / folder).rglob("*.py"))
        if path != SETTINGS_MODULE
        for line in environment_reads(path.read_text())
    ]
    assert offenders == [], "read it through pipelines/settings.py instead"


def test_the_settings_module_is_where_they_are_read() -> None:
    assert environment_reads(SETTINGS_MODULE.read_text()) != []


def test_the_check_sees_every_way_of_reading() -> None:
    reads = [
        'import os\nport = os.environ.get("SLUICE_WEB_PORT")',
        'import os\nport = os.environ["SLUICE_WEB_PORT"]',
        'import os\nif "JAVA_HOME" in os.environ: pass',
        'import os\nhome = os.getenv("JAVA_HOME")',
        "import os as system\nnames = list(system.environ)",
        "from os import environ",
        "from os import getenv as read",
        "import os\nenv = os.environ\nport = env['SLUICE_WEB_PORT']",
    ]
    for source in reads:
        assert environment_reads(source) != [], source


def test_handing_the_environment_on_whole_is_no_read() -> None:
    passes = [
        'import os\nenv = {**os.environ, "SLUICE_WEB_PORT": "1"}',
        "import os, subprocess\nsubprocess.run(['true'], env=os.environ)",
        "import os\npid = os.getpid()",
        "environ = {}\nvalue = environ.get('x')",  # not the os one
    ]
    for source in passes:
        assert environment_reads(source) == [], source
