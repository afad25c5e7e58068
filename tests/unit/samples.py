"""One realistic record per schema, in the newest version's shape."""

from __future__ import annotations

from typing import Any

T0 = 1_795_000_000_000
LINE = {"sku": "SKU-00042", "quantity": 2, "unit_price_cents": 1999}

SAMPLES: dict[str, dict[str, Any]] = {
    "sluice.orders.OrderPlaced": {
        "order_id": "O-1-00000001",
        "customer_id": "C-000007",
        "lines": [LINE],
        "currency": "EUR",
        "total_cents": 3998,
        "placed_at": T0,
        "channel": "MOBILE",
        "client_ref": "idem-123",
    },
    "sluice.orders.OrderConfirmed": {
        "order_id": "O-1-00000001",
        "customer_id": "C-000007",
        "currency": "EUR",
        "total_cents": 3998,
        "lines": [LINE],
        "payment_id": "pay-1",
        "placed_at": T0,
        "confirmed_at": T0 + 35,
    },
    "sluice.orders.OrderRejected": {
        "order_id": "O-1-00000002",
        "customer_id": "C-000008",
        "currency": "JPY",
        "total_cents": 100,
        "reason": "INVALID",
        "detail": "unsupported currency JPY",
        "placed_at": T0,
        "rejected_at": T0 + 3,
    },
    "sluice.orders.OrderStatus": {
        "order_id": "O-1-00000001",
        "status": "REJECTED",
        "reason": "OUT_OF_STOCK",
        "updated_at": T0 + 9,
    },
    "sluice.inventory.ReservationRequested": {
        "order_id": "O-1-00000001",
        "sku": "SKU-00042",
        "quantity": 2,
        "line_index": 0,
        "line_count": 1,
        "action": "RESERVE",
        "requested_at": T0 + 1,
    },
    "sluice.inventory.ReservationResult": {
        "order_id": "O-1-00000001",
        "sku": "SKU-00042",
        "line_index": 0,
        "line_count": 1,
        "quantity": 2,
        "action": "RESERVE",
        "ok": True,
        "outcome": "APPLIED",
        "available": 118,
        "decided_at": T0 + 2,
    },
    "sluice.inventory.StockRequests": {
        "requests": [
            {
                "order_id": "O-1-00000001",
                "action": "RESERVE",
                "line_count": 3,
                "requested_at": T0 + 1,
                "lines": [
                    {"line_index": 0, "sku": "SKU-00042", "quantity": 2},
                    {"line_index": 2, "sku": "SKU-00007", "quantity": 1},
                ],
            }
        ]
    },
    "sluice.inventory.StockResults": {
        "results": [
            {
                "order_id": "O-1-00000001",
                "action": "RESERVE",
                "line_count": 3,
                "decided_at": T0 + 2,
                "lines": [
                    {
                        "line_index": 0,
                        "sku": "SKU-00042",
                        "quantity": 2,
                        "ok": True,
                        "outcome": "APPLIED",
                        "available": 118,
                    },
                    {
                        "line_index": 2,
                        "sku": "SKU-00007",
                        "quantity": 1,
                        "ok": False,
                        "outcome": "INSUFFICIENT_STOCK",
                        "available": 0,
                    },
                ],
            }
        ]
    },
    "sluice.notifications.NotificationRequested": {
        "notification_id": "O-1-00000001:order_confirmed:EMAIL",
        "order_id": "O-1-00000001",
        "channel": "EMAIL",
        "recipient": "c-000007@example.com",
        "template": "order_confirmed",
        "params": {"total": "39.98 EUR"},
        "attempt": 1,
        "not_before": T0,
        "created_at": T0,
        "last_error": None,
    },
    "sluice.notifications.NotificationResult": {
        "notification_id": "O-1-00000001:order_confirmed:EMAIL",
        "order_id": "O-1-00000001",
        "channel": "EMAIL",
        "status": "DELIVERED",
        "attempts": 2,
        "error": None,
        "provider_message_id": "<abc@sluice>",
        "requested_at": T0,
        "completed_at": T0 + 1500,
    },
    "sluice.analytics.WindowAggregate": {
        "window_key": f"revenue|EUR|{T0}",
        "metric": "revenue",
        "dimension": "EUR",
        "window_start": T0,
        "window_end": T0 + 60_000,
        "count": 12,
        "sum": 123_456,
        "top": [{"key": "SKU-00001", "value": 40}],
        "percentiles": {"p50": 12, "p99": 80},
        "late_events": 1,
    },
}
