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
is missing), then one eval (`--eval`, evals/validation.yaml by default) reads every model with `dynamic`, guard off.
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
from sft import SFTInputError

log = logging.getLogger("sft.seeds")

RATES = {  # name → (question kinds it is read on, whether the rate counts asking or answering alone)
    "self-contained alone %": ({"self_contained"}, False),
    "needs a fact asked %": (None, True),  # every kind but self_contained
    "other-fact asked %": ({"other_fact"}, True),
}


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


def eval_recipe(path: str, name: str, models: dict) -> dict:
    """The validation recipe with one `dynamic` run (guard off) per model and nothing else."""
    recipe = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    recipe["name"] = name
    recipe["runs"] = [{"name": f"dynamic ({arm} seed {seed})", "strategy": "dynamic", "slm": str(folder),
                       "guard": "off"} for (arm, seed), folder in models.items()]
    recipe["transfer"], recipe["paired"] = [], []
    return recipe


def outcomes(store_path: str, eval_id: str, models: dict) -> dict:
    """{(arm, seed): {question_id: (kind, em, asked)}} from the eval's trajectories."""
    from seekhelp.metrics import exact_match
    from seekhelp.store import Store

    by_slm = {str(folder): key for key, folder in models.items()}
    out: dict = {key: {} for key in models}
    with Store(store_path, read_only=True) as store:
        rows = store.sql("SELECT t.slm, t.question_id, t.final_answer, t.n_llm_calls, q.answers, "
                         "json_extract_string(q.meta, '$.kind') AS kind FROM trajectories t "
                         "JOIN questions q ON q.id = t.question_id WHERE t.run_id = ? AND t.strategy = 'dynamic' "
                         "ORDER BY t.sample_index", [eval_id]).to_dicts()
    for r in rows:
        key = by_slm.get(r["slm"])
        if key is not None and r["question_id"] not in out[key]:
            out[key][r["question_id"]] = (r["kind"] or "", exact_match(r["final_answer"], r["answers"]),
                                          (r["n_llm_calls"] or 0) > 0)
    return out


def _value(rate: str | None, kind: str, em: float, asked: bool) -> float | None:
    """One question's contribution to a column (EM, or a decision rate on the kinds it is read on)."""
    if rate is None:
        return 100.0 * em
    kinds, counts_asking = RATES[rate]
    if (kind == "self_contained") if kinds is None else (kind not in kinds):
        return None
    return 100.0 * (asked if counts_asking else not asked)


def summarize(results: dict, arms: list[str], seeds: list[int]) -> dict:
    """Per arm × seed and per arm (mean over seeds) every column; every arm against the first, pooled."""
    from seekhelp.metrics import bootstrap_ci

    columns = {"EM %": None, **{r: r for r in RATES}}

    def mean(key, rate):
        vals = [v for q in results[key].values() if (v := _value(rate, *q)) is not None]
        return (sum(vals) / len(vals), len(vals)) if vals else (None, 0)

    rows = []
    for arm in arms:
        for seed in seeds:
            rows.append({"arm": arm, "seed": seed, "n": len(results[(arm, seed)]),
                         **{c: mean((arm, seed), r)[0] for c, r in columns.items()}})
        per = [r for r in rows if r["arm"] == arm and r["seed"] != "mean"]
        rows.append({"arm": arm, "seed": "mean", "n": per[0]["n"] if per else 0,
                     **{c: _avg([r[c] for r in per]) for c in columns}})
    pooled = []
    for arm in arms[1:]:
        for c, rate in columns.items():
            diffs = []
            for qid in set.intersection(*(set(results[(a, s)]) for a in (arms[0], arm) for s in seeds)):
                d = [_value(rate, *results[(arm, s)][qid]) for s in seeds]
                b = [_value(rate, *results[(arms[0], s)][qid]) for s in seeds]
                if d[0] is not None:
                    diffs.append(sum(x - y for x, y in zip(d, b, strict=True)) / len(seeds))
            ci = bootstrap_ci(diffs)
            pooled.append({"arm": arm, "against": arms[0], "column": c, "n": len(diffs),
                           "diff": _avg(diffs), "ci": list(ci) if ci else None})
    return {"rows": rows, "pooled": pooled}


def _avg(values) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def markdown(summary: dict, seeds: list[int]) -> str:
    cols = ["EM %", *RATES]
    fmt = lambda v: "" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [f"## SFT over seeds {', '.join(map(str, seeds))} (validation, `dynamic`, guard off)", "",
             "| arm | seed | n | " + " | ".join(cols) + " |", "|" + "---|" * (len(cols) + 3)]
    for r in summary["rows"]:
        lines.append(f"| {r['arm']} | {r['seed']} | {r['n']} | " + " | ".join(fmt(r[c]) for c in cols) + " |")
    if summary["pooled"]:
        lines += ["", "Pooled over the seeds, question by question (95% bootstrap interval over questions):", "",
                  "| arm − first arm | column | questions | difference [95% CI] |", "|---|---|---|---|"]
        for p in summary["pooled"]:
            ci = "" if p["ci"] is None else f" [{p['ci'][0]:+.1f}, {p['ci'][1]:+.1f}]"
            diff = "" if p["diff"] is None else f"{p['diff']:+.1f}"
            lines.append(f"| {p['arm']} − {p['against']} | {p['column']} | {p['n']} | {diff}{ci} |")
    return "\n".join(lines) + "\n"


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
    import json

    from seekhelp.evaluation import recipe as recipes

    base = yaml.safe_load(Path(args.eval).read_text(encoding="utf-8"))  # fail on a bad eval recipe before training
    if not isinstance(base, dict):
        raise SFTInputError(f"{args.eval}: an eval recipe is a YAML mapping")
    models = train_missing(arms, args.seeds, Path(args.models_dir))
    report_dir = Path(base.get("reports_dir", "data/reports")) / args.name
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "eval.yaml").write_text(yaml.safe_dump(eval_recipe(args.eval, args.name, models), sort_keys=False),
                                          encoding="utf-8")
    recipe = recipes.load(report_dir / "eval.yaml")
    from seekhelp.evaluation.harness import run_eval

    run_eval(recipe)
    summary = summarize(outcomes(recipe.store, recipe.eval_id, models), [a[0] for a in arms], args.seeds)
    text = markdown(summary, args.seeds)
    (report_dir / "seeds.md").write_text(text, encoding="utf-8")
    (report_dir / "seeds.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(text)
    print(f"report: {report_dir / 'seeds.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
