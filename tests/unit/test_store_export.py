"""Exports of the store: SFT conversations (parquet that `trl sft` reads) and their provenance."""

import json

import pytest

from seekhelp.store import Store, StoreError, load_query
from tests.unit.test_store import SLM_ANS, SLM_MSG, judge, question, traj


@pytest.fixture
def db(tmp_path):
    return tmp_path / "store.duckdb"


def test_export_sft(db, tmp_path):
    datasets = pytest.importorskip("datasets")
    from seekhelp.protocol import render_agent_reply
    from seekhelp.store.export import export_sft

    q0, q1 = question(0), question(1, private=False)
    t0, t1 = traj(q0, n_llm=2), traj(q1, n_llm=0)
    with Store(db) as s:
        run = s.start_run("generate", {})
        s.add_questions([q0, q1], run)
        s.add_trajectories([t0, t1], run)
        s.add_judgments(judge(t0, 1.0) + judge(t1, 1.0))
    out = tmp_path / "sft"
    (out / "data").mkdir(parents=True)
    datasets.Dataset.from_dict({"x": [1]}).save_to_disk(str(out))  # an older export in the same folder
    assert export_sft(db, load_query("sft_candidates"), out, "SYSTEM").num_rows == 2
    assert not (out / "dataset_info.json").exists() and len(list(out.glob("data/*.parquet"))) == 1
    ds = datasets.load_dataset(str(out), split="train")  # parquet in the Hub's layout: what `trl sft` reads
    assert set(ds.column_names) == {"messages", "trajectory_id", "question_id", "answers", "split"}
    rows = {r["trajectory_id"]: r for r in ds}
    m0 = rows[t0.id]["messages"]
    assert [m["role"] for m in m0] == ["system", "user", "assistant", "user", "assistant", "user", "assistant"]
    assert m0[0]["content"] == "SYSTEM"
    assert m0[1]["content"] == q0.question  # privacy items are labels, never prompt text
    assert all(item not in json.dumps(m0) for item in q0.privacy_items)
    assert m0[2]["content"] == SLM_MSG
    assert m0[3]["content"] == render_agent_reply("information", "fact 0")
    assert m0[3]["content"].startswith("<agent-reply><information>")
    assert m0[-1]["content"] == SLM_ANS.format("City0")
    m1 = rows[t1.id]["messages"]
    assert [m["role"] for m in m1] == ["system", "user", "assistant"] and m1[1]["content"] == q1.question
    assert rows[t0.id]["answers"] == ["City0"] and rows[t0.id]["split"] == "train"
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["rows"] == 2 and prov["run_ids"] == [run] and "QUALIFY" in prov["query"]


def test_export_needs_trajectory_ids(db, tmp_path):
    pytest.importorskip("datasets")
    from seekhelp.store.export import export_sft

    Store(db).close()
    with pytest.raises(StoreError, match="trajectory_id"):
        export_sft(db, "SELECT 1 AS x", tmp_path / "out", "SYSTEM")
