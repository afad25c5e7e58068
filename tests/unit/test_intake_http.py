"""The intake's HTTP surface without a broker: statuses, headers, JSON errors, the spec."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

import producers.intake
from pipelines.eventtime import MAX_EVENT_MS, MIN_EVENT_MS
from pipelines.schemas import default_store
from pipelines.settings import Settings
from producers.intake import IntakeConfig, create_app
from producers.intake.app import GC_YOUNG_THRESHOLD, _lean_gc
from producers.intake.validation import ORDER_ID_PATTERN
from tests.unit.test_intake_service import BODY, FakePublisher

CONFIG = IntakeConfig(max_body_bytes=2048, max_lines=3)

Scenario = Callable[[TestClient[Any, Any], FakePublisher], Awaitable[None]]


def serve(scenario: Scenario) -> FakePublisher:
    """Run `scenario` against an in-process intake whose producer is a fake."""
    publisher = FakePublisher()
    app = create_app(
        Settings(bootstrap_servers="127.0.0.1:1"),
        CONFIG,
        publisher=lambda: publisher,
        background=False,
    )

    async def main() -> None:
        async with TestClient(TestServer(app)) as client:
            await scenario(client, publisher)

    asyncio.run(main())
    return publisher


def test_exported_names() -> None:
    assert sorted(producers.intake.__all__) == [
        "Accepted",
        "Intake",
        "IntakeConfig",
        "Rejection",
        "create_app",
        "serve",
    ]


def test_accept_then_status() -> None:
    async def scenario(client: TestClient[Any, Any], publisher: FakePublisher) -> None:
        response = await client.post("/orders", json=BODY)
        assert response.status == 202
        body = await response.json()
        assert body == {"order_id": body["order_id"], "status": "ACCEPTED"}
        assert response.headers["Location"] == f"/orders/{body['order_id']}"
        status = await client.get(response.headers["Location"])
        assert status.status == 200
        state = await status.json()
        assert (state["status"], state["source"], state["reason"]) == ("ACCEPTED", "intake", None)
        assert publisher.order_ids() == [body["order_id"]]

    serve(scenario)


def test_idempotency_key_over_http() -> None:
    async def scenario(client: TestClient[Any, Any], publisher: FakePublisher) -> None:
        headers = {"Idempotency-Key": "abc-1"}
        first = await client.post("/orders", json=BODY, headers=headers)
        again = await client.post("/orders", json=BODY, headers=headers)
        assert (await first.json()) == (await again.json())
        assert again.headers["Idempotent-Replayed"] == "true"
        other = await client.post("/orders", json={**BODY, "total_cents": 5}, headers=headers)
        assert other.status == 409
        assert "different order" in (await other.json())["error"]
        assert len(publisher.sent) == 1

    serve(scenario)


FOUR_LINES = json.dumps({**BODY, "lines": BODY["lines"] * 4}).encode()
SURROGATE = json.dumps({**BODY, "customer_id": "X"}).replace('"X"', '"\\ud800"').encode()
BAD_INPUTS: list[tuple[str, bytes, dict[str, str], int, str]] = [
    ("malformed", b'{"customer_id": "C-1",', {}, 400, "malformed JSON"),
    ("empty", b"", {}, 400, "empty"),
    ("not an object", b"[1, 2]", {}, 422, "must be a JSON object"),
    ("wrong type", json.dumps({**BODY, "total_cents": "100"}).encode(), {}, 422, "total_cents"),
    ("unknown field", json.dumps({**BODY, "coupon": "X"}).encode(), {}, 422, "coupon"),
    ("too many lines", FOUR_LINES, {}, 422, "at most 3"),
    ("too large", json.dumps({**BODY, "customer_id": "C" * 4000}).encode(), {}, 413, "2048"),
    ("bad key", json.dumps(BODY).encode(), {"Idempotency-Key": "a b"}, 400, "Idempotency-Key"),
    ("lone surrogate", SURROGATE, {}, 422, "customer_id: text must be valid Unicode"),
]  # fmt: skip


@pytest.mark.parametrize(("name", "raw", "headers", "status", "says"), BAD_INPUTS)
def test_bad_input_is_a_clear_4xx_and_publishes_nothing(
    name: str, raw: bytes, headers: dict[str, str], status: int, says: str
) -> None:
    async def scenario(client: TestClient[Any, Any], publisher: FakePublisher) -> None:
        response = await client.post("/orders", data=raw, headers=headers)
        assert response.status == status, await response.text()
        assert response.content_type == "application/json"
        error = await response.json()
        assert says in error["error"] + " ".join(error.get("problems", []))

    assert serve(scenario).sent == []


def test_a_chunked_body_over_the_limit_is_a_413() -> None:
    async def chunks() -> Any:
        for _ in range(10):
            yield b" " * 1000

    async def scenario(client: TestClient[Any, Any], publisher: FakePublisher) -> None:
        response = await client.post("/orders", data=chunks())
        assert response.status == 413
        assert "larger than the limit" in (await response.json())["error"]

    assert serve(scenario).sent == []


def test_errors_outside_the_handlers_are_json_too() -> None:
    async def scenario(client: TestClient[Any, Any], publisher: FakePublisher) -> None:
        unknown = await client.get("/orders/O-nope")
        assert unknown.status == 404
        assert "O-nope" in (await unknown.json())["error"]
        missing = await client.get("/nowhere")
        assert (missing.status, missing.content_type) == (404, "application/json")
        wrong = await client.delete("/orders")
        assert wrong.status == 405
        assert "POST" in wrong.headers["Allow"]

    serve(scenario)


def test_health_and_metrics() -> None:
    async def scenario(client: TestClient[Any, Any], publisher: FakePublisher) -> None:
        await client.post("/orders", json=BODY)
        await client.post("/orders", data=b"{")
        health = await (await client.get("/health")).json()
        assert health["status"] == "ok"
        assert health["paused"] is False
        assert health["status_orders"] == 1
        text = await (await client.get("/metrics")).text()
        assert 'sluice_intake_requests_total{route="/orders",status="202"} 1.0' in text
        assert 'sluice_intake_requests_total{route="/orders",status="400"} 1.0' in text
        assert 'sluice_events_out_total{stage="intake",topic="orders.placed"} 1.0' in text
        assert "sluice_intake_backpressure_paused 0.0" in text

    serve(scenario)


def test_the_openapi_document_follows_the_avro_schema() -> None:
    spec: dict[str, Any] = {}

    async def scenario(client: TestClient[Any, Any], publisher: FakePublisher) -> None:
        spec.update(await (await client.get("/openapi.json")).json())

    serve(scenario)
    assert spec["openapi"].startswith("3.0")
    request = spec["components"]["schemas"]["OrderRequest"]
    avro = default_store().latest("sluice.orders.OrderPlaced").raw
    fields = {f["name"] for f in avro["fields"]}
    assert set(request["properties"]) == fields - {"client_ref"}
    assert set(request["required"]) == {"customer_id", "lines", "currency", "total_cents"}
    assert request["additionalProperties"] is False
    assert request["properties"]["order_id"]["pattern"] == ORDER_ID_PATTERN
    assert request["properties"]["lines"]["maxItems"] == 3
    line = request["properties"]["lines"]["items"]
    assert line["properties"]["quantity"] == {
        "type": "integer",
        "minimum": -(2**31),
        "maximum": 2**31 - 1,
        "description": line["properties"]["quantity"]["description"],
    }
    assert request["properties"]["channel"]["enum"] == ["WEB", "MOBILE", "STORE", "PARTNER"]
    placed_at = request["properties"]["placed_at"]
    assert (placed_at["minimum"], placed_at["maximum"]) == (MIN_EVENT_MS, MAX_EVENT_MS)
    status = spec["components"]["schemas"]["OrderStatus"]
    assert status["properties"]["status"]["enum"] == ["ACCEPTED", "CONFIRMED", "REJECTED"]
    assert status["properties"]["reason"]["nullable"] is True
    post = spec["paths"]["/orders"]["post"]
    assert set(post["responses"]) == {"202", "400", "409", "413", "422", "429", "503"}
    assert "Retry-After" in post["responses"]["429"]["headers"]


def test_serving_freezes_the_start_up_heap_and_restores_the_collector() -> None:
    """`serve` runs with a frozen start-up heap and a high young threshold, then undoes both."""
    before = gc.get_threshold()

    async def main() -> None:
        steps = _lean_gc(web.Application())
        await steps.__anext__()
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (GC_YOUNG_THRESHOLD, *before[1:])
        with pytest.raises(StopAsyncIteration):
            await steps.__anext__()

    asyncio.run(main())
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0
