"""Every recipe in the repo loads with the project's own loaders, and each chain data → sft → rl → eval lines up.

A user runs `make data && make sft && make rl && make eval` with one recipe per stage; a stage that reads a folder
the previous one never writes, or questions of a split the data recipe never stores, fails hours into a GPU run.
The checks below read only the recipes (no model, no store, no network).
"""

import copy
import re
from pathlib import Path

import pytest

from pipelines.generate import DataRecipe, produced_splits
from pipelines.seeds import SeedError
from rl.loop import RLRecipe
from seekhelp.config import load_recipe
from seekhelp.evaluation.recipe import load as load_eval

ROOT = Path(__file__).resolve().parents[2]
CHAINS = {
    "demo": {"data": "pipelines/recipes/demo.yaml",
             "sft": ["sft/recipes/smollm2-135m/demo.yaml", "sft/recipes/smollm2-135m/lora.yaml"],
             "rl": ["rl/recipes/smollm2-135m/demo.yaml"],
             "eval": ["evals/demo.yaml", "evals/sft-check.yaml", "evals/validation.yaml", "evals/id-probe.yaml"]},
    "long": {"data": "pipelines/recipes/long.yaml",  # make demo PROFILE=long
             "sft": ["sft/recipes/smollm2-135m/long.yaml"],
             "rl": ["rl/recipes/smollm2-135m/long.yaml"],
             "eval": ["evals/long.yaml"]},
    "gpu": {"data": "pipelines/recipes/hotpotqa-nq-vllm.yaml",
            "sft": ["sft/recipes/qwen3-4b/gpu.yaml"],
            "rl": ["rl/recipes/qwen3-4b/gpu.yaml"],
            "eval": ["evals/gpu.yaml"]},
}
GLOBS = ("pipelines/recipes/*.yaml", "sft/recipes/**/*.yaml", "rl/recipes/**/*.yaml", "evals/*.yaml")


def load_sft(path: str, *flags: str):
    from sft.train import parse

    # bf16 is refused by transformers on a machine without a GPU; the chain does not depend on it
    return parse(["--config", str(ROOT / path), "--bf16", "false", *flags])


def load_chain(name: str) -> dict:
    c = CHAINS[name]
    return {"data": load_recipe(DataRecipe, ROOT / c["data"]),
            "sft": {p: load_sft(p) for p in c["sft"]},
            "rl": {p: load_recipe(RLRecipe, ROOT / p) for p in c["rl"]},
            "eval": {p: load_eval(ROOT / p) for p in c["eval"]}}


def _norm(p: str) -> str:
    return str(Path(p))


def _retrain_errors(path: str, rl) -> list[str]:
    """A round's retrain is sft.train with the SFT recipe and the RL recipe's overrides: they must parse, push
    nothing (rounds are pushed by revision) and hold out nothing from a round's few picks."""
    from sft import SFTInputError
    from sft.data import check_eval

    try:
        _script, training, _model = load_sft(rl.sft_recipe, *map(str, rl.sft_overrides))
        check_eval(_script.eval_dataset_path, _script.eval_holdout, str(training.eval_strategy.value))
    except SFTInputError as e:
        return [f"{path}: sft_overrides with {rl.sft_recipe}: {e}"]
    out = []
    if training.push_to_hub:
        out.append(f"{path}: sft_overrides must pass --push_to_hub false (rounds are pushed by revision)")
    if _script.eval_holdout or _script.eval_dataset_path:
        out.append(f"{path}: sft_overrides must pass --eval_strategy no --eval_holdout 0 (a round has few picks)")
    return out


def chain_errors(chain: dict) -> list[str]:
    """What a user running this chain would trip over, one line each (empty: the chain runs)."""
    errors: list[str] = []
    data = chain["data"]
    try:
        produced = produced_splits(data)
    except SeedError as e:
        return [f"data: {e}"]
    splits = {s for _, s in produced}

    def has(source, split):
        return (source, split) in produced if source else split in splits

    if data.teacher.splits is not None and "train" not in data.teacher.splits:
        errors.append("data: teacher.splits leaves out train, so SFT has no dialogues")
    sft_out = {}
    for path, (script, training, _model) in chain["sft"].items():
        sft_out[path] = _norm(training.output_dir)
        if script.store and _norm(script.store) != _norm(data.store):
            errors.append(f"{path}: store {script.store} is not the data recipe's {data.store}")
        for p in script.query_params:
            if p.startswith("split=") and not has(None, p.split("=", 1)[1]):
                errors.append(f"{path}: query_params {p}: the data recipe stores no such split")
    rl_out = {}
    for path, rl in chain["rl"].items():
        rl_out[path] = rl
        if _norm(rl.store) != _norm(data.store):
            errors.append(f"{path}: store {rl.store} is not the data recipe's {data.store}")
        if rl.sft_recipe not in sft_out:
            errors.append(f"{path}: sft_recipe {rl.sft_recipe} is not an SFT recipe of this chain")
        elif _norm(rl.init_model) != sft_out[rl.sft_recipe]:
            errors.append(f"{path}: init_model {rl.init_model} is not where {rl.sft_recipe} writes "
                          f"({sft_out[rl.sft_recipe]})")
        for split in ("train", "validation"):
            if not has(rl.source, split):
                errors.append(f"{path}: needs {split} questions{f' of {rl.source}' if rl.source else ''}; "
                              "the data recipe stores none")
        errors += _retrain_errors(path, rl)
    written = set(sft_out.values()) | {_norm(Path(r.output_dir) / "latest") for r in rl_out.values()}
    written |= {_norm(Path(r.output_dir) / "final") for r in rl_out.values()}  # the round chosen on validation
    written |= {_norm(Path(r.output_dir) / "control" / "final") for r in rl_out.values() if r.control}
    written |= {_norm(Path(r.output_dir) / f"round-{i}") for r in rl_out.values() for i in range(1, r.rounds + 1)}
    for path, ev in chain["eval"].items():
        if _norm(ev.store) != _norm(data.store):
            errors.append(f"{path}: store {ev.store} is not the data recipe's {data.store}")
        for d in ev.datasets:
            if not has(d.source, d.split):
                errors.append(f"{path}: dataset {d.name} needs {d.source or 'any source'}/{d.split} questions; "
                              "the data recipe stores none")
        for _, run in ev.all_runs():
            for slm in run.slm if isinstance(run.slm, list) else [run.slm]:
                if slm.startswith("data/") and _norm(slm) not in written:
                    errors.append(f"{path}: run {run.name!r} reads {slm}, which no stage of the chain writes")
        main = next((e for e in ev.endpoints if e.name == "main"), None)
        for rl_path, rl in rl_out.items():
            if main is not None and main.model != rl.llm.model:
                errors.append(f"{path}: endpoint main is {main.model}, but {rl_path} trains against {rl.llm.model}")
    return errors


def test_every_recipe_in_the_repo_is_in_a_chain():
    listed = {p for c in CHAINS.values() for v in c.values() for p in ([v] if isinstance(v, str) else v)}
    found = {str(p.relative_to(ROOT)) for g in GLOBS for p in ROOT.glob(g)}
    assert found, "no recipes found"
    assert found == listed, f"recipes not in a chain: {sorted(found - listed)}; gone: {sorted(listed - found)}"


@pytest.mark.parametrize("name", sorted(CHAINS))
def test_chain_lines_up(name):
    assert chain_errors(load_chain(name)) == []


def test_gpu_chain_needs_what_the_issue_found_missing():
    """The two breaks issue 13 found are caught: an RL start the SFT recipe never writes, a train-only data recipe."""
    chain = load_chain("gpu")
    broken = copy.deepcopy(chain)
    next(iter(broken["rl"].values())).init_model = "data/models/sft/qwen3-4b"
    assert any("init_model data/models/sft/qwen3-4b is not where" in e for e in chain_errors(broken))
    broken = copy.deepcopy(chain)
    for src in broken["data"].seeds.sources:  # the data recipe as it was: train only
        src.splits, src.carve = {k: v for k, v in src.splits.items() if k == "train"}, {}
    broken["data"].seeds.sources = [s for s in broken["data"].seeds.sources if s.splits]
    errors = chain_errors(broken)
    assert any("needs validation questions" in e for e in errors)
    assert {m.group(1) for e in errors if (m := re.search(r"dataset (\S+) needs", e))} == {
        "nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique"}


def test_a_retrain_that_would_push_or_hold_out_is_caught():
    chain = load_chain("gpu")
    rl = next(iter(chain["rl"].values()))
    rl.sft_overrides = [f for f in rl.sft_overrides if f not in ("--eval_holdout", "0", "--eval_strategy", "no")]
    assert any("--eval_holdout 0" in e for e in chain_errors(chain))
    rl.sft_overrides = ["--push_to_hub", "true", "--hub_model_id", "me/x", "--eval_strategy", "no",
                        "--eval_holdout", "0"]
    assert any("--push_to_hub false" in e for e in chain_errors(chain))
    rl.sft_overrides = ["--no_such_flag", "1"]
    assert any("sft_overrides with sft/recipes/qwen3-4b/gpu.yaml: command line" in e for e in chain_errors(chain))


def test_a_hub_split_flashrag_lacks_is_refused():
    chain = load_chain("gpu")
    hotpot = next(s for s in chain["data"].seeds.sources if s.name == "hotpotqa")
    hotpot.splits["test"], hotpot.carve = "test", {"validation": 0.02}
    assert chain_errors(chain) == ["data: hotpotqa: splits.test: the Hub has no 'test' split for hotpotqa "
                                   "(it has: train, dev; carve test from one of those)"]


def test_set_overrides_step_into_lists_and_refuse_a_bad_index(tmp_path):
    from seekhelp.config import RecipeError
    from seekhelp.evaluation import recipe as recipes

    r = recipes.load("evals/long.yaml", ["endpoints.1.top_k=5", "runtime.n_max=2"])
    assert r.endpoints[1].top_k == 5 and r.runtime.n_max == 2
    with pytest.raises(RecipeError, match="'9' is not an index of a 2-item list"):
        recipes.load("evals/long.yaml", ["endpoints.9.top_k=5"])
