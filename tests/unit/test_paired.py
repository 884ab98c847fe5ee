"""Paired comparisons: per-question EM differences with a paired bootstrap interval, and the recipe's checks."""

import pytest

from seekhelp.config import RecipeError
from seekhelp.evaluation.paired import em_by_question, paired_em, paired_lines
from seekhelp.evaluation.recipe import load
from seekhelp.records import Question, Trajectory


def _q(i: int) -> Question:
    return Question(question=f"Question {i}?", answers=[f"a{i}"], privacy_items=[], source="t", split="test")


def test_a_run_better_on_many_questions_is_shown_above():
    qs = [_q(i) for i in range(60)]
    a = {q.id: 1.0 for q in qs}
    b = {q.id: (1.0 if i % 3 == 0 else 0.0) for i, q in enumerate(qs)}
    r = paired_em(a, b)
    assert r["n"] == 60 and r["em_a"] == 100.0 and r["em_b"] == pytest.approx(100 / 3)
    assert r["ci"][0] > 0 and r["verdict"] == "A above B" and (r["a_only"], r["b_only"]) == (40, 0)


def test_identical_runs_show_no_difference_and_subsets_count():
    qs = [_q(i) for i in range(20)]
    a = {q.id: float(i % 2) for i, q in enumerate(qs)}
    r = paired_em(a, dict(a))
    assert r["diff"] == 0 and r["ci"] == [0.0, 0.0] and r["verdict"] == "no difference shown"
    assert paired_em(a, a, {qs[0].id, qs[1].id})["n"] == 2 and paired_em(a, a, set()) is None
    # a swap of the same count: equal EM, the paired interval still straddles 0
    b = {q.id: 1.0 - a[q.id] for q in qs}
    r = paired_em(a, b)
    assert r["diff"] == 0 and r["ci"][0] < 0 < r["ci"][1] and (r["a_only"], r["b_only"]) == (10, 10)
    line = paired_lines([{"a": "x", "b": "y", "subset": "all", **r}])
    assert "| x | y | all | 20 |" in "\n".join(line)


def test_em_by_question_takes_the_first_sample():
    q = _q(1)
    t0 = Trajectory(q.id, "dynamic", "s", "l", [], final_answer="a1", sample_index=0)
    t1 = Trajectory(q.id, "dynamic", "s", "l", [], final_answer="no", sample_index=1)
    assert em_by_question([t1, t0], {q.id: q}) == {q.id: 1.0}


def test_recipe_names_unknown_runs_and_slices(tmp_path):
    for bad, msg in [("paired.0.a=nope", "paired[0].a: no run named 'nope'"),
                     ("paired.0.slices.0=nope", "paired[0].slices: no slice named 'nope'")]:
        with pytest.raises(RecipeError, match=msg.replace("[", r"\[").replace("]", r"\]")):
            load("evals/demo.yaml", [bad])
    assert [p.b for p in load("evals/demo.yaml").paired][:2] == ["dynamic (control)", "dynamic (sft)"]
