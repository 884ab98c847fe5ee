"""Plain, JSON-serializable records shared by every stage: questions, turns, trajectories.

Ids are content hashes so reruns are idempotent: the same question (text + answers) always gets the
same id, and the same (question, policy, sample index, config) always gets the same trajectory id.
"""

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field, fields
from typing import Any


def content_hash(*parts: Any, length: int = 16) -> str:
    """A stable short hex digest of JSON-encodable parts (order matters, dict keys are sorted)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:length]


def question_id(question: str, answers: list[str]) -> str:
    return content_hash("q", question.strip(), sorted(a.strip() for a in answers))


@dataclass
class Question:
    """One privacy-laden question. Only the SLM ever sees `question` and `privacy_items`."""

    question: str
    answers: list[str]
    privacy_items: list[str] = field(default_factory=list)
    original_question: str = ""
    source: str = ""
    split: str = ""
    meta: dict[str, Any] = field(default_factory=dict)  # e.g. entities, hops, gold facts for grounding/teachers
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = question_id(self.question, self.answers)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Question":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Turn:
    """One model call inside an episode.

    role: "slm" or "llm". action: for the SLM "message" | "answer" (or a strategy-specific action such as
    "rewrite", "plan", "confidence"); for the LLM "need" | "information" | "answer" | "plan"; None when the
    output could not be understood. `sent` is, for LLM turns, exactly the user-side text the LLM received
    in this call (what left the device); `guard` records what the outgoing privacy guard did, if anything.
    """

    role: str
    raw: str
    action: str | None = None
    content: str = ""
    think: str = ""
    errors: list[str] = field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    sent: str | None = None
    guard: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Turn":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class Trajectory:
    """One episode of one strategy on one question."""

    question_id: str
    strategy: str
    slm: str
    llm: str
    turns: list[Turn] = field(default_factory=list)
    final_answer: str | None = None
    stop_reason: str = ""  # answer | n_max | format_error | error | guard
    format_ok: bool = True
    raw_question_sent: bool = False  # the strategy sent the private question itself to the LLM
    sample_index: int = 0
    config_hash: str = ""
    round: int = 0
    error: str | None = None
    created_at: float = field(default_factory=time.time)
    id: str = ""

    def __post_init__(self) -> None:
        if not self.id:
            self.id = trajectory_id(self.question_id, self.strategy, self.slm, self.llm, self.sample_index,
                                    self.config_hash, self.round)

    @property
    def n_llm_calls(self) -> int:
        return sum(1 for t in self.turns if t.role == "llm")

    @property
    def messages(self) -> list[str]:
        """Everything that was sent to the LLM (what left the device, after the guard), in order."""
        return [t.sent for t in self.turns if t.role == "llm" and t.sent is not None]

    @property
    def attempted(self) -> list[str]:
        """Everything the policy TRIED to send, before the guard: each SLM message (kept even when the guard
        blocked or redacted it), a redactor's output (redact_direct), and, for strategies that forward the raw
        question, what they forwarded."""
        tried = [t.content for t in self.turns
                 if t.role in ("slm", "redactor") and t.action == "message" and t.content]
        if self.raw_question_sent:
            tried += [t.sent for t in self.turns if t.role == "llm" and t.sent]
        return tried

    def tokens(self, role: str) -> tuple[int, int]:
        turns = [t for t in self.turns if t.role == role]
        return sum(t.prompt_tokens for t in turns), sum(t.completion_tokens for t in turns)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["n_llm_calls"] = self.n_llm_calls
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Trajectory":
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in names}
        kw["turns"] = [t if isinstance(t, Turn) else Turn.from_dict(t) for t in kw.get("turns", [])]
        return cls(**kw)


def trajectory_id(question_id: str, strategy: str, slm: str, llm: str, sample_index: int, config_hash: str,
                  round: int = 0) -> str:
    return content_hash("t", question_id, strategy, slm, llm, sample_index, config_hash, round)
