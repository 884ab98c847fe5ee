"""The one episode loop: many SLM↔LLM dialogues at once.

Each step, every live episode gets its next SLM turn from ONE batched call to the SLM backend; the episodes that
chose to send a message then get their LLM replies through concurrent calls. The LLM only ever receives the
SLM's messages and its own earlier replies (see `conversation.llm_messages`). An episode ends at <answer>, after
`n_max` LLM turns, on an unrecoverable format error, when the SLM repeats a message it already tried (after a
block that would loop until n_max), or when a call failed for good.

Privacy is recorded on both sides of the guard: the SLM turn keeps the message the policy TRIED to send
(``Turn.content``, ``Trajectory.attempted``), the LLM turn what actually left the device (``Turn.sent``).
"""

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from seekhelp import protocol
from seekhelp.backends.base import ChatBackend, GenParams
from seekhelp.backends.grounded import grounded
from seekhelp.conversation import llm_messages, slm_messages
from seekhelp.prompts import load_prompt
from seekhelp.records import Question, Trajectory, Turn, content_hash

log = logging.getLogger(__name__)

Grounder = Callable[[str], list[str]]


@dataclass
class RuntimeConfig:
    n_max: int = 4
    slm_max_new_tokens: int = 160
    llm_max_new_tokens: int = 384
    slm_temperature: float = 0.0
    llm_temperature: float = 0.0
    top_p: float = 1.0
    guard: str = "block"  # block | redact | off
    slm_prompt: str = "slm_dynamic"
    llm_prompt: str = "llm_expert"
    llm_can_ask: bool = True  # False: the LLM is a plain tool; a <need> reply is shown to the SLM as information
    seed: int | None = None
    run_tag: str = ""  # what else distinguishes a run (eval run name, threshold): part of every trajectory id

    def slm_params(self) -> GenParams:
        return GenParams(max_new_tokens=self.slm_max_new_tokens, temperature=self.slm_temperature,
                         top_p=self.top_p, stop=list(protocol.SLM_STOP), seed=self.seed)

    def llm_params(self) -> GenParams:
        return GenParams(max_new_tokens=self.llm_max_new_tokens, temperature=self.llm_temperature,
                         top_p=self.top_p, stop=list(protocol.LLM_STOP), seed=self.seed)

    def fingerprint(self) -> str:
        return content_hash(self.__dict__)


@dataclass
class _Episode:
    question: Question
    traj: Trajectory
    pending: str | None = None  # message cleared by the guard, waiting for the LLM
    done: bool = False

    def finish(self, reason: str, error: str | None = None) -> None:
        self.done, self.traj.stop_reason = True, reason
        if error:
            self.traj.error = error


class Runtime:
    """Runs `dynamic` episodes (and, with other prompts, the tool-style baseline) over two backends."""

    def __init__(self, slm: ChatBackend, llm: ChatBackend, config: RuntimeConfig | None = None,
                 grounder: Grounder | None = None, progress: Callable[[int], None] | None = None):
        self.slm, self.llm = slm, grounded(llm, grounder)  # grounding is the endpoint's, for every call alike
        self.config = config or RuntimeConfig()
        self.progress = progress
        self._guard = None
        if self.config.guard != "off":
            from seekhelp.privacy import OutgoingGuard

            self._guard = OutgoingGuard(mode=self.config.guard)

    def run(self, questions: list[Question], strategy: str = "dynamic", sample_index: int | list[int] = 0,
            round: int = 0) -> list[Trajectory]:
        """Synchronous entry point (one event loop for the whole batch; its HTTP pools are closed with it).
        `sample_index` may be one per question: K samples of a question then run in the same batch."""

        async def run_and_release() -> list[Trajectory]:
            try:
                return await self.arun(questions, strategy, sample_index, round)
            finally:
                for backend in (self.slm, self.llm):
                    if hasattr(backend, "aclose"):
                        await backend.aclose()

        return asyncio.run(run_and_release())

    async def arun(self, questions: list[Question], strategy: str = "dynamic", sample_index: int | list[int] = 0,
                   round: int = 0) -> list[Trajectory]:
        cfg = self.config
        slm_system, llm_system = load_prompt(cfg.slm_prompt), load_prompt(cfg.llm_prompt)
        fp = cfg.fingerprint()
        indices = [sample_index] * len(questions) if isinstance(sample_index, int) else list(sample_index)
        if len(indices) != len(questions):
            raise ValueError(f"{len(indices)} sample indices for {len(questions)} questions")
        episodes = [_Episode(q, Trajectory(question_id=q.id, strategy=strategy, slm=self.slm.name, llm=self.llm.name,
                                           sample_index=i, config_hash=fp, round=round))
                    for q, i in zip(questions, indices, strict=True)]
        while live := [e for e in episodes if not e.done]:
            await self._slm_step(live, slm_system)
            asking = [e for e in live if not e.done and e.pending is not None]
            if asking:
                await self._llm_step(asking, llm_system)
        for e in episodes:
            t = e.traj
            t.format_ok = t.stop_reason == "answer" and not any(x.errors for x in t.turns if x.role == "slm")
            if self.progress:
                self.progress(1)
        return [e.traj for e in episodes]

    async def _slm_step(self, live: list[_Episode], system: str) -> None:
        convs = [slm_messages(system, e.question, e.traj.turns) for e in live]
        completions = await self.slm.generate(convs, self.config.slm_params())
        for e, c in zip(live, completions, strict=True):
            if c.error:
                e.finish("error", f"slm: {c.error}")
                continue
            parsed = protocol.parse_slm_turn(c.text)
            e.traj.turns.append(Turn(role="slm", raw=c.text, action=parsed.action, content=parsed.content,
                                     think=parsed.think, errors=list(parsed.errors), prompt_tokens=c.prompt_tokens,
                                     completion_tokens=c.completion_tokens, latency_s=c.latency_s))
            if parsed.action == protocol.ANSWER:
                e.traj.final_answer = parsed.content
                e.finish("answer")
            elif parsed.action != protocol.MESSAGE:
                e.finish("format_error")
            elif e.traj.n_llm_calls >= self.config.n_max:
                e.finish("n_max")
            else:
                self._outgoing(e, parsed.content)

    def _outgoing(self, e: _Episode, message: str) -> None:
        """Apply the privacy guard to a message before anything leaves the device."""
        earlier = [protocol.normalize_message(m) for m in e.traj.attempted[:-1]]
        if protocol.normalize_message(message) in earlier:  # the same request again: the reply would not change
            e.finish("repeat")
            return
        if self._guard is None:
            e.pending = message
            return
        result = self._guard.check(message, e.question.privacy_items, e.question.meta.get("private_terms"))
        if result.allowed:
            e.pending = result.text
            if result.action:
                e.traj.turns[-1].guard = result.action
            return
        e.traj.turns[-1].guard = result.action or "blocked"
        notice = result.explain()
        e.traj.turns.append(Turn(role="guard", raw=notice, action=protocol.INFORMATION, content=notice,
                                 guard="blocked"))
        if sum(1 for t in e.traj.turns if t.role == "guard") >= self.config.n_max:
            e.finish("guard")

    async def _llm_step(self, asking: list[_Episode], system: str) -> None:
        convs = [llm_messages(system, e.traj.turns, e.pending or "") for e in asking]
        t0 = time.perf_counter()
        completions = await self.llm.generate(convs, self.config.llm_params())
        log.debug("LLM step: %d calls in %.2f s", len(convs), time.perf_counter() - t0)
        for e, c in zip(asking, completions, strict=True):
            sent, e.pending = e.pending, None
            if c.error:
                e.traj.turns.append(Turn(role="llm", raw="", sent=sent, errors=[c.error], latency_s=c.latency_s))
                e.finish("error", f"llm: {c.error}")
                continue
            parsed = protocol.parse_llm_turn(c.text)
            action = parsed.action or protocol.INFORMATION  # the default reply is information
            errors = list(parsed.errors)
            if action == protocol.NEED and not self.config.llm_can_ask:  # a tool cannot ask back: decided here,
                action = protocol.INFORMATION  # so the SLM is shown (and the turn records) plain information
                errors.append("<need> from a tool that may not ask back: shown as information")
            e.traj.turns.append(Turn(role="llm", raw=c.text, action=action, content=parsed.content,
                                     think=parsed.reasoning, errors=errors, sent=sent,
                                     prompt_tokens=c.prompt_tokens, completion_tokens=c.completion_tokens,
                                     latency_s=c.latency_s))
