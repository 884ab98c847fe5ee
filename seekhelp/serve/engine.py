"""One batching engine in front of the SLM: requests that arrive together share one batched episode run.

On a CPU (and on a GPU, at a smaller scale) one batched `generate` over 32 prompts costs little more than one over a
single prompt, so a server that ran one episode per request would waste most of the model. The engine queues each
request, waits a short window (`window_s`) for others to join, up to `max_batch`, and runs ONE `run_strategy` call
per strategy over the whole batch: the project's episode loop then batches every SLM step and sends the upstream
calls concurrently. Requests that arrive while a batch runs form the next one; `max_inflight` batches may run at
once (1 keeps the SLM's batches as large as possible; more lets a new batch start while another waits on the
upstream). The model is never reloaded: the engine holds one StrategyContext for the server's life.
"""

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from seekhelp.records import Question, Trajectory, content_hash
from seekhelp.strategies import StrategyContext, run_strategy

log = logging.getLogger(__name__)


@dataclass
class Served:
    """One finished request: its trajectory and how it was batched."""

    trajectory: Trajectory
    request_id: str
    batch_size: int
    queue_s: float
    run_s: float


@dataclass
class _Pending:
    strategy: str
    question: Question
    future: asyncio.Future
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    enqueued: float = field(default_factory=time.perf_counter)


class BatchEngine:
    def __init__(self, ctx: StrategyContext, max_batch: int = 32, window_s: float = 0.02, max_inflight: int = 1,
                 on_batch: Callable[[list[Question], list[Trajectory]], None] | None = None):
        if max_batch < 1 or max_inflight < 1 or window_s < 0:
            raise ValueError("max_batch and max_inflight must be >= 1 and window_s >= 0")
        self.ctx, self.max_batch, self.window_s, self.max_inflight = ctx, max_batch, window_s, max_inflight
        self.on_batch = on_batch
        self.stats = {"requests": 0, "batches": 0, "largest_batch": 0, "failed_batches": 0}
        self._queue: asyncio.Queue[_Pending] | None = None
        self._worker: asyncio.Task | None = None
        self._running: set[asyncio.Task] = set()

    @property
    def pending(self) -> int:
        return self._queue.qsize() if self._queue is not None else 0

    @property
    def inflight(self) -> int:
        return len(self._running)

    async def start(self) -> None:
        """Start the collecting task on the running event loop (the server's)."""
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.max_inflight)
        self._worker = asyncio.create_task(self._collect(), name="seekhelp-batcher")

    async def stop(self) -> None:
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        while self._queue is not None and not self._queue.empty():  # never started: fail them, do not hang them
            p = self._queue.get_nowait()
            if not p.future.done():
                p.future.set_exception(RuntimeError("the server is shutting down"))

    async def submit(self, strategy: str, question: Question) -> Served:
        """Queue one episode and wait for it (the batch it joins decides when)."""
        if self._queue is None:
            raise RuntimeError("BatchEngine.start() was not called")
        p = _Pending(strategy, question, asyncio.get_running_loop().create_future())
        self._queue.put_nowait(p)
        return await p.future

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                batch = [await self._queue.get()]
                deadline = loop.time() + self.window_s
                while len(batch) < self.max_batch and (left := deadline - loop.time()) > 0:
                    try:
                        batch.append(await asyncio.wait_for(self._queue.get(), left))
                    except TimeoutError:
                        break
                while len(batch) < self.max_batch and not self._queue.empty():
                    batch.append(self._queue.get_nowait())
            except BaseException:
                self._slots.release()
                raise
            task = asyncio.create_task(self._run(batch))
            self._running.add(task)
            task.add_done_callback(self._finished)

    def _finished(self, task: asyncio.Task) -> None:
        self._running.discard(task)
        self._slots.release()

    async def _run(self, batch: list[_Pending]) -> None:
        t0 = time.perf_counter()
        live = [p for p in batch if not p.future.done()]  # a client that went away cancelled its future
        groups: dict[str, list[_Pending]] = {}
        for p in live:
            groups.setdefault(p.strategy, []).append(p)
        self.stats["batches"] += 1
        self.stats["requests"] += len(live)
        self.stats["largest_batch"] = max(self.stats["largest_batch"], len(live))
        results = await asyncio.gather(*(run_strategy(name, self.ctx, [p.question for p in ps])
                                         for name, ps in groups.items()), return_exceptions=True)
        run_s = time.perf_counter() - t0
        done_q, done_t = [], []
        for (name, ps), res in zip(groups.items(), results, strict=True):
            if isinstance(res, BaseException):
                self.stats["failed_batches"] += 1
                log.error("batch of %d %s episodes failed: %s: %s", len(ps), name, type(res).__name__, res)
                for p in ps:
                    if not p.future.done():
                        p.future.set_exception(res)
                continue
            for p, traj in zip(ps, res, strict=True):
                traj.id = content_hash("serve", traj.id, p.request_id)  # every served request is its own episode
                done_q.append(p.question)
                done_t.append(traj)
                if not p.future.done():
                    p.future.set_result(Served(traj, p.request_id, len(live), t0 - p.enqueued, run_s))
        log.debug("batch: %d requests, %s, %.2f s", len(live), {k: len(v) for k, v in groups.items()}, run_s)
        if self.on_batch is not None and done_t:
            try:
                self.on_batch(done_q, done_t)
            except Exception as e:  # recording traffic must never fail the requests it records
                log.error("on_batch hook failed: %s: %s", type(e).__name__, e)
