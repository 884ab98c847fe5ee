"""Per-run metrics from trajectories (definitions: shared/reference/paper-facts.md, "Metrics").

Units: em, f1, f_bert and priv_sample in percent (0..100); inscore, recall_easy, recall_hard and priv_sim in 0..1;
avg_turns = mean LLM calls per question (a direct LLM answer counts 1); tokens are totals over the run; cost in
USD from a price table in USD per 1M tokens, looked up by the trajectory's model names (an unpriced model is free).

Privacy per sample, on both sides of the guard: ``priv_sample`` (attempted leak %, the paper's Priv_sample: the
policy's own privacy) judges what the policy TRIED to send; ``priv_sent`` (sent leak %) what left the device. A
strategy that forwarded the raw question leaks by construction; otherwise the LLM judge's verdict when there is one
(it judges the attempted requests), else the deterministic detector (seekhelp.judging.leaked_items). A sample
that tried to send nothing never leaks. "Asked" (for INScore) = at least one LLM call, or a request the guard
stopped before it left; ``answered_alone`` is the share of questions answered in a well-formed episode without any
request (not asked in that sense, and ``format_ok``: a model that never writes the protocol answers nothing alone),
``llm_called`` the share with at least one LLM call (a request the guard stopped is neither).

Every rate comes with its n and a 95% percentile bootstrap interval over questions (``row["ci"]``), and EM and
LLM calls are also given separately on easy and hard questions (easy = that run's SLM alone answers correctly).
"""

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seekhelp import metrics
from seekhelp.judging import leaked_items
from seekhelp.privacy import leak_findings
from seekhelp.records import Question, Trajectory

EASY_SOURCES = ("slm_cot run", "store easy table", "no label (hard)")


def asked(t: Trajectory) -> bool:
    return t.n_llm_calls > 0 or any(x.role == "slm" and x.action == "message" for x in t.turns)


def leak_of(t: Trajectory, q: Question, judge: bool | None = None, sent: bool = False) -> tuple[bool, str]:
    """(leaked?, where the verdict came from: raw | none | judge | detector), on what the policy tried to send
    (``sent=False``) or on what left the device (``sent=True``; the judge's verdict on the attempt stands for it
    only when the guard changed nothing)."""
    if t.raw_question_sent:
        return True, "raw"
    msgs = t.messages if sent else t.attempted
    if not msgs:
        return False, "none"
    if judge is not None and (not sent or t.messages == t.attempted):
        return bool(judge), "judge"
    return bool(leaked_items(q, t, sent=sent)), "detector"


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
    """Easy = the SLM alone answers correctly: its slm_cot run in this eval (the harness adds one for every SLM),
    else the store's `easy` table, else hard, question by question."""
    flags, used = {}, []
    for q in questions:
        name = next((n for n, table in ((EASY_SOURCES[0], solo), (EASY_SOURCES[1], stored))
                     if table and q.id in table), EASY_SOURCES[2])
        table = {EASY_SOURCES[0]: solo, EASY_SOURCES[1]: stored}.get(name)
        flags[q.id] = bool(table[q.id]) if table else False
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
    sent_leaks = [leak_of(t, q, judge.get(t.id), sent=True)[0] for t, q in zip(trajs, qs, strict=True)]
    from seekhelp.evaluation.independent_leak import trajectory_leaks

    independent = [bool(trajectory_leaks(t, q)) for t, q in zip(trajs, qs, strict=True)]
    easy_flags = [bool(easy.get(t.question_id)) for t in trajs]
    asks = [asked(t) for t in trajs]
    alone = [float(t.format_ok and not a) for t, a in zip(trajs, asks, strict=True)]
    ins = metrics.inscore([{"is_easy": e, "asked": a} for e, a in zip(easy_flags, asks, strict=True)])
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
        "priv_sent": metrics.priv_sample(sent_leaks),
        "priv_independent": metrics.priv_sample(independent),
        "leak_sources": {s: sum(1 for _, x in leaks if x == s) for s in ("raw", "judge", "detector", "none")},
        "slm_prompt_tokens": sum(t.tokens("slm")[0] for t in trajs),
        "slm_completion_tokens": sum(t.tokens("slm")[1] for t in trajs),
        "llm_prompt_tokens": sum(t.tokens("llm")[0] for t in trajs),
        "llm_completion_tokens": sum(t.tokens("llm")[1] for t in trajs),
        "cost_usd": sum(cost_usd(t, prices) for t in trajs),
        "format_ok": 100.0 * sum(t.format_ok for t in trajs) / n,
        "answered_alone": 100.0 * sum(alone) / n,
        "llm_called": 100.0 * sum(t.n_llm_calls > 0 for t in trajs) / n,
    }
    calls = [float(t.n_llm_calls) for t in trajs]
    row.update(_split_rows(em, calls, easy_flags))
    row.update(need_stats(trajs, qs, em))
    row["ci"] = _intervals({"em": em, "format_ok": [float(t.format_ok) for t in trajs], "avg_turns": calls,
                            "priv_sample": [float(f) for f, _ in leaks], "priv_sent": [float(f) for f in sent_leaks],
                            "priv_independent": [float(f) for f in independent], "asked": [float(a) for a in asks],
                            "answered_alone": alone,
                            "llm_called": [float(c > 0) for c in calls]}, easy_flags, asks, em, calls)
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


def need_stats(trajs: Sequence[Trajectory], qs: Sequence[Question], em: Sequence[float]) -> dict[str, Any]:
    """How the LLM's requests for context went: in how many episodes it asked back (<need>), how often the SLM
    then answered correctly, and how often what the SLM sent after the <need> leaked (detector)."""
    asked_back = [i for i, t in enumerate(trajs) if any(x.role == "llm" and x.action == "need" for x in t.turns)]
    leaks = 0
    for i in asked_back:
        t, q = trajs[i], qs[i]
        first = next(k for k, x in enumerate(t.turns) if x.role == "llm" and x.action == "need")
        after = [x.content for x in t.turns[first + 1:] if x.role == "slm" and x.action == "message" and x.content]
        names = (q.meta or {}).get("private_terms")
        leaks += any(leak_findings(m, q.privacy_items, names) for m in after)
    n = len(asked_back)
    return {"n_need": n, "need_pct": 100.0 * n / len(trajs) if trajs else None,
            "need_em": 100.0 * sum(em[i] for i in asked_back) / n if n else None,
            "need_followup_leak": 100.0 * leaks / n if n else None}


_PERCENT = {"em", "format_ok", "priv_sample", "priv_sent", "priv_independent", "asked", "answered_alone", "llm_called",
            "em_easy", "em_hard"}


def _ci(values: Sequence[float], key: str) -> list[float] | None:
    got = metrics.bootstrap_ci(values)
    scale = 100.0 if key in _PERCENT else 1.0
    return None if got is None else [scale * got[0], scale * got[1]]


def _split_rows(em: Sequence[float], calls: Sequence[float], easy: Sequence[bool]) -> dict[str, Any]:
    """EM % and mean LLM calls on easy and on hard questions (None where a class is empty)."""
    out: dict[str, Any] = {}
    for name, want in (("easy", True), ("hard", False)):
        idx = [i for i, e in enumerate(easy) if e == want]
        out[f"n_{name}"] = len(idx)
        out[f"em_{name}"] = 100.0 * sum(em[i] for i in idx) / len(idx) if idx else None
        out[f"calls_{name}"] = sum(calls[i] for i in idx) / len(idx) if idx else None
    return out


def _intervals(columns: Mapping[str, Sequence[float]], easy: Sequence[bool], asks: Sequence[bool],
               em: Sequence[float], calls: Sequence[float]) -> dict[str, list[float] | None]:
    """95% bootstrap intervals of every rate of the row (same units as the row)."""
    out = {k: _ci(v, k) for k, v in columns.items()}
    pairs = np.array([[float(e), float(a)] for e, a in zip(easy, asks, strict=True)])
    got = metrics.bootstrap_ci(pairs, metrics.inscore_of) if len(pairs) else None
    out["inscore"] = None if got is None else list(got)
    for name, want in (("easy", True), ("hard", False)):
        idx = [i for i, e in enumerate(easy) if e == want]
        out[f"em_{name}"] = _ci([em[i] for i in idx], f"em_{name}")
        out[f"calls_{name}"] = _ci([calls[i] for i in idx], f"calls_{name}")
    return out


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
