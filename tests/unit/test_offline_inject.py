"""The deterministic privacy injector for geography seeds."""

import re
from collections import Counter
from pathlib import Path

import pytest

from pipelines.families import FAMILIES, FORMS, FRAMES, INTROS, families_for, heldout_keys
from pipelines.offline_inject import InjectResult, answer_in, inject
from pipelines.relations import KINDS, RELATIONS, kinds_of
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


def test_other_fact_questions_state_a_fact_that_does_not_settle_them(result):
    other = [q for q in result.questions if q.meta["kind"] == "other_fact"]
    assert len(other) > 100
    for q in other:
        side = q.meta["side"]
        assert side["relation"] != q.meta["relations"][0] and not RELATIONS[side["relation"]].heldout
        assert fold(side["object"].split(" (")[0].removeprefix("the ")) in fold(q.question), q.question
        assert answer_in(q.question, q.answers) is None and not q.meta["answer_alone"]


def test_a_twin_differs_from_its_pair_only_in_the_stated_fact(result):
    by_seed = {q.meta["seed_id"]: q for q in result.questions}
    twins = [q for q in result.questions if "twin_of" in q.meta]
    pairs = [(t, by_seed[t.meta["twin_of"]]) for t in twins if t.meta["twin_of"] in by_seed]
    assert len(pairs) > 50
    same = [t for t, o in pairs if t.meta["members"] == o.meta["members"] and t.privacy_items == o.privacy_items]
    assert len(same) >= 0.9 * len(pairs)  # an other-fact draw that named the answer was composed again
    for t, o in pairs:
        assert t.meta["kind"] == "self_contained" and o.meta["kind"] == "other_fact" and t.question != o.question
        assert answer_in(t.question, t.answers) and not answer_in(o.question, o.answers)
    for t, o in ((t, o) for t, o in pairs if t in same):  # the words around the stated fact are the same
        a, b = t.question.split(), o.question.split()
        assert a[:3] == b[:3] or a[-3:] == b[-3:], (t.question, o.question)


def test_heldout_members_never_in_train(result):
    """No held-out member of any family, and no held-out relation, reaches a training question; a question held out
    on a family uses at least one of that family's held-out members and no held-out member of another."""
    held_keys, held_rel = heldout_keys(), {r for r, rel in RELATIONS.items() if rel.heldout}
    assert len(held_keys) > 60
    for q in result.questions:
        used = set(q.meta["members"])
        if q.split == "train":
            assert not used & held_keys and not q.meta["heldout"] and not held_rel & set(q.meta["relations"]), q.meta
            continue
        reason = q.meta["heldout_reason"]
        if reason in FAMILIES:
            mine = {k for k in used & held_keys if k.startswith(reason + ":")}
            assert mine and not (used & held_keys) - mine, (reason, used & held_keys)
            assert reason in families_for(q.meta["kind"], q.meta["property"])
        elif reason is None:
            assert not used & held_keys
    reasons = Counter(q.meta["heldout_reason"] for q in result.questions if q.split == "test")
    assert set(reasons) == {None, "relation", *FAMILIES}, reasons


def test_every_kind_x_relation_has_members_in_train_and_heldout(result):
    """Each kind x relation (a held-out relation excepted) has training questions, and validation/test hold every
    kind out on some family: a kind the generator cannot compose fails here."""
    train = Counter((q.meta["kind"], q.meta["relations"][-1]) for q in result.questions if q.split == "train")
    for name, rel in RELATIONS.items():
        for kind in kinds_of(name):
            if rel.heldout or kind == "two_hop":
                continue
            assert train[(kind, name)] > 0, (kind, name)
    held = Counter(q.meta["kind"] for q in result.questions if q.meta["heldout_reason"] in FAMILIES)
    assert set(held) == set(KINDS)


def test_privacy_items_are_about_the_user(result):
    for q in result.questions:
        assert q.privacy_items and all(item.endswith(".") for item in q.privacy_items)
        assert "the user" in " ".join(q.privacy_items).lower()
        name = [t for t in q.meta["private_terms"] if " " in t]
        assert name and fold(name[0]) in fold(q.question) and any(name[0] in i for i in q.privacy_items)


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
    """Thousands of surface forms: the families multiply to far more skeletons than there are questions, nearly every
    training question has a skeleton of its own, and every frame, form and register is used."""
    train = [q for q in result.questions if q.split == "train"]
    skeletons = {q.meta["template"] for q in train}
    assert len(skeletons) > 0.8 * len(train) and len(skeletons) > 1500
    for prop in FRAMES:
        assert len(FRAMES[prop][0]) >= 2 and FRAMES[prop][1] and len(FORMS[prop][0]) >= 3 and FORMS[prop][1]
    used = Counter(k for q in result.questions for k in q.meta["members"])
    for prop in FRAMES:
        if prop == "neighbours":
            continue  # a held-out relation: validation and test only
        n_seen = len(FRAMES[prop][0])
        assert all(used[f"frame:{prop}:{i}"] for i in range(n_seen)), prop
    assert all(used[f"frame:intro:{i}"] for i in range(len(INTROS[0]) + len(INTROS[1])))
    assert {q.meta["register"] for q in train} == {"formal", "lowercase", "typos"}
    assert {q.meta["register"] for q in result.questions} == {"formal", "lowercase", "typos", "chat"}
    details = sum(any(k.startswith("detail:") for k in q.meta["members"]) for q in train)
    assert 0.35 * len(train) < details < 0.65 * len(train)
    people = Counter(t for q in result.questions for t in q.meta["private_terms"] if " " in t)
    assert len(people) > 0.9 * len(result.questions)  # names rarely repeat
    assert len({q.question for q in result.questions}) == len(result.questions)


def test_registers_keep_every_slot_value(result):
    """Typos touch the template's own words only: names, places and details are spelled right in every register."""
    for q in result.questions:
        if q.meta["register"] == "typos":
            assert fold(q.meta["hops"][0]["subject"]) in fold(q.question), q.question
        if q.meta["register"] in ("lowercase", "chat"):
            assert q.question == q.question.lower()


def test_deterministic(seeds):
    a, b = inject(seeds[:60], seed=5), inject(seeds[:60], seed=5)
    assert [q.to_dict() for q in a.questions] == [q.to_dict() for q in b.questions]
    c = inject(seeds[:60], seed=6)
    assert [q.question for q in c.questions] != [q.question for q in a.questions]


def test_example_shape(result):
    q = next(q for q in result.questions if q.original_question == "What is the capital of Peru?")
    assert q.answers == ["Lima"] and "peru" in q.question.lower() and "lima" not in q.question.lower()


def test_a_detail_probe_is_each_question_as_composed_with_that_detail(seeds, result):
    val = [s for s in seeds if s.split == "validation"]
    probe = inject(val, seed=0, detail="id")
    plain = {q.meta["seed_id"]: q for q in result.questions if q.split == "validation"}
    assert len(probe.questions) == len(plain) > 50
    number = re.compile(r"passport number of the user's .* is ([A-Z]\d{8})\.$")
    drew_it = compared = 0
    for q in probe.questions:
        p = plain[q.meta["seed_id"]]
        assert q.meta["probe"] == "id" and q.answers == p.answers and q.meta["kind"] == p.meta["kind"]
        ids = [m.group(1) for i in q.privacy_items if (m := number.search(i))]
        assert len(ids) == 1 and ids[0].lower() in q.question.lower(), q.question  # woven in, exactly one
        assert number.search(q.privacy_items[-1])  # the detail's item comes last, after the frame's
        assert q.privacy_items[:-1] == p.privacy_items[:len(q.privacy_items) - 1]
        assert len(p.privacy_items) - len(q.privacy_items) in (-1, 0)  # the plain one drew no detail, or one
        drew_it += q.id == p.id  # it drew this very detail: the probe is the question itself
        if q.meta["register"] != "typos":  # everything but the detail sentence as composed (typos move with it)
            cut = re.compile(r" ?[^.?!]*\b(passport|treated|diagnosed|owes|salary|lives at|phone|bank)\b[^.?!]*\.",
                             re.I)
            assert cut.sub("", q.question) == cut.sub("", p.question), (q.question, p.question)
            compared += 1
    assert 0 < drew_it < len(plain) / 3 and compared > len(plain) / 2
    with pytest.raises(ValueError, match="none of the seen sensitive details"):
        inject(val[:1], seed=0, detail="address")  # a held-out detail is no probe: it would reach no train question


def test_the_data_recipe_stores_each_probe_question_once_beside_the_plain_ones(seeds):
    from pipelines.generate import DataRecipe, active_probes, inject_offline, produced_splits
    from seekhelp.config import RecipeError, load_recipe

    recipe = load_recipe(DataRecipe, Path(__file__).resolve().parents[2] / "pipelines/recipes/demo.yaml")
    assert recipe.injection.probes == {"id": ["validation"]}
    assert ("geo-probe-id", "validation") in produced_splits(recipe)
    questions, _ = inject_offline(recipe, [s for s in seeds if s.split != "train"])
    assert len({q.id for q in questions}) == len(questions)  # a plain question that drew a passport is its own probe
    probes = [q for q in questions if q.source == "geo-probe-id"]
    plain_val = [q for q in questions if q.source == "geo" and q.split == "validation"]
    with_passport = [q for q in plain_val if "passport number" in " ".join(q.privacy_items)]
    assert probes and all(q.split == "validation" and q.meta["probe"] == "id" for q in probes)
    assert len(probes) + len(with_passport) == len(plain_val)  # every validation question, once, with a passport
    recipe.injection.probes = {"address": ["validation"]}  # a held-out detail: it would reach no train question
    with pytest.raises(RecipeError, match="not sensitive details"):
        active_probes(recipe)
    recipe.injection.probes = {"id": ["test"]}
    assert active_probes(recipe) == {"id": ["test"]}
    recipe.injection.kind = "llm"  # an LLM writes its own questions: the recipe's probes are skipped, not an error
    assert active_probes(recipe) == {} and not any(src.startswith("geo-probe") for src, _ in produced_splits(recipe))


def test_an_extra_detail_reaches_only_its_kinds_and_splits_and_changes_only_the_detail(seeds, result):
    from pipelines.generate import DataRecipe, extra_detail
    from pipelines.offline_inject import ExtraDetail
    from seekhelp.config import RecipeError

    extra = ExtraDetail("id", share=1.0, kinds=("underspecified",), splits=("train",))
    res = inject(seeds, seed=0, extra=extra)
    plain = {q.meta["seed_id"]: q for q in result.questions}
    assert {q.meta["seed_id"] for q in res.questions} == set(plain)
    changed = 0
    for q in res.questions:
        p = plain[q.meta["seed_id"]]
        if q.id == p.id:
            continue
        changed += 1
        assert q.meta["kind"] == "underspecified" and q.split == "train", q.question  # nowhere else
        assert "passport number" in q.privacy_items[-1] and q.privacy_items[:-1] == p.privacy_items
        if q.meta["register"] != "typos":  # everything but the passport sentence as composed
            cut = re.compile(r" ?[^.?!]*\bpassport\b[^.?!]*\.", re.I)
            assert cut.sub("", q.question) == p.question, (q.question, p.question)
    drew_none = sum(q.meta["kind"] == "underspecified" and q.split == "train"
                    and not any(m.startswith("detail:") for m in q.meta["members"]) for q in result.questions)
    assert changed == drew_none > 20  # share 1.0: every one that drew no detail, and only those
    half = inject(seeds, seed=0, extra=ExtraDetail("id", share=0.5))
    n_half = sum(q.id != plain[q.meta["seed_id"]].id for q in half.questions)
    assert 0.25 * drew_none < n_half < 0.75 * drew_none
    recipe = DataRecipe()
    assert extra_detail(recipe) is None
    recipe.injection.extra_detail = {"detail": "id", "share": 0.5, "kinds": "underspecified"}
    assert extra_detail(recipe) == ExtraDetail("id", 0.5, ("underspecified",), ("train",))
    for bad, match in (({"detail": "address", "share": 0.5}, "none of the seen"), ({"detail": "id", "share": 2},
                       "between 0 and 1"), ({"detail": "id", "share": 0.5, "kinds": ["chat"]}, "none of"),
                       ({"detail": "id", "share": 0.5, "splits": ["trian"]}, "splits"), ({"detail": "id"}, "share")):
        recipe.injection.extra_detail = bad
        with pytest.raises(RecipeError, match=match):
            extra_detail(recipe)
