"""Every entry point against a store that does not exist (or a recipe that cannot be read): one `error:` line,
exit 2, no traceback, nothing created. All of them report through seekhelp.errors, so a user error of any
subsystem (store, recipe, hub, model) reaches the user the same way.

The bug this guards: `seekhelp push-dataset` with no store printed a traceback, its error class missing from
one of five catch lists.
"""

from pathlib import Path

import pytest

from tests.reliability.conftest import ROOT, run_module

CLI = "seekhelp.cli"

# id: (module, argv; {absent} is a store path that does not exist, {tmp} the test's folder)
CASES = {
    "sql": (CLI, ["sql", "SELECT 1", "--store", "{absent}"]),
    "stats": (CLI, ["stats", "--store", "{absent}"]),
    "export": (CLI, ["export", "--out", "{tmp}/export", "--store", "{absent}"]),
    "ingest": (CLI, ["ingest", "{tmp}/no-shards", "--store", "{absent}"]),
    "push-dataset": (CLI, ["push-dataset", "--repo", "me/dialogues", "--store", "{absent}", "--dry-run"]),
    "push-model": (CLI, ["push-model", "{tmp}/no-model", "--repo", "me/model", "--dry-run"]),
    "cli-eval": (CLI, ["eval", "--config", str(ROOT / "evals" / "demo.yaml"), "--set", "store={absent}"]),
    "ask": (CLI, ["ask", "--strategy", "telepathy", "--question", "q"]),
    "generate": ("pipelines.generate", ["--config", "{tmp}/no-recipe.yaml"]),
    "sft": ("sft.train", ["--config", str(ROOT / "sft" / "recipes" / "smollm2-135m" / "demo.yaml"),
                          "--store", "{absent}", "--dataset_path", "{tmp}/sft-data", "--output_dir", "{tmp}/sft"]),
    "rl": ("rl.loop", ["--config", str(ROOT / "rl" / "recipes" / "smollm2-135m" / "demo.yaml"),
                       "--set", "init_model={tmp}/model", "--set", "store={absent}", "--set", "output_dir={tmp}/rl"]),
    "eval": ("seekhelp.eval", ["--config", str(ROOT / "evals" / "demo.yaml"), "--set", "store={absent}"]),
}
WORDS = {"ask": "telepathy", "generate": "no-recipe.yaml", "push-model": "no-model", "ingest": "no-shards"}


@pytest.mark.parametrize("case", list(CASES))
def test_entry_point_reports_one_line(case, tmp_path):
    module, argv = CASES[case]
    absent = tmp_path / "absent" / "store.duckdb"
    argv = [a.replace("{absent}", str(absent)).replace("{tmp}", str(tmp_path)) for a in argv]
    (tmp_path / "model").mkdir()
    (tmp_path / "model" / "config.json").write_text("{}")  # a model folder, so rl.loop gets as far as the store
    res = run_module(module, *argv, timeout=180)
    assert res.returncode == 2, f"{case}: exit {res.returncode}\n{res.stderr[-2000:]}"
    assert "Traceback" not in res.stderr, f"{case}: traceback\n{res.stderr[-3000:]}"
    errors = [line for line in res.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, f"{case}: expected one error line, got {errors}\n{res.stderr[-2000:]}"
    expected = WORDS.get(case, str(absent))
    assert expected in errors[0], f"{case}: {expected!r} not in {errors[0]!r}"
    assert not absent.exists(), f"{case}: a store was created"
    assert not Path(tmp_path, "export").exists() and not Path(tmp_path, "rl").exists()
