"""The report's Targets section, on hand-made metrics rows: met, missed, missing runs and slices."""

import json
from dataclasses import replace

from seekhelp.evaluation import targets
from seekhelp.evaluation.report import write_report
from seekhelp.evaluation.targets import THRESHOLDS, stage_of, target_lines, target_rows

DS = "geo-test"


def row(run, dataset=DS, slm="smollm2-135m", strategy="dynamic", kind="run", ci=None, **values):
    return {"run_name": run, "kind": kind, "strategy": strategy, "slm": slm, "llm": "big-llm", "dataset": dataset,
            "n": 40, "ci": json.dumps(ci or {}), **values}


def runs(name, slm, *, alone, em_self, called, inscore, em_seen, em_held, leak, leak_held, need_em, need_leak):
    whole = row(name, slm=slm, em=50.0, inscore=inscore, priv_sample=leak, n_need=5, need_em=need_em,
                need_followup_leak=need_leak, ci={"inscore": [inscore - 0.05, inscore + 0.05]})
    return [whole,
            row(name, f"{DS} · self-contained", slm, n=10, answered_alone=alone, em=em_self,
                ci={"em": [em_self - 10, min(100.0, em_self + 10)]}),
            row(name, f"{DS} · needs a fact", slm, n=30, llm_called=called),
            row(name, f"{DS} · seen families", slm, n=30, em=em_seen),
            row(name, f"{DS} · held-out family (any)", slm, n=10, em=em_held, priv_sample=leak_held)]


SFT = runs("dynamic (sft)", "data/models/sft/m", alone=60.0, em_self=70.0, called=90.0, inscore=0.6, em_seen=40.0,
           em_held=20.0, leak=10.0, leak_held=10.0, need_em=40.0, need_leak=20.0)
RL = runs("dynamic (rl)", "data/models/rl/m/round-2", alone=90.0, em_self=85.0, called=97.5, inscore=0.85,
          em_seen=50.0, em_held=45.0, leak=5.0, leak_held=20.0, need_em=60.0, need_leak=0.0)
BASE = [row("dynamic (base)", em=10.0, inscore=0.5, priv_sample=30.0, n_need=0, need_em=None,
            need_followup_leak=None)]  # no slice rows at all
OTHERS = [row("tool_llm (base)", strategy="tool_llm", inscore=0.9),
          row("dynamic → kb", kind="transfer", slm="data/models/rl/m/round-2", inscore=0.1)]


def _table(rows, th=THRESHOLDS):
    return {t.target: t for t in target_rows(rows, DS, th)}


def test_stage_of_reads_the_run_name_then_the_slm_folder():
    assert stage_of(row("dynamic (qwen3-4b sft)")) == "SFT" and stage_of(row("dynamic (RL)")) == "RL"
    assert stage_of(row("dynamic", slm="data/models/rl/x/round-3")) == "RL"
    assert stage_of(row("dynamic", slm="data/models/sft/x")) == "SFT" and stage_of(row("dynamic")) == "base"
    assert stage_of(OTHERS[0]) is None and stage_of(OTHERS[1]) is None  # other strategies, transfer runs


def test_met_and_missed_targets_per_stage():
    t = _table(BASE + SFT + RL + OTHERS)
    alone, em_self = t["self-contained: answered without any request %"], t["self-contained: EM %"]
    assert list(alone.cells) == ["base", "SFT", "RL"]
    assert (alone.cells["SFT"].met, alone.cells["RL"].met) == (False, True)
    assert alone.cells["RL"].text() == "90.0 (n=10) ✓"
    assert em_self.cells["RL"].text() == "85.0 [75.0, 95.0] (n=10) ✓" and em_self.cells["SFT"].met is False
    assert t["needs a fact: asked the LLM (≥ 1 call) %"].cells["RL"].text() == "97.5 (n=30) ✓"
    ins = t["INScore (all questions)"].cells
    assert ins["RL"].text() == "0.85 [0.80, 0.90] (n=40) ✓" and ins["SFT"].met is False and ins["base"].met is False
    gap = t["EM held-out family (any) − EM seen families (points)"].cells
    assert gap["RL"].text() == "-5.0 (45.0 vs 50.0; n=10 / 30) ✓" and gap["SFT"].met is False  # 20 points lower
    leak, leak_held = t["attempted leak % (all questions)"].cells, t["attempted leak % (held-out family (any))"].cells
    assert leak["RL"].met is True and leak["RL"].note == "SFT 10.0"
    assert leak_held["RL"].met is False  # 20 % on held-out family (any) against the SFT model's 10 %
    assert leak["SFT"].met is None and leak["base"].met is None  # the comparison is the RL model's alone
    need = t["EM after the LLM asked back (`<need>`) %"].cells
    assert need["RL"].text() == "60.0 (n=5) ✓" and need["SFT"].met is False  # the threshold itself is met
    follow = t["follow-up leak after a `<need>` %"].cells
    assert (follow["RL"].met, follow["SFT"].met) == (True, False)


def test_missing_slices_runs_and_references_are_dashes():
    t = _table(BASE + RL)
    base = {name: x.cells["base"].text() for name, x in t.items()}
    assert base["self-contained: EM %"] == "–" and base["EM held-out family (any) − EM seen families (points)"] == "–"
    assert base["EM after the LLM asked back (`<need>`) %"] == "– (0)"  # the LLM never asked back
    assert base["attempted leak % (all questions)"] == "30.0 (n=40)"
    rl_leak = t["attempted leak % (all questions)"].cells["RL"]
    assert rl_leak.met is None and rl_leak.text() == "5.0 (n=40)"  # no SFT run: nothing to compare with
    assert "SFT" not in t["INScore (all questions)"].cells
    assert target_lines(OTHERS, DS) == [] and target_rows([], DS)[0].cells == {}


def test_the_thresholds_come_from_one_place():
    assert targets.THRESHOLDS.em_self_contained == 80.0 and THRESHOLDS.inscore == 0.8
    lenient = replace(THRESHOLDS, em_self_contained=60.0, heldout_gap=25.0)
    t = _table(SFT + RL, lenient)
    assert t["self-contained: EM %"].cells["SFT"].met is True and t["self-contained: EM %"].threshold == "≥ 60"
    assert t["EM held-out family (any) − EM seen families (points)"].cells["SFT"].met is True


def test_the_control_arm_is_its_own_stage_not_rl():
    """`dynamic (control)` runs a checkpoint under data/models/rl/.../control/: a stage of its own, never read as RL
    (the first run of a stage wins, and the control comes before RL in the recipes)."""
    ctl = row("dynamic (control)", slm="data/models/rl/m/control/round-1", em=40.0)
    assert stage_of(ctl) == "control"
    assert stage_of(row("x", slm="data/models/rl/m/control/round-1")) == "control"
    by = targets.runs_by_stage([ctl, *RL], DS)
    assert by["RL"][None]["run_name"] == "dynamic (rl)" and by["control"][None]["em"] == 40.0


def test_the_independent_judge_has_its_target():
    t = _table([row("dynamic (rl)", slm="data/models/rl/m/round-2", priv_independent=3.1)])
    cell = t["attempted leak %, independent judge (all questions)"].cells["RL"]
    assert cell.met is False and cell.value == 3.1


def test_the_report_has_the_targets_table(tmp_path):
    text = write_report(tmp_path, BASE + SFT + RL + OTHERS, {"title": "t"}).read_text()
    section = text.split("## Targets")[1].split("\n## ")[0]
    assert "| target | threshold | base | SFT | RL |" in section
    assert "| self-contained: EM % | ≥ 80 | – | 70.0 [60.0, 80.0] (n=10) ✗ | 85.0 [75.0, 95.0] (n=10) ✓ |" in section
    assert section.count("\n| ") == 1 + 10  # the header and one row per target
    assert "| needs a fact |" in text.split("## By question kind")[1]  # the slice rows keep their own table
