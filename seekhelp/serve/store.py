"""Optional: every served episode written to the DuckDB store, so the usual SQL works on real traffic.

Off by default: the store then holds the users' questions and private facts on disk. One run row per server
start (kind "serve"); each batch is written in its own short transaction from a worker thread, opening and closing
the file each time so that `seekhelp sql` can read the store while the server runs. A failed write is logged and
never fails the requests it records.
"""

import asyncio
import logging
import threading
from pathlib import Path

from seekhelp.records import Question, Trajectory

log = logging.getLogger(__name__)


class ServedStore:
    def __init__(self, path: str | Path, config: dict | None = None):
        from seekhelp.store import Store

        self.path = Path(path)
        self._lock = threading.Lock()
        self._pending: set[asyncio.Future] = set()
        with Store(self.path) as s:
            self.run_id = s.start_run("serve", config or {})
        self.written = 0

    def write(self, questions: list[Question], trajectories: list[Trajectory]) -> None:
        from seekhelp.store import Store

        with self._lock, Store(self.path) as s, s.transaction():
            s.add_questions(questions, self.run_id)
            self.written += s.add_trajectories(trajectories, self.run_id)

    def on_batch(self, questions: list[Question], trajectories: list[Trajectory]) -> None:
        """The engine's hook: write in a thread, off the event loop, without delaying the replies."""
        fut = asyncio.get_running_loop().run_in_executor(None, self._write_logged, questions, trajectories)
        self._pending.add(fut)
        fut.add_done_callback(self._pending.discard)

    def _write_logged(self, questions, trajectories) -> None:
        try:
            self.write(questions, trajectories)
        except Exception as e:
            log.error("store %s: %d served episodes not written: %s", self.path, len(trajectories), e)

    async def aclose(self) -> None:
        """Wait for the writes in flight, then close the run (the app's shutdown hook)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
        await asyncio.to_thread(self.close)

    def close(self) -> None:
        from seekhelp.store import Store

        with self._lock, Store(self.path) as s:
            s.finish_run(self.run_id, "ok", f"{self.written} episodes served")
