"""Raw-bytes topics without Faust's codec round trip.

Every Sluice stage reads and writes raw bytes (`pipelines.runtime.faustapp.RAW`) and
decodes Avro itself. For such a topic Faust still runs the whole serializer chain on every
record, twice on the way in (key and value: `Schema.loads_*` → `Registry.loads_*` → codec
lookup → `Codec.loads` → `raw._loads` → `want_bytes` → `_prepare_payload` → `want_bytes`)
and twice on the way out (`Registry.dumps_*` with an ABC `isinstance` check against
`ModelT`), plus an `app.conf` read per event for the `Event` class. Each step returns its
input unchanged: for bytes (or None), raw in and raw out is the identity.

So for a schema that is exactly that (Faust's own `Schema`, bytes key and value types,
the `raw` codec both ways, Faust's own `Registry`, `create_event` not overridden),
`raw_decode` compiles a decode that builds the event directly, and `is_raw` tells the
lean `Topic.send` (`pipelines.runtime.send`) that bytes can be handed to the producer
as they are. Anything else (a model type, another codec, a subclass, a str payload)
takes Faust's path unchanged.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.channels import SerializedChannel
from faust.serializers import codecs, registry

RAW = "raw"


def is_raw(schema: Any, app: Any) -> bool:
    """Whether decoding and encoding through `schema` is the identity on bytes."""
    if type(schema) is not faust.Schema or type(app.serializers) is not registry.Registry:
        return False
    if type(codecs.codecs.get(RAW)) is not codecs.raw:
        return False
    serializers = app.serializers
    return (
        schema.key_type is bytes
        and schema.value_type is bytes
        and (schema.key_serializer or serializers.key_serializer) == RAW
        and (schema.value_serializer or serializers.value_serializer) == RAW
    )


def raw_decode(base: Any) -> tuple[Any]:
    """`Schema.compile` returning a direct event builder for raw schemas."""

    def compile(self: Any, app: Any, **kwargs: Any) -> Any:
        decode = base(self, app, **kwargs)
        if not is_raw(self, app) or type(app).create_event is not faust.App.create_event:
            return decode
        event_class = app.conf.Event
        default_propagate = kwargs.get("default_propagate", False)

        async def raw_event(message: Any, *, propagate: bool = default_propagate) -> Any:
            key, value = message.key, message.value
            if (key is None or type(key) is bytes) and (value is None or type(value) is bytes):
                return event_class(app, key, value, message.headers, message)
            return await decode(message, propagate=propagate)  # str payloads and the like

        return raw_event

    return (compile,)


def raw_topic(topic: Any) -> bool:
    """`is_raw` for a topic whose encoders are Faust's own, judged once per schema it has
    (kept on the topic, so a schema swapped later is judged again)."""
    schema = topic.schema
    seen = topic.__dict__.get("_sluice_raw")
    if seen is None or seen[0] is not schema:
        plain = (
            type(topic).prepare_key is SerializedChannel.prepare_key
            and type(topic).prepare_value is SerializedChannel.prepare_value
        )
        seen = topic.__dict__["_sluice_raw"] = (schema, plain and is_raw(schema, topic.app))
    return bool(seen[1])


def bytes_or_none(value: Any) -> bool:
    return value is None or type(value) is bytes
