"""Per-run metrics from trajectories (definitions: shared/reference/paper-facts.md, "Metrics").

Units: em, f1, f_bert and priv_sample in percent (0..100); inscore, recall_easy, recall_hard and priv_sim in 0..1;
avg_turns = mean LLM calls per question (a direct LLM answer counts 1); tokens are totals over the run; cost in
USD from a price table in USD per 1M tokens, looked up by the trajectory's model names (an unpriced model is free).

Privacy per sample: a strategy that sent the raw question leaks by construction; otherwise the LLM judge's verdict
when there is one, else the deterministic detector (seekhelp.judging.leaked_items). A sample that sent nothing
never leaks. "Asked" (for INScore) = at least one LLM call, or a request the guard stopped before it left.
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seekhelp import metrics
from seekhelp.judging import leaked_items
from seekhelp.records import Question, Trajectory

EASY_SOURCES = ("slm_cot run", "store easy table", "question meta easy_hint")


def asked(t: Trajectory) -> bool:
    return t.n_llm_calls > 0 or any(x.role == "slm" and x.action == "message" for x in t.turns)


def leak_of(t: Trajectory, q: Question, judge: bool | None = None) -> tuple[bool, str]:
    """(leaked?, where the verdict came from: raw | none | judge | detector)."""
    if t.raw_question_sent:
        return True, "raw"
    if not t.messages:
        return False, "none"
    if judge is not None:
        return bool(judge), "judge"
    return bool(leaked_items(q, t)), "detector"


def cost_usd(t: Trajectory, prices: Mapping[str, Mapping[str, float]]) -> float:
    total = 0.0
    for role, model in (("slm", t.slm), ("llm", t.llm)):
        p = prices.get(model) or {}
        prompt, completion = t.tokens(role)
        total += (prompt * p.get("prompt", 0.0) + completion * p.get("completion", 0.0)) / 1e6
    return total


@dataclass
class EasyLabels:
    flags: dict[str, bool]  # question id → easy
    source: str  # one of EASY_SOURCES (several joined with " + " when the first did not cover everything)


def easy_labels(questions: Sequence[Question], solo: Mapping[str, bool] | None = None,
                stored: Mapping[str, bool] | None = None) -> EasyLabels:
    """Easy = the SLM alone answers correctly: its slm_cot run in this eval, else the store's `easy` table,
    else the question's meta easy_hint (the generator's guess), question by question."""
    flags, used = {}, []
    for q in questions:
        name = next((n for n, table in ((EASY_SOURCES[0], solo), (EASY_SOURCES[1], stored))
                     if table and q.id in table), EASY_SOURCES[2])
        table = {EASY_SOURCES[0]: solo, EASY_SOURCES[1]: stored}.get(name)
        flags[q.id] = bool(table[q.id]) if table else bool((q.meta or {}).get("easy_hint", False))
        if name not in used:
            used.append(name)
    return EasyLabels(flags, " + ".join(used) or EASY_SOURCES[2])


def _nan_to_none(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def run_metrics(trajs: Sequence[Trajectory], questions: Mapping[str, Question], easy: Mapping[str, bool],
                judge: Mapping[str, bool | None] | None = None, prices: Mapping[str, Any] | None = None,
                bertscore: Callable[[list[str], list[str]], list[float]] | None = None,
                sim_matrix: Callable[[list[str], list[str]], np.ndarray] | None = None) -> dict[str, Any]:
    """One metrics row for a set of trajectories (one per question). `bertscore(cands, refs)` and
    `sim_matrix(requests, items)` come from the embedder; without them F_BERT / Priv_sim are None."""
    judge, prices = judge or {}, prices or {}
    n = len(trajs)
    if n == 0:
        return {"n": 0}
    qs = [questions[t.question_id] for t in trajs]
    em = [metrics.exact_match(t.final_answer, q.answers) for t, q in zip(trajs, qs, strict=True)]
    f1 = [metrics.f1(t.final_answer, q.answers) for t, q in zip(trajs, qs, strict=True)]
    leaks = [leak_of(t, q, judge.get(t.id)) for t, q in zip(trajs, qs, strict=True)]
    ins = metrics.inscore([{"is_easy": bool(easy.get(t.question_id)), "asked": asked(t)} for t in trajs])
    row: dict[str, Any] = {
        "n": n,
        "em": 100.0 * sum(em) / n,
        "f1": 100.0 * sum(f1) / n,
        "f_bert": None,
        "avg_turns": sum(t.n_llm_calls for t in trajs) / n,
        "inscore": _nan_to_none(ins["inscore"]),
        "recall_easy": _nan_to_none(ins["recall_easy"]),
        "recall_hard": _nan_to_none(ins["recall_hard"]),
        "n_easy": ins["n_easy"],
        "priv_sim": None,
        "priv_sample": metrics.priv_sample([flag for flag, _ in leaks]),
        "leak_sources": {s: sum(1 for _, x in leaks if x == s) for s in ("raw", "judge", "detector", "none")},
        "slm_prompt_tokens": sum(t.tokens("slm")[0] for t in trajs),
        "slm_completion_tokens": sum(t.tokens("slm")[1] for t in trajs),
        "llm_prompt_tokens": sum(t.tokens("llm")[0] for t in trajs),
        "llm_completion_tokens": sum(t.tokens("llm")[1] for t in trajs),
        "cost_usd": sum(cost_usd(t, prices) for t in trajs),
        "format_ok": 100.0 * sum(t.format_ok for t in trajs) / n,
    }
    if bertscore is not None:
        pairs = [(t.final_answer or "", g) for t, q in zip(trajs, qs, strict=True) for g in (q.answers or [""])]
        scores = bertscore([c for c, _ in pairs], [r for _, r in pairs]) if pairs else []
        best, k = [], 0
        for t, q in zip(trajs, qs, strict=True):
            m = len(q.answers or [""])
            best.append(max(scores[k:k + m]) if (t.final_answer or "").strip() else 0.0)
            k += m
        row["f_bert"] = 100.0 * sum(best) / n
    if sim_matrix is not None:
        row["priv_sim"] = metrics.priv_sim([t.messages for t in trajs], [q.privacy_items for q in qs],
                                           sim_fn=sim_matrix)
    return row


def macro_average(rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The mean of each numeric metric over datasets (tokens, cost and n are summed), as the paper averages."""
    out: dict[str, Any] = {}
    summed = {"n", "slm_prompt_tokens", "slm_completion_tokens", "llm_prompt_tokens", "llm_completion_tokens",
              "cost_usd", "wall_s"}
    for key in rows[0]:
        vals = [r.get(key) for r in rows]
        if key in summed:
            out[key] = sum(v or 0 for v in vals)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in vals if v is not None):
            present = [v for v in vals if v is not None]
            out[key] = sum(present) / len(present) if present else None
    return out
