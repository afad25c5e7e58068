"""The Quix Streams contender of `bench.faust_floor`: `dataframe(t)[.apply(f)].to_topic(out)`.

Run by the bench with the Python of Quix's own venv (`bench.quixenv`), never the project's:
it imports only Quix Streams and `bench.floorcodec` (fastavro). Same settings as the other
contenders: at-least-once, a consumer group of its own per round reading from the
earliest offset, acks=all and a 50 ms linger. It times first record → N-th record
processed (handed to the producer) with `on_message_processed`, writes
"<records/s> <CPU s per record>" to --out, as `bench.floorapp` does, and stops.

    python -m bench.quixapp --broker H:P --topic T --records N --mode forward --out F --state-dir D
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path


class Clock:
    """Wall and CPU time from the first processed record to the N-th, then a stop."""

    def __init__(self, records: int, out: Path, stop: Callable[[], None] = lambda: None) -> None:
        self.records, self.out, self.stop = records, out, stop
        self.seen, self.started, self.cpu = 0, 0.0, 0.0

    def __call__(self, topic: str, partition: int, offset: int) -> None:
        """Quix's on_message_processed hook: called once per consumed record."""
        self.seen += 1
        if self.seen == 1:
            self.started, self.cpu = time.monotonic(), time.process_time()
        elif self.seen == self.records:
            # From after the first record to after the N-th: N - 1 records handled.
            handled = self.records - 1
            elapsed, used = time.monotonic() - self.started, time.process_time() - self.cpu
            self.out.write_text(f"{handled / elapsed:.1f} {used / handled:.9f}\n")
            self.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--broker", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--records", type=int, required=True)
    parser.add_argument("--mode", choices=("forward", "transform"), default="forward")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    args = parser.parse_args()

    from quixstreams import Application

    clock = Clock(args.records, args.out)
    app = Application(
        broker_address=args.broker,
        consumer_group=args.topic,
        auto_offset_reset="earliest",
        processing_guarantee="at-least-once",
        producer_extra_config={"acks": "all", "linger.ms": 50},
        state_dir=args.state_dir,
        on_message_processed=clock,
        loglevel="WARNING",
    )
    clock.stop = app.stop
    source = app.topic(args.topic, key_deserializer="bytes", value_deserializer="bytes")
    sink = app.topic(f"{args.topic}.out", key_serializer="bytes", value_serializer="bytes")
    sdf = app.dataframe(source)
    if args.mode == "transform":
        from bench.floorcodec import OrderCodec

        sdf = sdf.apply(OrderCodec().transform)
    sdf.to_topic(sink)
    app.run()


if __name__ == "__main__":
    main()
