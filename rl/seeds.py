"""Read the RL loop against its control over several rollout seeds on validation, pooled over those seeds.

    python -m rl.seeds --config rl/recipes/smollm2-135m/demo.yaml --seeds 1 2 3
    make rl-seeds RL_SEEDS='1 2 3'

Why: with the SFT start and the control fixed, one RL run differs from the next only by its rollout draw, and two
draws of the demo gave RL − control +3.1 and +12.5 EM on test. Whether RL earns its place is a question over draws,
so it is read here over N seeds, on validation, the way `sft.seeds` reads SFT recipes.

Each seed runs `python -m rl.loop --config C --set seed=S --set output_dir=<runs_dir>/seed-S` (rollouts sample with
seed S + 1000 r; RL's and the control's retrains take `--seed S`; a finished seed is skipped by the loop's own
resume), then one eval (`--eval`, evals/validation.yaml by default) reads each seed's RL final and control final
with `dynamic`, guard off, and the SFT start once (a model an earlier eval read with the same settings is not
run again: seekhelp.evaluation.reuse). Written to `<reports_dir>/<name>/seeds.md` (+ seeds.json): per arm
and seed, EM and the decision rates; RL and SFT against the control, pooled over the seeds question by question.
The RL loop keeps its best round on its own `validation_questions` (the first of the split), so those questions
are in the read too: RL is favoured on them, and the report's question count says how many the read has.
"""

import argparse
import logging
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from seekhelp.config import RecipeError, load_recipe
from seekhelp.errors import entry_point

log = logging.getLogger("rl.seeds")


def run_seeds(config: str, sets: list[str], seeds: list[int], runs_dir: Path) -> dict:
    """rl.loop once per seed (each in its own process; a finished one resumes to nothing); {(arm, seed): model}."""
    from rl.loop import RLRecipe
    from seekhelp.evaluation.endpoints import resolve_slm

    models = {}
    for seed in seeds:
        out = runs_dir / f"seed-{seed}"
        cmd = [sys.executable, "-m", "rl.loop", "--config", config, *(f"--set={s}" for s in sets),
               f"--set=seed={seed}", f"--set=output_dir={out}"]
        log.info("seed %d: %s", seed, shlex.join(cmd))
        if subprocess.run(cmd).returncode != 0:
            raise RecipeError(f"seed {seed}: rl.loop failed (finished rounds and seeds are kept; rerun to resume)")
        recipe = load_recipe(RLRecipe, config, [*sets, f"seed={seed}", f"output_dir={out}"])
        for arm, final in (("control", out / "control" / "final"), ("rl", out / "final"),
                           ("sft", Path(recipe.init_model))):
            models[(arm, seed)] = resolve_slm(str(final))  # the kept round's folder: a kept round 0 is the SFT start
            if models[(arm, seed)] is None:
                raise RecipeError(f"seed {seed}: no model at {final}")
    return models


@entry_point
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m rl.seeds", description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="rl/recipes/smollm2-135m/demo.yaml", help="the RL recipe")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="RL recipe overrides")
    ap.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    ap.add_argument("--eval", default="evals/validation.yaml", help="eval recipe whose datasets and slices are read")
    ap.add_argument("--runs_dir", default="data/models/rl/seeds", help="seed S runs into <runs_dir>/seed-S")
    ap.add_argument("--name", default="rl-seeds", help="report folder name (under the eval recipe's reports_dir)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from rl.loop import RLRecipe

    recipe = load_recipe(RLRecipe, args.config, args.set)  # a bad recipe or eval recipe fails before any rollout
    if not recipe.control:
        raise RecipeError("control: false — rl.seeds reads RL against its control; set control=true")
    if any(s.partition("=")[0].strip() in ("seed", "output_dir") for s in args.set):
        raise RecipeError("--set seed / output_dir: rl.seeds sets them per seed (--seeds, --runs_dir)")
    if len(set(args.seeds)) != len(args.seeds) or 0 in args.seeds:
        raise RecipeError("--seeds: distinct nonzero seeds (seed 0 is the plain `make rl` run)")
    if not isinstance(yaml.safe_load(Path(args.eval).read_text(encoding="utf-8")), dict):
        raise RecipeError(f"{args.eval}: an eval recipe is a YAML mapping")
    models = run_seeds(args.config, args.set, args.seeds, Path(args.runs_dir))
    from seekhelp.evaluation.over_seeds import read

    report = read(args.eval, args.name, models, ["control", "rl", "sft"], args.seeds, "RL and its control")
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
