"""The OpenAPI 3.0 document served at `/openapi.json`, built from the Avro schemas.

Request and status shapes are generated from `schemas/` (OrderPlaced, OrderStatus), the
source of truth, so the document cannot drift from what the validator enforces: the
same fields, types, integer ranges, enums and docs. What the intake adds on top (the
order id pattern, the line limit, server-filled fields) comes from the same constants
the validator uses.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pipelines.eventtime import MAX_EVENT_MS, MIN_EVENT_MS
from pipelines.schemas import SchemaStore, default_store
from pipelines.validation import INT_RANGE, LONG_RANGE
from producers.intake.config import IntakeConfig
from producers.intake.status import STATUS
from producers.intake.validation import KEY_PATTERN, ORDER_ID_PATTERN, PLACED, SERVER_FILLED

JSON = "application/json"


def json_schema(avro: Any, names: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON Schema (OpenAPI 3.0 dialect) of an Avro type, docs kept as descriptions."""
    names = {} if names is None else names
    if isinstance(avro, list):
        return _union(avro, names)
    if isinstance(avro, str):
        return _primitive(avro) if avro not in names else json_schema(names[avro], names)
    kind = avro["type"]
    out: dict[str, Any]
    if kind == "record":
        names[avro["name"]] = avro
        out = _record(avro, names)
    elif kind == "enum":
        names[avro["name"]] = avro
        out = {"type": "string", "enum": list(avro["symbols"])}
    elif kind == "array":
        out = {"type": "array", "items": json_schema(avro["items"], names)}
    elif kind == "map":
        out = {"type": "object", "additionalProperties": json_schema(avro["values"], names)}
    else:
        out = json_schema(kind, names)
        if avro.get("logicalType") == "timestamp-millis":
            out["description"] = "Epoch milliseconds, UTC."
    if "doc" in avro:
        out["description"] = avro["doc"]
    return out


def _record(avro: Mapping[str, Any], names: dict[str, Any]) -> dict[str, Any]:
    properties = {}
    for spec in avro["fields"]:
        prop = json_schema(spec["type"], names)
        if "doc" in spec:
            prop["description"] = spec["doc"]
        if "default" in spec:
            prop["default"] = spec["default"]
        properties[spec["name"]] = prop
    required = [f["name"] for f in avro["fields"] if "default" not in f]
    return {
        "type": "object",
        "properties": properties,
        "required": required,
        "additionalProperties": False,
    }


def _union(branches: list[Any], names: dict[str, Any]) -> dict[str, Any]:
    others = [b for b in branches if b != "null"]
    if len(others) == 1:
        out = json_schema(others[0], names)
    else:
        out = {"oneOf": [json_schema(b, names) for b in others]}
    if len(others) < len(branches):
        out["nullable"] = True
    return out


def _primitive(kind: str) -> dict[str, Any]:
    ranges = {"int": INT_RANGE, "long": LONG_RANGE}
    if kind in ranges:
        low, high = ranges[kind]
        return {"type": "integer", "minimum": low, "maximum": high}
    simple = {"string": "string", "boolean": "boolean", "double": "number", "float": "number"}
    if kind in simple:
        return {"type": simple[kind]}
    raise ValueError(f"no JSON Schema for Avro type {kind!r}")


def order_request_schema(config: IntakeConfig, store: SchemaStore) -> dict[str, Any]:
    """OrderPlaced as a client sends it: server-filled fields gone, id and time optional."""
    schema = json_schema(store.latest(PLACED).raw)
    for name in SERVER_FILLED:
        del schema["properties"][name]
    schema["required"] = [n for n in schema["required"] if n not in ("order_id", "placed_at")]
    props = schema["properties"]
    props["order_id"].update(pattern=ORDER_ID_PATTERN, maxLength=64)
    props["order_id"]["description"] += " Assigned by the server when absent."
    props["placed_at"]["description"] += (
        " Defaults to the time the intake received it. From 1970 to the end of 9999."
    )
    props["placed_at"].update(minimum=MIN_EVENT_MS, maximum=MAX_EVENT_MS)
    props["lines"]["maxItems"] = config.max_lines
    schema["description"] = (
        "An order in the OrderPlaced shape (schemas/OrderPlaced.avsc, newest version). "
        "`client_ref` is filled from the Idempotency-Key header and may not be sent. "
        "Business rules (non-empty lines, totals, known SKUs) are the order stage's: "
        "such an order is accepted here and then REJECTED with reason INVALID."
    )
    return schema


def status_schema(store: SchemaStore) -> dict[str, Any]:
    """OrderStatus as GET answers it, plus where the status came from."""
    schema = json_schema(store.latest(STATUS).raw)
    schema["properties"]["source"] = {
        "type": "string",
        "enum": ["stage", "intake"],
        "description": "`stage`: read from orders.status; `intake`: accepted here, "
        "not yet reported by the order stage.",
    }
    schema["required"] = [*schema["required"], "reason", "source"]
    return schema


ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {"type": "string", "description": "What went wrong, for a human."},
        "problems": {
            "type": "array",
            "items": {"type": "string"},
            "description": "Every field problem, as `path: reason`.",
        },
    },
}


def _error(description: str, *, retry_after: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "description": description,
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    if retry_after:
        out["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before retrying.",
                "schema": {"type": "string", "pattern": "^[0-9]+$"},
            }
        }
    return out


POST_DOC = """Validates the order, publishes one OrderPlaced record to `orders.placed` and answers
only after the broker acknowledged it (acks=all): a 202 means the order is durably in the
pipeline. Processing (stock, payment, notifications) happens afterwards; follow
`Location` for the status.

With an `Idempotency-Key`, a retry (also one sent while the first is still running)
gets the same order id and publishes nothing new, for the idempotency window (24 h by
default, or fewer while more than the configured number of keys are in use). The same
key with a different order is a 409. While the order stage lags, new orders get a 429
with `Retry-After` (or wait in a bounded queue, when so configured)."""

GET_DOC = """The order's latest status: ACCEPTED, then CONFIRMED or REJECTED with a reason.
Eventually consistent: it comes from the compacted `orders.status` topic that the order
stage writes, read in the background; an order accepted by this intake shows as
ACCEPTED (source `intake`) until the stage reports. 404 for ids this intake does not
know (never placed, not yet reported, or older than the status view holds)."""


def document(config: IntakeConfig, store: SchemaStore | None = None) -> dict[str, Any]:
    """The whole OpenAPI document for an intake configured with `config`."""
    store = store or default_store()
    key_header = {
        "name": "Idempotency-Key",
        "in": "header",
        "required": False,
        "description": "A client-chosen key that makes retries safe (visible ASCII, no spaces).",
        "schema": {"type": "string", "pattern": KEY_PATTERN, "minLength": 1, "maxLength": 255},
    }
    accepted = {
        "description": "Accepted: durably on orders.placed, processing continues asynchronously.",
        "headers": {
            "Location": {"description": "Where the status is.", "schema": {"type": "string"}}
        },
        "content": {JSON: {"schema": {"$ref": "#/components/schemas/Accepted"}}},
    }
    post = {
        "summary": "Place an order",
        "description": POST_DOC,
        "operationId": "placeOrder",
        "parameters": [key_header],
        "requestBody": {
            "required": True,
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/OrderRequest"}}},
        },
        "responses": {
            "202": accepted,
            "400": _error("Malformed JSON, or a malformed Idempotency-Key."),
            "409": _error("The Idempotency-Key was used for another order, or the id exists."),
            "413": _error(f"The body is larger than {config.max_body_bytes} bytes."),
            "422": _error("The order does not fit the schema; `problems` lists every field."),
            "429": _error(
                "The order stage is behind; retry after `Retry-After`.", retry_after=True
            ),
            "503": _error("The broker did not acknowledge the order.", retry_after=True),
        },
    }
    get = {
        "summary": "Get an order's status",
        "description": GET_DOC,
        "operationId": "getOrderStatus",
        "parameters": [
            {"name": "order_id", "in": "path", "required": True, "schema": {"type": "string"}}
        ],
        "responses": {
            "200": {
                "description": "The latest known status.",
                "content": {JSON: {"schema": {"$ref": "#/components/schemas/OrderStatus"}}},
            },
            "404": _error("No such order known here (yet)."),
        },
    }
    return {
        "openapi": "3.0.3",
        "info": {
            "title": "Sluice order intake",
            "version": "1",
            "description": "Accepts orders over HTTP in milliseconds and feeds them to the "
            "Sluice order pipeline on Kafka; processing is asynchronous.",
        },
        "paths": {
            "/orders": {"post": post},
            "/orders/{order_id}": {"get": get},
            "/health": {"get": _plain_get("Liveness and the intake's state.", JSON)},
            "/metrics": {"get": _plain_get("Prometheus metrics.", "text/plain")},
        },
        "components": {
            "schemas": {
                "OrderRequest": order_request_schema(config, store),
                "OrderStatus": status_schema(store),
                "Accepted": {
                    "type": "object",
                    "required": ["order_id", "status"],
                    "properties": {
                        "order_id": {"type": "string"},
                        "status": {"type": "string", "enum": ["ACCEPTED"]},
                    },
                },
                "Error": ERROR,
            }
        },
    }


def _plain_get(description: str, media: str) -> dict[str, Any]:
    schema = {"type": "object"} if media == JSON else {"type": "string"}
    return {
        "summary": description,
        "responses": {"200": {"description": description, "content": {media: {"schema": schema}}}},
    }
