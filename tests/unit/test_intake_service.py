"""Placing orders without a broker: idempotency, admission, failures and the status view."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import pytest

from pipelines.backpressure import Hysteresis
from pipelines.serde import SingleObjectSerde
from producers.intake.gate import Gate, retry_after
from producers.intake.idempotency import FINGERPRINT_HEADER, IdempotencyStore
from producers.intake.metrics import IntakeMetrics
from producers.intake.publisher import Delivered, PublishFailed
from producers.intake.recovery import Placed
from producers.intake.service import Accepted, Intake
from producers.intake.status import StatusView
from producers.intake.validation import OrderRequest, Rejection, build_order

SERDE = SingleObjectSerde()
T = TypeVar("T")

BODY: dict[str, Any] = {
    "customer_id": "C-00001",
    "lines": [{"sku": "SKU-00001", "quantity": 1, "unit_price_cents": 100}],
    "currency": "EUR",
    "total_cents": 100,
}


class FakePublisher:
    """Records what would have gone to Kafka; can fail or be slow."""

    def __init__(self, fail: bool = False, delay: float = 0.0) -> None:
        self.fail = fail
        self.delay = delay
        self.sent: list[tuple[bytes, bytes, Sequence[tuple[str, bytes]]]] = []

    async def publish(
        self, key: bytes, value: bytes, headers: Sequence[tuple[str, bytes]] = ()
    ) -> Delivered:
        await asyncio.sleep(self.delay)
        if self.fail:
            raise PublishFailed("the broker did not acknowledge: timed out")
        self.sent.append((key, value, headers))
        return Delivered(0, len(self.sent) - 1)

    async def close(self) -> None:
        return None

    def queued(self) -> int:
        return 0

    def order_ids(self) -> list[str]:
        return [SERDE.decode(value)["order_id"] for _key, value, _h in self.sent]


class FakeSignal:
    """A lag signal fed by the test."""

    def __init__(self, lag: int, high: int = 100, low: int = 10, retry_s: float = 7.2) -> None:
        self.state = Hysteresis(high, low)
        self.lag = lag
        self.retry_s = retry_s
        self.state.update(lag)

    async def ameasure(self) -> str | None:
        return self.state.update(self.lag)

    def retry_after_s(self, floor: float = 1.0, ceiling: float = 120.0) -> float:
        return self.retry_s


def make(
    publisher: FakePublisher | None = None, gate: Gate | None = None
) -> tuple[Intake, FakePublisher]:
    publisher = publisher or FakePublisher()
    intake = Intake(
        keys=IdempotencyStore(3600, 1000),
        status=StatusView(1000),
        gate=gate or Gate(None),
        publisher=publisher,
        encode=SERDE.encode,
        metrics=IntakeMetrics(),
    )
    return intake, publisher


def order(key: str | None = None, **changes: object) -> OrderRequest:
    return build_order(
        {**BODY, **changes}, key=key, max_lines=100, now_ms=1, validate=SERDE.validate
    )


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def test_without_a_key_every_request_is_a_new_order() -> None:
    intake, publisher = make()
    first = run(intake.place(order(), None))
    second = run(intake.place(order(), None))
    assert isinstance(first, Accepted)
    assert isinstance(second, Accepted)
    assert first.order_id != second.order_id
    assert len(publisher.sent) == 2
    assert publisher.sent[0][2] == []  # no digest header without a key
    state = intake.status.get(first.order_id)
    assert state is not None
    assert state.status == "ACCEPTED"


def test_a_retried_key_returns_the_same_order_and_publishes_nothing() -> None:
    intake, publisher = make()
    first = run(intake.place(order("k1"), "k1"))
    again = run(intake.place(order("k1"), "k1"))
    assert again == Accepted(first.order_id, replayed=True)
    assert len(publisher.sent) == 1
    key, _value, headers = publisher.sent[0]
    assert key == first.order_id.encode()
    assert headers == [(FINGERPRINT_HEADER, order("k1").fingerprint.encode())]


def test_concurrent_duplicates_publish_once() -> None:
    intake, publisher = make(FakePublisher(delay=0.05))

    async def burst() -> list[Accepted]:
        return await asyncio.gather(*(intake.place(order("k"), "k") for _ in range(20)))

    answers = run(burst())
    assert len({a.order_id for a in answers}) == 1
    assert sum(a.replayed for a in answers) == 19
    assert len(publisher.sent) == 1


def test_the_same_key_with_another_order_is_a_conflict() -> None:
    intake, publisher = make()
    run(intake.place(order("k"), "k"))
    with pytest.raises(Rejection) as caught:
        run(intake.place(order("k", total_cents=101), "k"))
    assert caught.value.status == 409
    assert len(publisher.sent) == 1


def test_a_known_client_order_id_is_a_conflict() -> None:
    intake, publisher = make()
    run(intake.place(order(order_id="shop-1"), None))
    with pytest.raises(Rejection) as caught:
        run(intake.place(order(order_id="shop-1"), None))
    assert caught.value.status == 409
    assert len(publisher.sent) == 1


async def _outcomes(intake: Intake, orders: list[tuple[OrderRequest, str | None]]) -> list[Any]:
    """Place every order at once; each outcome is an Accepted or the Rejection raised."""
    results = await asyncio.gather(
        *(intake.place(o, key) for o, key in orders), return_exceptions=True
    )
    return list(results)


def test_concurrent_orders_with_one_client_order_id_are_accepted_once() -> None:
    intake, publisher = make(FakePublisher(delay=0.02))
    burst = [(order(order_id="shop-9", customer_id=f"C-{n}"), None) for n in range(10)]
    outcomes = run(_outcomes(intake, burst))
    accepted = [o for o in outcomes if isinstance(o, Accepted)]
    refused = [o for o in outcomes if isinstance(o, Rejection)]
    assert len(accepted) == 1
    assert [r.status for r in refused] == [409] * 9
    assert all("shop-9 is being placed by another request" in r.error for r in refused)
    assert publisher.order_ids() == ["shop-9"]
    assert not intake._claimed  # every claim released


def test_different_keys_with_one_client_order_id_are_accepted_once() -> None:
    intake, publisher = make(FakePublisher(delay=0.02))
    burst = [(order(f"k{n}", order_id="shop-8", customer_id=f"C-{n}"), f"k{n}") for n in range(5)]
    outcomes = run(_outcomes(intake, burst))
    assert sum(isinstance(o, Accepted) for o in outcomes) == 1
    assert sorted(o.status for o in outcomes if isinstance(o, Rejection)) == [409] * 4
    assert publisher.order_ids() == ["shop-8"]


def test_a_claimed_id_is_free_again_after_a_failed_attempt() -> None:
    failing = FakePublisher(fail=True, delay=0.02)
    intake, _ = make(failing)
    burst = [(order(order_id="shop-7"), None) for _ in range(3)]
    outcomes = run(_outcomes(intake, burst))
    assert sorted(o.status for o in outcomes) == [409, 409, 503]
    failing.fail = False
    retried = run(intake.place(order(order_id="shop-7"), None))
    assert retried == Accepted("shop-7")
    assert failing.order_ids() == ["shop-7"]
    surrogate = order(order_id="shop-6", customer_id="\ud800")
    with pytest.raises(Rejection) as unencodable:
        run(intake.place(surrogate, None))
    assert unencodable.value.status == 422
    assert run(intake.place(order(order_id="shop-6"), None)) == Accepted("shop-6")


def test_a_pending_keys_retry_yields_to_another_request_holding_its_id() -> None:
    """A retried key republishes its own id, but not while another request places it."""
    failing = FakePublisher(fail=True)
    intake, publisher = make(failing)
    with pytest.raises(Rejection):
        run(intake.place(order("k", order_id="shop-5"), "k"))
    failing.fail, failing.delay = False, 0.05

    async def both() -> list[Any]:
        first = asyncio.ensure_future(intake.place(order("k", order_id="shop-5"), "k"))
        await asyncio.sleep(0.01)  # the retry holds the id
        second = await asyncio.gather(
            intake.place(order(order_id="shop-5"), None), return_exceptions=True
        )
        return [await first, *second]

    retry, unkeyed = run(both())
    assert retry == Accepted("shop-5")
    assert isinstance(unkeyed, Rejection)
    assert unkeyed.status == 409
    assert publisher.order_ids() == ["shop-5"]


def test_an_id_whose_keyed_attempt_failed_stays_with_that_key() -> None:
    """A 503 may hide a record that landed: nobody else may take its id meanwhile."""
    failing = FakePublisher(fail=True)
    intake, publisher = make(failing)
    with pytest.raises(Rejection):
        run(intake.place(order("k", order_id="shop-4"), "k"))
    failing.fail = False
    for other in (
        intake.place(order(order_id="shop-4", customer_id="C-other"), None),
        intake.place(order("k2", order_id="shop-4", customer_id="C-other"), "k2"),
    ):
        with pytest.raises(Rejection) as caught:
            run(other)
        assert caught.value.status == 409
        assert "still pending" in caught.value.error
    assert run(intake.place(order("k", order_id="shop-4"), "k")) == Accepted("shop-4")
    assert publisher.order_ids() == ["shop-4"]
    assert not intake._held  # released once the key's order is accepted


def test_a_failed_delivery_is_a_503_and_the_retry_reuses_the_order() -> None:
    failing = FakePublisher(fail=True)
    intake, _ = make(failing)
    with pytest.raises(Rejection) as caught:
        run(intake.place(order("k"), "k"))
    assert caught.value.status == 503
    assert caught.value.headers["Retry-After"]
    assert "same Idempotency-Key" in caught.value.error
    assert len(intake.status) == 0  # nothing was accepted
    failing.fail = False
    retried = run(intake.place(order("k"), "k"))
    assert failing.order_ids() == [retried.order_id]
    pending = intake.keys.get("k")
    assert pending is not None
    assert pending.pending is None


def test_shed_mode_refuses_new_orders_while_paused() -> None:
    gate = Gate(FakeSignal(lag=500), mode="shed")
    intake, publisher = make(gate=gate)
    with pytest.raises(Rejection) as caught:
        run(intake.place(order(), None))
    assert caught.value.status == 429
    assert caught.value.headers == {"Retry-After": "8"}
    assert "lag 500" in caught.value.error
    assert publisher.sent == []


def test_a_known_key_is_answered_even_while_paused() -> None:
    signal = FakeSignal(lag=0)
    intake, publisher = make(gate=Gate(signal))
    first = run(intake.place(order("k"), "k"))
    signal.lag = 500
    run(intake.gate.measure())
    assert intake.gate.paused
    assert run(intake.place(order("k"), "k")) == Accepted(first.order_id, replayed=True)
    assert len(publisher.sent) == 1


def test_queue_mode_holds_requests_until_the_lag_clears() -> None:
    signal = FakeSignal(lag=500)
    intake, publisher = make(gate=Gate(signal, mode="queue", queue_limit=5, queue_timeout_s=5))

    async def scenario() -> list[object]:
        held = [asyncio.create_task(intake.place(order(), None)) for _ in range(7)]
        await asyncio.sleep(0.05)
        assert intake.gate.waiting == 5
        assert publisher.sent == []
        signal.lag = 0
        await intake.gate.measure()
        return await asyncio.gather(*held, return_exceptions=True)

    results = run(scenario())
    refused = [r for r in results if isinstance(r, Rejection)]
    assert [r.status for r in refused] == [429, 429]
    assert len(publisher.sent) == 5


def test_queue_mode_gives_up_after_the_timeout() -> None:
    gate = Gate(FakeSignal(lag=500), mode="queue", queue_limit=5, queue_timeout_s=0.05)
    intake, publisher = make(gate=gate)
    with pytest.raises(Rejection) as caught:
        run(intake.place(order(), None))
    assert caught.value.status == 503
    assert caught.value.headers["Retry-After"] == "8"
    assert publisher.sent == []


def test_hysteresis_keeps_the_gate_closed_between_the_marks() -> None:
    signal = FakeSignal(lag=500, high=100, low=10)
    gate = Gate(signal)
    for lag, paused in ((50, True), (11, True), (9, False), (50, False), (101, True)):
        signal.lag = lag
        run(gate.measure())
        assert gate.paused is paused, lag


def test_a_failed_measurement_keeps_the_last_state() -> None:
    class Broken(FakeSignal):
        async def ameasure(self) -> str | None:
            from pipelines.errors import BrokerUnavailable

            raise BrokerUnavailable("no broker")

    gate = Gate(Broken(lag=500))
    run(gate.measure())
    assert gate.paused
    assert gate.failures == 1


@pytest.mark.parametrize(("seconds", "header"), [(0.0, "1"), (0.2, "1"), (1.0, "1"), (1.01, "2")])
def test_retry_after_is_whole_seconds_at_least_one(seconds: float, header: str) -> None:
    assert retry_after(seconds) == header


def test_recovery_restores_keys_and_accepted_orders() -> None:
    intake, publisher = make()
    fp = order("k").fingerprint
    now_ms = int(__import__("time").time() * 1000)
    intake.recover(
        [
            Placed("O-1", now_ms, "k", fp),
            Placed("O-2", now_ms),  # placed by a producer script: no key
        ]
    )
    assert run(intake.place(order("k"), "k")) == Accepted("O-1", replayed=True)
    state = intake.status.get("O-2")
    assert state is not None
    assert state.status == "ACCEPTED"
    assert publisher.sent == []


def test_the_status_view_is_bounded_and_never_goes_back() -> None:
    view = StatusView(max_orders=2)
    view.accepted("O-1", 1)
    view.apply("O-1", {"status": "REJECTED", "reason": "OUT_OF_STOCK", "updated_at": 5})
    view.apply("O-1", {"status": "ACCEPTED", "reason": None, "updated_at": 6})
    state = view.get("O-1")
    assert state is not None
    assert (state.status, state.reason, state.source) == ("REJECTED", "OUT_OF_STOCK", "stage")
    view.accepted("O-1", 9)  # what we accepted never overrides the stage
    assert view.get("O-1") == state
    view.accepted("O-2", 1)
    view.accepted("O-3", 1)
    assert view.get("O-1") is None
    assert len(view) == 2
    view.apply("O-3", None)  # a tombstone
    assert view.get("O-3") is None
