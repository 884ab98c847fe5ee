"""Read SFT recipes over several training seeds on validation, and compare them pooled over those seeds.

    python -m sft.seeds --arm base=sft/recipes/smollm2-135m/demo.yaml --seeds 42 43 44
    python -m sft.seeds --arm fp32=sft/recipes/smollm2-135m/demo.yaml \
                        --arm bf16="sft/recipes/smollm2-135m/demo.yaml --bf16 true" --seeds 42 43 44
    make sft-seeds SFT_ARMS='base=sft/recipes/smollm2-135m/demo.yaml' SEEDS='42 43 44'

Why: on the demo's 240 training dialogues, two SFT seeds of one recipe moved the self-contained answered-alone rate
by 37 points on validation, more than any data change did. A decision argued from one seed per arm is argued from
noise, so a recipe or data change is read here over N seeds per arm, on the same validation questions.

An arm is a name, an SFT recipe and extra `sft.train` flags. Each arm × seed trains into
`<models_dir>/<arm>/seed-<seed>` (a folder that already holds `train_metrics.json` is kept: a rerun trains only what
is missing), then one eval (`--eval`, evals/validation.yaml by default) reads every model with `dynamic`, guard off
(a model an earlier read evaluated with the same settings is not run again: seekhelp.evaluation.reuse).
Printed and written to `<reports_dir>/<name>/seeds.md` (+ seeds.json): per arm and seed, EM, self-contained answered
alone, questions that need a fact asked, other-fact asked; per arm the mean over seeds; and every arm against the
first, pooled: per question the difference averaged over the seeds, with a bootstrap interval that resamples
questions (all seeds of a question move together). The interval is over questions; seeds are few, so the per-seed
rows say how far one seed can move.
"""

import argparse
import logging
import shlex
import subprocess
import sys
from pathlib import Path

import yaml

from seekhelp.errors import entry_point
from seekhelp.evaluation.over_seeds import read, summarize  # noqa: F401  (summarize: re-exported)
from sft import SFTInputError

log = logging.getLogger("sft.seeds")


def parse_arm(text: str) -> tuple[str, str, list[str]]:
    """'name=recipe.yaml [--flag value ...]' → (name, recipe, flags)."""
    name, sep, rest = text.partition("=")
    parts = shlex.split(rest)
    if not sep or not name.strip() or not parts:
        raise SFTInputError(f"--arm {text!r}: expected NAME=RECIPE [sft.train flags], e.g. base=sft/recipes/x.yaml")
    if not Path(parts[0]).is_file():
        raise SFTInputError(f"--arm {name}: no recipe at {parts[0]}")
    if "--seed" in parts or "--output_dir" in parts:
        raise SFTInputError(f"--arm {name}: --seed and --output_dir are set per seed by sft.seeds")
    return name.strip(), parts[0], parts[1:]


def train_missing(arms: list[tuple[str, str, list[str]]], seeds: list[int], models_dir: Path) -> dict:
    """Train every arm × seed whose folder has no train_metrics.json; {(arm, seed): folder}."""
    out = {}
    for name, recipe, flags in arms:
        for seed in seeds:
            folder = models_dir / name / f"seed-{seed}"
            out[(name, seed)] = folder
            if (folder / "train_metrics.json").exists():
                log.info("%s seed %d: kept %s", name, seed, folder)
                continue
            cmd = [sys.executable, "-m", "sft.train", "--config", recipe, *flags, "--seed", str(seed),
                   "--output_dir", str(folder)]
            log.info("%s seed %d: %s", name, seed, shlex.join(cmd))
            if subprocess.run(cmd).returncode != 0:
                raise SFTInputError(f"{name} seed {seed}: sft.train failed (the folders finished so far are kept)")
    return out


@entry_point
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m sft.seeds", description=__doc__.splitlines()[0])
    ap.add_argument("--arm", action="append", required=True, metavar="NAME=RECIPE [FLAGS]",
                    help="an SFT recipe and extra sft.train flags; the other arms are read against the first")
    ap.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    ap.add_argument("--eval", default="evals/validation.yaml", help="eval recipe whose datasets and slices are read")
    ap.add_argument("--models_dir", default="data/models/sft/seeds")
    ap.add_argument("--name", default="sft-seeds", help="report folder name (under the eval recipe's reports_dir)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    arms = [parse_arm(a) for a in args.arm]
    if len({a[0] for a in arms}) != len(arms):
        raise SFTInputError("--arm: two arms share a name")
    base = yaml.safe_load(Path(args.eval).read_text(encoding="utf-8"))  # fail on a bad eval recipe before training
    if not isinstance(base, dict):
        raise SFTInputError(f"{args.eval}: an eval recipe is a YAML mapping")
    models = train_missing(arms, args.seeds, Path(args.models_dir))
    report = read(args.eval, args.name, models, [a[0] for a in arms], args.seeds, "SFT")
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
