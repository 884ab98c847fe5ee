"""Models read over several training seeds on validation, and arms compared pooled over those seeds.

Shared by `sft.seeds` (SFT recipes × seeds) and `rl.seeds` (the RL loop and its control × rollout seeds). A model
is keyed by (arm, seed); one eval reads every distinct model folder with `dynamic`, guard off (a folder two keys
share, such as the SFT start of every RL seed, runs once). The summary has, per arm and seed, EM and the decision
rates; per arm the mean over seeds; and every arm against the first, pooled: per question the difference averaged
over the seeds, with a bootstrap interval that resamples questions (all seeds of a question move together). The
interval is over questions; seeds are few, so the per-seed rows say how far one seed can move.
"""

from pathlib import Path

import yaml

RATES = {  # name → (question kinds it is read on, whether the rate counts asking or answering alone)
    "self-contained alone %": ({"self_contained"}, False),
    "needs a fact asked %": (None, True),  # every kind but self_contained
    "other-fact asked %": ({"other_fact"}, True),
}


def eval_recipe(path: str, name: str, models: dict) -> dict:
    """The validation recipe with one `dynamic` run (guard off) per distinct model folder and nothing else."""
    recipe = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    recipe["name"] = name
    labels: dict[str, list[str]] = {}
    for (arm, seed), folder in models.items():
        labels.setdefault(str(folder), []).append(f"{arm} seed {seed}")
    recipe["runs"] = [{"name": f"dynamic ({', '.join(keys)})", "strategy": "dynamic", "slm": folder, "guard": "off"}
                      for folder, keys in labels.items()]
    recipe["transfer"], recipe["paired"] = [], []
    return recipe


def outcomes(store_path: str, eval_id: str, models: dict) -> dict:
    """{(arm, seed): {question_id: (kind, em, asked)}} from the eval's trajectories."""
    from seekhelp.metrics import exact_match
    from seekhelp.store import Store

    by_slm: dict[str, list] = {}
    for key, folder in models.items():
        by_slm.setdefault(str(folder), []).append(key)
    out: dict = {key: {} for key in models}
    with Store(store_path, read_only=True) as store:
        rows = store.sql("SELECT t.slm, t.question_id, t.final_answer, t.n_llm_calls, q.answers, "
                         "json_extract_string(q.meta, '$.kind') AS kind FROM trajectories t "
                         "JOIN questions q ON q.id = t.question_id WHERE t.strategy = 'dynamic' AND t.id IN "
                         "(SELECT unnest(trajectory_ids) FROM eval_runs_done WHERE eval_id = ?) "
                         "ORDER BY t.sample_index", [eval_id]).to_dicts()
    for r in rows:
        for key in by_slm.get(r["slm"], []):
            if r["question_id"] not in out[key]:
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


def markdown(summary: dict, seeds: list[int], title: str = "SFT") -> str:
    cols = ["EM %", *RATES]
    fmt = lambda v: "" if v is None else f"{v:.1f}"  # noqa: E731
    lines = [f"## {title} over seeds {', '.join(map(str, seeds))} (validation, `dynamic`, guard off)", "",
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


def read(eval_path: str, name: str, models: dict, arms: list[str], seeds: list[int], title: str) -> Path:
    """Write the eval recipe for these models, run it once, and write `<reports_dir>/<name>/seeds.md` (+ .json)."""
    import json

    from seekhelp.evaluation import recipe as recipes
    from seekhelp.evaluation.harness import run_eval

    base = yaml.safe_load(Path(eval_path).read_text(encoding="utf-8"))
    report_dir = Path(base.get("reports_dir", "data/reports")) / name
    report_dir.mkdir(parents=True, exist_ok=True)
    (report_dir / "eval.yaml").write_text(yaml.safe_dump(eval_recipe(eval_path, name, models), sort_keys=False),
                                          encoding="utf-8")
    recipe = recipes.load(report_dir / "eval.yaml")
    run_eval(recipe)
    summary = summarize(outcomes(recipe.store, recipe.eval_id, models), arms, seeds)
    text = markdown(summary, seeds, title)
    (report_dir / "seeds.md").write_text(text, encoding="utf-8")
    (report_dir / "seeds.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(text)
    return report_dir / "seeds.md"
