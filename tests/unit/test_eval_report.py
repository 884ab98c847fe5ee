"""report.md and its PNGs from hand-made metrics rows; recipe checks and the CLI's one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from seekhelp.config import RecipeError
from seekhelp.eval import main as eval_main
from seekhelp.evaluation import plots, recipe
from seekhelp.evaluation.harness import resolve_slm
from seekhelp.evaluation.report import write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def row(name, strategy, em, llm_tokens, turns, priv, kind="run", dataset="geo-test", llm="big-llm"):
    return {"run_name": name, "kind": kind, "strategy": strategy, "slm": "tiny-slm", "llm": llm, "dataset": dataset,
            "n": 10, "em": em, "f1": em + 5, "f_bert": 60.0, "format_ok": 90.0, "avg_turns": turns, "inscore": 0.5,
            "recall_easy": 1.0,
            "recall_hard": 0.0, "n_easy": 3, "priv_sim": 0.3, "priv_sample": priv, "slm_prompt_tokens": 1000,
            "slm_completion_tokens": 200, "llm_prompt_tokens": llm_tokens * 10 - 100 * 10 if llm_tokens else 0,
            "llm_completion_tokens": 100 * 10 if llm_tokens else 0, "cost_usd": llm_tokens * 1e-5,
            "wall_s": 12.0, "easy_source": "slm_cot run", "priv_sent": 0.0 if priv < 100 else priv, "n_hard": 7,
            "em_easy": 100.0, "em_hard": em, "calls_easy": 0.0, "calls_hard": turns,
            "ci": json.dumps({"em": [max(0.0, em - 10), em + 10], "priv_sample": [0.0, 30.0]})}


ROWS = [row("slm_cot (base)", "slm_cot", 10.0, 0, 0.0, 0.0),
        row("dynamic (base)", "dynamic", 10.0, 0, 0.0, 0.0),  # the same point as slm_cot: one shared label
        row("llm_direct", "llm_direct", 40.0, 300, 1.0, 100.0),
        row("static_rewrite", "static_rewrite", 25.0, 450, 1.0, 20.0),
        dict(row("dynamic (rl)", "dynamic", 35.0, 250, 1.3, 5.0), slm="tiny-rl"),
        dict(row("dynamic → kb", "dynamic", 45.0, 150, 1.1, 0.0, kind="transfer", llm="kb-retriever"), slm="tiny-rl")]
RL = [{"run": "data/models/rl/x", "round": r, "split": "validation", "mean_reward": -0.4 + 0.1 * r, "em": 0.1 * r,
       "turns": 1.0, "leak_rate": 0.05, "valid_rate": 0.8} for r in range(3)]


def _is_png(path: Path) -> bool:
    return path.exists() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def test_report_has_setup_results_transfer_and_valid_pngs(tmp_path):
    out = write_report(tmp_path / "r", ROWS, {"title": "unit", "embedder": "hashed test encoder"}, RL)
    text = out.read_text()
    assert out == tmp_path / "r" / "report.md"
    for needle in ("# Evaluation report: unit", "## Setup", "## Results: geo-test", "## Transfer to an unseen LLM",
                   "hashed test encoder", "slm_cot run", "## RL rounds", "EM %", "attempted leak %", "sent leak %",
                   "[95% CI]", "LLM tok/q"):
        assert needle in text, needle
    results = text.split("## Results: geo-test")[1].split("## Transfer")[0]
    assert results.count("\n| ") == 6  # header + 5 runs (the transfer row has its own table)
    assert ("| llm_direct | llm_direct | `tiny-slm` | big-llm | 10 | 40.0 [30.0, 50.0] | 100 (3) | 40 (7) | 90.0 | "
            "1.00 | 0.00 / 1.00 | 0.50 | 100.0 [0.0, 30.0] | 100.0 |") in results
    assert "| 300 | 0.0030 | 12.0 |" in results  # LLM tokens per question, cost, wall
    assert "dynamic → kb: EM 45.0 vs 35.0 with `big-llm` (dynamic (rl))" in text  # same strategy and SLM
    for png in ("em_vs_llm_tokens.png", "priv_sample.png", "turns.png", "rl_rounds.png"):
        assert _is_png(tmp_path / "r" / png), png
        assert f"]({png})" in text


def test_report_without_rl_rounds_and_with_several_datasets(tmp_path):
    rows = [dict(r, dataset=d) for r in ROWS[:3] for d in ("nq", "hotpotqa", "macro-avg")]
    text = write_report(tmp_path, rows).read_text()
    assert "## Results: nq" in text and "## Results: macro-avg" in text and "RL rounds" not in text
    assert not (tmp_path / "rl_rounds.png").exists() and _is_png(tmp_path / "em_vs_llm_tokens.png")
    assert "EM vs LLM tokens (macro-avg)" not in text  # the title is drawn in the figure, not written in the text


def test_pareto_front_minimises_tokens_and_maximises_em():
    pts = [(0, 10), (0, 5), (300, 40), (450, 25), (250, 35), (250, 30)]
    assert plots.pareto_front(pts) == [0, 4, 2]


def _write(tmp_path, text):
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


BASE = """
datasets: [{name: d, source: geo, split: test}]
endpoints: [{name: main, model: smollm2-135m}]
runs: [{name: a, strategy: dynamic}]
"""


def test_recipe_checks(tmp_path):
    r = recipe.load(_write(tmp_path, BASE))
    assert r.eval_id == recipe.load(_write(tmp_path, BASE)).eval_id and r.eval_id.startswith("eval-")
    assert r.eval_id != recipe.load(_write(tmp_path, BASE), ["limit=3"]).eval_id
    bad = {"strategy: dynamic": "strategy: nope", "name: main": "name: other", "split: test}": "split: test, x: 1}"}
    for old, new in bad.items():
        with pytest.raises(RecipeError):
            recipe.load(_write(tmp_path, BASE.replace(old, new)))
    with pytest.raises(RecipeError, match="prices"):
        recipe.load(_write(tmp_path, BASE + "prices: {m: {prompt: -1}}"))
    with pytest.raises(RecipeError, match="not found"):
        recipe.load(tmp_path / "missing.yaml")


def test_slm_resolution_skips_missing_folders_and_finds_the_latest_round(tmp_path):
    assert resolve_slm("smollm2-135m") == "smollm2-135m"
    assert resolve_slm(str(tmp_path / "nope")) is None
    for r in (1, 2, 10):
        (tmp_path / f"round-{r}").mkdir()
        (tmp_path / f"round-{r}" / "config.json").write_text("{}")
    assert resolve_slm(str(tmp_path / "latest")) == str(tmp_path / "round-10")
    assert resolve_slm([str(tmp_path / "nope"), "smollm2-135m"]) == "smollm2-135m"
    assert resolve_slm("data/models/does-not-exist") is None and resolve_slm("Qwen/Qwen3-4B") == "Qwen/Qwen3-4B"


def test_cli_errors_are_one_line_and_exit_2(tmp_path, capsys):
    assert eval_main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert eval_main(["--config", str(_write(tmp_path, BASE.replace("dynamic", "nope")))]) == 2
    assert eval_main(["--config", str(_write(tmp_path, BASE + "store: " + str(tmp_path / "no.duckdb")))]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 3 and all(line.startswith("error: ") for line in err)
    assert "not found" in err[0] and "'nope'" in err[1] and "make data" in err[2]


def test_seekhelp_eval_command_reports_bad_input_in_one_line(tmp_path):
    cfg = _write(tmp_path, BASE + "unknown_key: 1")
    out = subprocess.run([sys.executable, "-m", "seekhelp.cli", "eval", "--config", str(cfg)], capture_output=True,
                         text=True, timeout=120, env={**os.environ, "PYTHONPATH": "."})
    assert out.returncode == 2 and "Traceback" not in out.stderr and "unknown_key" in out.stderr
