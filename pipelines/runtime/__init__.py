"""The stage runtime: everything that runs a stage's pure logic on Faust and Kafka.

The app builder (`faustapp`), its worker start-up (`startup`, `statedir`, `health`), the
commit guard (`commits`), backpressure (`controller`), batches and outboxes (`batches`,
`orderbatch`), the dead-letter writer (`deadletter`), the schema gate, the delay relay,
the analytics web views, and what Sluice changes in Faust to run its stages at Kafka speed.
The pure logic those drive lives in `pipelines.stages`.

`tune(app)` is applied once, when `pipelines.runtime.faustapp.make_app` makes an app;
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
