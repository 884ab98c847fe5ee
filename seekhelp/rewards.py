"""The paper's reward, on trajectories and in TRL's ``reward_funcs`` signature.

    R = r_format + r_quality + r_feedback + alpha * r_privacy + beta * r_efficiency

r_format     -1 if the SLM broke the protocol, else 0.
r_quality    exact match of the final answer with any gold alias (0 or 1, SQuAD normalization).
r_feedback   -1 if any LLM reply was a request for context (<need>), else 0.
r_privacy    -1 if any SLM message leaked a privacy item (the judge's verdict), else 0.
r_efficiency hard question: -(n_turns / n_max); easy question: -1 if the SLM asked at all, else 0.
             n_turns = SLM messages sent to the LLM (= LLM calls). The runtime caps n_turns at n_max; the
             ratio is clipped at 1 in case a trajectory and the config disagree.

alpha and beta are not given in the paper; ours default to 0.5 and 0.2 (``RewardConfig``).
"""

import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

from seekhelp.metrics import exact_match
from seekhelp.records import Trajectory


@dataclass
class RewardConfig:
    alpha: float = 0.5  # weight of r_privacy
    beta: float = 0.2  # weight of r_efficiency
    n_max: int = 4  # turn budget used to scale r_efficiency on hard questions


@dataclass
class RewardBreakdown:
    r_format: float
    r_quality: float
    r_feedback: float
    r_privacy: float
    r_efficiency: float
    total: float
    n_turns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _leak_flag(leaked: Any) -> bool:
    """bool, None (unknown: no penalty) or anything with a ``.leak`` attribute (a JudgeVerdict)."""
    leaked = getattr(leaked, "leak", leaked)
    return bool(leaked) if leaked is not None else False


def combine(r_format: float, r_quality: float, r_feedback: float, r_privacy: float, n_turns: int, asked: bool,
            is_easy: bool, cfg: RewardConfig | None = None) -> RewardBreakdown:
    """Assemble the reward from already-decided components (shared by trajectories and TRL adapters)."""
    cfg = cfg or RewardConfig()
    if is_easy:
        r_eff = -1.0 if asked else 0.0
    else:
        r_eff = -min(1.0, n_turns / cfg.n_max) if cfg.n_max > 0 else 0.0
    total = r_format + r_quality + r_feedback + cfg.alpha * r_privacy + cfg.beta * r_eff
    return RewardBreakdown(r_format, r_quality, r_feedback, r_privacy, r_eff, total, n_turns)


def compute_reward(traj: Trajectory, answers: list[str], leaked: Any, is_easy: bool,
                   cfg: RewardConfig | None = None) -> RewardBreakdown:
    """The reward of one trajectory.

    format: ``traj.format_ok``; quality: EM of ``traj.final_answer``; feedback: any LLM turn with action
    "need"; privacy: ``leaked`` (bool, or a JudgeVerdict; None = unknown, no penalty); n_turns: LLM calls.
    "Asked" on an easy question = at least one LLM call, or an SLM message the guard stopped before it left.
    """
    n_turns = traj.n_llm_calls
    asked = n_turns > 0 or any(t.role == "slm" and t.action == "message" for t in traj.turns)
    return combine(
        r_format=0.0 if traj.format_ok else -1.0,
        r_quality=exact_match(traj.final_answer, answers),
        r_feedback=-1.0 if any(t.role == "llm" and t.action == "need" for t in traj.turns) else 0.0,
        r_privacy=-1.0 if _leak_flag(leaked) else 0.0,
        n_turns=n_turns, asked=asked, is_easy=bool(is_easy), cfg=cfg)


def estimate_easy(correct_flags: list[bool], threshold: float = 0.5) -> bool:
    """"Easy" = the SLM alone answered correctly in at least ``threshold`` of its k samples (k >= 1)."""
    flags = [bool(f) for f in correct_flags]
    return bool(flags) and sum(flags) / len(flags) >= threshold


# ------------------------------------------------------------------------------------------ TRL adapters
_AGENT_REPLY_RE = re.compile(r"<agent-reply>.*?(?:</agent-reply>|$)", re.DOTALL)
_TURN_END_RE = re.compile(r"</message>|</answer>")
_NEED_RE = re.compile(r"<need>")


def split_completion(completion: Any) -> tuple[list[str], list[str]]:
    """(SLM turn texts, texts of the other side) of one completion.

    A chat completion (list of {"role", "content"}) gives one SLM turn per assistant message; the other
    messages (agent replies) are the other side. A plain string is cut into turns right after each
    </message> or </answer>, once its <agent-reply> blocks have been taken out (they are the other side);
    trailing text after the last boundary is a turn of its own (so a dialogue without an answer is invalid).
    """
    if isinstance(completion, list):
        msgs = [m for m in completion if isinstance(m, dict)]
        slm = [str(m.get("content") or "") for m in msgs if m.get("role") == "assistant"]
        other = [str(m.get("content") or "") for m in msgs if m.get("role") != "assistant"]
        return slm, other
    if isinstance(completion, dict):
        return split_completion([completion])
    text = "" if completion is None else str(completion)
    other = _AGENT_REPLY_RE.findall(text)
    text = _AGENT_REPLY_RE.sub("\n", text)
    turns, start = [], 0
    for m in _TURN_END_RE.finditer(text):
        turns.append(text[start:m.end()].strip())
        start = m.end()
    if text[start:].strip():
        turns.append(text[start:].strip())
    return [t for t in turns if t], other


def _column(kwargs: dict[str, Any], name: str, i: int) -> Any:
    col = kwargs.get(name)
    if col is None or isinstance(col, str) or not hasattr(col, "__getitem__"):
        return col
    return col[i] if i < len(col) else None


def _answers(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        s = value.strip()
        if s.startswith("["):
            try:
                parsed = json.loads(s)
                if isinstance(parsed, list):
                    return [str(x) for x in parsed]
            except ValueError:
                pass
        return [value]
    return [str(x) for x in value]


def _score(completion: Any, i: int, kwargs: dict[str, Any], cfg: RewardConfig) -> RewardBreakdown:
    from seekhelp import protocol  # imported late: keeps this module importable on its own

    slm, other = split_completion(completion)
    text = "\n".join(slm)
    n_turns = text.count(f"<{protocol.MESSAGE}>")
    need = _column(kwargs, "llm_need", i)
    if need is None:
        need = any(_NEED_RE.search(o) for o in other)
    leaked = _column(kwargs, "leaked", i)
    leaked = getattr(leaked, "leak", leaked)
    items = _column(kwargs, "privacy_items", i)
    if leaked is None and items is not None and len(items) > 0:
        from seekhelp.privacy import detect_leaks_any

        msgs = [protocol.parse_slm_turn(t).content for t in slm]
        leaked = detect_leaks_any([m for m in msgs if m], [str(x) for x in items])
    is_easy = _column(kwargs, "is_easy", i)
    return combine(
        r_format=-1.0 if protocol.validate_dialogue(slm) else 0.0,
        r_quality=exact_match(protocol.extract_answer(text), _answers(_column(kwargs, "answers", i))),
        r_feedback=-1.0 if need else 0.0,
        r_privacy=-1.0 if leaked else 0.0,
        n_turns=n_turns, asked=n_turns > 0, is_easy=bool(is_easy), cfg=cfg)


def _make(component: str, cfg: RewardConfig | None = None) -> Callable[..., list[float]]:
    def reward_func(prompts: list[Any] | None = None, completions: list[Any] | None = None,
                    **kwargs: Any) -> list[float]:
        c = cfg or RewardConfig()
        return [float(getattr(_score(comp, i, kwargs, c), component)) for i, comp in enumerate(completions or [])]

    name = "total_reward" if component == "total" else component[2:] + "_reward"
    reward_func.__name__ = reward_func.__qualname__ = name
    return reward_func


_ADAPTER_DOC = """TRL reward function: ``f(prompts, completions, **kwargs) -> list[float]``, one value per completion.

Completions are strings or chat message lists (see ``split_completion``). Dataset columns arrive as lists in
kwargs: ``answers`` (list of aliases, or one string, or a JSON list string), ``leaked`` (bool/None; when
missing and ``privacy_items`` is given, the deterministic detector in seekhelp.privacy decides: a heuristic
fallback, not the judge), ``is_easy`` (bool; missing = hard), ``llm_need`` (bool; missing = look for <need>
in the agent replies of the completion). n_turns = number of <message> tags in the SLM text; format =
``protocol.validate_dialogue`` on the SLM turns. Component values are unweighted; ``total`` applies
alpha/beta of ``RewardConfig`` (use ``make_total_reward(cfg)`` for other settings)."""

format_reward = _make("r_format")
quality_reward = _make("r_quality")
feedback_reward = _make("r_feedback")
privacy_reward = _make("r_privacy")
efficiency_reward = _make("r_efficiency")
total_reward = _make("total")
for _f in (format_reward, quality_reward, feedback_reward, privacy_reward, efficiency_reward, total_reward):
    _f.__doc__ = _ADAPTER_DOC


def make_total_reward(cfg: RewardConfig) -> Callable[..., list[float]]:
    """``total_reward`` with another alpha / beta / n_max."""
    f = _make("total", cfg)
    f.__doc__ = _ADAPTER_DOC
    return f


REWARD_FUNCS = [format_reward, quality_reward, feedback_reward, privacy_reward, efficiency_reward]
