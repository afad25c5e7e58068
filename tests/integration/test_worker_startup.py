"""A stage worker's start-up, whichever command starts it (`sluice worker` or Faust's own
`faust -A pipelines.<stage>:app worker`), on the session broker:

* local tables of topics that were deleted and created again are discarded with one log
  line, restored from the changelogs, and the stage processes new orders correctly;
* two Faust-CLI workers on one host get one table directory each (from `-p`), and a
  SIGKILLed one discards its tables at its next start;
* /health turns 503, naming the agent and its error, once an agent has crashed;
* every start-up failure is one `error:` line and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from pipelines import admin
from pipelines.catalog import all_specs
from pipelines.errors import SluiceError
from pipelines.runner import StageProcess, free_port
from pipelines.settings import Settings
from producers.generator import GeneratorConfig, OrderGenerator
from producers.inventory import seed_inventory
from producers.orders import OrderRun, produce_orders
from tests.support import pipeline
from tests.support.processes import REPO, wait_for

SKUS = 20
DISCARDED = "discarding the local tables in "
_WORKER_IDENTITY = ("SLUICE_WEB_PORT", "SLUICE_WORKER_NAME")  # a test's workers get neither


@pytest.fixture
def orders_settings(pipeline_settings: Settings) -> Settings:
    """The order stage alone: backpressure off (nothing drains the notification topics)."""
    off = pipeline_settings.backpressure.model_copy(update={"enabled": False})
    return pipeline_settings.model_copy(update={"commit_interval_s": 1.0, "backpressure": off})


def _faust_worker(settings: Settings, app: str, port: int, log: Path, **env: str) -> StageProcess:
    """`faust -A APP worker -p PORT`: Faust's own CLI, told nothing but the settings."""
    inherited = {k: v for k, v in os.environ.items() if k not in _WORKER_IDENTITY}
    environment = {**inherited, **settings.as_env(), "PYTHONPATH": str(REPO), **env}
    cmd = [sys.executable, "-m", "faust", "-A", app, "worker", "-p", str(port), "-l", "info"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab") as out:
        proc = subprocess.Popen(
            cmd, cwd=REPO, env=environment, stdout=out, stderr=subprocess.STDOUT
        )
    return StageProcess(app, log.stem, port, log, proc)


def _orders(settings: Settings, seed: int, count: int) -> set[str]:
    """Produce `count` orders over the first SKUS SKUs; their ids."""
    config = GeneratorConfig(seed=seed, skus=SKUS, invalid_fraction=0.0)
    produce_orders(settings, OrderRun(count=count, generator=config))
    generator = OrderGenerator(config)
    return {generator.order_id(n) for n in range(count)}


def _recreate_topics(settings: Settings) -> None:
    """Delete every topic of the prefix, wait until they are gone, create them again."""
    names = [settings.topic(spec.name) for spec in all_specs()]
    admin.delete_topics(settings, names)
    wait_for(
        lambda: not set(names) & set(admin.list_topics(settings)),
        timeout=60,
        what="the deleted topics to disappear",
    )
    admin.ensure_topics(settings)


def _ready(worker: StageProcess) -> None:
    """Wait until the worker serves its partitions; if it dies, fail with its error lines."""
    try:
        worker.wait_ready()
    except SluiceError:
        lines = worker.output().splitlines()
        errors = [line[:400] for line in lines if "[ERROR]" in line or "[CRITICAL]" in line]
        raise AssertionError(f"{worker.name} did not start: " + "\n".join(errors[:5])) from None


def _discard_lines(log: str) -> list[str]:
    return [line for line in log.splitlines() if DISCARDED in line]


def test_tables_of_deleted_and_recreated_topics_are_discarded_and_restored(
    orders_settings: Settings, tmp_path: Path
) -> None:
    """A cleanly stopped worker's tables describe changelogs that no longer exist once
    the topics are deleted and created again (as after `sluice kafka down --purge`):
    Faust would refuse them ("persisted offset ... higher than the last offset"), or,
    worse, take them for the truth. The next start discards them in one line, and the
    new orders end exactly once with stock that adds up."""
    settings = orders_settings
    seed_inventory(settings, SKUS)
    port = free_port()
    with pipeline.workers(settings, tmp_path / "logs") as fleet:
        first = fleet.start("orders", name="w1", port=port)
        _ready(first)
        pipeline.wait_for_outcomes(settings, _orders(settings, 61, 40), 120, fleet)
        assert first.stop() == 0, first.output()[-3000:]
        _recreate_topics(settings)
        seed_inventory(settings, SKUS)
        seen = len(first.output())
        second = fleet.start("orders", name="w1", port=port)  # same table directory
        _ready(second)
        ids = _orders(settings, 62, 40)
        found = pipeline.wait_for_outcomes(settings, ids, 120, fleet)
        log = second.output()[seen:]
    discards = _discard_lines(log)
    assert len(discards) == 1, log[-3000:]
    assert "was deleted and created again" in discards[0], discards[0]
    assert "Traceback" not in log, log[-3000:]
    assert found.keys() == ids  # the first run's outcomes went with the old topics
    pipeline.check_invariants(settings, found, ids, SKUS)


@pytest.mark.chaos
def test_faust_cli_workers_get_a_table_dir_each_and_the_crash_guard(
    orders_settings: Settings, tmp_path: Path
) -> None:
    """`faust -A pipelines.orders:app worker -p A` and `-p B` on one host: each keeps its
    tables under its own port, both run; B SIGKILLed and started again discards its
    tables (one line) instead of trusting a store that may be ahead of Kafka."""
    settings = orders_settings
    app_dir = settings.data_dir / "faust" / settings.group("sluice-orders")
    host = socket.gethostname()
    a, b = free_port(), free_port()
    logs = tmp_path / "logs"
    workers = [
        _faust_worker(settings, "pipelines.orders:app", a, logs / "a.log"),
        _faust_worker(settings, "pipelines.orders:app", b, logs / "b.log"),
    ]
    try:
        for worker in workers:
            _ready(worker)
        assert sorted(p.name for p in app_dir.iterdir()) == sorted([f"{host}-{a}", f"{host}-{b}"])
        b_dir = app_dir / f"{host}-{b}"
        assert list(b_dir.rglob("*.db")), "worker B opened no table"
        workers[1].kill()
        workers.append(_faust_worker(settings, "pipelines.orders:app", b, logs / "b2.log"))
        _ready(workers[2])
        assert workers[0].alive(), workers[0].output()[-3000:]
        discards = _discard_lines(workers[2].output())
        assert len(discards) == 1, workers[2].output()[-3000:]
        assert f"{b_dir}: the last run did not stop cleanly" in discards[0]
    finally:
        for worker in workers:
            worker.stop()
    assert workers[0].proc.returncode == 0, workers[0].output()[-3000:]


def _health(port: int) -> tuple[int, dict[str, Any]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=3) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.slow
def test_health_turns_503_naming_the_agent_once_it_crashed(
    pipeline_settings: Settings, topic_factory: Callable[..., str], tmp_path: Path
) -> None:
    """An agent that raises is restarted by Faust's supervisor: the process lives on and
    the page still answered "ok" while the agent crash-looped. Now it says which agent
    crashed and why, with a 503 that probes and load balancers act on."""
    source = topic_factory("fragile", partitions=pipeline_settings.partitions)
    port = free_port()
    worker = _faust_worker(
        pipeline_settings,
        "tests.integration.faust_fragile:app",
        port,
        tmp_path / "fragile.log",
        FRAGILE_IN=source,
    )
    try:
        _ready(worker)
        assert _health(port)[0] == 200
        producer = Producer(pipeline_settings.confluent_producer())
        for value in (b"fine", b"poison"):
            producer.produce(source, value, key=b"k")
        assert producer.flush(10) == 0
        deadline = time.monotonic() + 30
        status, body = _health(port)
        while status == 200 and time.monotonic() < deadline:
            time.sleep(0.3)
            status, body = _health(port)
        assert worker.alive(), worker.output()[-3000:]
    finally:
        worker.stop()
    assert status == 503, body
    assert body["status"] != "ok"
    agent = "tests.integration.faust_fragile.fragile"
    assert agent in body["error"], body
    assert "ValueError: poison value b'poison'" in body["error"], body
    assert body["crashed_agents"][0]["agent"] == agent


def _start_up(argv: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    inherited = {k: v for k, v in os.environ.items() if k not in _WORKER_IDENTITY}
    environment = {**inherited, "PYTHONPATH": str(REPO), **env}
    return subprocess.Popen(
        [sys.executable, "-m", *argv],
        cwd=REPO,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.slow
def test_every_start_up_failure_is_one_line_and_a_non_zero_exit(
    pipeline_settings: Settings, tmp_path: Path
) -> None:
    """Garbage at start-up, through both entry points: a busy web port, malformed
    settings, a data dir under a file, a table dir another worker holds, no broker,
    topics that contradict the catalog. Each run exits non-zero with exactly one
    `error:` line on stderr naming the problem and the way out, and no traceback."""
    from pipelines.runtime.statedir import DirLock

    settings = pipeline_settings
    env = settings.as_env()
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    busy_port = busy.getsockname()[1]
    held = settings.worker_dir(settings.group("sluice-orders"), 0, "held")
    held.mkdir(parents=True)
    lock = DirLock(held).acquire()
    nobody = {
        "KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}",
        "SLUICE_REQUEST_TIMEOUT_S": "2",
    }

    def faust(port: int) -> list[str]:
        return ["faust", "-A", "pipelines.orders:app", "worker", "-p", str(port), "-l", "info"]

    def sluice(port: int) -> list[str]:
        return ["pipelines.cli", "worker", "orders", "--web-port", str(port)]

    cases: dict[str, tuple[list[str], dict[str, str], int, tuple[str, ...]]] = {}
    for name, command in (("faust", faust), ("sluice", sluice)):
        cases |= {
            f"{name}: busy web port": (
                command(busy_port),
                env,
                1,
                (
                    f"web port {busy_port} on 127.0.0.1 is already in use by pid {os.getpid()}",
                    "-p/--web-port",
                ),
            ),
            f"{name}: malformed SLUICE_BACKPRESSURE": (
                command(free_port()),
                {**env, "SLUICE_BACKPRESSURE": "{bad"},
                2,
                ("invalid settings", "backpressure", "JSON"),
            ),
            f"{name}: no broker": (
                command(free_port()),
                {**env, **nobody},
                1,
                ("no Kafka broker answered at", "sluice kafka up"),
            ),
        }
    cases |= {
        "faust: partitions not a number": (
            faust(free_port()),
            {**env, "SLUICE_PARTITIONS": "abc"},
            2,
            ("invalid settings: partitions",),
        ),
        "faust: data dir under a file": (
            faust(free_port()),
            {**env, "SLUICE_DATA_DIR": str(blocker / "sluice")},
            1,
            (f"{blocker} is a file, not a directory", "SLUICE_DATA_DIR"),
        ),
        "faust: table dir held by another worker": (
            faust(free_port()),
            {**env, "SLUICE_WORKER_NAME": "held"},
            1,
            (f"{held} is in use by another worker (pid {os.getpid()})", "--name"),
        ),
        "faust: topics that contradict the catalog": (
            faust(free_port()),
            {**env, "SLUICE_PARTITIONS": "4"},
            1,
            ("do not match the catalog", "has 3 partitions, catalog says 4"),
        ),
    }
    deadline = time.monotonic() + 45  # every one of them is a prompt failure
    runs: dict[str, subprocess.Popen[str]] = {}
    outputs: dict[str, tuple[str, str]] = {}
    try:
        for case, (argv, run_env, _, _) in cases.items():
            runs[case] = _start_up(argv, run_env)
        for case, run in runs.items():
            outputs[case] = _outcome(run, deadline)
    finally:
        for run in runs.values():
            if run.poll() is None:
                run.kill()
                run.communicate()
        busy.close()
        lock.release()
    problems = []
    for case, (out, err) in outputs.items():
        _argv, _env, code, needles = cases[case]
        lines = err.strip().splitlines()
        ok = (
            runs[case].returncode == code
            and len(lines) == 1
            and lines[0].startswith("error: ")
            and all(needle in lines[0] for needle in needles)
            and "Traceback" not in out + err
            and (case.startswith("faust") or out == "")
        )
        if not ok:
            shown = "\n".join([*lines[:3], "...", *lines[-3:]]) if len(lines) > 6 else err
            problems.append(
                f"--- {case}: exit {runs[case].returncode}, {len(lines)} lines on stderr\n{shown}"
            )
    assert not problems, "\n".join(problems)


def _outcome(run: subprocess.Popen[str], deadline: float) -> tuple[str, str]:
    """Its stdout and stderr once it exits; killed (and said so) if it runs past `deadline`."""
    try:
        return run.communicate(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        run.kill()
        out, err = run.communicate()
        return out, err + "\n(still running at the deadline: killed)"
