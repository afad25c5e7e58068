"""How Sluice replaces a piece of Faust (or mode, or the Faust aiokafka driver): one record
per replaced attribute, with the fingerprint of what it replaces.

A replacement is written against one version of one function. If that function changes
upstream, the replacement may silently drop the change (or re-break what it fixed), so
every `Patch` names the attribute it replaces and the SHA-256 of the source it was
written against; `tests/unit/test_runtime.py` fails, per patch, when the installed
source no longer has that fingerprint, and the version guard in
`pipelines.runtime.faust_tuning` refuses to start on a Faust it was not written for.
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

_ORIGINALS: dict[tuple[int, str], Any] = {}  # (id of owner, attribute) -> replaced value


@dataclass(frozen=True)
class Target:
    """One attribute replaced, and the fingerprint of the source it was written against.

    `source` says what is fingerprinted when it is not the attribute itself: a module's
    global (a Cython module's `sleep`) is judged by the module's shipped `.pyx` source.
    """

    owner: Any  # a class or a module
    attribute: str
    fingerprint: str
    source: Callable[[], str] | None = None

    @property
    def label(self) -> str:
        name = getattr(self.owner, "__qualname__", None) or self.owner.__name__
        return f"{name}.{self.attribute}"


@dataclass(frozen=True)
class Patch:
    """A named change to Faust's behaviour: the attributes it replaces, and how.

    `install` receives each target's original value (in `targets` order) and returns the
    replacements, in the same order. It runs once per process.
    """

    name: str
    why: str
    targets: tuple[Target, ...]
    install: Callable[..., tuple[Any, ...]]


def original(owner: Any, attribute: str) -> Any:
    """The value Faust shipped, whether or not it has been replaced since."""
    return _ORIGINALS.get((id(owner), attribute), getattr(owner, attribute))


def is_applied(patch: Patch) -> bool:
    return all((id(t.owner), t.attribute) in _ORIGINALS for t in patch.targets)


def apply(patch: Patch) -> None:
    """Replace the patch's targets (once; applying again does nothing)."""
    if is_applied(patch):
        return
    originals = [getattr(t.owner, t.attribute) for t in patch.targets]
    replacements = patch.install(*originals)
    if len(replacements) != len(patch.targets):
        raise ValueError(f"patch {patch.name} returned {len(replacements)} replacements")
    for target, old, new in zip(patch.targets, originals, replacements, strict=True):
        _ORIGINALS[(id(target.owner), target.attribute)] = old
        setattr(target.owner, target.attribute, new)


def source_text(target: Target) -> str:
    """The source the target's fingerprint covers (of the original, never ours)."""
    if target.source is not None:
        return target.source()
    value = original(target.owner, target.attribute)
    return inspect.getsource(inspect.unwrap(value))


def fingerprint(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def drifted(patch: Patch) -> list[str]:
    """The targets whose installed source no longer matches the patch's fingerprint."""
    return [t.label for t in patch.targets if fingerprint(source_text(t)) != t.fingerprint]


def shipped_source(module: ModuleType, filename: str) -> Callable[[], str]:
    """Read a source file shipped beside `module` (a Cython module's `.pyx`)."""

    def read() -> str:
        return (Path(str(module.__file__)).parent / filename).read_text()

    return read
