"""Seeds: offline geography seeds (deterministic, split by entity), hub and local sets."""

import json
from collections import Counter

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.families import FAMILIES
from pipelines.relations import KINDS, RELATIONS
from pipelines.seed_files import (
    FIELD_MAPPINGS,
    carve_bucket,
    check_split_plan,
    hub_seeds,
    hub_split_seeds,
    local_seeds,
)
from pipelines.seeds import SPLITS, Seed, SeedError, entity_split, offline_seeds


@pytest.fixture(scope="module")
def seeds() -> list[Seed]:
    return offline_seeds(seed=0)


def test_offline_seeds_cover_every_split_and_kind(seeds):
    splits = Counter(s.split for s in seeds)
    assert set(splits) == set(SPLITS) and splits["train"] > splits["test"] > 50
    assert set(s.meta["kind"] for s in seeds) == set(KINDS)
    assert set(r for s in seeds for r in s.meta["relations"]) == set(RELATIONS)  # every relation of the table
    assert all(s.source == "geo" for s in seeds)
    assert all(s.meta["answer_alone"] == (s.meta["kind"] == "self_contained") for s in seeds)


def test_heldout_relations_and_templates_never_in_train(seeds):
    held_relations = {r for r, rel in RELATIONS.items() if rel.heldout}
    assert held_relations
    for s in seeds:
        through_held = bool(held_relations & set(s.meta["relations"]))
        assert (s.meta["heldout_reason"] == "relation") == through_held
        assert s.meta["heldout"] == (s.meta["heldout_reason"] is not None)
        if s.split == "train":
            assert not s.meta["heldout"], s.question
    for split in ("validation", "test"):
        reasons = Counter(s.meta["heldout_reason"] for s in seeds if s.split == split)
        assert set(reasons) == {None, "relation", *FAMILIES}, reasons


def test_demo_cut_covers_every_kind_and_heldout_group():
    demo = offline_seeds({"train": 240, "validation": 120, "test": 72}, seed=0)
    train = Counter(s.meta["kind"] for s in demo if s.split == "train")
    assert set(train) == set(KINDS) and min(train.values()) >= 45
    for split, least in (("validation", 15), ("test", 9)):
        groups = Counter("relation" if s.meta["heldout_reason"] == "relation" else "family" if s.meta["heldout"]
                         else s.meta["kind"] for s in demo if s.split == split)
        assert set(groups) == set(KINDS) | {"relation", "family"} and min(groups.values()) >= least, groups
    val_families = Counter(s.meta["heldout_reason"] for s in demo if s.split == "validation")
    assert len(set(val_families) - {None, "relation"}) >= 5  # most families are present in validation


def test_train_pairs_other_fact_questions_with_self_contained_twins():
    demo = offline_seeds({"train": 240, "validation": 120, "test": 72}, seed=0)
    assert len({s.id for s in demo}) == len(demo)  # a twin shares its pair's public question, never its id
    assert all("twin_of" not in s.meta for s in demo if s.split != "train")
    train = {s.id: s for s in demo if s.split == "train"}
    twins = [s for s in train.values() if "twin_of" in s.meta]
    assert len(twins) >= 30
    for t in twins:
        pair = train[t.meta["twin_of"]]
        assert pair.meta["kind"] == "other_fact" and t.meta["kind"] == "self_contained" and t.meta["answer_alone"]
        assert (t.question, t.answers, t.meta["relations"]) == (pair.question, pair.answers, pair.meta["relations"])
        assert "side" not in t.meta and "side" in pair.meta
    # the LLM injector writes its own question, so `make data` asks for pairs only with offline injection
    plain = offline_seeds({"train": 240, "validation": 120, "test": 72}, seed=0, pairs=False)
    assert not any("twin_of" in s.meta for s in plain)
    assert Counter(s.meta["kind"] for s in plain) == Counter(s.meta["kind"] for s in demo)


def test_offline_seeds_are_deterministic(seeds):
    again = offline_seeds(seed=0)
    assert [s.to_dict() for s in again] == [s.to_dict() for s in seeds]
    other = offline_seeds(seed=1)
    assert sorted(s.id for s in other) == sorted(s.id for s in seeds)  # same pool, other order
    assert [s.id for s in other] != [s.id for s in seeds]


def test_n_per_split_limits(seeds):
    few = offline_seeds({"train": 20, "validation": 5, "test": 7}, seed=0)
    assert Counter(s.split for s in few) == {"train": 20, "validation": 5, "test": 7}
    # a cut is a prefix of a longer one (train: before its minimal pairs are made, which depend on the cut)
    assert offline_seeds({"test": 3}, seed=0) == [s for s in few if s.split == "test"][:3]
    assert [s.id for s in offline_seeds({"train": 20}, seed=0)] == [s.id for s in few if s.split == "train"]


def test_no_test_entity_in_train(seeds):
    by_split = {split: set() for split in SPLITS}
    for s in seeds:
        by_split[s.split].update(s.meta["entities"])
    assert by_split["train"] and by_split["test"]
    assert not by_split["test"] & by_split["train"]
    assert not by_split["validation"] & by_split["train"]
    assert not by_split["test"] & by_split["validation"]
    assert all(entity_split(s.meta["entities"][0]) == s.split for s in seeds)  # the first entity is the country


def test_entity_split_is_fixed():
    assert entity_split("PE") == entity_split("pe") in SPLITS
    shares = Counter(entity_split(f"{a}{b}") for a in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" for b in "ABCDEFGHIJ")
    assert shares["train"] > shares["validation"] and shares["train"] > shares["test"]


def test_seed_shape_and_decomposition(seeds):
    for s in seeds:
        hops = s.meta["hops"]
        assert s.question.endswith("?") and s.answers and all(a.strip() for a in s.answers)
        assert len(hops) == (2 if s.meta["kind"] == "two_hop" else 1) and s.meta["two_hop"] == (len(hops) == 2)
        assert s.meta["chain"] == "_".join(h["relation"] for h in hops)
        assert hops[-1]["answers"] == s.answers
        assert all(h["question"] and h["answer"] and h["fact"] for h in hops)
        if len(hops) == 2:  # the second hop is about the first hop's answer
            assert hops[0]["answer"] == hops[1]["subject"]
    peru = [s for s in seeds if s.question == "What is the capital of Peru?"]
    assert len(peru) == 1 and peru[0].answers == ["Lima"] and peru[0].meta["entities"] == ["PE"]
    lima = [s for s in seeds if s.question == "What currency is used in the country whose capital is Lima?"]
    assert lima[0].answers == ["Sol", "PEN"] and [h["answer"] for h in lima[0].meta["hops"]] == ["Peru", "Sol"]


def test_seed_roundtrip(seeds):
    s = seeds[0]
    assert Seed.from_dict(json.loads(json.dumps(s.to_dict()))) == s


# ---------------------------------------------------------------- hub (fake loader) and local files

ROWS = {"id": ["a", "b", "c"], "question": ["who wrote hamlet?", "capital of france?", "largest planet?"],
        "golden_answers": [["William Shakespeare", "Shakespeare"], ["Paris"], ["Jupiter"]]}


def test_hub_seeds_with_a_fake_loader():
    calls = []

    def loader(path, config, split):
        calls.append((path, config, split))
        return datasets.Dataset.from_dict(ROWS)

    out = hub_seeds("hotpotqa", split="validation", limit=2, loader=loader)
    assert calls == [("RUC-NLPIR/FlashRAG_datasets", "hotpotqa", "dev")]
    assert [s.question for s in out] == ROWS["question"][:2]
    assert out[0].answers == ["William Shakespeare", "Shakespeare"]
    assert out[0].source == "hotpotqa" and out[0].split == "validation" and out[0].meta["multi_hop"] is True
    assert out[0].meta["id"] == "a"
    assert len(hub_seeds("nq", "test", loader=lambda *a, **k: datasets.Dataset.from_dict(ROWS))) == 3
    assert set(FIELD_MAPPINGS) == {"nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique"}


def test_hub_seeds_errors():
    with pytest.raises(SeedError, match="unknown hub set"):
        hub_seeds("squad", loader=lambda *a, **k: None)

    def missing(*a, **k):
        raise ValueError("Unknown split 'test'")

    with pytest.raises(SeedError, match="cannot load split"):
        hub_seeds("musique", "test", loader=missing)
    bad = {"id": ["x"], "question": ["q?"], "golden_answers": ["not a list"]}
    with pytest.raises(SeedError, match=r"row 0: field 'golden_answers' must be a list"):
        hub_seeds("nq", loader=lambda *a, **k: datasets.Dataset.from_dict(bad))


def _qa_rows(n: int, tag: str) -> dict:
    return {"id": [f"{tag}{i}" for i in range(n)], "question": [f"{tag} question {i}?" for i in range(n)],
            "golden_answers": [[f"answer {i}"] for i in range(n)]}


def test_hub_split_seeds_carves_test_from_train_deterministically_and_disjoint():
    hub = {"train": _qa_rows(400, "t"), "dev": _qa_rows(50, "d")}
    loader = lambda path, config, split: datasets.Dataset.from_dict(hub[split])  # noqa: E731
    plan = {"train": "train", "validation": "dev", "test": "train"}
    out = hub_split_seeds("hotpotqa", plan, {"test": 0.1}, loader=loader)
    by = {sp: {s.id for s in out if s.split == sp} for sp in ("train", "validation", "test")}
    assert len(by["validation"]) == 50 and len(by["train"]) + len(by["test"]) == 400
    assert 20 <= len(by["test"]) <= 60  # ~10% of 400
    assert not (by["train"] & by["test"]) and not (by["validation"] & (by["train"] | by["test"]))
    assert all(carve_bucket(i) < 0.1 for i in by["test"]) and all(carve_bucket(i) >= 0.1 for i in by["train"])
    again = hub_split_seeds("hotpotqa", plan, {"test": 0.1}, loader=loader)
    assert [(s.id, s.split) for s in again] == [(s.id, s.split) for s in out]
    capped = hub_split_seeds("hotpotqa", plan, {"test": 0.1}, {"train": 30, "test": 5}, loader=loader)
    test_ids = {s.id for s in capped if s.split == "test"}
    assert len(test_ids) == 5 and test_ids <= by["test"]  # a limit never moves a question to another split
    assert len([s for s in capped if s.split == "train"]) == 30


def test_hub_split_seeds_keeps_a_duplicate_in_test_only():
    rows = _qa_rows(3, "x")
    loader = lambda path, config, split: datasets.Dataset.from_dict(rows)  # noqa: E731
    out = hub_split_seeds("nq", {"train": "train", "test": "test"}, loader=loader)
    assert [s.split for s in out] == ["test"] * 3


def test_hub_split_plans_that_cannot_work_are_refused():
    with pytest.raises(SeedError, match="the Hub has no 'test' split for musique"):
        check_split_plan("musique", {"test": "test"}, {})
    with pytest.raises(SeedError, match="train and test both read the whole 'train' split"):
        check_split_plan("hotpotqa", {"train": "train", "test": "train"}, {})
    with pytest.raises(SeedError, match="carve.test: a share between 0 and 1"):
        check_split_plan("nq", {"train": "train", "test": "train"}, {"test": 1.5})
    with pytest.raises(SeedError, match="splits: 'dev' is not one of"):
        check_split_plan("nq", {"dev": "dev"}, {})


def test_hub_seeds_from_a_local_folder_in_the_flashrag_layout(tmp_path):
    (tmp_path / "popqa").mkdir()
    rows = _qa_rows(4, "p")
    lines = [json.dumps({"id": i, "question": q, "golden_answers": a})
             for i, q, a in zip(rows["id"], rows["question"], rows["golden_answers"], strict=True)]
    (tmp_path / "popqa" / "test.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    out = hub_split_seeds("popqa", {"test": "test"}, path=str(tmp_path))
    assert [s.question for s in out] == rows["question"] and {s.split for s in out} == {"test"}
    with pytest.raises(SeedError, match="cannot load split 'dev'"):
        hub_seeds("popqa", "validation", path=str(tmp_path))


@pytest.fixture
def hotpotqa_sample(tmp_path):
    """A tiny FlashRAG-layout parquet, written at run time (no binary fixture in the repo)."""
    path = tmp_path / "hotpotqa_sample.parquet"
    pq.write_table(pa.table(ROWS), path)
    return path


def test_local_seeds_parquet(hotpotqa_sample):
    out = local_seeds(hotpotqa_sample, split="validation", multi_hop=True)
    assert [s.answers for s in out] == ROWS["golden_answers"]
    assert out[0].source == "hotpotqa_sample" and out[0].split == "validation" and out[2].meta["id"] == "c"


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ({"id": ["a", "b"], "question": ["ok?", ""], "golden_answers": [["x"], ["y"]]},
         "row 1: field 'question' is missing or empty"),
        ({"id": ["a"], "question": ["ok?"], "golden_answers": ["x"]},
         "row 0: field 'golden_answers' must be a list of strings"),
        ({"id": ["a"], "question": ["ok?"], "answers": [["x"]]}, "row 0: field 'golden_answers' is missing"),
        ({"id": ["a"], "question": ["ok?"], "golden_answers": [[]]},
         "row 0: field 'golden_answers' must be a non-empty"),
        ({"id": ["a"], "golden_answers": [["x"]]}, "row 0: field 'question' is missing or empty"),
    ],
)
def test_local_seeds_rejects_bad_rows(tmp_path, rows, message):
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table(rows), path)
    with pytest.raises(SeedError) as err:
        local_seeds(path)
    text = str(err.value)
    assert "\n" not in text and str(path) in text and message in text


def test_local_seeds_jsonl(tmp_path):
    path = tmp_path / "set.jsonl"
    path.write_text('{"id": "1", "question": "q one?", "golden_answers": ["A"]}\n\n'
                    '{"id": "2", "question": "q two?", "golden_answers": ["B", "b"]}\n')
    assert [s.answers for s in local_seeds(path, source="mine")] == [["A"], ["B", "b"]]
    path.write_text('{"id": "1", "question": "q one?", "golden_answers": ["A"]}\n{oops\n')
    with pytest.raises(SeedError, match=r"set.jsonl: line 2: not valid JSON"):
        local_seeds(path)
    path.write_text('["not", "an", "object"]\n')
    with pytest.raises(SeedError, match=r"row 0: expected an object"):
        local_seeds(path)


def test_local_seeds_bad_files(tmp_path):
    with pytest.raises(SeedError, match="no such file"):
        local_seeds(tmp_path / "nope.parquet")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(SeedError, match="unsupported file type"):
        local_seeds(tmp_path / "x.csv")
    (tmp_path / "broken.parquet").write_bytes(b"not parquet")
    with pytest.raises(SeedError, match="not a readable parquet"):
        local_seeds(tmp_path / "broken.parquet")


def test_a_pinned_hub_revision_reaches_the_loader():
    from pipelines.seed_files import hub_split_seeds

    seen = []

    def loader(path, config, split, revision=None):
        seen.append((path, config, split, revision))
        return [{"id": f"q{i}", "question": f"Question {i}?", "golden_answers": [f"a{i}"]} for i in range(4)]

    hub_split_seeds("nq", {"test": "test"}, loader=loader, revision="0123abcd")
    hub_split_seeds("nq", {"test": "test"}, loader=lambda path, config, split: loader(path, config, split))
    assert [s[3] for s in seen] == ["0123abcd", None]
