"""Sluice: asynchronous order processing, notifications and analytics on Apache Kafka.

What users import lives here; everything else is an implementation module that may change.
Importing this package has no side effects (no Faust app is built until a stage module
such as `pipelines.orders` is imported).
"""

from pipelines.catalog import CATALOG, TopicSpec
from pipelines.errors import (
    BrokerUnavailable,
    ConfigError,
    RecordError,
    RecordRef,
    SluiceError,
    TopicError,
)
from pipelines.settings import SecuritySettings, Settings, get_settings

__all__ = [
    "CATALOG",
    "BrokerUnavailable",
    "ConfigError",
    "RecordError",
    "RecordRef",
    "SecuritySettings",
    "Settings",
    "SluiceError",
    "TopicError",
    "TopicSpec",
    "get_settings",
]
