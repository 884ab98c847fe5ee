"""Seeds: offline geography seeds (deterministic, split by entity), hub and local sets."""

import json
from collections import Counter

import datasets
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipelines.seeds import (
    FIELD_MAPPINGS,
    SINGLE_KINDS,
    SPLITS,
    TWO_HOP_KINDS,
    Seed,
    SeedError,
    entity_split,
    hub_seeds,
    local_seeds,
    offline_seeds,
)


@pytest.fixture(scope="module")
def seeds() -> list[Seed]:
    return offline_seeds(seed=0)


def test_offline_seeds_cover_every_split_and_kind(seeds):
    splits = Counter(s.split for s in seeds)
    assert set(splits) == set(SPLITS) and splits["train"] > splits["test"] > 50
    assert set(s.meta["kind"] for s in seeds) == set(SINGLE_KINDS) | set(TWO_HOP_KINDS)
    assert all(s.source == "geo" for s in seeds)


def test_offline_seeds_are_deterministic(seeds):
    again = offline_seeds(seed=0)
    assert [s.to_dict() for s in again] == [s.to_dict() for s in seeds]
    other = offline_seeds(seed=1)
    assert sorted(s.id for s in other) == sorted(s.id for s in seeds)  # same pool, other order
    assert [s.id for s in other] != [s.id for s in seeds]


def test_n_per_split_limits(seeds):
    few = offline_seeds({"train": 20, "validation": 5, "test": 7}, seed=0)
    assert Counter(s.split for s in few) == {"train": 20, "validation": 5, "test": 7}
    assert offline_seeds({"train": 3}, seed=0) == [s for s in few if s.split == "train"][:3]


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
        assert len(hops) == (2 if s.meta["kind"] in TWO_HOP_KINDS else 1) and s.meta["two_hop"] == (len(hops) == 2)
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
