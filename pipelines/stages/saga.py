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

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pipelines import rules
from pipelines.eventtime import event_time_problem
from pipelines.stages.stock import sku_partition

# topic, partition, offset of the record being processed, and for a batched record the
# position of the entry in it: the same entry of the same record is the same source.
Source = tuple[Any, ...]
State = dict[str, Any]


@dataclass
class Effects:
    """What one event makes the saga do."""

    state: State | None = None  # the new state to store; None leaves it as it is
    # stock requests, one per SKU-owner partition (its number under "partition")
    reservations: list[dict[str, Any]] = field(default_factory=list)
    notifications: list[dict[str, Any]] = field(default_factory=list)
    status: dict[str, Any] | None = None
    outcome: tuple[str, dict[str, Any]] | None = None  # ("confirmed"|"rejected", record)
    note: str = ""


@dataclass(frozen=True)
class SagaConfig:
    """Knobs of the business rules that the stage exposes as settings."""

    decline_rate: float = 0.03
    partitions: int = 6  # of the stock topics: one request per order and SKU partition


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
        return _placed_again(state, source, now_ms, config, terminal=terminal)
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
        return _decide(fresh, decision, now_ms, config, publish=not terminal)
    if terminal:  # ended before, and this order's state was lost: nothing to redo
        return Effects(note="already ended")
    new_state: State = {"order": dict(order), "results": {}, "placed_by": list(source)}
    reserve = requests(order, range(len(order["lines"])), "RESERVE", now_ms, config.partitions)
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


def _placed_again(
    state: State, source: Source, now_ms: int, config: SagaConfig, *, terminal: bool
) -> Effects:
    decision = state.get("decided")
    if decision is not None:
        return _decided_again(state, decision, source, now_ms, config, terminal=terminal)
    if tuple(state["placed_by"]) != source:
        return Effects(note="duplicate of an order in progress")
    order = state["order"]
    # whole requests again (the same lines, so the same request key) for every partition
    # with a line still unanswered: the stock owner answers a request it has decided
    # from its decision
    every = requests(order, range(len(order["lines"])), "RESERVE", now_ms, config.partitions)
    results = state["results"]
    return Effects(
        reservations=[
            r for r in every if any(str(ln["line_index"]) not in results for ln in r["lines"])
        ],
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
    """A stock result came back: the decisions on some of the order's lines (those one SKU
    partition owns; a v1 ReservationResult is one line, see `as_group`)."""
    if state is None or result["action"] != "RESERVE":
        return Effects(note="result for no order in progress" if state is None else "release ack")
    decision = state.get("decided")
    if decision is not None:
        return _decided_again(state, decision, source, now_ms, config, terminal=terminal)
    known = state["results"]
    new = {
        str(line["line_index"]): {
            "ok": line["ok"],
            "outcome": line["outcome"],
            "sku": line["sku"],
            "quantity": line["quantity"],
        }
        for line in result["lines"]
        if str(line["line_index"]) not in known
    }
    if not new:
        return Effects(note="duplicate result")
    state = {**state, "results": {**known, **new}}
    if len(state["results"]) < len(state["order"]["lines"]):
        return Effects(state=state)
    return _decide(state, _verdict(state, config, source), now_ms, config, publish=not terminal)


def as_group(result: Mapping[str, Any]) -> dict[str, Any]:
    """A v1 ReservationResult (one line, from before requests were grouped) as a group."""
    line = {k: result[k] for k in ("line_index", "sku", "quantity", "ok", "outcome", "available")}
    return {
        "order_id": result["order_id"],
        "action": result["action"],
        "line_count": result["line_count"],
        "decided_at": result["decided_at"],
        "lines": [line],
    }


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
    state: State,
    decision: Mapping[str, Any],
    source: Source,
    now_ms: int,
    config: SagaConfig,
    *,
    terminal: bool,
) -> Effects:
    """An event for a decided order: the deciding record replayed, or a duplicate."""
    if tuple(decision["by"]) == source:
        effects = _side_effects(state, decision, now_ms, config)
    else:
        effects = Effects(note="duplicate of an ended order")
    if not terminal:  # the decision was stored but its outcome lost in a crash
        effects.outcome = (decision["kind"], _outcome(state["order"], decision))
    return effects


def _decide(
    state: State, decision: dict[str, Any], now_ms: int, config: SagaConfig, *, publish: bool
) -> Effects:
    state = {**state, "decided": {**decision, "at": now_ms}}
    effects = _side_effects(state, state["decided"], now_ms, config)
    effects.state = state
    if publish:
        effects.outcome = (decision["kind"], _outcome(state["order"], state["decided"]))
    else:
        effects.note = "outcome already published; side effects re-sent"
    return effects


def _side_effects(
    state: State, decision: Mapping[str, Any], now_ms: int, config: SagaConfig
) -> Effects:
    """The idempotent consequences of a decision: releases, notifications, status."""
    order = state["order"]
    reserved = [i for i, _sku, _q in decision["releases"]]
    releases = requests(order, reserved, "RELEASE", now_ms, config.partitions)
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


def requests(
    order: Mapping[str, Any], indexes: Iterable[int], action: str, now_ms: int, partitions: int
) -> list[dict[str, Any]]:
    """One StockRequest per SKU-owner partition for the given lines (in line order).

    Grouping by partition is deterministic, so a request made again covers the same
    lines and carries the same request key (`pipelines.stages.stock.request_key`).
    """
    lines = order["lines"]
    groups: dict[int, list[dict[str, Any]]] = {}
    for index in sorted(indexes):
        line = lines[index]
        entry = {"line_index": index, "sku": line["sku"], "quantity": line["quantity"]}
        groups.setdefault(sku_partition(line["sku"], partitions), []).append(entry)
    return [
        {
            "order_id": order["order_id"],
            "action": action,
            "line_count": len(lines),
            "requested_at": now_ms,
            "lines": group,
            "partition": partition,
        }
        for partition, group in sorted(groups.items())
    ]


def _status(order_id: str, status: str, reason: str | None, now_ms: int) -> dict[str, Any]:
    return {"order_id": order_id, "status": status, "reason": reason, "updated_at": now_ms}
