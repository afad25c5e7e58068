"""`sluice config`: every setting with its environment variable, type, default and meaning.

The reference is generated from the settings model itself, so it cannot drift from what a
process actually reads: compose files, Kubernetes manifests and `deploy/CONFIGURATION.md`
are all checked against `setting_rows()` by the tests.
"""

from __future__ import annotations

import enum
import json
import types
import typing
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import click
from pydantic import AliasChoices, BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from rich.table import Column, Table

from pipelines.cli.common import console, print_json
from pipelines.settings import Settings

PREFIX = "SLUICE_"
NESTED = "__"


@dataclass(frozen=True)
class SettingRow:
    """One leaf setting as an operator sees it."""

    section: str  # "" for top-level settings, else the dotted path of the nested model
    path: str  # dotted attribute path, e.g. "security.protocol"
    env: str  # the environment variable that sets it
    type: str
    default: str
    description: str
    secret: bool


@dataclass(frozen=True)
class Section:
    """A nested settings model: its dotted path, its whole-group JSON variable, its purpose."""

    path: str
    env: str
    doc: str


def _env_names(name: str, info: FieldInfo, prefix: str) -> list[str]:
    """The variables pydantic-settings reads for a field: its aliases first, then its own."""
    alias = info.validation_alias
    own = (prefix + name).upper()
    if isinstance(alias, AliasChoices):
        names = [c for c in alias.choices if isinstance(c, str) and c != name]
        return [n.upper() for n in names] + [own]
    if isinstance(alias, str):
        return [alias.upper(), own]
    return [own]


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The nested model behind an annotation, if it is one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def type_name(annotation: Any) -> str:
    """A short, readable name for a field's type (Literal values spelled out)."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        parts = [type_name(a) for a in args if a is not type(None)]
        optional = " (optional)" if type(None) in args else ""
        return " \\| ".join(parts) + optional
    if origin is tuple:
        inner = type_name(args[0]) if args else "any"
        return f"list of {inner}" if len(args) == 2 and args[1] is Ellipsis else "tuple"
    return _leaf_type_name(annotation)


def _leaf_type_name(annotation: Any) -> str:
    if annotation is SecretStr:
        return "secret"
    if isinstance(annotation, type) and issubclass(annotation, Path):
        return "path"
    return annotation.__name__ if isinstance(annotation, type) else str(annotation)


def default_text(info: FieldInfo) -> str:
    """The default as a reader would type it; home directories shown as `~`."""
    if info.default_factory is not None:
        return value_text(info.default_factory())  # type: ignore[call-arg]
    if info.default is PydanticUndefined:
        return "(required)"
    return value_text(info.default)


def value_text(value: Any) -> str:
    """One default value as text: JSON lists, lower-case booleans, `~` for the home."""
    if value is None:
        return "(unset)"
    if isinstance(value, Path):
        home, text = str(Path.home()), str(value)
        return "~" + text[len(home) :] if text.startswith(home + "/") else text
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (tuple, list)):
        return json.dumps(list(value))
    return str(value) if value != "" else "(empty)"


def walk(
    model: type[BaseModel] = Settings, prefix: str = PREFIX, path: str = ""
) -> tuple[list[SettingRow], list[Section]]:
    """Every leaf setting and every nested section of `model`, in declaration order."""
    rows: list[SettingRow] = []
    sections: list[Section] = []
    for name, info in model.model_fields.items():
        dotted = f"{path}.{name}" if path else name
        nested = _model_of(info.annotation)
        env = _env_names(name, info, prefix)
        if nested is not None:
            doc = (nested.__doc__ or "").strip().splitlines()[0]
            sections.append(Section(dotted, env[0], doc))
            more_rows, more_sections = walk(nested, env[0] + NESTED, dotted)
            rows += more_rows
            sections += more_sections
            continue
        for var in env:
            rows.append(
                SettingRow(
                    section=path,
                    path=dotted,
                    env=var,
                    type=type_name(info.annotation),
                    default=default_text(info),
                    description=" ".join((info.description or "").split()),
                    secret="SecretStr" in repr(info.annotation),
                )
            )
    return rows, sections


def setting_rows() -> list[SettingRow]:
    """Every leaf setting of the settings model."""
    return walk()[0]


def env_names() -> set[str]:
    """Every environment variable the settings model reads: leaves and whole-group JSON."""
    rows, sections = walk()
    return {r.env for r in rows} | {s.env for s in sections}


def markdown() -> str:
    """The configuration reference as Markdown (what `deploy/CONFIGURATION.md` holds)."""
    rows, sections = walk()
    docs = {s.path: s for s in sections}
    out = [
        "# Configuration reference",
        "",
        "Generated from the settings model (`pipelines/settings.py`) by "
        "`sluice config --markdown`; do not edit by hand.",
        "",
        "Every Sluice process (CLI, workers, producers, the compose services and the Kubernetes",
        "pods) reads these environment variables. Nested settings use `__` between levels; a",
        "whole group can also be given as one JSON object in the group's variable (for example",
        '`SLUICE_BACKPRESSURE=\'{"high": 8000, "low": 2000}\'`). An unknown nested key is an',
        "error, but an unknown top-level `SLUICE_` name (say `SLUICE_BACKPRESSURE_HIGH`, one `_`)",
        "is ignored, which is why the deployment tests check every name in the manifests.",
    ]
    for section in [""] + [s.path for s in sections]:
        members = [r for r in rows if r.section == section]
        if not members:
            continue
        if section:
            head = docs[section]
            out += ["", f"## `{section}`", "", f"{head.doc} Whole group as JSON: `{head.env}`."]
        else:
            out += ["", "## General"]
        out += ["", "| Variable | Type | Default | Description |", "| --- | --- | --- | --- |"]
        for r in members:
            secret = " **Secret.**" if r.secret else ""
            out.append(f"| `{r.env}` | {r.type} | `{r.default}` | {_cell(r.description)}{secret} |")
    return "\n".join(out) + "\n"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


@click.command()
@click.option("--markdown", "as_markdown", is_flag=True, help="Print the Markdown reference.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def config(as_markdown: bool, as_json: bool) -> None:
    """List every setting: environment variable, type, default and description.

    \b
    Regenerate the reference shipped with the deployment files:
      sluice config --markdown > deploy/CONFIGURATION.md
    """
    if as_markdown:
        click.echo(markdown(), nl=False)
        return
    rows = setting_rows()
    if as_json:
        print_json([asdict(r) for r in rows])
        return
    table = Table("type", "default", "description")
    table.columns.insert(0, Column("variable", no_wrap=True))
    for r in rows:
        table.add_row(r.env, r.type.replace("\\|", "|"), r.default, r.description)
    console.print(table)
