"""What Faust itself costs per record, against Quix Streams and bare client loops.

The floor under every Faust stage, measured side by side in one run. The same backlog
(6 partitions, a fresh topic and consumer group per round) is handled by

  forward:   N raw 80-byte records, each sent on unchanged
  transform: N OrderPlaced records in Sluice's wire format, each decoded, discounted and
             re-encoded by the same `bench.floorcodec` call in every contender

by (a) a one-agent Faust app (`bench.floorapp`; `bench.floortransform` for the transform),
(b) Quix Streams, `app.dataframe(t)[.apply(f)].to_topic(out)` (`bench.quixapp`, run in a
venv of its own, see `bench.quixenv`), (c) a bare aiokafka loop and (d) a bare
confluent-kafka loop, plus (e) the Faust app only reading, for its consume path alone.
All use at-least-once, acks=all and a 50 ms linger. Each is timed from its first record
to its N-th handed to the producer (the confluent-kafka loop, which gets there within one
linger, through its flush), with the CPU of the process doing the work over the same
span; after each round its output topic is checked. Rounds alternate; medians and
the ratios Faust/Quix and Faust/bare aiokafka (of records/s and of CPU per record) are
printed.

    python -m bench.faust_floor [--records 30000] [--repeats 3] [--quix-venv DIR | --no-quix]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

from bench import floorpeers
from bench.common import broker, machine, rounds
from bench.floorcodec import OrderCodec, discount
from bench.floorpeers import Figures, backlog, check_output
from bench.quixenv import QUIX_SPEC, default_venv, quix_python
from pipelines.runner import free_port
from pipelines.serde import SingleObjectSerde
from producers.generator import GeneratorConfig, OrderGenerator

ROOT = Path(__file__).resolve().parents[1]
VALUE = b"x" * 80
QUIX = f"(b) Quix Streams {QUIX_SPEC.split('==')[1]}"
FAUST = "(a) Faust agent"
AIOKAFKA = "(c) bare aiokafka loop"
CONFLUENT = "(d) bare confluent-kafka, through flush"
READ = "(e) Faust agent, consume only"

Payloads = Sequence[tuple[bytes, bytes]]
Check = Callable[[bytes, bytes], bool] | None


def parse_figures(text: str) -> Figures | None:
    """A child's figures line, "<records/s> <CPU s per record>"; None until it is complete."""
    fields = text.split()
    if len(fields) != 2 or not text.endswith("\n"):
        return None
    return float(fields[0]), float(fields[1])


def child_run(cmd: list[str], env: dict[str, str], out: Path, log: Path) -> Figures:
    """Start a contender process, wait for the figures it writes to `out`, stop it."""
    with log.open("wb") as sink:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 300
            while (found := parse_figures(out.read_text() if out.exists() else "")) is None:
                if proc.poll() is not None or time.monotonic() > deadline:
                    tail = log.read_text(errors="replace").splitlines()[-15:]
                    raise RuntimeError(
                        "\n".join([f"{cmd[2]} did not finish; its log ends:", *tail])
                    )
                time.sleep(0.2)
            return found
        finally:
            proc.terminate()  # graceful in both Faust and Quix: they flush what they sent
            proc.wait(timeout=60)


def faust_run(bootstrap: str, records: int, mode: str, tmp: Path, topic: str) -> Figures:
    """The Faust floor app on `topic`: forward, transform (through bench.floortransform), read."""
    env = {
        **os.environ,
        "FLOOR_BROKER": f"kafka://{bootstrap}",
        "FLOOR_TOPIC": topic,
        "FLOOR_RECORDS": str(records),
        "FLOOR_MODE": "read" if mode == "read" else "forward",
        "FLOOR_OUT": str(tmp / f"{topic}.out"),
        "FLOOR_WEB_PORT": str(free_port()),
    }
    module = "bench.floortransform" if mode == "transform" else "bench.floorapp"
    cmd = [sys.executable, "-m", "faust", "-A", f"{module}:app", "worker", "-l", "info"]
    return child_run(cmd, env, tmp / f"{topic}.out", tmp / f"{topic}.log")


def quix_run(
    topic: str, *, python: Path, bootstrap: str, records: int, mode: str, tmp: Path
) -> Figures:
    """The Quix Streams app (`bench.quixapp`) on `topic`, with its venv's Python."""
    out = tmp / f"{topic}.out"
    cmd = [str(python), "-m", "bench.quixapp", "--broker", bootstrap, "--topic", topic]
    cmd += ["--records", str(records), "--mode", mode, "--out", str(out)]
    cmd += ["--state-dir", str(tmp / f"{topic}.state")]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return child_run(cmd, env, out, tmp / f"{topic}.log")


def contender(
    bootstrap: str, payloads: Payloads, run: Callable[[str], Figures], check: Check
) -> Callable[[], Figures]:
    """One round: a fresh backlog of `payloads`, `run` on it, then its output checked."""

    def one_round() -> Figures:
        topic = backlog(bootstrap, payloads)
        result = run(topic)
        if check is not None:
            check_output(bootstrap, topic, len(payloads), check)
        return result

    return one_round


def orders(records: int) -> tuple[Payloads, Check]:
    """N OrderPlaced records encoded by Sluice's serde, and the check of a transformed one."""
    generated = OrderGenerator(GeneratorConfig(seed=16, invalid_fraction=0.0))
    serde, codec = SingleObjectSerde(), OrderCodec()
    originals = {o["order_id"].encode(): o for o in (generated.make(n) for n in range(records))}
    payloads = [(k, serde.encode("sluice.orders.OrderPlaced", o)) for k, o in originals.items()]
    return payloads, lambda key, value: codec.decode(value) == discount(originals[key])


def comparisons(rates: dict[str, float], cpu: dict[str, float], ours: str) -> list[str]:
    """Our ratio to each named peer present: of records/s, and of CPU per record."""
    lines = []
    for peer in (QUIX, AIOKAFKA):
        if peer in rates and rates[peer] and cpu.get(peer):
            lines.append(
                f"  Faust / {peer[4:]}: {rates[ours] / rates[peer]:.2f} of its records/s, "
                f"{cpu[ours] / cpu[peer]:.1f}x its CPU per record"
            )
    return lines


def print_table(title: str, rates: dict[str, list[float]], cpu: dict[str, list[float]]) -> None:
    """Each contender's medians (records/s, CPU µs per record), runs, then the ratios."""
    print(f"\n{title}  ({machine()})")
    print(f"  {'contender':<40} {'records/s':>10} {'CPU/record':>11}   runs (records/s)")
    med_rate = {name: statistics.median(values) for name, values in rates.items()}
    med_cpu = {name: statistics.median(values) for name, values in cpu.items()}
    for name, values in rates.items():
        spread = f"{min(values):,.0f}..{max(values):,.0f}"
        print(f"  {name:<40} {med_rate[name]:>10,.0f} {med_cpu[name] * 1e6:>8,.1f} µs   {spread}")
    for line in comparisons(med_rate, med_cpu, FAUST):
        print(line)


def quix_or_none(venv: Path | None) -> Path | None:
    """Quix's venv Python, or None (with one line saying why) when it cannot be had."""
    if venv is None:
        print("Quix Streams: skipped (--no-quix)")
        return None
    found = quix_python(venv)
    if isinstance(found, str):
        print(f"Quix Streams: skipped, its venv could not be made: {found}")
        return None
    return found


Plan = dict[tuple[str, str], Callable[[], Figures]]  # (mode, contender) -> one round


def plan(bootstrap: str, tmp: Path, n: int, python: Path | None) -> tuple[Plan, int]:
    """Every contender's round, forward and transform; and the encoded order's size."""
    raw: Payloads = [(str(i).encode(), VALUE) for i in range(n)]
    encoded, transformed = orders(n)
    modes: dict[str, tuple[Payloads, Check]] = {
        "forward": (raw, lambda key, value: value == VALUE),
        "transform": (encoded, transformed),
    }
    runs: Plan = {}
    for mode, (payloads, check) in modes.items():
        change = OrderCodec().transform if mode == "transform" else None
        peers: dict[str, Callable[[str], Figures]] = {
            FAUST: partial(faust_run, bootstrap, n, mode, tmp),
            AIOKAFKA: partial(floorpeers.aiokafka_run, bootstrap, records=n, change=change),
            CONFLUENT: partial(floorpeers.confluent_run, bootstrap, records=n, change=change),
        }
        if python is not None:
            peers[QUIX] = partial(
                quix_run, python=python, bootstrap=bootstrap, records=n, mode=mode, tmp=tmp
            )
        for name in (FAUST, QUIX, AIOKAFKA, CONFLUENT):
            if name in peers:
                runs[mode, name] = contender(bootstrap, payloads, peers[name], check)
        if mode == "forward":
            reader = partial(faust_run, bootstrap, n, "read", tmp)
            runs[mode, READ] = contender(bootstrap, raw, reader, None)
    return runs, len(encoded[0][1])


def alternate(runs: Plan, repeats: int) -> dict[tuple[str, str], tuple[list[float], list[float]]]:
    """Alternating rounds of every contender: per contender, its records/s and CPU lists."""
    cpu: dict[tuple[str, str], list[float]] = {key: [] for key in runs}

    def rate_of(key: tuple[str, str]) -> Callable[[], float]:
        def run() -> float:
            rate, per_record = runs[key]()
            cpu[key].append(per_record)
            print(f"  {key[0]:<9} {key[1]:<40} {rate:>10,.0f}/s {per_record * 1e6:>7,.1f} µs")
            return rate

        return run

    rates = rounds({"|".join(key): rate_of(key) for key in runs}, repeats)
    return {key: (rates["|".join(key)], cpu[key]) for key in runs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--records", type=int, default=30_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quix-venv", type=Path, default=default_venv())
    parser.add_argument("--no-quix", action="store_const", const=None, dest="quix_venv")
    args = parser.parse_args()
    n, python = args.records, quix_or_none(args.quix_venv)
    with broker() as bootstrap, tempfile.TemporaryDirectory(prefix="sluice-floor-") as tmp:
        runs, size = plan(bootstrap, Path(tmp), n, python)
        figures = alternate(runs, args.repeats)
    titles = {
        "forward": f"Forward {n:,} raw 80-byte records, 6 partitions",
        "transform": f"Transform {n:,} OrderPlaced records ({size} B), 6 partitions, Avro decode+"
        "change+encode",
    }
    for mode, title in titles.items():
        rates = {name: f[0] for (m, name), f in figures.items() if m == mode}
        cpu = {name: f[1] for (m, name), f in figures.items() if m == mode}
        print_table(title, rates, cpu)


if __name__ == "__main__":
    main()
