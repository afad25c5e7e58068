"""The stage kit: the parts every stage app is built from, made once per app.

Each stage module's `create_app(settings)` starts from `build_kit(stage, settings)`: the
Faust app (`make_app`), the serde, the stage's metrics, its output path and its
dead-letter writer, plus helpers for the raw topics, tables, schema gate and web views
every stage declares the same way. Nothing here is module state: two kits built from two
settings (another topic prefix, another data directory) share nothing, so two apps of
one stage can live in one process (the unit tests build them side by side).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import faust

from pipelines.runtime import faustapp
from pipelines.runtime.deadletter import DeadLetters
from pipelines.runtime.schemagate import SchemaGate
from pipelines.serde import Serde, serde_for
from pipelines.settings import Settings
from pipelines.topology import stage as topology_stage


class Output(Protocol):
    """How a stage writes a record: the app's producer (`DirectSender`), or a test's."""

    def __call__(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Awaitable[Any]: ...


@dataclass(frozen=True)
class StageKit:
    """One stage app and the parts built with it; see `build_kit`."""

    stage: str
    settings: Settings
    app: faustapp.StageApp
    serde: Serde
    metrics: faustapp.StageMetrics
    send: Output
    dead_letters: DeadLetters

    def topic(self, name: str, **options: Any) -> faust.TopicT:
        """A catalog (or internal) topic under this app's prefix, raw bytes, with the
        settings' partition count (the one Faust creates or checks it with)."""
        settings = self.settings
        return self.app.topic(
            settings.topic(name), partitions=settings.partitions, **faustapp.RAW, **options
        )

    def inputs(self, *names: str) -> faust.TopicT:
        """One agent's input: several catalog topics, raw bytes."""
        return self.app.topic(*(self.settings.topic(name) for name in names), **faustapp.RAW)

    def table(self, name: str, schema: faust.Schema[Any, Any], changelog: str | None = None) -> Any:
        """A table of this app; `changelog` names a catalog topic to use as its changelog."""
        topic = None if changelog is None else self.topic(changelog)
        return faustapp.table(self.app, name, schema, topic)

    def schema_gate(self, outputs: Iterable[tuple[str, str]]) -> SchemaGate:
        """A gate for the (schema, catalog topic) pairs the stage writes."""
        topic = self.settings.topic
        return SchemaGate(self.serde, [(schema, topic(name)) for schema, name in outputs])

    def install_web(self, tables: Mapping[str, Any]) -> None:
        """/health and /metrics (the tables' sizes among them) on the app's web server."""
        faustapp.install_web(self.app, self.metrics, tables)


def build_kit(stage: str, settings: Settings, send: Output | None = None) -> StageKit:
    """The app of `stage` configured from `settings`, with its serde, metrics, output and
    dead-letter writer (to the stage's DLQ in the topology).

    The serde's registry client does not retry (`client_retries=0`): the stage's schema
    gates retry, with backoff and off the event loop. `send` is the app's own producer
    (`DirectSender`, covered by Faust's flush-before-commit) unless a test gives another.
    """
    app = faustapp.make_app(stage, settings)
    metrics = faustapp.StageMetrics(stage)
    output: Output = send or faustapp.DirectSender(app).send
    dlq = topology_stage(stage).dlq
    assert dlq is not None, f"stage {stage} has no DLQ in the topology"
    return StageKit(
        stage=stage,
        settings=settings,
        app=app,
        serde=serde_for(settings, client_retries=0),
        metrics=metrics,
        send=output,
        dead_letters=DeadLetters(stage, settings.topic(dlq), output, metrics.dead_letters),
    )
