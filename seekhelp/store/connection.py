"""Opening a store file: short connections that wait their turn instead of failing on DuckDB's file lock.

DuckDB lets one process write a file, or any number of processes read it, never both at once: the lock is taken
when a connection opens and released when it closes. So nothing keeps a connection open: a writer opens one per
transaction (a few milliseconds to a second) and a reader (`seekhelp sql`, `seekhelp stats`) one per query, and
whoever finds the file locked retries with backoff, up to a bound, then fails with one clear line.

Fairness: a busy writer (a bulk ingest, an RL round storing rollouts) could otherwise reopen the file before a
polling reader notices it was free. A waiting reader therefore leaves a marker file beside the store
(`.<store>.reader-<pid>-<n>`), and a writer about to open the file first lets fresh markers clear (bounded, so a
reader that died leaves no writer stuck).
"""

import contextlib
import itertools
import logging
import os
import threading
import time
from pathlib import Path

import duckdb

from seekhelp.store.schema import StoreError

log = logging.getLogger(__name__)

DUCKDB_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}
READ_WAIT_S = 30.0  # a reader gives up after this long (env SEEKHELP_STORE_WAIT_S)
WRITE_WAIT_S = 600.0  # a writer waits longer: failing would lose a stage's work, and readers are short
WRITER_YIELD_S = 2.0  # the longest a writer defers to waiting readers before it opens the file anyway
MARKER_FRESH_S = 5.0  # a waiting reader touches its marker at least this often; older markers are ignored

_counter = itertools.count()
# Connections this process holds open, by resolved path: a read-only reader of the same file in the same process
# (DuckDB refuses a second configuration of one file in one process) borrows a cursor from one of them.
_open: dict[str, duckdb.DuckDBPyConnection] = {}
_open_lock = threading.Lock()


def read_wait_s() -> float:
    try:
        return float(os.environ.get("SEEKHELP_STORE_WAIT_S", READ_WAIT_S))
    except ValueError:
        return READ_WAIT_S


def _is_conflict(e: duckdb.Error) -> bool:
    text = str(e).lower()
    return "lock" in text or "different configuration" in text


def _markers(path: Path) -> list[Path]:
    return list(path.parent.glob(f".{path.name}.reader-*"))


def _yield_to_readers(path: Path) -> None:
    """Before a writer opens the file: wait (bounded) while another process's reader waits for it."""
    deadline = time.monotonic() + WRITER_YIELD_S
    while time.monotonic() < deadline and readers_waiting(path):
        time.sleep(0.01)


def _open_once(path: Path, read_only: bool) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(str(path), read_only=read_only, config=dict(DUCKDB_CONFIG))
    except duckdb.Error as e:
        if isinstance(e, duckdb.IOException | duckdb.ConnectionException) and _is_conflict(e):
            raise
        raise StoreError(f"{path}: cannot open store ({str(e).strip().splitlines()[0]})") from e


def connect(path: str | Path, read_only: bool = False, wait_s: float | None = None) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that never downloads extensions; waits up to `wait_s` while another process holds
    the file; a missing store, a file that is not a store, or a lock held too long become one-line StoreErrors."""
    path = Path(path)
    if read_only and not path.exists():
        raise StoreError(f"{path}: no such store (run a pipeline or `Store(path)` to create one)")
    key = str(path.resolve())
    if read_only:
        with _open_lock:
            if key in _open:
                return _open[key].cursor()
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
    wait_s = (read_wait_s() if read_only else WRITE_WAIT_S) if wait_s is None else wait_s
    start = time.monotonic()
    marker = None
    delay = 0.01
    warned = False
    try:
        while True:
            if not read_only:
                _yield_to_readers(path)
            try:
                return _open_once(path, read_only)
            except (duckdb.IOException, duckdb.ConnectionException) as e:
                waited = time.monotonic() - start
                if waited >= wait_s:
                    raise StoreError(f"{path}: store is in use by another process (waited {waited:.0f} s; DuckDB "
                                     "allows one writer per file, or readers only)") from e
                if read_only:
                    if marker is None:
                        marker = path.with_name(f".{path.name}.reader-{os.getpid()}-{next(_counter)}")
                    with contextlib.suppress(OSError):
                        marker.touch()
                elif waited > 10 and not warned:
                    log.warning("%s: waiting for another process to release the store", path)
                    warned = True
                time.sleep(min(delay, wait_s - waited, 0.25))
                delay *= 1.5
    finally:
        if marker is not None:
            with contextlib.suppress(OSError):
                marker.unlink()


def register_open(path: Path, con: duckdb.DuckDBPyConnection | None) -> None:
    """Announce (or, with None, withdraw) this process's open writer connection to `path`."""
    key = str(path.resolve())
    with _open_lock:
        if con is None:
            _open.pop(key, None)
        else:
            _open[key] = con


def readers_waiting(path: Path) -> bool:
    """Whether a reader in another process waits for `path` (a fresh marker beside it)."""
    now = time.time()
    for m in _markers(path):
        with contextlib.suppress(OSError):
            if now - m.stat().st_mtime < MARKER_FRESH_S:
                return True
    return False
