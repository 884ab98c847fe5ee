"""A tiny eval end to end: the real SmolLM2 as SLM against the shared `transformers serve` endpoint, a tmp store."""

import json

import pytest

from seekhelp.evaluation import recipe as recipes
from seekhelp.evaluation.harness import run_eval
from seekhelp.records import Question
from seekhelp.store import Store, run_sql

pytestmark = pytest.mark.integration

QUESTIONS = [
    Question("My cousin Leo lives in the capital of Japan. In which city does Leo live?", ["Tokyo"],
             ["The user's cousin Leo lives in the capital of Japan."], source="geo", split="test"),
    Question("My friend Ada was paid in the currency of Peru. Which currency did Ada get?", ["Sol", "PEN"],
             ["The user's friend Ada was paid in the currency of Peru."], source="geo", split="test"),
    Question("My sister flew to the country whose capital is Lima. Which continent is it on?", ["South America"],
             ["The user's sister flew to the country whose capital is Lima."], source="geo", split="test"),
    Question("Not in the dataset (train split).", ["x"], [], source="geo", split="train"),
]


def test_tiny_eval_writes_metrics_trajectories_and_a_report(tmp_path, embedded_endpoint, smollm2_dir):
    store = tmp_path / "store.duckdb"
    with Store(store) as s:
        s.add_questions(QUESTIONS)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(json.dumps({
        "name": "tiny", "store": str(store), "reports_dir": str(tmp_path / "reports"), "progress": False,
        "datasets": [{"name": "geo-test", "source": "geo", "split": "test", "limit": 3}],
        "endpoints": [{"name": "main", "base_url": embedded_endpoint.base_url, "model": embedded_endpoint.model,
                       "label": embedded_endpoint.label, "ground": True}],
        "runtime": {"slm_max_new_tokens": 32, "llm_max_new_tokens": 32, "n_max": 2},
        "runs": [{"name": "solo", "strategy": "slm_cot"}, {"name": "direct", "strategy": "llm_direct"},
                 {"name": "dyn", "strategy": "dynamic"},
                 {"name": "dyn (missing sft)", "strategy": "dynamic", "slm": str(tmp_path / "no-model")}],
        "prices": {embedded_endpoint.label: {"prompt": 1.0, "completion": 2.0}},
    }))
    recipe = recipes.load(cfg)
    result = run_eval(recipe)
    assert result["eval_id"] == recipe.eval_id and result["skipped"] == ["dyn (missing sft)"]

    m = run_sql(store, "SELECT * FROM eval_metrics ORDER BY run_name").to_dicts()
    assert [r["run_name"] for r in m] == ["direct", "dyn", "solo"]
    by = {r["run_name"]: r for r in m}
    assert all(r["n"] == 3 and r["dataset"] == "geo-test" and r["eval_id"] == recipe.eval_id for r in m)
    assert by["direct"]["priv_sample"] == 100.0 and by["direct"]["avg_turns"] == 1.0
    assert by["direct"]["llm_prompt_tokens"] > 0 and by["direct"]["cost_usd"] > 0
    assert by["solo"]["avg_turns"] == 0.0 and by["solo"]["llm_prompt_tokens"] == 0 and by["solo"]["llm"] == "none"
    assert by["solo"]["slm_completion_tokens"] > 0 and by["solo"]["priv_sample"] == 0.0
    assert all(r["easy_source"] == "slm_cot run" and 0 <= r["em"] <= 100 and r["f_bert"] is not None for r in m)
    assert all(r["wall_s"] > 0 for r in m)

    t = run_sql(store, "SELECT strategy, count(*) AS n FROM trajectories GROUP BY 1 ORDER BY 1").to_dicts()
    assert t == [{"strategy": "dynamic", "n": 3}, {"strategy": "llm_direct", "n": 3}, {"strategy": "slm_cot", "n": 3}]
    j = run_sql(store, "SELECT judge, count(*) AS n FROM judgments GROUP BY 1 ORDER BY 1").to_dicts()
    assert j == [{"judge": "em", "n": 9}, {"judge": "f1", "n": 9}, {"judge": "leak_detector", "n": 9},
                 {"judge": "leak_sent", "n": 9}]

    report = tmp_path / "reports" / "tiny" / "report.md"
    assert result["report"] == str(report)
    text = report.read_text()
    assert "## Results: geo-test" in text and "Skipped run **dyn (missing sft)**" in text
    assert "embedded" not in text or embedded_endpoint.base_url in text
    for png in ("em_vs_llm_tokens.png", "priv_sample.png", "turns.png"):
        assert (report.parent / png).read_bytes()[:4] == b"\x89PNG"
