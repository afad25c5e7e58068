"""The saga's state machine, driven by hand: replays re-send side effects, never outcomes."""

from __future__ import annotations

from typing import Any

from pipelines import rules
from pipelines.stages import saga

CFG = saga.SagaConfig(decline_rate=0.0)
CUSTOMER = "C-000001"
ORDER = {
    "order_id": "O-9",
    "customer_id": CUSTOMER,
    "currency": "EUR",
    "placed_at": 5,
    "lines": [
        {"sku": "SKU-00001", "quantity": 2, "unit_price_cents": 500},
        {"sku": "SKU-00002", "quantity": 1, "unit_price_cents": 250},
    ],
    "total_cents": 1250,
    "channel": "WEB",
    "client_ref": None,
}
PLACED = ("orders.placed", 0, 10)


def _result(index: int, ok: bool = True, outcome: str = "APPLIED") -> dict[str, Any]:
    """The result for one line (each line of ORDER is on a partition of its own)."""
    line = ORDER["lines"][index]
    return saga.as_group(
        {
            "order_id": "O-9",
            "sku": line["sku"],
            "line_index": index,
            "line_count": 2,
            "quantity": line["quantity"],
            "action": "RESERVE",
            "ok": ok,
            "outcome": outcome,
            "available": 1,
            "decided_at": 1,
        }
    )


def _lines(effects: saga.Effects) -> list[tuple[int, str, list[tuple[str, int]]]]:
    """Requests as (partition, action, [(sku, line index)])."""
    return [
        (r["partition"], r["action"], [(ln["sku"], ln["line_index"]) for ln in r["lines"]])
        for r in effects.reservations
    ]


def _run(results: list[dict[str, Any]]) -> tuple[dict[str, Any], saga.Effects]:
    effects = saga.on_placed(None, ORDER, terminal=False, source=PLACED, now_ms=6, config=CFG)
    state = effects.state
    assert state is not None
    for offset, result in enumerate(results, start=100):
        effects = saga.on_result(
            state,
            result,
            terminal=False,
            source=("inventory.results", 0, offset),
            now_ms=7,
            config=CFG,
        )
        state = effects.state or state
    return state, effects


def test_placement_reserves_every_line() -> None:
    effects = saga.on_placed(None, ORDER, terminal=False, source=PLACED, now_ms=6, config=CFG)
    assert _lines(effects) == [  # one request per SKU-owner partition (2 and 3 of 6)
        (2, "RESERVE", [("SKU-00002", 1)]),
        (3, "RESERVE", [("SKU-00001", 0)]),
    ]
    assert effects.status is not None
    assert effects.status["status"] == "ACCEPTED"
    assert effects.outcome is None


def test_all_lines_reserved_and_paid_confirms_with_notifications() -> None:
    _state, effects = _run([_result(0), _result(1)])
    assert effects.outcome is not None
    kind, record = effects.outcome
    assert kind == "confirmed"
    assert record["payment_id"].startswith("pay-")
    assert {n["channel"] for n in effects.notifications} == set(rules.channels_for(CUSTOMER))
    assert effects.reservations == []


def test_one_line_short_releases_the_others_and_rejects() -> None:
    _state, effects = _run([_result(0), _result(1, ok=False, outcome="INSUFFICIENT_STOCK")])
    assert effects.outcome is not None
    assert effects.outcome[1]["reason"] == "OUT_OF_STOCK"
    assert _lines(effects) == [(3, "RELEASE", [("SKU-00001", 0)])]


def test_unknown_sku_is_invalid() -> None:
    _state, effects = _run([_result(0, ok=False, outcome="UNKNOWN_SKU"), _result(1)])
    assert effects.outcome is not None
    assert effects.outcome[1]["reason"] == "INVALID"
    assert "unknown SKU SKU-00001" in effects.outcome[1]["detail"]


def test_declined_payment_releases_everything() -> None:
    cfg = saga.SagaConfig(decline_rate=1.0)
    effects = saga.on_placed(None, ORDER, terminal=False, source=PLACED, now_ms=6, config=cfg)
    state = effects.state
    for offset, result in enumerate([_result(0), _result(1)], start=100):
        effects = saga.on_result(
            state,
            result,
            terminal=False,
            source=("inventory.results", 0, offset),
            now_ms=7,
            config=cfg,
        )
        state = effects.state or state
    assert effects.outcome is not None
    assert effects.outcome[1]["reason"] == "PAYMENT_DECLINED"
    assert len(effects.reservations) == 2


def test_replay_of_the_deciding_record_resends_side_effects_not_the_outcome() -> None:
    state, decided = _run([_result(0), _result(1)])
    replay = saga.on_result(
        state, _result(1), terminal=True, source=("inventory.results", 0, 101), now_ms=8, config=CFG
    )
    assert replay.outcome is None
    assert [n["notification_id"] for n in replay.notifications] == [
        n["notification_id"] for n in decided.notifications
    ]


def test_decided_state_whose_outcome_a_crash_lost_publishes_it_again() -> None:
    """The decided state and the outcome are writes to two tables; a crash between them
    leaves a decided order with no outcome on the topic (not terminal). Whatever event
    of that order comes next publishes the outcome, the same one as decided."""
    state, decided = _run([_result(0), _result(1)])
    assert decided.outcome is not None
    replay = saga.on_result(
        state,
        _result(1),
        terminal=False,
        source=("inventory.results", 0, 101),
        now_ms=8,
        config=CFG,
    )
    assert replay.outcome == decided.outcome
    duplicate = saga.on_placed(
        state, ORDER, terminal=False, source=("orders.placed", 0, 99), now_ms=9, config=CFG
    )
    assert duplicate.outcome == decided.outcome
    assert duplicate.reservations == []


def test_duplicates_change_nothing() -> None:
    state, _ = _run([_result(0), _result(1)])
    again = saga.on_placed(
        state, ORDER, terminal=True, source=("orders.placed", 0, 99), now_ms=9, config=CFG
    )
    assert (again.outcome, again.reservations, again.notifications) == (None, [], [])
    late = saga.on_result(
        state, _result(0), terminal=True, source=("inventory.results", 0, 555), now_ms=9, config=CFG
    )
    assert (late.outcome, late.reservations, late.notifications) == (None, [], [])


def test_outcome_already_published_but_state_lost_is_not_published_again() -> None:
    effects = saga.on_placed(None, ORDER, terminal=False, source=PLACED, now_ms=6, config=CFG)
    state = saga.on_result(
        effects.state,
        _result(0),
        terminal=False,
        source=("inventory.results", 0, 100),
        now_ms=7,
        config=CFG,
    ).state
    last = saga.on_result(
        state, _result(1), terminal=True, source=("inventory.results", 0, 101), now_ms=7, config=CFG
    )
    assert last.outcome is None
    assert last.state is not None
    assert last.state["decided"]["kind"] == "confirmed"
    assert last.notifications


def test_invalid_order_ends_at_placement() -> None:
    bad = {**ORDER, "lines": []}
    effects = saga.on_placed(None, bad, terminal=False, source=PLACED, now_ms=6, config=CFG)
    assert effects.outcome is not None
    assert effects.outcome[1]["reason"] == "INVALID"
    assert effects.reservations == []


def test_replayed_placement_of_a_pending_order_resends_missing_reservations() -> None:
    effects = saga.on_placed(None, ORDER, terminal=False, source=PLACED, now_ms=6, config=CFG)
    state = saga.on_result(
        effects.state,
        _result(0),
        terminal=False,
        source=("inventory.results", 0, 100),
        now_ms=7,
        config=CFG,
    ).state
    replay = saga.on_placed(state, ORDER, terminal=False, source=PLACED, now_ms=8, config=CFG)
    assert _lines(replay) == [(2, "RESERVE", [("SKU-00002", 1)])]
    dup = saga.on_placed(
        state, ORDER, terminal=False, source=("orders.placed", 0, 77), now_ms=8, config=CFG
    )
    assert dup.reservations == []


def test_a_placed_at_no_window_can_hold_ends_invalid_without_touching_stock() -> None:
    for placed_at in (-(2**63), -1, 2**63 - 1):
        order = {**ORDER, "placed_at": placed_at}
        effects = saga.on_placed(None, order, terminal=False, source=PLACED, now_ms=6, config=CFG)
        assert effects.reservations == []  # no stock taken, none to release
        assert effects.outcome is not None
        kind, record = effects.outcome
        assert (kind, record["reason"]) == ("rejected", "INVALID")
        assert record["detail"].startswith(f"placed_at: event time {placed_at} is outside")
        again = saga.on_placed(
            effects.state, order, terminal=True, source=("orders.placed", 0, 11), now_ms=7,
            config=CFG,
        )  # fmt: skip
        assert again.outcome is None  # a duplicate does not end it twice


GROUPED = {
    **ORDER,
    "lines": [
        {"sku": "SKU-00001", "quantity": 2, "unit_price_cents": 500},
        {"sku": "SKU-00002", "quantity": 1, "unit_price_cents": 250},
        {"sku": "SKU-00006", "quantity": 1, "unit_price_cents": 0},
    ],
}


def _group(lines: list[int], ok: bool = True) -> dict[str, Any]:
    return {
        "order_id": "O-9",
        "action": "RESERVE",
        "line_count": 3,
        "decided_at": 1,
        "lines": [
            {
                "line_index": i,
                "sku": GROUPED["lines"][i]["sku"],
                "quantity": GROUPED["lines"][i]["quantity"],
                "ok": ok,
                "outcome": "APPLIED" if ok else "INSUFFICIENT_STOCK",
                "available": 1,
            }
            for i in lines
        ],
    }


def test_lines_of_one_partition_are_one_request_and_one_result() -> None:
    placed = saga.on_placed(None, GROUPED, terminal=False, source=PLACED, now_ms=6, config=CFG)
    assert _lines(placed) == [
        (2, "RESERVE", [("SKU-00002", 1)]),
        (3, "RESERVE", [("SKU-00001", 0), ("SKU-00006", 2)]),
    ]
    first = saga.on_result(
        placed.state, _group([0, 2]), terminal=False, source=("r", 3, 7, 4), now_ms=7, config=CFG
    )
    assert first.outcome is None
    assert first.state is not None
    assert sorted(first.state["results"]) == ["0", "2"]
    last = saga.on_result(
        first.state, _group([1]), terminal=False, source=("r", 3, 8, 0), now_ms=8, config=CFG
    )
    assert last.outcome is not None
    assert last.outcome[0] == "confirmed"


def test_a_rejected_group_releases_per_partition() -> None:
    placed = saga.on_placed(None, GROUPED, terminal=False, source=PLACED, now_ms=6, config=CFG)
    state = saga.on_result(
        placed.state, _group([0, 2]), terminal=False, source=("r", 3, 7, 0), now_ms=7, config=CFG
    ).state
    last = saga.on_result(
        state, _group([1], ok=False), terminal=False, source=("r", 3, 8, 1), now_ms=8, config=CFG
    )
    assert last.outcome is not None
    assert last.outcome[1]["reason"] == "OUT_OF_STOCK"
    assert _lines(last) == [(3, "RELEASE", [("SKU-00001", 0), ("SKU-00006", 2)])]


def test_a_replayed_placement_asks_again_for_whole_requests_only() -> None:
    """The request made again has the same lines as the first, so the stock owner finds
    its decision by the same key; a partition whose result is in is not asked again."""
    placed = saga.on_placed(None, GROUPED, terminal=False, source=PLACED, now_ms=6, config=CFG)
    state = saga.on_result(
        placed.state, _group([1]), terminal=False, source=("r", 2, 7, 0), now_ms=7, config=CFG
    ).state
    replay = saga.on_placed(state, GROUPED, terminal=False, source=PLACED, now_ms=8, config=CFG)
    assert _lines(replay) == [(3, "RESERVE", [("SKU-00001", 0), ("SKU-00006", 2)])]


def test_an_entry_of_a_batched_record_is_its_own_source() -> None:
    """The deciding entry replayed (same record, same position) re-sends the side
    effects; another entry of the same record is a duplicate and changes nothing."""
    placed = saga.on_placed(None, GROUPED, terminal=False, source=PLACED, now_ms=6, config=CFG)
    state = saga.on_result(
        placed.state, _group([1]), terminal=False, source=("r", 2, 7, 0), now_ms=7, config=CFG
    ).state
    decided = saga.on_result(
        state, _group([0, 2]), terminal=False, source=("r", 3, 9, 5), now_ms=8, config=CFG
    )
    assert decided.state is not None
    replay = saga.on_result(
        decided.state, _group([0, 2]), terminal=True, source=("r", 3, 9, 5), now_ms=9, config=CFG
    )
    assert replay.notifications
    assert replay.outcome is None
    other = saga.on_result(
        decided.state, _group([0, 2]), terminal=True, source=("r", 3, 9, 6), now_ms=9, config=CFG
    )
    assert (other.outcome, other.reservations, other.notifications) == (None, [], [])
