"""`Topic.send` for the plain case: encode, hand to the producer, return its future.

Faust's `Topic.send` builds a `PendingMessage` and a `FutureMessage` (an asyncio future
of its own), asks for the producer, calls the send sensors, hands the record to the
driver with an empty header dict (which the driver then type-checks against
`typing.Mapping`, a slow check) and chains a done-callback that resolves the
`FutureMessage` nobody else holds. What the caller gets back is the producer's own
delivery future. When nothing needs the rest (no attachments, no callback, no sensor, no
transaction, the producer running), the same record goes to the same driver `send`
and the caller gets the same future; otherwise Faust's own path runs, unchanged.
"""

from __future__ import annotations

from typing import Any

from pipelines.runtime.raw import bytes_or_none, raw_topic


def lean_send(base: Any) -> tuple[Any]:
    async def send(
        self: Any,
        *,
        key: Any = None,
        value: Any = None,
        partition: int | None = None,
        timestamp: float | None = None,
        headers: Any = None,
        schema: Any = None,
        key_serializer: Any = None,
        value_serializer: Any = None,
        callback: Any = None,
        force: bool = False,
    ) -> Any:
        app = self.app
        producer = app._producer
        if (
            callback is not None
            or app.sensors._sensors
            or producer is None
            or not producer.started
            or app.in_transaction
            or (app._attachments.enabled and not force)
        ):
            return await base(
                self,
                key=key,
                value=value,
                partition=partition,
                timestamp=timestamp,
                headers=headers,
                schema=schema,
                key_serializer=key_serializer,
                value_serializer=value_serializer,
                callback=callback,
                force=force,
            )
        open_headers = self.prepare_headers(headers)
        if (
            schema is None
            and key_serializer is None
            and value_serializer is None
            and bytes_or_none(key)
            and bytes_or_none(value)
            and raw_topic(self)
        ):
            final_key, final_value = key, value  # raw bytes: Faust's encoding is the identity
        else:
            final_key, open_headers = self.prepare_key(key, key_serializer, schema, open_headers)
            final_value, open_headers = self.prepare_value(
                value, value_serializer, schema, open_headers
            )
        return await producer.send(
            self.get_topic_name(),
            final_key,
            final_value,
            partition=partition,
            timestamp=timestamp,
            headers=open_headers or None,
        )

    return (send,)
