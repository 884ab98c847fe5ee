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
import re
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pyarrow as pa

from seekhelp.backends.base import Completion
from seekhelp.config import RecipeError, to_dict
from seekhelp.evaluation import aggregate
from seekhelp.evaluation.recipe import EndpointSpec, EvalRecipe, RunSpec
from seekhelp.records import Question, Trajectory

log = logging.getLogger("seekhelp.eval")

EVAL_METRICS_DDL = """
CREATE TABLE IF NOT EXISTS eval_metrics (
    eval_id VARCHAR, run_name VARCHAR, kind VARCHAR, strategy VARCHAR, slm VARCHAR, llm VARCHAR, dataset VARCHAR,
    n INTEGER, em DOUBLE, f1 DOUBLE, f_bert DOUBLE, avg_turns DOUBLE, inscore DOUBLE, recall_easy DOUBLE,
    recall_hard DOUBLE, priv_sim DOUBLE, priv_sample DOUBLE, slm_prompt_tokens BIGINT, slm_completion_tokens BIGINT,
    llm_prompt_tokens BIGINT, llm_completion_tokens BIGINT, cost_usd DOUBLE, wall_s DOUBLE, easy_source VARCHAR,
    created_at TIMESTAMP, format_ok DOUBLE, PRIMARY KEY (eval_id, run_name, dataset));
ALTER TABLE eval_metrics ADD COLUMN IF NOT EXISTS format_ok DOUBLE;  -- stores made before it was recorded
"""
METRIC_COLUMNS = ["eval_id", "run_name", "kind", "strategy", "slm", "llm", "dataset", "n", "em", "f1", "f_bert",
                  "avg_turns", "inscore", "recall_easy", "recall_hard", "priv_sim", "priv_sample", "slm_prompt_tokens",
                  "slm_completion_tokens", "llm_prompt_tokens", "llm_completion_tokens", "cost_usd", "wall_s",
                  "easy_source", "format_ok"]
_ROUND_RE = re.compile(r"round-(\d+)$")


class NoLLM:
    """Stands in for the LLM in runs that never call it (slm_cot): starts nothing, records llm = "none"."""

    name = "none"

    async def generate(self, conversations, params) -> list[Completion]:
        return [Completion(text="", error="this run has no LLM") for _ in conversations]


def resolve_slm(spec: str | list[str]) -> str | None:
    """The first candidate that can be loaded: a registry name, an existing model folder, or a Hub id ("org/name").
    A folder named latest/final that does not exist means the highest round-N checkpoint beside it."""
    from seekhelp.models import REGISTRY

    for cand in [spec] if isinstance(spec, str) else spec:
        p = Path(cand)
        if cand in REGISTRY or (p / "config.json").exists():
            return cand
        if p.name in ("latest", "final") and p.parent.is_dir():
            rounds = [(int(m.group(1)), d) for d in p.parent.iterdir()
                      if (m := _ROUND_RE.search(d.name)) and (d / "config.json").exists()]
            if rounds:
                return str(max(rounds)[1])
        if cand.count("/") == 1 and not cand.startswith((".", "/", "data/")) and not p.exists():
            return cand  # a Hub id (loads on machines that reach the Hub)
    return None


def kb_reply(kb, k: int = 3):
    """The kb-retriever's reply: the top-k knowledge-base facts for the last message, as <information>."""

    def reply(messages: list[dict]) -> str:
        query = next((str(m.get("content", "")) for m in reversed(messages) if m.get("role") == "user"), "")
        facts = [f.text for f in kb.retrieve(query, k=k)] if query.strip() else []
        if not facts:
            return "Nothing in the knowledge base matches.\n<information>No relevant facts found.</information>"
        return "Retrieved from the knowledge base.\n<information>" + " ".join(facts) + "</information>"

    return reply


@dataclass
class Endpoints:
    """Endpoints by name, each started on first use and kept for the whole eval."""

    recipe: EvalRecipe
    stack: contextlib.ExitStack
    slms: "SLMs"
    _backends: dict[str, Any] = field(default_factory=dict)
    _served: dict[str, Any] = field(default_factory=dict)  # embedded model name → RunningServer
    described: dict[str, dict] = field(default_factory=dict)
    _kb: Any = None

    def kb(self):
        if self._kb is None:
            from seekhelp.knowledge import KnowledgeBase

            self._kb = KnowledgeBase.from_geonames()
        return self._kb

    def backend(self, name: str):
        if name in self._backends:
            return self._backends[name]
        from seekhelp.backends.openai_compat import EndpointConfig, OpenAIBackend

        e = self.recipe.endpoint(name)
        base_url, model, label, how = e.base_url, e.model, e.label or e.model, "external OpenAI-compatible endpoint"
        if e.kind == "local":
            from seekhelp.backends.local import TransformersBackend

            slm = self.slms.get(e.model, pin=True)
            b = TransformersBackend(model=slm.model, tokenizer=slm.tokenizer, max_batch_size=slm.max_batch_size,
                                    name=e.label or e.model)
            b._lock = slm._lock  # one model, one generate at a time
            self._backends[name] = b
            self.described[name] = {"name": name, "kind": e.kind, "base_url": "(in-process)", "label": b.name,
                                    "ground": e.ground, "how": "in-process transformers, batched (no HTTP server)"}
            return b
        if e.kind == "kb-retriever":
            from seekhelp.backends.scripted_server import ScriptedServer

            srv = self.stack.enter_context(ScriptedServer(reply=kb_reply(self.kb(), e.top_k)))
            base_url, model, label = srv.base_url, "kb-retriever", e.label or "kb-retriever"
            how = f"kb-retriever: local HTTP server, replies = top-{e.top_k} geonames facts (BM25), tokens = words"
        elif not base_url:
            from seekhelp.backends.server import serve

            if e.model not in self._served:
                t0 = time.perf_counter()
                self._served[e.model] = self.stack.enter_context(serve(e.model))
                log.info("embedded transformers serve on %s up in %.0f s", e.model, time.perf_counter() - t0)
            srv = self._served[e.model]
            base_url, model, label, how = srv.base_url, srv.model, e.label or srv.label, "embedded transformers serve"
        cfg = EndpointConfig(base_url=base_url, model=model, label=label, api_key_env=e.api_key_env,
                             max_concurrency=e.max_concurrency)
        self._backends[name] = OpenAIBackend(cfg)
        self.described[name] = {"name": name, "kind": e.kind, "how": how, "base_url": base_url, "label": label,
                                "ground": e.ground and e.kind != "kb-retriever"}
        return self._backends[name]

    async def aclose(self) -> None:
        for b in self._backends.values():
            if hasattr(b, "aclose"):
                with contextlib.suppress(Exception):
                    await b.aclose()

    def grounder(self, e: EndpointSpec):
        if not e.ground or e.kind == "kb-retriever":
            return None
        from seekhelp.knowledge import grounder

        return grounder(self.kb(), k=e.top_k)


class SLMs:
    """Each SLM loaded once and dropped after the last run that needs it."""

    def __init__(self, plan: list[tuple[str, RunSpec, str]], batch_size: int):
        self.left = {}
        for _, _, slm in plan:
            self.left[slm] = self.left.get(slm, 0) + 1
        self.batch_size, self._loaded, self._pinned = batch_size, {}, set()

    def get(self, slm: str, pin: bool = False):
        if pin:
            self._pinned.add(slm)
        if slm not in self._loaded:
            from seekhelp.backends.local import TransformersBackend

            t0 = time.perf_counter()
            self._loaded[slm] = TransformersBackend(slm, max_batch_size=self.batch_size, name=slm)
            log.info("loaded SLM %s in %.1f s", slm, time.perf_counter() - t0)
        return self._loaded[slm]

    def done(self, slm: str) -> None:
        self.left[slm] -= 1
        if self.left[slm] == 0 and slm not in self._pinned:
            self._loaded.pop(slm, None)


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
    from seekhelp.privacy import JUDGE_SCHEMA, judge_leaks

    spec = recipe.judge
    queues = [[t for t in trajs if t.messages and not t.raw_question_sent and questions[t.question_id].privacy_items]
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
                                 [(t.messages, questions[t.question_id].privacy_items) for t in todo], params)
    store.add_judgments([{"trajectory_id": t.id, "judge": "leak_judge",
                          "value": None if v.leak is None else float(v.leak),
                          "label": "error" if v.leak is None else ("leak" if v.leak else "clean"),
                          "details": json.dumps({"items": v.leaked_items, "reason": v.reason[:500], "error": v.error})}
                         for t, v in zip(todo, verdicts, strict=True)], run_id)
    return {t.id: v.leak for t, v in zip(todo, verdicts, strict=True)}


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
                                  config=replace(recipe.runtime, guard=run.guard or recipe.runtime.guard),
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
            for m in per_ds:
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
