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

from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition
from faust.exceptions import ProducerSendError

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


def direct_produce(base: Any) -> tuple[Any]:
    """The Faust driver's `Producer.send`, straight to aiokafka's accumulator.

    For every record, the driver fires the `on_produce_message` signal (which walks its
    receivers through a generator even when there are none) and calls aiokafka's `send`,
    which asks the client for the topic's partitions (a new set per record), runs the
    serializers Faust never configures, and builds a `TopicPartition`. When there is no
    receiver, no header, no timestamp, no transaction and the topic's metadata is known,
    none of that changes anything: the record goes to the same accumulator, in the same
    partition (the producer's own `_partition`), and the caller gets the same delivery
    future. Anything else takes the driver's own path, unchanged.
    """
    partitions: dict[tuple[str, int], TopicPartition] = {}

    async def send(  # noqa: PLR0917 - the driver's signature, called positionally
        self: Any,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        partition: int | None,
        timestamp: float | None,
        headers: Any,
        *,
        transactional_id: str | None = None,
    ) -> Any:
        producer = self._producer
        if (
            producer is None
            or transactional_id
            or headers
            or timestamp
            or (key is None and value is None)
            or not _plain(producer, topic)
            or _has_receivers(self.app.on_produce_message)
        ):
            return await base(
                self,
                topic,
                key,
                value,
                partition,
                timestamp,
                headers,
                transactional_id=transactional_id,
            )
        chosen = producer._partition(topic, partition, key, value, key, value)
        tp = partitions.get((topic, chosen))
        if tp is None:
            tp = partitions[(topic, chosen)] = TopicPartition(topic, chosen)
        try:
            return await producer._message_accumulator.add_message(
                tp, key, value, producer._request_timeout_ms / 1000, headers=[]
            )
        except KafkaError as exc:  # what the driver raises for it
            raise ProducerSendError(f"Error while sending: {exc!r}") from exc

    return (send,)


def _plain(producer: Any, topic: str) -> bool:
    """No serializer, no transactional id, and the topic's partitions already known."""
    txn = producer._txn_manager
    return (
        topic in producer.client.cluster._partitions
        and producer._key_serializer is None
        and producer._value_serializer is None
        and (txn is None or txn.transactional_id is None)
    )


def _has_receivers(signal: Any) -> bool:
    return bool(signal._receivers or signal._filter_receivers)
