"""The stage runtime: what Sluice changes in Faust to run its stages at Kafka speed.

`tune(app)` is applied once, when `pipelines.stages.faustapp.make_app` makes an app;
`check_versions()` is the start-up guard (see `faust_tuning`).
"""

from pipelines.runtime.context import acting_for, make_current
from pipelines.runtime.faust_tuning import (
    PATCHES,
    UnsupportedFaust,
    all_patches,
    apply_patches,
    check_versions,
    tune,
)
from pipelines.runtime.fetch import short_fetch_waits

__all__ = [
    "PATCHES",
    "UnsupportedFaust",
    "acting_for",
    "all_patches",
    "apply_patches",
    "check_versions",
    "make_current",
    "short_fetch_waits",
    "tune",
]
