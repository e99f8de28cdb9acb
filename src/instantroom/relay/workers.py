"""Starting relays: one process, or ``--workers N`` processes sharing one port.

Workers share the port with SO_REUSEPORT, so the kernel spreads connections over them,
and share rooms through the backplane: without one, members of a room landing on two
workers would not hear each other, so ``--workers`` above 1 needs ``--backplane``.
"""

from __future__ import annotations

import multiprocessing
import signal
import sys
from dataclasses import replace
from multiprocessing.connection import wait
from types import FrameType
from urllib.parse import urlsplit

import uvloop

from .config import ConfigError, RelayConfig, read_metrics_token
from .hub import Hub, MemoryHub
from .logs import setup_logging
from .tls import certificate_context, check_tls_options


def make_hub(url: str) -> Hub:
    """The backplane named by ``url``: none (memory) or ``redis://``/``rediss://``."""
    scheme = urlsplit(url).scheme.lower() if url else "memory"
    if scheme == "memory":
        return MemoryHub()
    if scheme in ("redis", "rediss"):
        from .hub_redis import RedisHub

        try:
            return RedisHub(url)
        except ValueError:  # a port, database or option redis-py cannot read
            # Not quoted: the URL may hold Redis's password.
            raise ConfigError(
                "The backplane URL cannot be read (its port, database or options)."
            ) from None
    raise ConfigError(f"A backplane is a redis:// or rediss:// URL, not {scheme}://.")


def _run_one(config: RelayConfig, reuse_port: bool) -> None:
    from .server import Relay

    setup_logging(config.log_level)
    try:
        uvloop.run(
            Relay(config, make_hub(config.backplane), reuse_port=reuse_port).run_until_signal()
        )
    except OSError as exc:
        if not reuse_port:
            raise  # one process: the CLI says it
        # A worker: said as the CLI says it for one process, not as a traceback.
        print(f"instantroom: {exc.strerror or type(exc).__name__}", file=sys.stderr)
        sys.exit(2)


def serve(config: RelayConfig) -> int:
    """Run the relay (or its workers) until SIGTERM or SIGINT."""
    make_hub(config.backplane)  # fail early on a bad URL
    read_metrics_token(config)  # and on a token file that cannot serve
    check_tls_options(config, shared_port=config.workers > 1)
    if config.tls_cert:
        # Here, not only in each worker: a worker's ConfigError is its traceback, and exit 1.
        certificate_context(config)
    if config.workers <= 1:
        _run_one(config, reuse_port=False)
        return 0
    if not config.backplane:
        raise ConfigError(
            "--workers above 1 needs --backplane redis://...: workers share rooms through it."
        )
    if config.port == 0:
        raise ConfigError("--workers above 1 needs a fixed --port for the workers to share.")
    context = multiprocessing.get_context("spawn")
    workers = [
        context.Process(target=_run_one, args=(replace(config, workers=1), True), daemon=False)
        for _ in range(config.workers)
    ]
    stopping = False

    def stop(signum: int, frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for worker in workers:
            if worker.pid is not None and worker.is_alive():
                worker.terminate()

    # Before the workers start: a SIGTERM meanwhile had left them running, orphaned.
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for worker in workers:
        if not stopping:
            worker.start()
    status = 0
    running = [worker for worker in workers if worker.pid is not None]
    while running:
        wait([worker.sentinel for worker in running])
        for worker in [w for w in running if not w.is_alive()]:
            running.remove(worker)
            code = worker.exitcode or 0
            if stopping and code in (-signal.SIGTERM, -signal.SIGINT):
                continue  # stopped before its own handler was set: stopped all the same
            if code:
                status = status or (code if code > 0 else 128 - code)  # as a shell says it
            if code and not stopping:
                # A worker that ended by itself (its port taken, a crash, the OOM killer):
                # the others stop too, and the exit status says so, so that a service
                # manager (Restart=on-failure) starts the relay again whole.
                stop(signal.SIGTERM, None)
    return status
