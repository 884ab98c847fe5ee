"""Paired comparisons: two runs on the same questions, the EM difference with a paired bootstrap interval.

Two runs of one eval answer the same questions, so their difference is measured per question (A's EM minus B's) and
the questions are resampled together: far narrower than comparing two independent intervals, and the honest test
of "RL beats its control" or "the learned policy beats redact-then-ask". An interval that excludes 0 is a
difference shown; one that includes 0 is not.
"""

from collections.abc import Mapping, Sequence

from seekhelp.evaluation.targets import SLICE_SEP
from seekhelp.metrics import bootstrap_ci, exact_match
from seekhelp.records import Question, Trajectory


def em_by_question(trajs: Sequence[Trajectory], questions: Mapping[str, Question]) -> dict[str, float]:
    """EM per question (the first sample of each question: eval runs take one)."""
    out: dict[str, float] = {}
    for t in sorted(trajs, key=lambda t: t.sample_index):
        if t.question_id in questions and t.question_id not in out:
            out[t.question_id] = exact_match(t.final_answer, questions[t.question_id].answers)
    return out


def paired_em(a: Mapping[str, float], b: Mapping[str, float], ids: set[str] | None = None) -> dict | None:
    """A − B in EM points over the questions both runs answered (within `ids`); None when there are none."""
    common = sorted(set(a) & set(b) & (ids if ids is not None else set(a)))
    if not common:
        return None
    diffs = [100.0 * (a[q] - b[q]) for q in common]
    lo, hi = bootstrap_ci(diffs)
    em_a = 100.0 * sum(a[q] for q in common) / len(common)
    em_b = 100.0 * sum(b[q] for q in common) / len(common)
    verdict = "A above B" if lo > 0 else "B above A" if hi < 0 else "no difference shown"
    return {"n": len(common), "em_a": em_a, "em_b": em_b, "diff": em_a - em_b, "ci": [lo, hi],
            "a_only": sum(a[q] > b[q] for q in common), "b_only": sum(b[q] > a[q] for q in common),
            "verdict": verdict}


def paired_lines(pairs: Sequence[dict]) -> list[str]:
    """The report section: one row per pair and question set."""
    if not pairs:
        return []
    lines = ["## Paired comparisons (EM on the same questions)", "",
             "A − B in EM points, 95% paired bootstrap interval over questions (2,000 resamples); 'A only' / "
             "'B only' count the questions one run got right and the other did not.", "",
             "| A | B | questions | n | EM A | EM B | A − B [95% CI] | A only | B only | verdict |",
             "|" + "---|" * 10]
    for p in pairs:
        lo, hi = p["ci"]
        lines.append(f"| {p['a']} | {p['b']} | {p['subset']} | {p['n']} | {p['em_a']:.1f} | {p['em_b']:.1f} | "
                     f"{p['diff']:+.1f} [{lo:+.1f}, {hi:+.1f}] | {p['a_only']} | {p['b_only']} | {p['verdict']} |")
    return [*lines, ""]


def paired_results(recipe, results, datasets: dict[str, list[Question]], slices: dict[str, set[str]],
                   questions: dict[str, Question]) -> list[dict]:
    """The recipe's paired comparisons over each dataset and the slices each pair names (runs that did not finish
    are left out)."""
    em = {run.name: em_by_question(trajs, questions) for _, run, _, trajs, _ in results}
    out = []
    for p in recipe.paired:
        if p.a not in em or p.b not in em:
            continue
        for ds, qs in datasets.items():
            ids = {q.id for q in qs}
            for subset, sub in [(ds, ids), *((f"{ds}{SLICE_SEP}{n}", ids & slices.get(n, set())) for n in p.slices)]:
                if r := paired_em(em[p.a], em[p.b], sub):
                    out.append({"a": p.a, "b": p.b, "subset": subset, **r})
    return out
