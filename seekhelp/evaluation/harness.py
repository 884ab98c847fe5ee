"""Run an eval recipe: every run's strategy over the datasets' questions, stored, judged, measured, reported.

Each SLM is loaded once (TransformersBackend) and released after its last run; each endpoint is started once and
shared (the embedded `transformers serve`, or the kb-retriever: a real local OpenAI-compatible HTTP server whose
replies are knowledge-base retrieval). All questions of a run go through ONE run_strategy call (the runtime
batches the SLM and overlaps the LLM calls), inside one event loop for the whole eval.

Before the first run every endpoint the plan uses is started and checked with one real call (a wrong URL or model
id stops the eval in seconds). Each finished run is recorded in `eval_runs_done`; when a later run fails, the
report is still written for the runs that finished (marked incomplete), and a rerun of the same recipe reuses the
finished runs from the store instead of running them again; any eval also reuses a run that another eval finished
with the same strategy, settings, SLM weights, LLM endpoint and questions (seekhelp.evaluation.reuse).
"""

import asyncio
import contextlib
import json
import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from seekhelp.config import RecipeError, to_dict
from seekhelp.errors import SeekhelpError, one_line
from seekhelp.evaluation import aggregate
from seekhelp.evaluation.endpoints import Endpoints, NoLLM, SLMs, kb_reply, resolve_slm  # noqa: F401 (re-exported)
from seekhelp.evaluation.recipe import EvalRecipe, RunSpec
from seekhelp.evaluation.reuse import EVAL_RUNS_DONE_DDL, finished_run, mark_finished, run_key
from seekhelp.records import Question, Trajectory

log = logging.getLogger("seekhelp.eval")


class EvalIncomplete(SeekhelpError):
    """A run of the eval failed; the report covers the runs that finished before it."""


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
          "answered_alone": "DOUBLE", "llm_called": "DOUBLE", "priv_independent": "DOUBLE"}
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
            if any(r.name == f"slm_cot ({tag})" for _, r, _ in out):
                tag = slm  # two SLMs in folders of one name (two arms' seed-42): the path tells them apart
            out.append(("run", RunSpec(name=f"slm_cot ({tag})", strategy="slm_cot", slm=slm, llm=run.llm), slm))
        out.append((kind, run, slm))
    return out


def stored_easy(store, slm: str) -> dict[str, bool]:
    rows = store.sql("SELECT question_id, bool_or(is_easy) AS e FROM easy WHERE slm IN ($a, $b) GROUP BY 1",
                     {"a": slm, "b": Path(slm).name}).to_dicts()
    return {r["question_id"]: bool(r["e"]) for r in rows}


def rounds_of(rl_rounds: list[dict], slms: list[str]) -> list[dict]:
    """The RL rounds of the runs whose round folders this eval reads (`<run>/round-N`): a store that holds several
    RL runs (rl.seeds, an earlier `make rl`) reports only those behind the evaluated models."""
    parents = {os.path.normpath(os.path.abspath(Path(s).parent)) for s in slms if Path(s).name.startswith("round-")}
    return [r for r in rl_rounds if os.path.normpath(os.path.abspath(r.get("run") or "")) in parents]


async def preflight(recipe: EvalRecipe, endpoints: Endpoints, plan) -> None:
    """Start every endpoint the plan and the judge use and make one real call to each HTTP one."""
    from seekhelp.backends.openai_compat import EndpointError, OpenAIBackend

    names = dict.fromkeys(run.llm for _, run, _ in plan if run.strategy != "slm_cot")
    if recipe.judge.llm_judge:
        names[recipe.judge.endpoint] = None
    for name in names:
        b = endpoints.backend(name)
        if isinstance(b, OpenAIBackend):
            try:
                log.info("%s", await b.acheck())
            except EndpointError as e:
                raise EndpointError(f"endpoints.{name}: {e}") from e


async def _run_all(recipe, store, endpoints, slms, plan, questions, run_id, progress):
    """Every run of the plan in turn; returns (results, judge verdicts, failure): failure is None, or the name of
    the run that raised and the error, with the runs before it in results."""
    results, failure = [], None
    with progress:
        task = progress.add_task("eval", total=len(plan))
        progress.update(task, description="checking endpoints")
        await preflight(recipe, endpoints, plan)
        for kind, run, slm in plan:
            progress.update(task, description=f"{run.name} ({len(questions)} q)")
            key = run_key(recipe, run, slm, questions)
            if (done := finished_run(store, recipe.eval_id, run.name, slm, key)) is not None:
                trajs, wall, by = done
                if by == recipe.eval_id:
                    log.info("%s: finished by an earlier attempt of this eval, reused from the store", run.name)
                else:
                    log.info("%s: the same run (strategy, SLM weights, LLM, settings, questions) finished in eval "
                             "%s, reused from the store", run.name, by)
                    mark_finished(store, recipe.eval_id, run.name, slm, trajs, wall, key)
                slms.done(slm)
                results.append((kind, run, slm, trajs, wall))
                progress.advance(task)
                continue
            try:
                trajs, wall = await _one_run(recipe, store, endpoints, slms, run, slm, questions, run_id, key)
            except Exception as e:  # keep what finished: the report is written for the runs before this one
                log.error("%s failed: %s", run.name, one_line(e), exc_info=not isinstance(e, SeekhelpError))
                failure = (run.name, e)
                break
            results.append((kind, run, slm, trajs, wall))
            progress.advance(task)
        judge = {}
        if recipe.judge.llm_judge and failure is None:
            progress.update(task, description=f"LLM judge (up to {recipe.judge.limit} calls)")
            judge = await llm_judge(store, recipe, endpoints, results, questions, run_id)
    await endpoints.aclose()
    return results, judge, failure


async def _one_run(recipe, store, endpoints, slms, run, slm, questions, run_id, key=None):
    from seekhelp.strategies import StrategyContext, run_strategy

    e = recipe.endpoint(run.llm)
    llm = NoLLM() if run.strategy == "slm_cot" else endpoints.backend(run.llm)
    ctx = StrategyContext(slm=await slms.aget(slm), llm=llm, grounder=endpoints.grounder(e),
                          config=replace(recipe.runtime, guard=run.guard or recipe.runtime.guard,
                                         # two runs never share trajectory ids, nor does a run regenerated
                                         # (new code or weights) with the one an earlier eval stored
                                         run_tag=f"{run.name}/{key}" if key else run.name),
                          cascade_threshold=run.cascade_threshold, redactor=run.redactor)
    t0 = time.perf_counter()
    trajs = await run_strategy(run.strategy, ctx, list(questions.values()))
    wall = time.perf_counter() - t0
    slms.done(slm)
    for t in trajs:
        t.strategy = run.strategy
    store_run(store, trajs, questions, run_id)
    mark_finished(store, recipe.eval_id, run.name, slm, trajs, wall, key)
    em = sum(aggregate.metrics.exact_match(t.final_answer, questions[t.question_id].answers) for t in trajs)
    log.info("%s: EM %d/%d, %d LLM calls, %.1f s", run.name, em, len(trajs), sum(t.n_llm_calls for t in trajs), wall)
    return trajs, wall


TRACKED = ("em", "f1", "avg_turns", "answered_alone", "priv_sample", "priv_sent", "priv_independent", "inscore",
           "cost_usd", "wall_s")


def track_eval(recipe: EvalRecipe, eval_id: str, rows: list[dict]) -> None:
    """Every run's main metrics per dataset (not the slices) to the experiment tracker, once."""
    from seekhelp.tracking import start

    tracker = start(recipe.report_to, f"eval-{recipe.name}", {"eval_id": eval_id, "store": recipe.store})
    if tracker is None:
        return
    for r in rows:
        if SLICE_SEP not in r["dataset"]:
            tracker.log({f"{r['run_name']}/{r['dataset']}/{k}": r.get(k) for k in TRACKED})
    tracker.finish()


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
        store.execute(EVAL_METRICS_DDL + EVAL_RUNS_DONE_DDL)
        datasets = load_datasets(store, recipe)
        questions = {q.id: q for qs in datasets.values() for q in qs}
        run_id = store.start_run("eval", to_dict(recipe), models={"runs": {r.name: s for _, r, s in plan}},
                                 run_id=eval_id)
        slms = SLMs(plan, recipe.slm_batch_size, recipe.slm_serving)
        stack.callback(slms.close)  # a served SLM is stopped however the eval ends
        endpoints = Endpoints(recipe, stack, slms)
        results, judge, failure = asyncio.run(_run_all(recipe, store, endpoints, slms, plan, questions, run_id,
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
        from seekhelp.evaluation.independent_leak import disagreements

        disagree = {run.name: disagreements((t, questions[t.question_id], aggregate.leak_of(t, questions[
            t.question_id], judge.get(t.id))[0]) for t in trajs) for _, run, _, trajs, _ in results
            if run.strategy in ("dynamic", "redact_direct", "static_rewrite")}
        from seekhelp.evaluation.paired import paired_results

        setup_paired = paired_results(recipe, results, datasets, slices, questions)
        rl_rounds = []
        if store.sql("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'rl_rounds'")["n"][0]:
            rl_rounds = rounds_of(store.sql("SELECT * FROM rl_rounds ORDER BY round").to_dicts(),
                                  [slm for _, _, slm in plan])
        store.finish_run(run_id, "ok" if failure is None else "failed",
                         None if failure is None else f"{failure[0]}: {one_line(failure[1])}")
        setup = {"eval_id": eval_id, "recipe": recipe, "datasets": {k: len(v) for k, v in datasets.items()},
                 "endpoints": list(endpoints.described.values()), "skipped": skipped, "embedder": embedder.name,
                 "semantic_embedder": embedder.semantic, "judge_verdicts": judge, "leak_disagreements": disagree,
                 "wall_s": time.perf_counter() - t_start, "paired": setup_paired}
        if failure is not None:
            setup["incomplete"] = {"failed_run": failure[0], "error": one_line(failure[1]),
                                   "finished": len(results), "planned": len(plan)}
    if failure is not None and not rows:
        raise EvalIncomplete(f"eval stopped at run {failure[0]!r} before any run finished: "
                             f"{one_line(failure[1])}") from failure[1]
    report = write_report(Path(recipe.reports_dir) / recipe.name, rows, setup, rl_rounds)
    track_eval(recipe, eval_id, rows)
    if failure is not None:
        raise EvalIncomplete(f"eval stopped at run {failure[0]!r} ({one_line(failure[1])}); the report for the "
                             f"{len(results)} of {len(plan)} runs that finished, marked incomplete: {report}; "
                             "a rerun reuses them and runs the rest") from failure[1]
    return {"eval_id": eval_id, "report": str(report), "rows": len(rows), "skipped": [s["name"] for s in skipped],
            "wall_s": round(time.perf_counter() - t_start, 1)}
