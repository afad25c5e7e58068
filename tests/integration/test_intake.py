"""The HTTP intake as a client sees it: `sluice serve intake` processes on a real broker.

Every test starts the real server (a child process, bound to 127.0.0.1) against its own
copy of the pipeline topics and checks the outcome from the outside: the HTTP answers,
and what actually landed on `orders.placed` (read back with a plain consumer), so
"accepted exactly once" and "nothing published" are facts about the topic, not about
the server's own counters.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from consumers.tail import StartAt, read
from pipelines import admin, domain
from pipelines.localkafka import LocalCluster, free_base_port
from pipelines.runner import free_port
from pipelines.settings import BackpressureSettings, Settings
from producers.generator import GeneratorConfig
from producers.inventory import seed_inventory
from producers.orders import OrderRun, produce_orders
from tests.support import httpfuzz, pipeline, processes

LIMIT = 4096
MAX_LINES = 5


def order(*lines: tuple[int, int], **extra: Any) -> dict[str, Any]:
    """A schema-valid order body for SKUs by index, (sku index, quantity) per line."""
    pairs = lines or ((1, 1),)
    items = [{"sku": domain.sku_code(s), "quantity": q, "unit_price_cents": 250} for s, q in pairs]
    body = {
        "customer_id": "C-000001",
        "lines": items,
        "currency": "EUR",
        "total_cents": sum(q * 250 for _s, q in pairs),
    }
    return {**body, **extra}


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: Any


@dataclass
class Server:
    """One running intake: its process and port, and a small blocking HTTP client."""

    child: processes.Child
    port: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            response = conn.getresponse()
            raw = response.read()
            kind = response.getheader("Content-Type") or ""
            parsed = json.loads(raw) if kind.startswith("application/json") else raw.decode()
            return Reply(response.status, dict(response.getheaders()), parsed)
        finally:
            conn.close()

    def post(self, body: Any, key: str | None = None, raw: bytes | None = None) -> Reply:
        headers = {"Content-Type": "application/json"}
        if key is not None:
            headers["Idempotency-Key"] = key
        data = raw if raw is not None else json.dumps(body).encode()
        return self.call("POST", "/orders", data, headers)

    def status(self, order_id: str) -> Reply:
        return self.call("GET", f"/orders/{order_id}")

    def health(self) -> dict[str, Any]:
        reply = self.call("GET", "/health")
        assert reply.status == 200, reply
        return dict(reply.body)

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.child.alive():
                raise AssertionError(f"the intake exited:\n{self.child.output()[-3000:]}")
            try:
                if self.health().get("status_caught_up"):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise AssertionError(f"the intake was not ready in {timeout:.0f}s:\n{self.child.output()}")


@contextmanager
def intake(settings: Settings, logs: Path, *options: str) -> Iterator[Server]:
    """`sluice serve intake` on a free loopback port; stopped (and checked) at the end."""
    port = free_port()
    cmd = processes.python("-m", "pipelines.cli", "serve", "intake", "--port", str(port), *options)
    log = logs / f"intake-{port}.log"
    child = processes.start(cmd, log, env=settings.as_env(), name="intake")
    server = Server(child, port)
    try:
        server.wait_ready()
        yield server
    except BaseException:
        child.stop(30)
        raise
    code = child.stop(30)
    assert not child.killed, f"the intake had to be killed:\n{child.output()[-3000:]}"
    assert code == 0, f"the intake exited with {code}:\n{child.output()[-3000:]}"


def placed(settings: Settings) -> Counter[str]:
    """How many records each order id has on orders.placed (the record key is the id)."""
    ids: Counter[str] = Counter()
    for row in read(settings, "orders.placed", StartAt("beginning")):
        assert "error" not in row, row
        assert row["key"] == row["value"]["order_id"]
        ids[row["key"]] += 1
    return ids


@pytest.fixture
def calm(pipeline_settings: Settings) -> Settings:
    """No payment declines (outcomes are then a function of stock alone) and no
    backpressure on the order stage (no notifications group drains its outputs here)."""
    return pipeline_settings.model_copy(
        update={
            "orders": pipeline_settings.orders.model_copy(update={"decline_rate": 0.0}),
            "backpressure": pipeline_settings.backpressure.model_copy(update={"enabled": False}),
        }
    )


LIMITS = ("--max-body-bytes", str(LIMIT), "--max-lines", str(MAX_LINES))


# --- exactly once ---------------------------------------------------------------------


async def _burst(base: str, key: str, copies: int) -> list[tuple[int, str]]:
    """`copies` identical requests with one key, all in flight at once."""
    body = order((2, 1), (3, 2))
    async with aiohttp.ClientSession() as session:

        async def one() -> tuple[int, str]:
            headers = {"Idempotency-Key": key}
            async with session.post(f"{base}/orders", json=body, headers=headers) as response:
                return response.status, (await response.json())["order_id"]

        return await asyncio.gather(*(one() for _ in range(copies)))


def test_every_accepted_order_is_on_orders_placed_exactly_once(
    calm: Settings, tmp_path: Path
) -> None:
    accepted: list[str] = []
    with intake(calm, tmp_path, *LIMITS) as server:
        for n in range(20):  # no key: every request is a new order
            reply = server.post(order((n % 7, 1)))
            assert reply.status == 202, reply
            assert reply.headers["Location"] == f"/orders/{reply.body['order_id']}"
            accepted.append(reply.body["order_id"])
        for n in range(15):  # client retries with the same key: one order per key
            key = f"retry-{uuid.uuid4().hex}"
            answers = [server.post(order((n, 2)), key=key) for _ in range(3)]
            assert [a.status for a in answers] == [202, 202, 202]
            assert len({a.body["order_id"] for a in answers}) == 1
            assert [a.headers.get("Idempotent-Replayed") for a in answers] == [None, "true", "true"]
            accepted.append(answers[0].body["order_id"])
        for _ in range(8):  # concurrent duplicates: in flight together, one publication
            results = asyncio.run(_burst(server.base, f"burst-{uuid.uuid4().hex}", 6))
            assert {status for status, _ in results} == {202}
            ids = {order_id for _, order_id in results}
            assert len(ids) == 1, results
            accepted.append(ids.pop())
    assert len(set(accepted)) == len(accepted) == 43
    assert placed(calm) == Counter(dict.fromkeys(accepted, 1))


async def _same_id_burst(base: str, order_id: str, copies: int) -> list[tuple[int, str, Any]]:
    """`copies` different orders (one customer each) with one client-chosen id, at once."""
    async with aiohttp.ClientSession() as session:

        async def one(n: int) -> tuple[int, str, Any]:
            customer = f"C-{n:06d}"
            body = order((n % 5, 1), order_id=order_id, customer_id=customer)
            async with session.post(f"{base}/orders", json=body) as response:
                return response.status, customer, await response.json()

        return await asyncio.gather(*(one(n) for n in range(copies)))


def test_concurrent_orders_with_one_client_order_id_are_accepted_once(
    calm: Settings, tmp_path: Path
) -> None:
    """Issue 15, case 1: no Idempotency-Key, one order_id, ten customers at once."""
    rounds: list[tuple[str, str]] = []  # (order id, the customer whose order was accepted)
    with intake(calm, tmp_path, *LIMITS) as server:
        for _ in range(5):
            order_id = f"O-shared-{uuid.uuid4().hex[:8]}"
            answers = asyncio.run(_same_id_burst(server.base, order_id, 10))
            statuses = sorted(status for status, _c, _b in answers)
            assert statuses == [202] + [409] * 9, answers
            winner = next(customer for status, customer, _b in answers if status == 202)
            assert all(
                order_id in body["error"] for status, _c, body in answers if status == 409
            ), answers
            rounds.append((order_id, winner))
            later = server.post(order(order_id=order_id, customer_id="C-late"))
            assert later.status == 409, later  # and one after the burst is a conflict too
    placed_records = {
        row["key"]: row["value"]["customer_id"]
        for row in read(calm, "orders.placed", StartAt("beginning"))
    }
    assert placed(calm) == Counter({order_id: 1 for order_id, _w in rounds})
    assert placed_records == dict(rounds)  # the accepted order is the one on the topic


def test_keys_survive_a_restart_and_a_reused_key_with_another_order_is_refused(
    calm: Settings, tmp_path: Path
) -> None:
    key = f"restart-{uuid.uuid4().hex}"
    with intake(calm, tmp_path, *LIMITS) as first:
        before = first.post(order((4, 1)), key=key)
        assert before.status == 202
    with intake(calm, tmp_path, *LIMITS) as second:  # keys re-read from orders.placed
        again = second.post(order((4, 1)), key=key)
        assert again.status == 202
        assert again.body["order_id"] == before.body["order_id"]
        assert again.headers.get("Idempotent-Replayed") == "true"
        other = second.post(order((5, 1)), key=key)
        assert other.status == 409
        assert "different order" in other.body["error"]
    assert placed(calm) == Counter({before.body["order_id"]: 1})


# --- bad input ------------------------------------------------------------------------


BAD_INPUT: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("malformed JSON", b'{"customer_id": "C-1", ', {}, 400, "malformed JSON"),
    ("not UTF-8", b'{"customer_id": "\xff"}', {}, 400, "malformed JSON"),
    ("empty body", b"", {}, 400, "empty"),
    ("not an object", b"[1, 2]", {}, 422, "must be a JSON object"),
    (
        "wrong types",
        json.dumps(order(total_cents="ten", customer_id=7)).encode(),
        {},
        422,
        "total_cents",
    ),
    ("unknown field", json.dumps(order(coupon="FREE")).encode(), {}, 422, "coupon: unknown field"),
    (
        "missing field",
        json.dumps({k: v for k, v in order().items() if k != "lines"}).encode(),
        {},
        422,
        "lines",
    ),
    ("oversize body", json.dumps(order(customer_id="C" * LIMIT)).encode(), {}, 413, "larger"),
    (
        "too many lines",
        json.dumps(order(*[(n, 1) for n in range(MAX_LINES + 1)])).encode(),
        {},
        422,
        f"at most {MAX_LINES} lines",
    ),
    ("server field", json.dumps(order(client_ref="x")).encode(), {}, 422, "client_ref"),
    ("bad order id", json.dumps(order(order_id="../etc")).encode(), {}, 422, "order_id"),
    ("bad key", json.dumps(order()).encode(), {"Idempotency-Key": "has space"}, 400, "Idempotency"),
    (
        "event time at the low end of long",
        json.dumps(order(placed_at=-(2**63))).encode(),
        {},
        422,
        "placed_at: event time -9223372036854775808 is outside the accepted range",
    ),
    (
        "event time at the high end of long",
        json.dumps(order(placed_at=2**63 - 1)).encode(),
        {},
        422,
        "placed_at: event time 9223372036854775807 is outside the accepted range",
    ),
    ("event time before 1970", json.dumps(order(placed_at=-1)).encode(), {}, 422, "placed_at"),
]


def test_bad_input_is_refused_with_a_clear_message_and_nothing_published(
    calm: Settings, tmp_path: Path
) -> None:
    with intake(calm, tmp_path, *LIMITS) as server:
        for name, body, extra, status, words in BAD_INPUT:
            headers = {"Content-Type": "application/json", **extra}
            reply = server.call("POST", "/orders", body, headers)
            assert reply.status == status, (name, reply)
            text = reply.body["error"] + " ".join(reply.body.get("problems", []))
            assert words in text, (name, reply.body)
        wrong = server.post(order(total_cents="ten", currency=None, coupon=1))
        assert len(wrong.body["problems"]) == 3, wrong.body  # every field problem, at once
        assert server.health()["producer_queue"] == 0
        assert placed(calm) == Counter()
        good = server.post(order())  # the same server and topic do accept a good order
        assert good.status == 202
    assert placed(calm) == Counter({good.body["order_id"]: 1})


def _metrics(server: Server) -> dict[str, float]:
    text = server.call("GET", "/metrics").body
    samples = [ln.rsplit(" ", 1) for ln in text.splitlines() if ln and not ln.startswith("#")]
    return {name: float(value) for name, value in samples}


async def _client_faults(base: str) -> list[tuple[int, str, Any]]:
    """Bad bodies as a client library sends them (headers it would not fix)."""
    plain = json.dumps(order()).encode()
    digits = b'{"customer_id": "C-1", "total_cents": ' + b"9" * 5000 + b"}"
    sends = [
        (plain, {"Content-Encoding": "gzip"}),
        (plain, {"Content-Encoding": "deflate"}),
        (digits, {}),
        (b"[" * 3000, {}),
    ]
    async with aiohttp.ClientSession() as session:
        out = []
        for body, extra in sends:
            headers = {"Content-Type": "application/json", **extra}
            async with session.post(f"{base}/orders", data=body, headers=headers) as response:
                out.append((response.status, response.content_type, await response.json()))
        return out


def test_garbage_is_answered_as_json_publishes_nothing_and_logs_no_traceback(
    calm: Settings, tmp_path: Path
) -> None:
    """Issue 15, error boundary: raw-socket garbage, bad bodies and 200 hang-ups."""
    cases = [
        *httpfuzz.protocol_cases(b"/health"),
        *httpfuzz.routing_cases(b"/orders"),
        *httpfuzz.body_cases(b"/orders", json.dumps(order()).encode()),
    ]
    with intake(calm, tmp_path) as server:
        assert httpfuzz.probe(server.port, cases) == []
        client = asyncio.run(_client_faults(server.base))
        assert [(status, kind) for status, kind, _b in client] == [(400, "application/json")] * 4
        assert all(isinstance(body["error"], str) for _s, _k, body in client), client
        httpfuzz.hang_up_mid_body(server.port, b"/orders", 200)
        processes.wait_for(
            lambda: _metrics(server).get("sluice_intake_client_disconnects_total") == 200,
            30,
            what="200 disconnects counted",
        )
        counts = _metrics(server)
        assert server.health()["producer_queue"] == 0
    assert [k for k in counts if 'status="5' in k] == [], counts
    assert counts['sluice_intake_requests_total{route="/orders",status="400"}'] >= 4
    assert placed(calm) == Counter()
    assert httpfuzz.clean_output(server.child.output()) == []


# --- status ---------------------------------------------------------------------------


def _wait_status(server: Server, order_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        reply = server.status(order_id)
        assert reply.status == 200, reply
        body = reply.body
        if body["status"] in ("CONFIRMED", "REJECTED"):
            return body
        time.sleep(0.5)
    raise AssertionError(f"order {order_id} still {body} after {timeout:.0f}s")


def test_status_goes_from_accepted_to_terminal_once_the_order_stage_runs(
    calm: Settings, tmp_path: Path
) -> None:
    seed_inventory(calm, 20)
    with intake(calm, tmp_path, *LIMITS) as server:
        ok = server.post(order((1, 1), (2, 3))).body["order_id"]
        scarce = server.post(order((3, 100_000))).body["order_id"]
        wrong_total = server.post(order((4, 1), total_cents=1)).body["order_id"]
        for order_id in (ok, scarce, wrong_total):
            first = server.status(order_id)
            assert first.status == 200
            assert first.body["status"] == "ACCEPTED"
            assert first.body["source"] == "intake"
        missing = server.status("O-never-placed")
        assert missing.status == 404
        assert "O-never-placed" in missing.body["error"]
        time.sleep(2)
        assert server.status(ok).body["status"] == "ACCEPTED"  # nothing runs the stage yet
        with pipeline.workers(calm, tmp_path) as fleet:
            fleet.start("orders")
            final = {oid: _wait_status(server, oid) for oid in (ok, scarce, wrong_total)}
    assert final[ok]["status"] == "CONFIRMED"
    assert final[ok]["reason"] is None
    assert (final[scarce]["status"], final[scarce]["reason"]) == ("REJECTED", "OUT_OF_STOCK")
    assert (final[wrong_total]["status"], final[wrong_total]["reason"]) == ("REJECTED", "INVALID")
    assert {b["source"] for b in final.values()} == {"stage"}


# --- backpressure ---------------------------------------------------------------------


@pytest.fixture
def tight(calm: Settings) -> Settings:
    """A tiny high mark: a small backlog on orders.placed is already "behind"."""
    marks = BackpressureSettings(high=30, low=10, interval_s=0.5)
    return calm.model_copy(update={"backpressure": marks})


def test_429_with_retry_after_under_lag_then_accepted_after_it_drains(
    tight: Settings, tmp_path: Path
) -> None:
    seed_inventory(tight, 50)
    produce_orders(tight, OrderRun(count=120, generator=GeneratorConfig(seed=81, skus=50)))
    with intake(tight, tmp_path, *LIMITS) as server:
        assert server.health()["paused"] is True
        refused = server.post(order((1, 1)))
        assert refused.status == 429, refused
        assert int(refused.headers["Retry-After"]) >= 1
        assert "behind" in refused.body["error"]
        assert "lag 120" in refused.body["error"]
        keyed = server.post(order((1, 1)), key=f"shed-{uuid.uuid4().hex}")
        assert keyed.status == 429  # a refused key is not remembered: its retry is new work
        # the orders worker still honours backpressure on its own edge: leave it off there
        worker_settings = tight.model_copy(
            update={"backpressure": tight.backpressure.model_copy(update={"enabled": False})}
        )
        with pipeline.workers(worker_settings, tmp_path) as fleet:
            fleet.start("orders")
            deadline = time.monotonic() + 120
            reply = server.post(order((2, 1)))
            while reply.status == 429:
                assert time.monotonic() < deadline, "still refused after the backlog drained"
                time.sleep(0.5)
                reply = server.post(order((2, 1)))
            assert reply.status == 202, reply
            assert server.health()["paused"] is False
    ids = placed(tight)
    assert sum(ids.values()) == 121  # the backlog and the one accepted order, nothing else
    assert ids[reply.body["order_id"]] == 1


def test_queue_mode_holds_requests_until_the_lag_drains(tight: Settings, tmp_path: Path) -> None:
    seed_inventory(tight, 50)
    produce_orders(tight, OrderRun(count=120, generator=GeneratorConfig(seed=82, skus=50)))
    options = (*LIMITS, "--overload", "queue", "--queue-limit", "2", "--queue-timeout", "90")
    with intake(tight, tmp_path, *options) as server:
        assert server.health()["paused"] is True

        async def scenario() -> list[int]:
            timeout = aiohttp.ClientTimeout(total=120)
            async with aiohttp.ClientSession(timeout=timeout) as session:

                async def one() -> int:
                    async with session.post(f"{server.base}/orders", json=order()) as response:
                        return response.status

                held = [asyncio.create_task(one()) for _ in range(2)]
                await asyncio.sleep(1.5)
                assert not any(task.done() for task in held), "queued requests were answered"
                over = await one()  # the bound: a third waiting request is shed
                worker_settings = tight.model_copy(
                    update={"backpressure": BackpressureSettings(enabled=False)}
                )
                with pipeline.workers(worker_settings, tmp_path) as fleet:
                    fleet.start("orders")
                    return [over, *await asyncio.gather(*held)]

        statuses = asyncio.run(scenario())
    assert statuses == [429, 202, 202]
    assert sum(placed(tight).values()) == 122


# --- broker failure -------------------------------------------------------------------


@contextmanager
def own_kafka(root: Path) -> Iterator[LocalCluster]:
    """A single local broker for one test, always stopped afterwards.

    Its ports lie below Linux's ephemeral range (32768 and up): a restarted node whose
    own client connections pick an ephemeral port equal to its listener's would fail to
    bind ("Address already in use"), which a port chosen anywhere up to 60000 allows.
    """
    cluster = LocalCluster(root, 1, free_base_port(2, start=20000, stop=32000))
    try:
        cluster.up(timeout=180)
        yield cluster
    finally:
        cluster.down(timeout=20)


@pytest.mark.chaos
def test_broker_unreachable_answers_503_and_publishes_nothing(tmp_path: Path) -> None:
    """A broker of its own (the session broker is shared), killed while the intake runs."""
    with own_kafka(tmp_path / "kafka") as cluster:
        own = Settings(
            bootstrap_servers=cluster.bootstrap,
            data_dir=tmp_path / "sluice",
            topic_prefix="down.",
            partitions=1,
            request_timeout_s=3.0,
        )
        admin.ensure_topics(own)
        options = (*LIMITS, "--delivery-timeout", "3")
        with intake(own, tmp_path, *options) as server:
            before = server.post(order()).body["order_id"]
            cluster.kill(cluster.nodes[0].node_id)
            key = f"outage-{uuid.uuid4().hex}"
            started = time.monotonic()
            down = server.post(order((6, 1)), key=key)
            assert down.status == 503, down
            assert time.monotonic() - started < 15
            assert int(down.headers["Retry-After"]) >= 1
            assert "not accepted" in down.body["error"]
            assert "same Idempotency-Key" in (down.body["error"])
            chosen = f"O-chosen-{uuid.uuid4().hex[:8]}"
            unkeyed = server.post(order((7, 1), order_id=chosen))
            assert unkeyed.status == 503, unkeyed  # its claim on the id ends with the attempt
            assert server.health()["status"] == "ok"
            cluster.start_node(cluster.nodes[0].node_id)
            deadline = time.monotonic() + 60
            retried = server.post(order((6, 1)), key=key)
            while retried.status == 503 and time.monotonic() < deadline:
                time.sleep(1)
                retried = server.post(order((6, 1)), key=key)
            assert retried.status == 202, retried
            after = server.post(order((8, 1)))
            assert after.status == 202, after
            again = server.post(order((7, 1), order_id=chosen))
            assert again.status == 202, again  # the id the failed attempt held is free
            assert server.post(order((7, 1), order_id=chosen)).status == 409  # and now taken
        ids = placed(own)
    assert ids == Counter(
        {before: 1, retried.body["order_id"]: 1, after.body["order_id"]: 1, chosen: 1}
    )


# --- fuzzing from the spec ------------------------------------------------------------

#: No 5xx is the requirement; the conformance checks also hold the spec to the truth
#: (every status, header, media type and body the server answers is documented).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    response_schema_conformance,
    content_type_conformance,
    response_headers_conformance,
]


def test_fuzz_from_its_own_openapi_no_server_errors(calm: Settings, tmp_path: Path) -> None:
    """Schemathesis generates valid and invalid requests for every operation in
    /openapi.json (about 240 in all, on the real server and broker); none may get a 5xx."""
    with intake(calm, tmp_path, *LIMITS) as server:
        schema = schemathesis.openapi.from_url(f"{server.base}/openapi.json")
        seen: Counter[int] = Counter()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=schema.as_strategy(generation_mode=mode))
            @hypothesis_settings(
                max_examples=120,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def fuzz(case: schemathesis.Case[Any]) -> None:
                response = case.call(base_url=server.base, timeout=30)
                seen[response.status_code] += 1
                case.validate_response(response, checks=CHECKS)

            fuzz()
        assert server.child.alive()
        assert server.health()["status"] == "ok"
    print(f"fuzz statuses: {dict(seen)}")
    assert seen[202] > 0, seen  # the fuzzer did reach the publishing path
    assert sum(n for s, n in seen.items() if 400 <= s < 500) > 0, seen
    assert not [s for s in seen if s >= 500], seen
