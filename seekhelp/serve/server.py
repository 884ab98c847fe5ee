"""Run the app: in the foreground for `seekhelp serve`, or on a background thread for tests and benchmarks.

uvicorn with its access log off (the app logs one line per request itself) and one event loop: the batching engine,
the upstream client's pool and the SLM's worker threads all belong to it.
"""

import contextlib
import logging
import threading
import time
from collections.abc import Iterator

import httpx
import uvicorn

from seekhelp.backends.server import free_port

log = logging.getLogger(__name__)


def _config(app, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, lifespan="on",
                          timeout_keep_alive=30, backlog=256)


def serve_forever(app, host: str = "127.0.0.1", port: int = 8080) -> None:
    uvicorn.Server(_config(app, host, port)).run()


@contextlib.contextmanager
def serving(app, host: str = "127.0.0.1", port: int | None = None, timeout_s: float = 30.0) -> Iterator[str]:
    """The app on a background thread for the block; yields its root URL (append /v1 for an OpenAI client)."""
    port = port or free_port()
    server = uvicorn.Server(_config(app, host, port))
    thread = threading.Thread(target=server.run, name="seekhelp-serve", daemon=True)
    thread.start()
    root = f"http://{host}:{port}"
    deadline = time.monotonic() + timeout_s
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            server.should_exit = True
            raise RuntimeError(f"seekhelp serve did not start on {root}")
        time.sleep(0.02)
    try:
        httpx.get(f"{root}/health", timeout=5.0).raise_for_status()
        yield root
    finally:
        server.should_exit = True
        thread.join(timeout_s)
