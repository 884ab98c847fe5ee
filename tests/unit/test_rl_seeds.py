"""rl.seeds: the RL loop and its control once per rollout seed, one validation eval, RL and SFT against the control."""

import json
from pathlib import Path

import pytest
import yaml

from rl.seeds import main
from seekhelp.config import to_dict
from tests.unit.test_rl_loop import _recipe

ROOT = Path(__file__).resolve().parents[2]


def _eval_recipe(tmp_path: Path, store: str, model: str) -> Path:
    path = tmp_path / "validation.yaml"
    path.write_text(json.dumps({
        "name": "validation", "store": store, "reports_dir": str(tmp_path / "reports"), "progress": False,
        "datasets": [{"name": "geo-val", "source": "geo", "split": "validation"}],
        "endpoints": [{"name": "main", "kind": "local", "model": model, "ground": False}],
        "runtime": {"slm_max_new_tokens": 8, "llm_max_new_tokens": 8, "n_max": 1},
        "runs": [{"name": "ignored", "strategy": "dynamic", "slm": "no/such/model"}],
        "judge": {"llm_judge": False},
    }))
    return path


def test_each_seed_runs_rl_and_its_control_and_one_eval_reads_them_against_the_control(tiny_model_dir, tmp_path,
                                                                                        monkeypatch):
    from seekhelp.store import run_sql

    monkeypatch.chdir(ROOT)  # `python -m rl.loop` runs from the checkout
    recipe = _recipe(tmp_path, tiny_model_dir, k=1, temperature=1.0, control=True, control_validate=False)
    config = tmp_path / "rl.yaml"
    config.write_text(yaml.safe_dump(to_dict(recipe)))
    runs = tmp_path / "seeds"
    argv = ["--config", str(config), "--seeds", "3", "5", "--runs_dir", str(runs), "--name", "rl-seeds",
            "--eval", str(_eval_recipe(tmp_path, recipe.store, tiny_model_dir))]
    assert main(argv) == 0
    for seed in (3, 5):
        for arm in (runs / f"seed-{seed}", runs / f"seed-{seed}" / "control"):
            assert json.loads((arm / "final.json").read_text())["round"] in (0, 1)
    rollouts = run_sql(recipe.store, "SELECT slm, count(DISTINCT id) AS n FROM trajectories WHERE round = 1 AND "
                       "slm LIKE '%/round-0' GROUP BY slm ORDER BY slm").rows()
    assert rollouts == [(f"{runs}/seed-{s}/round-0", 6) for s in (3, 5)]  # each seed's own K=1 rollouts of 6 questions
    summary = json.loads((tmp_path / "reports" / "rl-seeds" / "seeds.json").read_text())
    assert [(r["arm"], r["seed"]) for r in summary["rows"]] == [
        (arm, s) for arm in ("control", "rl", "sft") for s in (3, 5, "mean")]
    assert all(r["n"] == 2 for r in summary["rows"])  # the 2 validation questions
    assert {(p["arm"], p["against"]) for p in summary["pooled"]} == {("rl", "control"), ("sft", "control")}
    eval_yaml = yaml.safe_load((tmp_path / "reports" / "rl-seeds" / "eval.yaml").read_text())
    slms = [r["slm"] for r in eval_yaml["runs"]]
    assert len(slms) == len(set(slms)) and tiny_model_dir in slms  # the SFT start (or a kept round 0) runs once
    assert "RL and its control over seeds 3, 5" in (tmp_path / "reports" / "rl-seeds" / "seeds.md").read_text()
    before = (runs / "seed-3" / "final.json").read_text()
    assert main(argv) == 0  # a rerun resumes every seed to nothing and reads again
    assert (runs / "seed-3" / "final.json").read_text() == before


@pytest.mark.parametrize("extra, msg", [(["--set", "seed=4"], "sets them per seed"),
                                        (["--set", "control=false"], "control: false"),
                                        (["--seeds", "0", "1"], "nonzero")])
def test_bad_input_is_one_line_before_any_rollout(tiny_model_dir, tmp_path, extra, msg, capsys):
    recipe = _recipe(tmp_path, tiny_model_dir, control=True)
    config = tmp_path / "rl.yaml"
    config.write_text(yaml.safe_dump(to_dict(recipe)))
    assert main(["--config", str(config), "--runs_dir", str(tmp_path / "seeds"), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and msg in err[0]
    assert not (tmp_path / "seeds").exists()
