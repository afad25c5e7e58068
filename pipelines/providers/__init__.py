"""Local stand-ins for the SMTP and HTTP providers, for the demo and the tests.

Real servers on 127.0.0.1 that record what they receive (per notification id, so
at-most-once can be checked) and fail on request the way real providers do. Import
from here; the modules behind it are private and may move.
"""

from __future__ import annotations

from pipelines.providers.http import HttpProvider, HttpProviderConfig
from pipelines.providers.receipts import Receipt, ReceiptLog
from pipelines.providers.runner import (
    ProvidersConfig,
    ProvidersError,
    ProvidersHandle,
    providers_in_thread,
    run_providers,
)
from pipelines.providers.smtp import SmtpProvider, SmtpProviderConfig

__all__ = [
    "HttpProvider",
    "HttpProviderConfig",
    "ProvidersConfig",
    "ProvidersError",
    "ProvidersHandle",
    "Receipt",
    "ReceiptLog",
    "SmtpProvider",
    "SmtpProviderConfig",
    "providers_in_thread",
    "run_providers",
]
