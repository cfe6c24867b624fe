"""Run a protocol fake as its own server process (for the managed-server and soak tests).

    python -m tests.fakes.serve KIND --port PORT [--chaos RATE --seed N] [--unready]
                                     [--startup-delay S] [--record]

KIND: openai, vllm, tgi, tei, ovms. ``--port 0`` picks a free port. When the server listens
it prints ``LISTENING <port>`` on stdout (flushed), then serves until SIGTERM/SIGINT.
``--unready`` makes its health routes answer 503 forever (a server that never becomes
ready); ``--startup-delay`` waits before listening (a model that loads slowly). Requests
are not recorded unless ``--record`` is given, so long soak runs stay flat in memory. With
``--chaos`` the server prints ``CHAOS {"served": n, "injected": {...}}`` when it stops.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
from typing import Any

from aiohttp import web

from ._server import FakeServer
from .chaos import ChaosPlan, install_chaos

FAKES = ("openai", "vllm", "tgi", "tei", "ovms")


def make_fake(kind: str) -> FakeServer:
    if kind == "openai":
        from .openai_fake import OpenAIFake

        return OpenAIFake(api_key=None)
    if kind == "vllm":
        from .vllm_fake import VLLMFake

        return VLLMFake()
    if kind == "tgi":
        from .tgi_fake import TGIFake

        return TGIFake()
    if kind == "tei":
        from .tei_fake import TEIFake

        return TEIFake()
    if kind == "ovms":
        from .ovms_fake import OVMSFake

        return OVMSFake()
    raise SystemExit(f"unknown fake {kind!r}; choose from {', '.join(FAKES)}")


@web.middleware
async def _unready(request: web.Request, handler: Any) -> web.StreamResponse:
    if request.path.endswith(("/health", "/health/ready", "/health/live")):
        return web.json_response({"error": "model is still loading"}, status=503)
    return await handler(request)


async def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("kind", choices=FAKES)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--chaos", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--stall", type=float, default=3.0)
    parser.add_argument("--unready", action="store_true")
    parser.add_argument("--startup-delay", type=float, default=0.0)
    parser.add_argument("--record", action="store_true")
    args = parser.parse_args(argv)

    fake = make_fake(args.kind)
    if not args.record:
        fake.requests = _Discard()  # type: ignore[assignment]
    plan = None
    if args.chaos:
        plan = install_chaos(fake, ChaosPlan(rate=args.chaos, seed=args.seed, stall=args.stall))
    if args.unready:
        fake.app.middlewares.insert(0, _unready)
    print(f"fake {args.kind}: loading (startup delay {args.startup_delay:g} s)", flush=True)
    if args.startup_delay:
        await asyncio.sleep(args.startup_delay)
    runner = web.AppRunner(fake.app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, args.host, args.port)
    await site.start()
    server = site._server
    assert server is not None
    port = server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    fake.port = port
    print(f"LISTENING {port}", flush=True)
    if args.unready:
        print("health: model weights not loaded yet (answering 503)", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    fake._closing.set()
    await runner.cleanup()
    if plan is not None:
        print(
            "CHAOS " + json.dumps({"served": plan.served, "injected": dict(plan.injected)}),
            flush=True,
        )
    print("stopped", flush=True)


class _Discard(list):  # type: ignore[type-arg]
    def append(self, item: Any) -> None:
        pass


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
