"""report.md (setup, results, transfer, RL rounds) and its PNG plots, from metrics rows.

Rows are the dicts the harness writes to `eval_metrics` (run_name, kind, strategy, slm, llm, dataset, n, em, ...);
`setup` carries what the rows cannot (endpoints, embedding model, judge verdicts, skipped runs); every key of it
is optional, so a report can be rebuilt from stored rows alone.
"""

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from seekhelp.evaluation import plots
from seekhelp.evaluation.paired import paired_lines
from seekhelp.evaluation.targets import target_lines

COLUMNS = ("run", "strategy", "SLM", "LLM", "n", "EM % [95% CI]", "EM easy % (n)", "EM hard % (n)",
           "well-formed %", "LLM calls [95% CI]", "calls easy / hard", "INScore [95% CI]",
           "attempted leak % [95% CI]", "sent leak % [95% CI]", "leak % independent judge [95% CI]", "Priv_sim",
           "F_BERT %", "SLM tok/q", "LLM tok/q", "cost $", "wall s")


def _f(v: Any, digits: int = 1) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def _ci_of(r: dict, key: str) -> list[float] | None:
    ci = r.get("ci")
    if isinstance(ci, str):
        ci = json.loads(ci or "{}")
    return (ci or {}).get(key)


def _with_ci(r: dict, key: str, digits: int = 1) -> str:
    """The value with its 95% bootstrap interval: "45.0 [32.1, 58.3]"."""
    ci = _ci_of(r, key)
    if r.get(key) is None:
        return "–"
    return _f(r.get(key), digits) + ("" if ci is None else f" [{_f(ci[0], digits)}, {_f(ci[1], digits)}]")


def _split(r: dict, name: str) -> str:
    n = r.get(f"n_{name}")
    return "–" if not n else f"{_f(r.get(f'em_{name}'), 0)} ({n})"


def _table_row(r: dict) -> str:
    n = max(1, r.get("n") or 1)
    slm_tok = ((r.get("slm_prompt_tokens") or 0) + (r.get("slm_completion_tokens") or 0)) / n
    cost = r.get("cost_usd")
    calls = f"{_f(r.get('calls_easy'), 2)} / {_f(r.get('calls_hard'), 2)}"
    cells = [r["run_name"], r["strategy"], f"`{r.get('slm', '')}`", r.get("llm", ""), r.get("n"),
             _with_ci(r, "em"), _split(r, "easy"), _split(r, "hard"), _f(r.get("format_ok")),
             _with_ci(r, "avg_turns", 2), calls, _with_ci(r, "inscore", 2), _with_ci(r, "priv_sample"),
             _with_ci(r, "priv_sent"), _with_ci(r, "priv_independent"), _f(r.get("priv_sim"), 2), _f(r.get("f_bert")),
             _f(slm_tok, 0),
             _f(plots.llm_tokens_per_q(r), 0), "–" if cost is None else f"{cost:.4f}", _f(r.get("wall_s"))]
    return "| " + " | ".join(str(c) for c in cells) + " |"


def results_table(rows: Sequence[dict]) -> list[str]:
    return ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS), *[_table_row(r) for r in rows]]


SLICE_SEP = " · "  # as the harness names slice rows: "<dataset> · <slice>"
SLICE_COLUMNS = ("run", "slice", "n", "EM % [95% CI]", "LLM calls", "answered alone %", "asked the LLM %",
                 "attempted leak % [95% CI]", "independent judge leak %", "LLM asked back (n)", "EM after <need> %",
                 "follow-up leak %")


def _slice_lines(rows: Sequence[dict]) -> list[str]:
    """One compact table: each protocol run (dynamic, tool_llm) on each slice of the questions."""
    sl = [r for r in rows if SLICE_SEP in r["dataset"] and r["strategy"] in ("dynamic", "tool_llm")]
    if not sl:
        return []
    out = ["", "## By question kind and held-out group", "",
           "The protocol runs on each slice of the test questions (`slices` in the recipe). Held-out slices use "
           "members of one slot family (who, frame, form, register, detail, statement, reference: "
           "`pipelines/families.py`) or a relation training never saw; their drop against the seen ones is the "
           "generalization gap.",
           "", "| " + " | ".join(SLICE_COLUMNS) + " |", "|" + "---|" * len(SLICE_COLUMNS)]
    for r in sl:
        cells = [r["run_name"], r["dataset"].split(SLICE_SEP, 1)[1], r.get("n"), _with_ci(r, "em"),
                 _f(r.get("avg_turns"), 2), _f(r.get("answered_alone")), _f(r.get("llm_called")),
                 _with_ci(r, "priv_sample"), _f(r.get("priv_independent")),
                 r.get("n_need") or 0, _f(r.get("need_em")), _f(r.get("need_followup_leak"))]
        out.append("| " + " | ".join(str(c) for c in cells) + " |")
    return out


def _disagreement_lines(setup: dict) -> list[str]:
    """Where the detector (the table's attempted leak) and the independent judge differ, a few per run."""
    found = {k: v for k, v in (setup.get("leak_disagreements") or {}).items() if v}
    out = ["", "## Leak judges", "",
           "The attempted-leak column is the deterministic detector, which also filters training data and is RL's "
           "privacy reward; the independent judge (`seekhelp/evaluation/independent_leak.py`, evaluation only) "
           "counts a message that carries a word of the privacy items the public question lacks. "
           + ("Where they disagree (first few per run):" if found else
              "They agreed on every request of the runs checked (dynamic, redact_direct, static_rewrite).")]
    for run, items in found.items():
        out += ["", f"**{run}**", ""]
        for d in items:
            words = ", ".join(d["words"]) or "none"
            out.append(f"- detector {'leak' if d['detector'] else 'clean'}, independent "
                       f"{'leak' if d['independent'] else 'clean'} (words: {words}): "
                       f"\"{d['message'].replace('|', '/').replace(chr(10), ' ')}\"")
    return out


def primary_dataset(rows: Sequence[dict]) -> str:
    names = list(dict.fromkeys(r["dataset"] for r in rows if SLICE_SEP not in r["dataset"]))
    return "macro-avg" if "macro-avg" in names else names[0]


def _setup_lines(setup: dict, rows: Sequence[dict]) -> list[str]:
    recipe = setup.get("recipe")
    out = ["## Setup", ""]
    if recipe is not None:
        out.append(f"- Store: `{recipe.store}`; recipe name `{recipe.name}`")
        rt = recipe.runtime
        out.append(f"- Runtime: n_max {rt.n_max}, SLM max new tokens {rt.slm_max_new_tokens}, LLM max new tokens "
                   f"{rt.llm_max_new_tokens}, temperatures SLM {rt.slm_temperature} / LLM {rt.llm_temperature}, "
                   f"default guard `{rt.guard}`")
        guards = {r.name: r.guard for _, r in recipe.all_runs() if r.guard}
        if guards:
            out.append("- Guard overrides: " + ", ".join(f"{k}: `{v}`" for k, v in guards.items()))
    for name, n in (setup.get("datasets") or {}).items():
        spec = next((d for d in recipe.datasets if d.name == name), None) if recipe is not None else None
        how = f" (source={spec.source}, split={spec.split}, limit={spec.limit}" + \
              (f", where `{spec.where}`)" if spec.where else ")") if spec else ""
        out.append(f"- Dataset `{name}`: {n} questions{how}")
    slms = dict.fromkeys(f"`{r['slm']}`" for r in rows if r.get("slm"))
    out.append(f"- SLMs (local transformers, loaded once each): {', '.join(slms) or '–'}")
    for e in setup.get("endpoints") or []:
        out.append(f"- LLM endpoint `{e['name']}`: {e['how']}, recorded as `{e['label']}`, at {e['base_url']}, "
                   f"grounding {'on' if e['ground'] else 'off'}")
    for s in setup.get("skipped") or []:
        out.append(f"- Skipped run **{s['name']}**: no SLM available among {s['slm']} (train it first)")
    by_source: dict[str, list[str]] = {}
    for r in rows:
        by_source.setdefault(r.get("easy_source") or "unknown", [])
        if r["run_name"] not in by_source[r.get("easy_source") or "unknown"]:
            by_source[r.get("easy_source") or "unknown"].append(r["run_name"])
    for src, names in by_source.items():
        out.append(f"- Easy/hard labels (INScore, the easy/hard columns) from **{src}** of each row's own SLM: "
                   f"{', '.join(names)}")
    easy = {(r.get("slm"), r.get("easy_source")): (r["n_easy"], r.get("n")) for r in rows
            if r.get("n_easy") is not None and r["dataset"] == primary_dataset(rows)}
    if easy:
        out.append("- Easy questions: " + "; ".join(f"`{slm}` {k} of {n} ({src})" for (slm, src), (k, n) in
                                                     easy.items())
                   + ". When one class is empty, INScore is the other class's recall alone.")
    out.append(f"- F_BERT and Priv_sim computed by: {setup.get('embedder', 'unknown')}"
               + ("" if setup.get("semantic_embedder", True) else " — FALLBACK, the embedding package is missing"))
    verdicts = setup.get("judge_verdicts")
    if recipe is not None:
        if recipe.judge.llm_judge:
            got = sum(v is not None for v in (verdicts or {}).values())
            out.append(f"- Leaks: LLM judge on `{recipe.judge.endpoint}` for {len(verdicts or {})} samples "
                       f"(limit {recipe.judge.limit}; {got} usable verdicts, the rest failed to parse); the "
                       f"deterministic detector for every other sample; raw-question strategies count as leaking")
        else:
            out.append("- Leaks: LLM judge off; the deterministic detector (the span heuristic plus the label-driven "
                       "name / number / address / health / relation checks) for every sample that tried to send a "
                       "request; raw-question strategies count as leaking")
        if recipe.prices:
            out.append("- Prices (USD per 1M tokens, prompt / completion): " + ", ".join(
                f"`{k}` {v.get('prompt', 0)} / {v.get('completion', 0)}" for k, v in recipe.prices.items())
                       + "; anything unpriced is free")
    if setup.get("eval_id"):
        out.append(f"- eval_id `{setup['eval_id']}` (hash of the recipe; rows in the store table `eval_metrics`)")
    if setup.get("wall_s") is not None:
        out.append(f"- Total wall time {setup['wall_s']:.0f} s (model loading, server start and judging included)")
    return out


def _transfer_lines(rows: Sequence[dict], ds: str) -> list[str]:
    tr = [r for r in rows if r.get("kind") == "transfer" and r["dataset"] == ds]
    if not tr:
        return []
    out = ["", "## Transfer to an unseen LLM", "", *results_table(tr), ""]
    for r in tr:
        base = next((b for b in rows if b.get("kind", "run") == "run" and b["dataset"] == ds
                     and b["strategy"] == r["strategy"] and b.get("slm") == r.get("slm")), None)
        if base is not None:
            out.append(f"- {r['run_name']}: EM {_f(r.get('em'))} vs {_f(base.get('em'))} with `{base.get('llm')}` "
                       f"({base['run_name']}); turns {_f(r.get('avg_turns'), 2)} vs {_f(base.get('avg_turns'), 2)}")
    return out


def _calls_alone(r: dict) -> str:
    """Mean LLM calls on the self-contained validation questions of an RL round, with their count."""
    v = r.get("calls_self_contained")
    return "–" if v is None else f"{_f(v, 2)} ({r.get('n_self_contained')})"


def _trained_on(r: dict) -> str:
    if not r.get("round"):
        return "–"
    return f"{r.get('n_selected') or 0} / {r.get('n_fallback') or 0}"


def write_report(out_dir: str | Path, rows: Sequence[dict], setup: dict | None = None,
                 rl_rounds: Sequence[dict] | None = None) -> Path:
    """Write report.md and the PNGs into out_dir; returns the report path."""
    setup = setup or {}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = list(rows)
    if not rows:
        raise ValueError("no metrics rows to report")
    ds = primary_dataset(rows)
    main_rows = [r for r in rows if r["dataset"] == ds]
    title = setup.get("title") or (setup["recipe"].name if setup.get("recipe") is not None else "eval")
    lines = [f"# Evaluation report: {title}", "", f"Written {time.strftime('%Y-%m-%d %H:%M:%S')}.", ""]
    if inc := setup.get("incomplete"):
        lines += [f"> **Incomplete.** Run **{inc['failed_run']}** failed ({inc['error']}); {inc['finished']} of "
                  f"{inc['planned']} runs finished and only they are reported below. Rerunning the same recipe "
                  "reuses the finished runs and runs the rest.", ""]
    lines += [*_setup_lines(setup, rows), ""]
    for name in dict.fromkeys(r["dataset"] for r in rows if SLICE_SEP not in r["dataset"]):
        runs = [r for r in rows if r["dataset"] == name and r.get("kind", "run") == "run"]
        if runs:
            lines += [f"## Results: {name}", "", *results_table(runs), ""]
    lines += _transfer_lines(rows, ds)
    lines += target_lines(rows, ds)
    lines += _slice_lines(rows)
    lines += paired_lines(setup.get("paired") or [])
    if "leak_disagreements" in setup:
        lines += _disagreement_lines(setup)
    figures = [("EM vs LLM tokens per question", plots.em_vs_tokens(
        main_rows, out_dir / "em_vs_llm_tokens.png", f"EM vs LLM tokens ({ds})")),
        ("Attempted leak % per run", plots.bars(main_rows, "priv_sample", out_dir / "priv_sample.png",
                                                "attempted leak % (the policy tried to send a leak)",
                                                f"Privacy ({ds})")),
        ("LLM turns per run", plots.bars(main_rows, "avg_turns", out_dir / "turns.png",
                                         "average LLM calls per question", f"Turns ({ds})", "{:.2f}"))]
    if rl_rounds:
        lines += ["", "## RL rounds", "", "Validation split. A run ending in /control is the control arm: SFT "
                  "continued on teacher dialogues of the same questions, as many as the RL round trained on. Trained "
                  "on: the round's own rollouts picked / teacher fallbacks.", "",
                  "| run | round | split | mean reward | EM | turns | leak rate | valid | "
                  "LLM calls self-contained (n) | EM self-contained | EM needs a fact | "
                  "trained on (picked / teacher) |",
                  "|" + "---|" * 12]
        lines += [f"| {r.get('run', '')} | {r['round']} | {r.get('split', '')} | {_f(r.get('mean_reward'), 3)} | "
                  f"{_f(r.get('em'), 3)} | {_f(r.get('turns'), 2)} | {_f(r.get('leak_rate'), 3)} | "
                  f"{_f(r.get('valid_rate'), 3)} | {_calls_alone(r)} | {_f(r.get('em_self_contained'), 3)} | "
                  f"{_f(r.get('em_needs_fact'), 3)} | {_trained_on(r)} |" for r in rl_rounds]
        figures.append(("RL rounds: mean reward and EM", plots.rl_curve(rl_rounds, out_dir / "rl_rounds.png")))
    lines += ["", "## Plots", ""]
    lines += [f"### {caption}\n\n![{caption}]({path.name})\n" for caption, path in figures if path is not None]
    lines += ["## How to read the numbers", "",
              "- EM / F1: SQuAD-normalised exact match and token F1 against any gold alias (percent).",
              "- F_BERT: best BERTScore-style F1 of the answer against a gold alias (percent; see the model above).",
              "- well-formed: percent of dialogues that end in an answer with every SLM turn valid under the "
              "protocol (the parser's verdict; what SFT must teach).",
              "- turns: LLM calls per question (a direct LLM answer counts 1; the SLM alone counts 0).",
              "- INScore: (Recall_easy + Recall_hard) / 2; always-ask and never-ask both score 0.5.",
              "- answered alone %: questions the SLM answered in a well-formed episode without any request; asked the "
              "LLM %: questions with at least one LLM call (a request the guard stopped counts as neither).",
              "- attempted leak %: the paper's Priv_sample, on what the policy TRIED to send (before the guard): "
              "the policy's own privacy. sent leak %: the same on what left the device (after the guard); the gap "
              "between the two is the guard's effect.",
              "- [95% CI]: percentile bootstrap over questions (2,000 resamples, fixed seed); n is the number of "
              "questions. Easy = the row's own SLM alone (its slm_cot run) answers correctly; easy/hard EM and "
              "LLM calls are given separately.",
              "- Priv_sim: mean over samples that sent requests of the highest BERTScore between a request and a "
              "privacy item (0..1, lower is better).",
              "- tok/q: prompt + completion tokens per question by role; cost from the price table; wall = the "
              "strategy's own time (apportioned by questions when a run covers several datasets).", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
