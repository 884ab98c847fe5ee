"""sft.seeds: arms × seeds trained (or kept), read by one validation eval, summed up per seed and pooled."""

import json
import shutil
from pathlib import Path

import pytest

from sft import SFTInputError
from sft.seeds import main, parse_arm, summarize

ROOT = Path(__file__).resolve().parents[2]
DEMO = str(ROOT / "sft/recipes/smollm2-135m/demo.yaml")


def test_an_arm_is_a_name_a_recipe_and_flags():
    assert parse_arm(f"bf16={DEMO} --bf16 true") == ("bf16", DEMO, ["--bf16", "true"])
    for bad, needle in ((DEMO, "NAME=RECIPE"), ("x=", "NAME=RECIPE"), ("x=no/such.yaml", "no recipe"),
                        (f"x={DEMO} --seed 3", "set per seed")):
        with pytest.raises(SFTInputError, match=needle):
            parse_arm(bad)


def test_easy_probes_of_two_models_in_folders_of_one_name_do_not_collide():
    from seekhelp.evaluation.harness import with_easy_probes
    from seekhelp.evaluation.recipe import RunSpec

    plan = [("run", RunSpec(name=name, strategy="dynamic", slm=slm), slm)
            for name, slm in (("a", "m/old/seed-42"), ("b", "m/new/seed-42"), ("c (sft)", "m/sft"))]
    probes = [run.name for _, run, _ in with_easy_probes(plan) if run.strategy == "slm_cot"]
    assert probes == ["slm_cot (seed-42)", "slm_cot (m/new/seed-42)", "slm_cot (sft)"]


def _results(em_by_seed: dict, kinds: dict, asked: dict | None = None) -> dict:
    return {seed: {q: (kinds[q], em[q], (asked or {}).get(seed, {}).get(q, kinds[q] != "self_contained"))
                   for q in em} for seed, em in em_by_seed.items()}


def test_pooled_difference_averages_seeds_per_question_and_rates_read_their_kinds():
    kinds = {f"q{i}": k for i, k in enumerate(["self_contained", "self_contained", "other_fact", "one_missing"] * 5)}
    base = {1: {q: 0.0 for q in kinds}, 2: {q: 1.0 if q == "q0" else 0.0 for q in kinds}}
    new = {1: {q: 1.0 for q in kinds}, 2: {q: 1.0 for q in kinds}}
    asked_base = {s: {q: True for q in kinds} for s in (1, 2)}  # base asks on everything
    results = {("base", s): r for s, r in _results(base, kinds, asked_base).items()}
    results |= {("new", s): r for s, r in _results(new, kinds).items()}
    out = summarize(results, ["base", "new"], [1, 2])
    rows = {(r["arm"], r["seed"]): r for r in out["rows"]}
    assert rows[("base", 1)]["EM %"] == 0.0 and rows[("base", 2)]["EM %"] == 5.0
    assert rows[("base", "mean")]["EM %"] == 2.5
    assert rows[("base", 1)]["self-contained alone %"] == 0.0 and rows[("new", 1)]["self-contained alone %"] == 100.0
    assert rows[("new", 2)]["needs a fact asked %"] == 100.0 and rows[("new", 2)]["other-fact asked %"] == 100.0
    pooled = {p["column"]: p for p in out["pooled"]}
    assert pooled["EM %"]["n"] == 20 and pooled["EM %"]["diff"] == pytest.approx(97.5)
    lo, hi = pooled["EM %"]["ci"]
    assert lo <= 97.5 <= hi and lo > 90
    sc = pooled["self-contained alone %"]
    assert sc["n"] == 10 and sc["diff"] == 100.0 and sc["ci"] == [100.0, 100.0]
    assert pooled["needs a fact asked %"]["n"] == 10 and pooled["needs a fact asked %"]["diff"] == 0.0


def test_arms_train_what_is_missing_and_one_eval_reads_every_seed(tmp_path, tiny_model_dir, monkeypatch):
    """One arm already trained (kept, not retrained), one trained here for two seeds on a tiny random model; the
    validation eval runs every model against a local tiny LLM and the summary names every arm × seed."""
    import datasets

    from seekhelp.records import Question
    from seekhelp.store import Store, run_sql
    from tests.unit.test_sft import _dialogue

    monkeypatch.chdir(ROOT)  # `python -m sft.train` runs from the checkout
    dialogues = tmp_path / "dialogues"
    datasets.Dataset.from_dict({"messages": [_dialogue(i) for i in range(4)]}).save_to_disk(str(dialogues))
    store = tmp_path / "store.duckdb"
    kinds = ["self_contained", "other_fact", "one_missing"]
    with Store(store) as s:
        s.add_questions([Question(f"My friend number {i} lives in Lyon. Which country is that?", ["France"],
                                  [f"The user's friend number {i} lives in Lyon."], source="geo", split="validation",
                                  meta={"kind": kinds[i % 3]}) for i in range(3)])
    models = tmp_path / "models"
    for seed in (1, 2):  # the first arm: already trained, so kept
        kept = models / "old" / f"seed-{seed}"
        shutil.copytree(tiny_model_dir, kept)
        (kept / "train_metrics.json").write_text("{}")
    recipe = tmp_path / "validation.yaml"
    recipe.write_text(json.dumps({
        "name": "validation", "store": str(store), "reports_dir": str(tmp_path / "reports"), "progress": False,
        "datasets": [{"name": "geo-val", "source": "geo", "split": "validation"}],
        "endpoints": [{"name": "main", "kind": "local", "model": tiny_model_dir, "ground": True}],
        "runtime": {"slm_max_new_tokens": 8, "llm_max_new_tokens": 8, "n_max": 1},
        "runs": [{"name": "ignored", "strategy": "dynamic", "slm": "no/such/model"}],
        "judge": {"llm_judge": False},
    }))
    flags = (f"--model_name_or_path {tiny_model_dir} --store '' --dataset_path {dialogues} --max_steps 1 "
             "--per_device_train_batch_size 2 --gradient_accumulation_steps 1 --disable_tqdm true")
    argv = ["--arm", "old=" + DEMO, "--arm", f"new={DEMO} {flags}", "--seeds", "1", "2", "--eval", str(recipe),
            "--models_dir", str(models), "--name", "seeds"]
    assert main(argv) == 0
    for seed in (1, 2):
        assert json.loads((models / "new" / f"seed-{seed}" / "train_metrics.json").read_text())["global_step"] == 1
        assert (models / "old" / f"seed-{seed}" / "train_metrics.json").read_text() == "{}"  # kept, not retrained
    summary = json.loads((tmp_path / "reports" / "seeds" / "seeds.json").read_text())
    assert [(r["arm"], r["seed"], r["n"]) for r in summary["rows"]] == [
        ("old", 1, 3), ("old", 2, 3), ("old", "mean", 3), ("new", 1, 3), ("new", 2, 3), ("new", "mean", 3)]
    assert {p["column"] for p in summary["pooled"]} == {"EM %", "self-contained alone %", "needs a fact asked %",
                                                        "other-fact asked %"}
    assert all(p["arm"] == "new" and p["against"] == "old" for p in summary["pooled"])
    text = (tmp_path / "reports" / "seeds" / "seeds.md").read_text()
    assert "| new − old | EM % | 3 |" in text
    runs = run_sql(store, "SELECT DISTINCT slm FROM trajectories ORDER BY 1").to_dicts()
    assert len(runs) == 4 and "no/such/model" not in str(runs)  # the recipe's own runs are replaced
