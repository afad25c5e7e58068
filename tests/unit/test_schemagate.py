"""A schema registry outage is waited out off the event loop, never dead-lettered.

Runs the confluent-kafka client's real HTTP code against the minimal registry in
tests/support, stopped and started again on the same port.
"""

from __future__ import annotations

import asyncio
import logging
import time

import pytest

from pipelines.runtime import commits
from pipelines.runtime.schemagate import SchemaGate
from pipelines.serde import ConfluentSerde, DecodeError, RegistryUnavailable, SingleObjectSerde
from tests.support.registry import running_registry
from tests.unit.samples import SAMPLES

PLACED = "sluice.orders.OrderPlaced"
RESULT = "sluice.inventory.ReservationResult"


def test_an_outage_waits_and_logs_once_then_decodes_as_normal(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, "pipelines.runtime.schemagate")
    with running_registry() as registry:
        data = ConfluentSerde(registry.url).encode(PLACED, SAMPLES[PLACED], topic="t.placed")
        registry.stop()
        stage = ConfluentSerde(registry.url, client_retries=0)
        gate = SchemaGate(stage, [(RESULT, "t.results")], first_delay_s=0.05, max_delay_s=0.2)
        assert gate.blocked(data)
        with pytest.raises(RegistryUnavailable, match="schema registry unavailable"):
            stage.decode(data, PLACED)  # retriable: never a DecodeError, so never a DLQ

        async def outage() -> None:
            for _ in range(5):
                assert not await gate.try_ready(data)
            assert commits._OUTSIDE_WAITS  # the commit guard stands by meanwhile
            waiter = asyncio.create_task(gate.ready(data))
            await asyncio.sleep(0.3)
            assert not waiter.done()
            registry.start()  # the same port, the same schemas
            await asyncio.wait_for(waiter, timeout=5)

        asyncio.run(outage())
        assert not gate.blocked(data)
        assert stage.decode(data, PLACED) == SAMPLES[PLACED]
        assert not commits._OUTSIDE_WAITS
        assert stage.encode(RESULT, SAMPLES[RESULT], topic="t.results")  # registered: no I/O
    warnings = [r.getMessage() for r in caplog.records]
    assert len([w for w in warnings if "waiting for it" in w]) == 1, warnings  # not per try
    assert "connection" in warnings[0].lower() or "connect" in warnings[0].lower(), warnings
    assert "answers again" in warnings[-1]


def test_only_a_registry_that_says_no_such_id_makes_a_record_poison() -> None:
    with running_registry() as registry:
        good = ConfluentSerde(registry.url).encode(PLACED, SAMPLES[PLACED], topic="t.placed")
        unknown = b"\x00\x00\x00\x03\xe7" + good[5:]  # id 999
        stage = ConfluentSerde(registry.url, client_retries=0)
        gate = SchemaGate(stage, [])
        asyncio.run(gate.ready(unknown))  # the registry answered: nothing to wait for
        with pytest.raises(DecodeError, match="schema id 999 not available from the registry"):
            stage.decode(unknown, PLACED)
        assert gate.blocked(unknown)  # asked again next time: the id may be registered later


def test_the_look_up_runs_off_the_event_loop() -> None:
    class SlowSerde(SingleObjectSerde):
        def missing_schema(self, data: bytes | None) -> int | None:
            return None if self.fetched else 7

        def fetch_schema(self, schema_id: int) -> None:
            time.sleep(0.5)  # a registry taking its time
            self.fetched = True

    serde = SlowSerde()
    serde.fetched = False
    gate = SchemaGate(serde, [])

    async def run() -> int:
        ticks = 0

        async def ticker() -> None:
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        task = asyncio.create_task(ticker())
        await gate.ready(b"x")
        task.cancel()
        return ticks

    assert asyncio.run(run()) >= 20  # the loop kept running while the look-up waited


def test_single_object_encoding_never_waits() -> None:
    gate = SchemaGate(SingleObjectSerde(), [(RESULT, "t.results")])
    assert not gate.blocked(b"\xc3\x01whatever")
