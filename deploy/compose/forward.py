"""Forward TCP ports to 127.0.0.1: how the compose workers reach `sluice providers up`.

The local providers listen on 127.0.0.1 only (they are test doubles, never meant to be
reachable from a network). In compose they run in their own container, so this small
forwarder runs in the same network namespace (`network_mode: service:providers`) and
exposes them to the other containers: `python forward.py 18025:8025 18026:8026`.
Standard library only, so it runs in the Sluice image unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from collections.abc import Awaitable, Callable

TARGET_HOST = "127.0.0.1"
CHUNK = 64 * 1024

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(ConnectionError, OSError):
            writer.close()


def handler(target_port: int) -> Handler:
    """A connection handler that splices the client to 127.0.0.1:`target_port`."""

    async def handle(client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection(TARGET_HOST, target_port)
        except OSError:
            client_w.close()
            return
        await asyncio.gather(_pipe(client_r, upstream_w), _pipe(upstream_r, client_w))

    return handle


def parse(specs: list[str]) -> list[tuple[int, int]]:
    """`LISTEN:TARGET` pairs of port numbers."""
    pairs = []
    for spec in specs:
        listen, _, target = spec.partition(":")
        if not (listen.isdigit() and target.isdigit()):
            raise SystemExit(f"error: expected LISTEN:TARGET ports, got {spec!r}")
        pairs.append((int(listen), int(target)))
    return pairs


async def serve(pairs: list[tuple[int, int]], bind: str = "0.0.0.0") -> None:
    """Listen on every pair until SIGINT or SIGTERM."""
    servers = [
        await asyncio.start_server(handler(target), bind, listen) for listen, target in pairs
    ]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    print("forwarding " + ", ".join(f"{a} -> {TARGET_HOST}:{b}" for a, b in pairs), flush=True)
    await stop.wait()
    for server in servers:
        server.close()


if __name__ == "__main__":
    asyncio.run(serve(parse(sys.argv[1:])))
