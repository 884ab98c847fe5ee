"""Experiment tracking: one `report_to` switch; trackio (real, local database) for RL rounds and eval metrics."""

import json
import sqlite3
import subprocess
from pathlib import Path

import pytest

from seekhelp.config import RecipeError
from seekhelp.tracking import check_report_to, start
from tests.unit.test_sft import dataset_dir  # noqa: F401  (a fixture)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def trackio_dir(tmp_path, monkeypatch):
    d = tmp_path / "trackio"
    monkeypatch.setenv("TRACKIO_DIR", str(d))
    monkeypatch.setenv("SEEKHELP_TRACKING_PROJECT", "seekhelp-test")
    import trackio.sqlite_storage as storage
    import trackio.utils as utils

    monkeypatch.setattr(utils, "TRACKIO_DIR", d)  # read at import time
    monkeypatch.setattr(storage, "TRACKIO_DIR", d, raising=False)
    return d


def _logged(d: Path) -> list[tuple[str, int, dict]]:
    with sqlite3.connect(d / "seekhelp-test.db") as con:
        return [(run, step, json.loads(m)) for run, step, m in
                con.execute("SELECT run_name, step, metrics FROM metrics ORDER BY id")]


def test_bad_values_are_one_line():
    assert check_report_to("none") == "none" and check_report_to("TrackIO") == "trackio"
    with pytest.raises(RecipeError, match="'tensorboardx' is not one of none, trackio, wandb"):
        check_report_to("tensorboardx")
    assert start("none", "x") is None


def test_rl_rounds_and_the_control_reach_trackio(tiny_model_dir, tmp_path, trackio_dir):
    from rl.loop import run
    from tests.unit.test_rl_loop import _recipe

    recipe = _recipe(tmp_path, tiny_model_dir, report_to="trackio", control=True, control_validate=False,
                     sft_overrides=["--max_steps", "1", "--per_device_train_batch_size", "2", "--disable_tqdm",
                                    "true", "--report_to", "none"])
    rows = run(recipe)
    logged = _logged(trackio_dir)
    rl = {step: m for run, step, m in logged if "rl/em" in m}
    assert sorted(rl) == [0, 1] and rl[1]["rl/n_selected"] == rows[1]["n_selected"]
    assert rl[0]["rl/mean_reward"] == pytest.approx(rows[0]["mean_reward"])
    assert any("control/n_fallback" in m for _, _, m in logged)
    assert any("rl/final_round" in m for _, _, m in logged)
    assert {run for run, _, _ in logged} == {"rl-rl"}


def test_eval_metrics_reach_trackio(trackio_dir):
    from seekhelp.evaluation.harness import track_eval
    from seekhelp.evaluation.recipe import load

    recipe = load(ROOT / "evals/demo.yaml", ["report_to=trackio"])
    rows = [{"run_name": "dynamic (rl)", "dataset": "geo-test", "em": 71.9, "avg_turns": 0.8, "priv_sample": 0.0},
            {"run_name": "dynamic (rl)", "dataset": "geo-test · two-hop", "em": 10.0}]
    track_eval(recipe, "eval-x", rows)
    (run, _, m), = _logged(trackio_dir)
    assert run == "eval-demo" and m == {"dynamic (rl)/geo-test/em": 71.9, "dynamic (rl)/geo-test/avg_turns": 0.8,
                                         "dynamic (rl)/geo-test/priv_sample": 0.0}


def test_one_make_switch_reaches_every_stage():
    out = subprocess.run(["make", "-n", "sft", "rl", "eval", "REPORT_TO=trackio"], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    lines = [x for x in out.splitlines() if any(m in x for m in ("sft.train", "rl.loop", "seekhelp.eval"))]
    assert len(lines) == 3 and "--report_to trackio --project seekhelp" in lines[0]
    assert all("--set report_to=trackio" in x for x in lines[1:])
    plain = subprocess.run(["make", "-n", "sft", "rl"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    assert "report_to" not in plain


def test_sft_reports_its_loss_to_trackio(tiny_model_dir, dataset_dir, tmp_path, trackio_dir):  # noqa: F811
    """SFT goes through transformers' own trackio integration (`--report_to trackio`): the loss of each logged step
    lands in the local database."""
    from tests.unit.test_sft import _run

    _run(tiny_model_dir, dataset_dir, tmp_path / "out", "--report_to", "trackio", "--project", "seekhelp-test")
    losses = [m for _, _, m in _logged(trackio_dir) if any("loss" in k for k in m)]
    assert losses
