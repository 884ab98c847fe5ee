"""The deterministic privacy injector for geography seeds."""

import re
from collections import Counter, defaultdict

import pytest

from pipelines.offline_inject import HARD, InjectResult, answer_in, inject
from pipelines.relations import INTROS, KINDS, RELATIONS
from pipelines.seeds import Seed, offline_seeds
from seekhelp.knowledge import fold
from seekhelp.records import Question


@pytest.fixture(scope="module")
def seeds() -> list[Seed]:
    return offline_seeds(seed=0)


@pytest.fixture(scope="module")
def result(seeds) -> InjectResult:
    return inject(seeds, seed=0)


def test_every_seed_is_kept_or_rejected(seeds, result):
    assert len(result.questions) + len(result.rejected) == len(seeds)
    assert len(result.questions) > 0.9 * len(seeds)
    assert all(isinstance(q, Question) for q in result.questions)


def test_answers_identical_and_metadata(seeds, result):
    by_id = {s.id: s for s in seeds}
    for q in result.questions:
        s = by_id[q.meta["seed_id"]]
        assert q.answers == s.answers and q.original_question == s.question
        assert q.source == "geo" and q.split == s.split and q.meta["entities"] == s.meta["entities"]
        assert q.meta["hops"] == s.meta["hops"] and q.meta["subquestions"] == [h["question"] for h in s.meta["hops"]]
        assert "easy_hint" not in q.meta  # easy = the SLM alone answers correctly, measured per SLM, not guessed


def test_answer_never_in_question(result):
    for q in result.questions:
        if q.meta["kind"] == "self_contained":
            continue  # the one exemption, tested below
        assert answer_in(q.question, q.answers) is None
        words = " " + " ".join(fold(q.question).replace("?", " ").replace(",", " ").replace(".", " ").split()) + " "
        assert all(f" {fold(a)} " not in words for a in q.answers), q.question


def test_self_contained_questions_state_the_answer(result):
    """Exempt from the answer-in-question rejection on purpose: the user states the public fact that settles it,
    and the question is flagged so the teacher answers alone; the private facts still never name the answer."""
    alone = [q for q in result.questions if q.meta["kind"] == "self_contained"]
    assert len(alone) > 100
    for q in alone:
        assert q.meta["answer_alone"] and answer_in(q.question, q.answers), q.question
        assert answer_in(" ".join(q.privacy_items), q.answers) is None
    assert not any(q.meta["answer_alone"] for q in result.questions if q.meta["kind"] != "self_contained")


def test_every_kind_is_injected(result):
    kinds = Counter(q.meta["kind"] for q in result.questions)
    assert set(kinds) == set(KINDS) and min(kinds.values()) > 100


def test_underspecified_questions_name_the_place_only_in_a_private_sentence(result):
    for q in (q for q in result.questions if q.meta["kind"] == "underspecified"):
        hop = q.meta["hops"][0]
        last = q.question.rsplit(". ", 1)[-1]
        assert fold(hop["subject"]) in fold(q.question) and fold(hop["subject"]) not in fold(last), q.question
        assert any(fold(hop["subject"]) in fold(i) for i in q.privacy_items)


def test_heldout_templates_never_in_train(result):
    held = {r for r, rel in RELATIONS.items() if rel.heldout}
    for q in result.questions:
        if q.split == "train":
            assert not q.meta["heldout"] and not q.meta["template_heldout"] and not held & set(q.meta["relations"])
        elif q.meta["heldout_reason"] == "template":
            assert q.meta["template_heldout"]
        elif not q.meta["heldout"]:
            assert not q.meta["template_heldout"]
    seen_train = {q.meta["template"] for q in result.questions if q.split == "train"}
    seen_test = {q.meta["template"] for q in result.questions if q.meta["heldout"]}
    assert seen_test - seen_train and not {q.meta["template"] for q in result.questions
                                           if q.meta["heldout_reason"] == "template"} & seen_train


def test_privacy_items_are_about_the_user(result):
    for q in result.questions:
        assert q.privacy_items and all(item.endswith(".") for item in q.privacy_items)
        assert "the user" in " ".join(q.privacy_items).lower()
        name = [t for t in q.meta["private_terms"] if " " in t]
        assert name and name[0] in q.question and any(name[0] in i for i in q.privacy_items)


def test_every_private_fact_is_woven_into_the_question(result):
    """The SLM reads the question alone, so each item's names and places must be in the question text, and no
    item may name the answer (it would be a hint the SLM never sees)."""
    for q in result.questions:
        text = fold(q.question)
        for item in q.privacy_items:
            words = re.findall(r"[^\W\d_]+", item)
            proper = [w for w in words[1:] if w[:1].isupper()]
            assert all(fold(w) in text for w in proper), (item, q.question)
        assert answer_in(" ".join(q.privacy_items), q.answers) is None, q.to_dict()


def test_rejections_have_reasons(result):
    assert result.rejected and all(r["reason"] for r in result.rejected)
    reasons = {r["seed"]["question"]: r["reason"] for r in result.rejected}
    assert "appears in the question" in reasons["Which country has Singapore as its capital?"]
    assert all("appears in the private facts" in r["reason"] for r in result.rejected
               if r["seed"]["meta"]["kind"] == "self_contained")


def test_non_geo_seed_is_rejected():
    hub = Seed("Who wrote Hamlet?", ["Shakespeare"], "nq", "test", {"id": "1", "entities": [], "hops": []})
    out = inject([hub])
    assert not out.questions and "no offline decomposition" in out.rejected[0]["reason"]


def test_templates_and_variety(result):
    assert all(len(HARD[p]) >= 3 for p in HARD) and sum(map(len, HARD.values())) >= 35
    used = defaultdict(set)
    for q in result.questions:
        if q.meta["kind"] != "underspecified":
            used[q.meta["property"]].add(q.meta["template"])
    assert all(len(used[p]) == len(HARD[p]) for p in HARD), {p: len(v) for p, v in used.items()}  # every one used
    under = {q.meta["template"] for q in result.questions if q.meta["kind"] == "underspecified"}
    assert len(under) >= len(INTROS) * 2
    people = Counter(t for q in result.questions for t in q.meta["private_terms"] if " " in t)
    assert len(people) > 0.9 * len(result.questions)  # names rarely repeat
    assert len({q.question for q in result.questions}) == len(result.questions)


def test_deterministic(seeds):
    a, b = inject(seeds[:60], seed=5), inject(seeds[:60], seed=5)
    assert [q.to_dict() for q in a.questions] == [q.to_dict() for q in b.questions]
    c = inject(seeds[:60], seed=6)
    assert [q.question for q in c.questions] != [q.question for q in a.questions]


def test_example_shape(result):
    q = next(q for q in result.questions if q.original_question == "What is the capital of Peru?")
    assert q.answers == ["Lima"] and "Peru" in q.question and "Lima" not in q.question
