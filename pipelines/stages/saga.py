"""The order saga: validate, reserve every line, pay, and end the order exactly once.

Delivery is at-least-once, so every event may arrive again: after a crash (the same
record, same offset) or as a true duplicate (the same order produced twice, another
offset). The saga tells the two apart by the source coordinates it stores with each
decision: a replay of the deciding record re-emits the decision's idempotent side
effects (notifications keyed by notification id, stock releases keyed by request,
the status), because a crash may have lost them; a duplicate changes nothing. The
terminal event is written through a table whose changelog *is* the output topic, so
"already ended" (`terminal`) and "outcome published" are one and the same record (see
`pipelines.orders`). The decided state lives in another table, though, and a crash can
land one write and lose the other: a decided order that is not `terminal` gets its
outcome published again (it cannot duplicate, since the outcome is not there).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines import rules
from pipelines.eventtime import event_time_problem

Source = tuple[str, int, int]  # topic, partition, offset of the record being processed
State = dict[str, Any]


@dataclass
class Effects:
    """What one event makes the saga do."""

    state: State | None = None  # the new state to store; None leaves it as it is
    reservations: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] | None = None
    outcome: tuple[str, dict[str, Any]] | None = None  # ("confirmed"|"rejected", record)
    note: str = ""


@dataclass(frozen=True)
class SagaConfig:
    """Knobs of the business rules that the stage exposes as settings."""

    decline_rate: float = 0.03


def on_placed(
    state: State | None,
    order: Mapping[str, Any],
    *,
    terminal: bool,
    source: Source,
    now_ms: int,
    config: SagaConfig,
) -> Effects:
    """An OrderPlaced arrived (first time, replayed, or duplicated)."""
    if state is not None:
        return _placed_again(state, source, now_ms, terminal=terminal)
    verdict = validate(order)
    if not verdict.ok:
        decision = {
            "kind": "rejected",
            "reason": "INVALID",
            "detail": verdict.detail,
            "by": list(source),
            "releases": [],
        }
        fresh: State = {"order": dict(order), "results": {}, "placed_by": list(source)}
        return _decide(fresh, decision, now_ms, publish=not terminal)
    if terminal:  # ended before, and this order's state was lost: nothing to redo
        return Effects(note="already ended")
    new_state: State = {"order": dict(order), "results": {}, "placed_by": list(source)}
    reserve = [_reservation(order, i, "RESERVE", now_ms) for i in range(len(order["lines"]))]
    return Effects(
        state=new_state,
        reservations=reserve,
        status=_status(order["order_id"], "ACCEPTED", None, now_ms),
    )


def validate(order: Mapping[str, Any]) -> rules.Verdict:
    """The business rules, and an event time every downstream reader can use.

    An order whose `placed_at` is outside `pipelines.eventtime`'s range is decodable and
    keyed, so it ends like any other invalid order (REJECTED INVALID, exactly once, no
    stock touched) rather than vanishing into a DLQ without a terminal event; analytics
    dead-letters its placement, whose time no window can hold.
    """
    problem = event_time_problem("placed_at", order["placed_at"])
    return rules.Verdict(False, problem) if problem else rules.validate(order)


def _placed_again(state: State, source: Source, now_ms: int, *, terminal: bool) -> Effects:
    decision = state.get("decided")
    if decision is not None:
        return _decided_again(state, decision, source, now_ms, terminal=terminal)
    if tuple(state["placed_by"]) != source:
        return Effects(note="duplicate of an order in progress")
    order = state["order"]
    missing = [i for i in range(len(order["lines"])) if str(i) not in state["results"]]
    return Effects(
        reservations=[_reservation(order, i, "RESERVE", now_ms) for i in missing],
        status=_status(order["order_id"], "ACCEPTED", None, now_ms),
        note="replayed placement",
    )


def on_result(
    state: State | None,
    result: Mapping[str, Any],
    *,
    terminal: bool,
    source: Source,
    now_ms: int,
    config: SagaConfig,
) -> Effects:
    """A ReservationResult came back from the inventory owner of one SKU."""
    if state is None or result["action"] != "RESERVE":
        return Effects(note="result for no order in progress" if state is None else "release ack")
    decision = state.get("decided")
    if decision is not None:
        return _decided_again(state, decision, source, now_ms, terminal=terminal)
    index = str(result["line_index"])
    if index in state["results"]:
        return Effects(note="duplicate result")
    state = {
        **state,
        "results": {
            **state["results"],
            index: {
                "ok": result["ok"],
                "outcome": result["outcome"],
                "sku": result["sku"],
                "quantity": result["quantity"],
            },
        },
    }
    if len(state["results"]) < len(state["order"]["lines"]):
        return Effects(state=state)
    return _decide(state, _verdict(state, config, source), now_ms, publish=not terminal)


def _verdict(state: State, config: SagaConfig, source: Source) -> dict[str, Any]:
    """Every line is in: out of stock, invalid, declined, or confirmed."""
    results = state["results"]
    reserved = sorted((int(i), r) for i, r in results.items() if r["ok"])
    failed = [(int(i), r) for i, r in results.items() if not r["ok"]]
    releases = [[i, r["sku"], r["quantity"]] for i, r in reserved]
    decision: dict[str, Any] = {"by": list(source), "releases": releases, "kind": "rejected"}
    if failed:
        invalid = [(i, r) for i, r in failed if r["outcome"] != "INSUFFICIENT_STOCK"]
        index, res = min(invalid or failed)
        what = "unknown SKU" if res["outcome"] == "UNKNOWN_SKU" else "not enough stock of"
        decision.update(
            reason="INVALID" if invalid else "OUT_OF_STOCK",
            detail=f"line {index}: {what} {res['sku']}",
        )
        return decision
    payment = rules.authorize(state["order"], config.decline_rate)
    if not payment.ok:
        decision.update(reason="PAYMENT_DECLINED", detail=payment.detail)
        return decision
    return {"by": list(source), "releases": [], "kind": "confirmed", "payment_id": payment.detail}


def _decided_again(
    state: State, decision: Mapping[str, Any], source: Source, now_ms: int, *, terminal: bool
) -> Effects:
    """An event for a decided order: the deciding record replayed, or a duplicate."""
    if tuple(decision["by"]) == source:
        effects = _side_effects(state, decision, now_ms)
    else:
        effects = Effects(note="duplicate of an ended order")
    if not terminal:  # the decision was stored but its outcome lost in a crash
        effects.outcome = (decision["kind"], _outcome(state["order"], decision))
    return effects


def _decide(state: State, decision: dict[str, Any], now_ms: int, *, publish: bool) -> Effects:
    state = {**state, "decided": {**decision, "at": now_ms}}
    effects = _side_effects(state, state["decided"], now_ms)
    effects.state = state
    if publish:
        effects.outcome = (decision["kind"], _outcome(state["order"], state["decided"]))
    else:
        effects.note = "outcome already published; side effects re-sent"
    return effects


def _side_effects(state: State, decision: Mapping[str, Any], now_ms: int) -> Effects:
    """The idempotent consequences of a decision: releases, notifications, status."""
    order = state["order"]
    releases = [_reservation(order, i, "RELEASE", now_ms) for i, _sku, _q in decision["releases"]]
    status = "CONFIRMED" if decision["kind"] == "confirmed" else "REJECTED"
    return Effects(
        reservations=releases,
        notifications=notifications(order, decision, now_ms),
        status=_status(order["order_id"], status, decision.get("reason"), now_ms),
    )


def notifications(
    order: Mapping[str, Any], decision: Mapping[str, Any], now_ms: int
) -> list[dict[str, Any]]:
    """One NotificationRequested per channel the customer opted into."""
    template = "order_confirmed" if decision["kind"] == "confirmed" else "order_rejected"
    params = {
        "order_id": order["order_id"],
        "customer_id": order["customer_id"],
        "total": rules.money(order["total_cents"], order["currency"]),
    }
    if decision["kind"] == "rejected":
        params.update(reason=decision["reason"], detail=decision["detail"])
    return [
        {
            "notification_id": rules.notification_id(order["order_id"], template, channel),
            "order_id": order["order_id"],
            "channel": channel,
            "recipient": rules.recipient(order["customer_id"], channel),
            "template": template,
            "params": params,
            "attempt": 1,
            "not_before": now_ms,
            "created_at": now_ms,
            "last_error": None,
        }
        for channel in rules.channels_for(order["customer_id"])
    ]


def _outcome(order: Mapping[str, Any], decision: Mapping[str, Any]) -> dict[str, Any]:
    common = {
        "order_id": order["order_id"],
        "customer_id": order["customer_id"],
        "currency": order["currency"],
        "total_cents": order["total_cents"],
        "placed_at": order["placed_at"],
    }
    if decision["kind"] == "confirmed":
        return {
            **common,
            "lines": order["lines"],
            "payment_id": decision["payment_id"],
            "confirmed_at": decision["at"],
        }
    return {
        **common,
        "reason": decision["reason"],
        "detail": decision["detail"],
        "rejected_at": decision["at"],
    }


def _reservation(order: Mapping[str, Any], index: int, action: str, now_ms: int) -> dict[str, Any]:
    line = order["lines"][index]
    return {
        "order_id": order["order_id"],
        "sku": line["sku"],
        "quantity": line["quantity"],
        "line_index": index,
        "line_count": len(order["lines"]),
        "action": action,
        "requested_at": now_ms,
    }


def _status(order_id: str, status: str, reason: str | None, now_ms: int) -> dict[str, Any]:
    return {"order_id": order_id, "status": status, "reason": reason, "updated_at": now_ms}
