"""Run an eval recipe: every run's strategy over the datasets' questions, stored, judged, measured, reported.

Each SLM is loaded once (TransformersBackend) and released after its last run; each endpoint is started once and
shared (the embedded `transformers serve`, or the kb-retriever: a real local OpenAI-compatible HTTP server whose
replies are knowledge-base retrieval). All questions of a run go through ONE run_strategy call (the runtime
batches the SLM and overlaps the LLM calls), inside one event loop for the whole eval.
"""

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from seekhelp.config import RecipeError, to_dict
from seekhelp.evaluation import aggregate
from seekhelp.evaluation.endpoints import Endpoints, NoLLM, SLMs, kb_reply, resolve_slm  # noqa: F401 (re-exported)
from seekhelp.evaluation.recipe import EvalRecipe, RunSpec
from seekhelp.records import Question, Trajectory

log = logging.getLogger("seekhelp.eval")

EVAL_METRICS_DDL = """
CREATE TABLE IF NOT EXISTS eval_metrics (
    eval_id VARCHAR, run_name VARCHAR, kind VARCHAR, strategy VARCHAR, slm VARCHAR, llm VARCHAR, dataset VARCHAR,
    n INTEGER, em DOUBLE, f1 DOUBLE, f_bert DOUBLE, avg_turns DOUBLE, inscore DOUBLE, recall_easy DOUBLE,
    recall_hard DOUBLE, priv_sim DOUBLE, priv_sample DOUBLE, slm_prompt_tokens BIGINT, slm_completion_tokens BIGINT,
    llm_prompt_tokens BIGINT, llm_completion_tokens BIGINT, cost_usd DOUBLE, wall_s DOUBLE, easy_source VARCHAR,
    created_at TIMESTAMP, format_ok DOUBLE, PRIMARY KEY (eval_id, run_name, dataset));
"""
# columns added after the first layout (older stores get them on the next eval)
_ADDED = {"format_ok": "DOUBLE", "priv_sent": "DOUBLE", "n_easy": "INTEGER", "n_hard": "INTEGER",
          "em_easy": "DOUBLE", "em_hard": "DOUBLE", "calls_easy": "DOUBLE", "calls_hard": "DOUBLE", "ci": "VARCHAR",
          "n_need": "INTEGER", "need_pct": "DOUBLE", "need_em": "DOUBLE", "need_followup_leak": "DOUBLE",
          "answered_alone": "DOUBLE", "llm_called": "DOUBLE"}
EVAL_METRICS_DDL += "".join(f"ALTER TABLE eval_metrics ADD COLUMN IF NOT EXISTS {k} {v};\n" for k, v in _ADDED.items())
METRIC_COLUMNS = ["eval_id", "run_name", "kind", "strategy", "slm", "llm", "dataset", "n", "em", "f1", "f_bert",
                  "avg_turns", "inscore", "recall_easy", "recall_hard", "priv_sim", "priv_sample", "slm_prompt_tokens",
                  "slm_completion_tokens", "llm_prompt_tokens", "llm_completion_tokens", "cost_usd", "wall_s",
                  "easy_source", *_ADDED]


def load_datasets(store, recipe: EvalRecipe) -> dict[str, list[Question]]:
    out = {}
    for d in recipe.datasets:
        where, params = ["TRUE"], {}
        if d.source is not None:
            where.append("source = $source")
            params["source"] = d.source
        if d.split is not None:
            where.append("split = $split")
            params["split"] = d.split
        if d.where:
            where.append(f"({d.where})")
        caps = [x for x in (d.limit, recipe.limit) if x]
        limit = f" LIMIT {int(min(caps))}" if caps else ""
        try:
            rows = store.sql(f"SELECT * FROM questions WHERE {' AND '.join(where)} ORDER BY id{limit}",
                             params or None).to_dicts()
        except Exception as e:  # a bad `where` predicate
            raise RecipeError(f"datasets.{d.name}: the question query failed ({str(e).splitlines()[0]})") from e
        if not rows:
            raise RecipeError(f"datasets.{d.name}: no question in {recipe.store} matches "
                              f"(source={d.source}, split={d.split}); run `make data` first?")
        out[d.name] = [Question.from_dict({**r, "meta": json.loads(r["meta"] or "{}")}) for r in rows]
    return out


SLICE_SEP = " · "  # a slice row's dataset name: "<dataset> · <slice>"


def slice_ids(store, recipe: EvalRecipe, questions: dict[str, Question]) -> dict[str, set[str]]:
    """The question ids of each recipe slice, among the eval's questions."""
    out = {}
    for sl in recipe.slices:
        try:
            got = store.sql(f"SELECT id FROM questions WHERE ({sl.where})")["id"].to_list()
        except Exception as e:
            raise RecipeError(f"slices.{sl.name}: the query failed ({str(e).splitlines()[0]})") from e
        out[sl.name] = set(got) & set(questions)
    return out


def store_run(store, trajs: list[Trajectory], questions: dict[str, Question], run_id: str) -> None:
    """Replace earlier copies of these trajectories (a rerun) with the new ones and their deterministic verdicts."""
    from seekhelp.judging import deterministic_judgments

    ids = pa.table({"id": pa.array([t.id for t in trajs], pa.string())})
    with store.transaction() as con:
        con.register("eval_ids", ids)
        try:
            for table, col in (("judgments", "trajectory_id"), ("turns", "trajectory_id"), ("trajectories", "id")):
                con.execute(f"DELETE FROM {table} WHERE {col} IN (SELECT id FROM eval_ids)")
        finally:
            con.unregister("eval_ids")
        store.add_trajectories(trajs, run_id)
        store.add_judgments([j for t in trajs for j in deterministic_judgments(questions[t.question_id], t)], run_id)


async def llm_judge(store, recipe: EvalRecipe, endpoints: Endpoints, results, questions, run_id) -> dict:
    """LLM verdicts for up to judge.limit samples that sent requests (taken round-robin over runs)."""
    from seekhelp.backends.base import GenParams
    from seekhelp.leak_judge import JUDGE_SCHEMA, judge_leaks

    spec = recipe.judge
    queues = [[t for t in trajs if t.attempted and not t.raw_question_sent and questions[t.question_id].privacy_items]
              for _, _, _, trajs, _ in results]
    todo: list[Trajectory] = []
    while any(queues) and (spec.limit is None or len(todo) < spec.limit):
        for q in queues:
            if q and (spec.limit is None or len(todo) < spec.limit):
                todo.append(q.pop(0))
    if not todo:
        return {}
    e = recipe.endpoint(spec.endpoint)  # `transformers serve` refuses response_format: schema for external URLs only
    structured = spec.structured and e.kind == "openai" and bool(e.base_url)
    params = GenParams(max_new_tokens=spec.max_new_tokens, temperature=0.0,
                       json_schema=JUDGE_SCHEMA if structured else None)
    verdicts = await judge_leaks(endpoints.backend(spec.endpoint),
                                 [(t.attempted, questions[t.question_id].privacy_items) for t in todo], params)
    store.add_judgments([{"trajectory_id": t.id, "judge": "leak_judge",
                          "value": None if v.leak is None else float(v.leak),
                          "label": "error" if v.leak is None else ("leak" if v.leak else "clean"),
                          "details": json.dumps({"items": v.leaked_items, "reason": v.reason[:500], "error": v.error})}
                         for t, v in zip(todo, verdicts, strict=True)], run_id)
    return {t.id: v.leak for t, v in zip(todo, verdicts, strict=True)}


def with_easy_probes(plan: list[tuple[str, RunSpec, str]]) -> list[tuple[str, RunSpec, str]]:
    """The plan with an slm_cot run for every SLM that has none, placed before that SLM's first run.

    "Easy" is the paper's definition, the SLM alone answers correctly, measured per SLM: every row of the report
    (base, SFT, RL, baselines) takes its easy/hard labels from the slm_cot run of its own SLM."""
    have = {slm for _, run, slm in plan if run.strategy == "slm_cot"}
    out = []
    for kind, run, slm in plan:
        if slm not in have:
            have.add(slm)
            tag = run.name.rsplit("(", 1)[1].rstrip(")") if run.name.endswith(")") and "(" in run.name \
                else Path(slm).name
            out.append(("run", RunSpec(name=f"slm_cot ({tag})", strategy="slm_cot", slm=slm, llm=run.llm), slm))
        out.append((kind, run, slm))
    return out


def stored_easy(store, slm: str) -> dict[str, bool]:
    rows = store.sql("SELECT question_id, bool_or(is_easy) AS e FROM easy WHERE slm IN ($a, $b) GROUP BY 1",
                     {"a": slm, "b": Path(slm).name}).to_dicts()
    return {r["question_id"]: bool(r["e"]) for r in rows}


async def _run_all(recipe, store, endpoints, slms, plan, questions, run_id, progress):
    results = []
    with progress:
        task = progress.add_task("eval", total=len(plan))
        for kind, run, slm in plan:
            progress.update(task, description=f"{run.name} ({len(questions)} q)")
            e = recipe.endpoint(run.llm)
            llm = NoLLM() if run.strategy == "slm_cot" else endpoints.backend(run.llm)
            from seekhelp.strategies import StrategyContext, run_strategy

            ctx = StrategyContext(slm=slms.get(slm), llm=llm, grounder=endpoints.grounder(e),
                                  config=replace(recipe.runtime, guard=run.guard or recipe.runtime.guard,
                                                 run_tag=run.name),  # two runs never share trajectory ids
                                  cascade_threshold=run.cascade_threshold)
            t0 = time.perf_counter()
            trajs = await run_strategy(run.strategy, ctx, list(questions.values()))
            wall = time.perf_counter() - t0
            slms.done(slm)
            for t in trajs:
                t.strategy = run.strategy
            store_run(store, trajs, questions, run_id)
            em = sum(aggregate.metrics.exact_match(t.final_answer, questions[t.question_id].answers) for t in trajs)
            log.info("%s: EM %d/%d, %d LLM calls, %.1f s", run.name, em, len(trajs),
                     sum(t.n_llm_calls for t in trajs), wall)
            results.append((kind, run, slm, trajs, wall))
            progress.advance(task)
        judge = {}
        if recipe.judge.llm_judge:
            progress.update(task, description=f"LLM judge (up to {recipe.judge.limit} calls)")
            judge = await llm_judge(store, recipe, endpoints, results, questions, run_id)
    await endpoints.aclose()
    return results, judge


def _progress(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    disable=not enabled, transient=False)


def run_eval(recipe: EvalRecipe) -> dict[str, Any]:
    from seekhelp.evaluation.embeddings import load_embedder
    from seekhelp.evaluation.report import write_report
    from seekhelp.store import Store, StoreError

    t_start = time.perf_counter()
    if not Path(recipe.store).exists():
        raise StoreError(f"{recipe.store}: no such store (run `make data` first)")
    eval_id = recipe.eval_id
    plan, skipped = [], []
    for kind, run in recipe.all_runs():
        slm = resolve_slm(run.slm)
        if slm is None:
            log.warning("skipping %s: no SLM available among %s", run.name, run.slm)
            skipped.append({"name": run.name, "slm": run.slm})
        else:
            plan.append((kind, run, slm))
    plan = with_easy_probes(plan)
    with Store(recipe.store) as store, contextlib.ExitStack() as stack:
        store.execute(EVAL_METRICS_DDL)
        datasets = load_datasets(store, recipe)
        questions = {q.id: q for qs in datasets.values() for q in qs}
        run_id = store.start_run("eval", to_dict(recipe), models={"runs": {r.name: s for _, r, s in plan}},
                                 run_id=eval_id)
        slms = SLMs(plan, recipe.slm_batch_size)
        endpoints = Endpoints(recipe, stack, slms)
        results, judge = asyncio.run(_run_all(recipe, store, endpoints, slms, plan, questions, run_id,
                                              _progress(recipe.progress)))
        embedder = load_embedder(recipe.bertscore.model, recipe.bertscore.batch_size, recipe.bertscore.max_length)
        slices = slice_ids(store, recipe, questions)
        solo = {}
        for _, run, slm, trajs, _ in results:
            if run.strategy == "slm_cot":
                solo.setdefault(slm, {t.question_id: aggregate.metrics.exact_match(t.final_answer, questions[
                    t.question_id].answers) > 0 for t in trajs})
        rows = []
        for kind, run, slm, trajs, wall in results:
            labels = aggregate.easy_labels(list(questions.values()), solo.get(slm), stored_easy(store, slm))
            per_ds = []
            for ds, qs in datasets.items():
                ids = {q.id for q in qs}
                sub = [t for t in trajs if t.question_id in ids]
                m = aggregate.run_metrics(sub, questions, labels.flags, judge, recipe.prices, embedder.bertscore,
                                          embedder.bertscore_matrix)
                m["wall_s"] = wall * len(sub) / max(1, len(trajs))
                per_ds.append({"dataset": ds, **m})
            if len(per_ds) > 1:
                per_ds.append({"dataset": "macro-avg", **aggregate.macro_average(per_ds)})
            for ds, qs in datasets.items():
                for name, sids in slices.items():
                    sub = [t for t in trajs if t.question_id in sids and t.question_id in {q.id for q in qs}]
                    if sub:
                        m = aggregate.run_metrics(sub, questions, labels.flags, judge, recipe.prices)
                        per_ds.append({"dataset": f"{ds}{SLICE_SEP}{name}", **m})
            for m in per_ds:
                m["ci"] = json.dumps(m.get("ci") or {})
                rows.append({**m, "eval_id": eval_id, "run_name": run.name, "kind": kind, "strategy": run.strategy,
                             "slm": slm, "llm": trajs[0].llm if trajs else "", "easy_source": labels.source})
        with store.transaction() as con:
            con.execute("DELETE FROM eval_metrics WHERE eval_id = ?", [eval_id])
            sql = (f"INSERT INTO eval_metrics ({', '.join(METRIC_COLUMNS)}, created_at) "
                   f"VALUES ({', '.join('?' * len(METRIC_COLUMNS))}, now())")
            for r in rows:
                con.execute(sql, [r.get(c) for c in METRIC_COLUMNS])
        rl_rounds = []
        if store.sql("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'rl_rounds'")["n"][0]:
            rl_rounds = store.sql("SELECT * FROM rl_rounds ORDER BY round").to_dicts()
        store.finish_run(run_id, "ok")
        setup = {"eval_id": eval_id, "recipe": recipe, "datasets": {k: len(v) for k, v in datasets.items()},
                 "endpoints": list(endpoints.described.values()), "skipped": skipped, "embedder": embedder.name,
                 "semantic_embedder": embedder.semantic, "judge_verdicts": judge,
                 "wall_s": time.perf_counter() - t_start}
    report = write_report(Path(recipe.reports_dir) / recipe.name, rows, setup, rl_rounds)
    return {"eval_id": eval_id, "report": str(report), "rows": len(rows), "skipped": [s["name"] for s in skipped],
            "wall_s": round(time.perf_counter() - t_start, 1)}
