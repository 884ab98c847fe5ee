import math
from functools import partial

import numpy as np
import pytest

from seekhelp.metrics import (
    bertscore_f1,
    bertscore_matrix,
    exact_match,
    f1,
    hashed_embed,
    hashed_token_embed,
    inscore,
    normalize_answer,
    priv_sample,
    priv_sim,
)


def test_normalize_answer():
    assert normalize_answer("The  Eiffel Tower!") == "eiffel tower"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("U.S.A.") == "usa"
    assert normalize_answer(None) == ""
    assert normalize_answer("  ") == ""


@pytest.mark.parametrize(
    "pred, golds, em",
    [
        ("Paris", ["paris"], 1.0),
        ("the Paris.", "Paris", 1.0),
        ("Florida", ["FL", "Florida"], 1.0),
        ("The Beatles", ["Beatles"], 1.0),
        ("Paris, France", ["Paris"], 0.0),
        ("", ["Paris"], 0.0),
        (None, ["Paris"], 0.0),
        ("the", ["a"], 0.0),  # normalizes to nothing: never a match
        ("Paris", [], 0.0),
        ("Paris", None, 0.0),
    ],
)
def test_exact_match(pred, golds, em):
    assert exact_match(pred, golds) == em


def test_f1():
    assert f1("Paris", ["Paris"]) == 1.0
    assert f1("Paris France", ["Paris"]) == pytest.approx(2 / 3)
    assert f1("New York City", ["NYC", "New York"]) == pytest.approx(0.8)
    assert f1("the", ["the"]) == 0.0
    assert f1(None, ["x"]) == 0.0
    assert f1("London", ["Paris"]) == 0.0


def _rows(pairs):
    return [{"is_easy": e, "asked": a} for e, a in pairs]


def test_inscore_reference_points():
    qs = [True, True, False, False, False]  # two easy, three hard
    always = inscore(_rows([(e, True) for e in qs]))
    never = inscore(_rows([(e, False) for e in qs]))
    perfect = inscore(_rows([(e, not e) for e in qs]))
    assert always["inscore"] == 0.5 and always["recall_easy"] == 0.0 and always["recall_hard"] == 1.0
    assert never["inscore"] == 0.5
    assert perfect["inscore"] == 1.0 and perfect["note"] == ""
    mixed = inscore(_rows([(True, False), (True, True), (False, True), (False, False), (False, False)]))
    assert mixed["inscore"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert (mixed["n_easy"], mixed["n_hard"]) == (2, 3)


def test_inscore_one_class_and_objects():
    class Row:
        def __init__(self, is_easy, asked):
            self.is_easy, self.asked = is_easy, asked

    only_hard = inscore([Row(False, True), Row(False, False)])
    assert only_hard["inscore"] == 0.5 and math.isnan(only_hard["recall_easy"]) and "no easy" in only_hard["note"]
    only_easy = inscore(_rows([(True, False)]))
    assert only_easy["inscore"] == 1.0 and "no hard" in only_easy["note"]
    empty = inscore([])
    assert math.isnan(empty["inscore"]) and empty["note"] == "no rows"


def test_priv_sample():
    assert priv_sample([True, False, False, True]) == 50.0
    assert priv_sample([False, False]) == 0.0
    assert priv_sample([True, None]) == 100.0  # None = judge failed: left out
    assert priv_sample([]) == 0.0


def _toy_embed(texts):
    vocab = ["paris", "cousin", "capital", "france"]
    m = np.array([[float(w in t.lower()) for w in vocab] + [1e-3] for t in texts])
    return m / np.linalg.norm(m, axis=1, keepdims=True)


def test_priv_sim_max_over_pairs_mean_over_samples():
    reqs = [["capital of france?", "my cousin in paris"], [], ["capital"]]
    items = [["cousin lives in paris"], ["x"], ["the user likes france"]]
    s = priv_sim(reqs, items, embed_fn=_toy_embed)
    expected_first = float(np.max(_toy_embed(reqs[0]) @ _toy_embed(items[0]).T))
    expected_third = float(np.max(_toy_embed(reqs[2]) @ _toy_embed(items[2]).T))
    assert s == pytest.approx((expected_first + expected_third) / 2)  # the sample without requests is skipped
    assert priv_sim([[], []], [["a"], ["b"]], embed_fn=_toy_embed) == 0.0
    with pytest.raises(ValueError):
        priv_sim([["a"]], [["b"]])


def test_hashed_embed_and_bertscore():
    e = hashed_embed(["my cousin lives in Paris", "my cousin lives in Paris", "capital of France"])
    assert np.allclose(np.linalg.norm(e, axis=1), 1.0)
    assert e[0] @ e[1] == pytest.approx(1.0) and e[0] @ e[2] < 0.5
    close = priv_sim([["my cousin lives in Paris"]], [["the user's cousin lives in Paris"]], embed_fn=hashed_embed)
    assert close > 0.6
    f = bertscore_f1(["cousin lives in Paris", "capital of France"], ["cousin lives in Paris", "Tokyo"],
                     hashed_token_embed)
    assert f[0] == pytest.approx(1.0) and f[1] < 0.5
    m = bertscore_matrix(["a cousin", "Paris"], ["cousin", "Paris", "Rome"], hashed_token_embed)
    assert m.shape == (2, 3) and m[0, 0] == pytest.approx(1.0) and m[1, 1] == pytest.approx(1.0)
    sim_fn = partial(bertscore_matrix, token_embed_fn=hashed_token_embed)
    assert priv_sim([["Paris"]], [["Paris"]], sim_fn=sim_fn) == pytest.approx(1.0)
