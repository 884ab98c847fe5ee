"""Privacy injection and leakage judging with an LLM behind any OpenAI-compatible endpoint, as distilabel pipelines.

`run_llm_injection` rewrites public seeds into privacy-laden Questions in the paper's three steps plus its check
(see `pipelines.llm_tasks`); it returns the same `Question` shape as the deterministic injector
(`pipelines.offline_inject`) and a list of rejected rows, each with a reason. Every seed comes back exactly once,
accepted or rejected. `run_llm_judge` runs the leakage judge over many trajectories in one pipeline.

Each run gets its own work folder (under ``cache_dir`` when given and kept there for inspection, else a temporary
folder removed afterwards) holding distilabel's cache, its log file and the parquet files it reads back; distilabel's
cache is never used for resume (``use_cache=False``): resuming goes through the store. The logging, signal and
environment state that distilabel changes while it runs are put back afterwards, and its log level defaults to
WARNING (set ``DISTILABEL_LOG_LEVEL`` to change it). ``Pipeline.run`` must be called from the main thread.
"""

import contextlib
import json
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from pipelines.families import llm_style
from pipelines.llm_tasks import (
    NO_GENERATION,
    AskThroughFacts,
    ConsistencyCheck,
    EndpointLLM,
    InventPersonalFacts,
    PackRows,
    PrivacyJudgeTask,
    RestateWithFacts,
    make_llm,
)
from pipelines.seeds import HELDOUT_FAMILY_SHARE, Seed
from seekhelp.records import Question

log = logging.getLogger(__name__)

DUMMY_KEY = "not-needed"  # local servers (transformers serve, vllm serve) accept any key
NO_OUTPUT = "no output from the pipeline"


def _api_key(env_name: str, base_url: str) -> str:
    key = os.environ.get(env_name)
    if key:
        return key
    if urlparse(base_url).hostname not in ("127.0.0.1", "localhost", "::1", "0.0.0.0"):
        log.warning("$%s is not set; calling %s with a dummy key", env_name, base_url)
    return DUMMY_KEY


@contextlib.contextmanager
def _contained(work: Path) -> Iterator[None]:
    """Run distilabel without leaving traces in the caller's process or home folder.

    distilabel replaces the root logger's handlers, silences some loggers, sets a SIGINT handler and environment
    variables, and reads its results back with `datasets` (whose cache lives in the home folder by default).
    """
    import datasets
    from datasets.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars
    from distilabel.utils.logging import stop_logging

    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    levels = {name: lg.level for name, lg in logging.Logger.manager.loggerDict.items()
              if isinstance(lg, logging.Logger)}
    env = {k: v for k, v in os.environ.items() if k.startswith("DISTILABEL_")}
    sigint = signal.getsignal(signal.SIGINT)
    hf_cache, bars_off = datasets.config.HF_DATASETS_CACHE, are_progress_bars_disabled()
    os.environ.setdefault("DISTILABEL_LOG_LEVEL", "WARNING")
    datasets.config.HF_DATASETS_CACHE = work / "hf-datasets"
    disable_progress_bars()
    try:
        with warnings.catch_warnings():  # distilabel 1.5.3 emits pydantic deprecations by the hundred thousand
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"distilabel(\.|$)")
            yield
    finally:
        stop_logging()
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lg in logging.Logger.manager.loggerDict.items():
            if isinstance(lg, logging.Logger):
                lg.setLevel(levels.get(name, logging.NOTSET))
        for k in [k for k in os.environ if k.startswith("DISTILABEL_")]:
            del os.environ[k]
        os.environ.update(env)
        signal.signal(signal.SIGINT, sigint)
        datasets.config.HF_DATASETS_CACHE = hf_cache
        if not bars_off:
            enable_progress_bars()


def run_pipeline(name: str, rows: list[dict[str, Any]], make_steps: Callable[[], list[Any]], batch_size: int,
                 cache_dir: str | Path | None = None, ray_address: str | None = None) -> dict[int, dict[str, Any]]:
    """Run LoadDataFromDicts(rows) >> steps... >> PackRows; return the final rows keyed by their "row" number.

    ``ray_address`` (e.g. ``ray://head:10001`` or ``127.0.0.1:6379``) runs the same DAG on that Ray cluster through
    distilabel's own Ray runner; each step's ``resources.replicas`` then become Ray actors spread over its nodes.
    """
    if threading.current_thread() is not threading.main_thread():
        raise RuntimeError("distilabel pipelines must run on the main thread (Pipeline.run sets signal handlers)")
    if cache_dir is not None:
        Path(cache_dir).mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache_dir))
    try:
        with _contained(work):
            from distilabel.pipeline import Pipeline
            from distilabel.steps import LoadDataFromDicts

            with Pipeline(name=name, cache_dir=work / "distilabel") as pipeline:
                step = LoadDataFromDicts(name="load", data=rows, batch_size=batch_size)
                for nxt in [*make_steps(), PackRows(name="pack", input_batch_size=batch_size)]:
                    step = step >> nxt
            distiset = with_ray(pipeline, ray_address).run(use_cache=False)
        out: dict[int, dict[str, Any]] = {}
        if "default" in distiset:
            for r in distiset["default"]["train"].to_list():
                out[int(r["row"])] = json.loads(r["record"])
        return out
    finally:
        if ray_address:  # ends this driver's job: its named queue actors go with it, so the next chunk can reuse names
            import ray

            ray.shutdown()
        if cache_dir is None:
            shutil.rmtree(work, ignore_errors=True)


def with_ray(pipeline: Any, ray_address: str | None) -> Any:
    """The pipeline itself, or its Ray twin connected to the cluster at ``ray_address`` (its head must be up).

    The Ray workers import our Steps, so every node needs this checkout on its PYTHONPATH (``ray start`` from the
    checkout with ``PYTHONPATH=.``), and the shard folder must be a path every node can write to.
    """
    if not ray_address:
        return pipeline
    try:
        import ray  # noqa: F401
    except ImportError as e:
        raise RuntimeError("ray.address is set but ray is not installed (pip install 'seekhelp[ray]')") from e
    # log_to_driver: a worker's traceback must reach the terminal that started the run, not only the node's logs
    return pipeline.ray(ray_head_node_url=ray_address, ray_init_kwargs={"log_to_driver": True,
                                                                             "ignore_reinit_error": True})


def _replicas(n: int) -> dict[str, Any]:
    from distilabel.steps import StepResources

    return {"resources": StepResources(replicas=n)} if n > 1 else {}


def _llm_factory(base_url: str, model: str, api_key_env: str, max_new_tokens: int, max_retries: int,
                 timeout_s: int, structured_output: bool) -> Callable[[dict[str, Any], float], EndpointLLM]:
    key = _api_key(api_key_env, base_url)

    def llm(schema: dict[str, Any], temperature: float) -> EndpointLLM:
        return make_llm(base_url, model, key, schema if structured_output else None, temperature=temperature,
                        max_new_tokens=max_new_tokens, max_retries=max_retries, timeout_s=timeout_s)

    return llm


def rejection_reason(rec: dict[str, Any] | None) -> str | None:
    """Why a pipeline row is not a usable Question (None: accepted)."""
    if rec is None:
        return NO_OUTPUT
    if rec.get("inject_error"):
        return rec["inject_error"]
    if rec.get("check_ok") is True:
        return None if rec.get("question") and rec.get("privacy_items") else "check: incomplete row"
    return rec.get("check_reason") or "check: no verdict"


def run_llm_injection(seeds: list[Seed], base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                      batch_size: int = 8, temperature: float = 0.7, max_new_tokens: int = 256,
                      cache_dir: str | Path | None = None, max_retries: int = 3, timeout_s: int = 120,
                      structured_output: bool = True, ray_address: str | None = None,
                      replicas: int = 1) -> tuple[list[Question], list[dict[str, Any]]]:
    """Privacy-injected Questions from public seeds through an LLM, plus the rejected seeds with their reasons.

    The three rewrite steps sample at ``temperature``; the check is greedy. ``structured_output`` sends each step's
    JSON schema as ``response_format`` (replies are validated either way). Answers are always the seed's.
    ``replicas`` copies of each LLM step share the rows (on Ray, one actor each: see `run_pipeline`).
    """
    if not seeds:
        return [], []
    llm = _llm_factory(base_url, model, api_key_env, max_new_tokens, max_retries, timeout_s, structured_output)

    def steps() -> list[Any]:
        kw = {"input_batch_size": batch_size, **_replicas(replicas)}
        return [InventPersonalFacts(name="invent_facts", llm=llm(InventPersonalFacts.SCHEMA, temperature), **kw),
                RestateWithFacts(name="restate_with_facts", llm=llm(RestateWithFacts.SCHEMA, temperature), **kw),
                AskThroughFacts(name="ask_through_facts", llm=llm(AskThroughFacts.SCHEMA, temperature), **kw),
                ConsistencyCheck(name="consistency_check", llm=llm(ConsistencyCheck.SCHEMA, 0.0), **kw)]

    # the person, sensitive detail and register each seed is written with (pipelines.families: seen members for
    # train, held-out ones for a share of validation/test), so the LLM path has the offline injector's variety
    styles = [llm_style(s.id, s.split, (s.meta or {}).get("heldout_reason"), HELDOUT_FAMILY_SHARE) for s in seeds]
    rows = [{"row": i, "original_question": s.question, "answers": list(s.answers), "prompt_tokens": 0,
             "completion_tokens": 0, **{k: st[k] for k in ("who", "detail", "register", "register_text")}}
            for i, (s, st) in enumerate(zip(seeds, styles, strict=True))]
    t0 = time.perf_counter()
    out = run_pipeline("seekhelp-llm-inject", rows, steps, batch_size, cache_dir, ray_address)
    accepted: list[Question] = []
    rejected: list[dict[str, Any]] = []
    for i, seed in enumerate(seeds):
        rec = out.get(i)
        reason = rejection_reason(rec)
        rec = rec or {}
        tokens = {"prompt": rec.get("prompt_tokens") or 0, "completion": rec.get("completion_tokens") or 0}
        if reason is None:
            items = list(rec["privacy_items"])
            accepted.append(Question(
                question=rec["question"], answers=list(seed.answers), privacy_items=items,
                original_question=seed.question, source=seed.source, split=seed.split,
                meta={**seed.meta, "injector": "llm", "inject_model": model, "seed_id": seed.id,
                      "members": styles[i]["members"], "register": styles[i]["register"],
                      "template_heldout": styles[i]["template_heldout"],
                      "heldout": bool(styles[i]["heldout_reason"] or (seed.meta or {}).get("heldout")),
                      "heldout_reason": styles[i]["heldout_reason"] or (seed.meta or {}).get("heldout_reason"),
                      "restated": rec.get("restated"), "check_reason": rec.get("check_reason"),
                      "inject_tokens": tokens}))
        else:
            rejected.append({
                "seed_id": seed.id, "seed_question": seed.question, "seed": seed.to_dict(), "reason": reason,
                "privacy_items": rec.get("privacy_items"), "restated": rec.get("restated"),
                "question": rec.get("question"), "check_ok": rec.get("check_ok"),
                "check_reason": rec.get("check_reason"), "inject_tokens": tokens,
                "raw": {k: rec.get(f"{k}_raw") for k in ("facts", "restate", "ask", "check")}})
    no_gen = sum(NO_GENERATION in r["reason"] or r["reason"] == NO_OUTPUT for r in rejected)
    log.info("llm injection: %d seeds -> %d accepted, %d rejected (%d without a generation) in %.1f s",
             len(seeds), len(accepted), len(rejected), no_gen, time.perf_counter() - t0)
    return accepted, rejected


def run_llm_judge(items: list[dict[str, Any]], base_url: str, model: str, *, api_key_env: str = "OPENAI_API_KEY",
                  batch_size: int = 8, temperature: float = 0.0, max_new_tokens: int = 512,
                  cache_dir: str | Path | None = None, max_retries: int = 3, timeout_s: int = 120,
                  structured_output: bool = True, ray_address: str | None = None,
                  replicas: int = 1) -> list[dict[str, Any]]:
    """Leakage verdicts, one per item ({trajectory_id, messages_sent, privacy_items}), in the items' order.

    Returns dicts {trajectory_id, leak, leaked_items, reason, error, prompt_tokens, completion_tokens}. An item
    with no message sent (or no privacy item) is not a leak and costs no call; leak None means the judge failed
    (``error`` says why).
    """
    results: list[dict[str, Any] | None] = [None] * len(items)
    rows = []
    for i, item in enumerate(items):
        sent = [m for m in item.get("messages_sent") or [] if isinstance(m, str) and m.strip()]
        private = [p for p in item.get("privacy_items") or [] if isinstance(p, str) and p.strip()]
        base = {"trajectory_id": item.get("trajectory_id"), "leaked_items": [], "error": None, "prompt_tokens": 0,
                "completion_tokens": 0}
        if not sent:
            results[i] = {**base, "leak": False, "reason": "no message was sent"}
        elif not private:
            results[i] = {**base, "leak": False, "reason": "no privacy item to leak"}
        else:
            rows.append({"row": i, "messages_sent": sent, "privacy_items": private, "prompt_tokens": 0,
                         "completion_tokens": 0})
    if rows:
        llm = _llm_factory(base_url, model, api_key_env, max_new_tokens, max_retries, timeout_s, structured_output)

        def steps() -> list[Any]:
            return [PrivacyJudgeTask(name="privacy_judge", llm=llm(PrivacyJudgeTask.SCHEMA, temperature),
                                     input_batch_size=batch_size, **_replicas(replicas))]

        out = run_pipeline("seekhelp-llm-judge", rows, steps, batch_size, cache_dir, ray_address)
        for r in rows:
            rec = out.get(r["row"])
            i = r["row"]
            if rec is None:
                results[i] = {"trajectory_id": items[i].get("trajectory_id"), "leak": None, "leaked_items": [],
                              "reason": "", "error": NO_OUTPUT, "prompt_tokens": 0, "completion_tokens": 0}
                continue
            results[i] = {"trajectory_id": items[i].get("trajectory_id"), "leak": rec.get("leak"),
                          "leaked_items": list(rec.get("leaked_items") or []), "reason": rec.get("judge_reason") or "",
                          "error": rec.get("judge_error"), "prompt_tokens": rec.get("prompt_tokens") or 0,
                          "completion_tokens": rec.get("completion_tokens") or 0}
        failed = sum(results[r["row"]]["leak"] is None for r in rows)
        log.info("llm judge: %d items, %d judged by the LLM, %d without a verdict", len(items), len(rows), failed)
    return [r for r in results if r is not None]
