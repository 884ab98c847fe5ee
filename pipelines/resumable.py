"""The LLM stages of `make data` (privacy injection, leakage judge) in chunks that land in the store as they finish.

Why: one distilabel call over 100k seeds keeps every result in a temporary cache until the very end, so a crash at
90% loses everything. Here each chunk of ``chunk_size`` items is its own distilabel run whose results are written
as parquet shards and ingested before the next chunk starts; a rerun asks the LLM only about what the store lacks:

- injection: a seed is done when a question with its ``meta.seed_id`` is stored, or its rejection is (a rejection
  for a missing generation, i.e. a failed call, is retried);
- judge: a dialogue is done when its ``leak_judge`` verdict is stored (failures are re-judged).

A kill loses at most the chunk in flight. Ids stay content hashes, so a chunk ingested twice changes nothing.
"""

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from pipelines.seeds import Seed
from seekhelp.records import Question

log = logging.getLogger(__name__)


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    size = max(1, int(size))
    for i in range(0, len(items), size):
        yield items[i:i + size]


def injected_seeds(store, no_generation: str, no_output: str) -> set[str]:
    """Seed ids whose injection outcome (a question or a lasting rejection) is already stored."""
    rows = store.sql("""
        SELECT json_extract_string(meta, '$.seed_id') AS sid FROM questions WHERE sid IS NOT NULL
        UNION SELECT item_id FROM failures WHERE stage = 'injection'
            AND NOT (contains(reason, $gen) OR reason = $out)""", {"gen": no_generation, "out": no_output})
    return set(rows["sid"].to_list())


def stop_if_failed_alike(stage: str, reasons: list[str], n: int) -> None:
    """A chunk of at least 4 items whose calls all failed for the same reason (no generation came back) means the
    endpoint is down or refuses us: stop (the chunks before it are stored, a rerun resumes) instead of recording
    every later item as failed. Replies that came back but did not parse (a small judge's broken JSON) are the
    model's answers, recorded as failures, never a reason to stop."""
    from pipelines.llm_injection import NO_OUTPUT
    from pipelines.llm_tasks import NO_GENERATION
    from seekhelp.backends.openai_compat import EndpointError

    first = str(reasons[0]) if reasons else ""
    call_failed = NO_GENERATION in first or first == NO_OUTPUT
    if call_failed and n >= 4 and len(reasons) == n and len(set(reasons)) == 1:
        raise EndpointError(f"{stage}: all {n} items of a chunk failed alike ({first[:200]}); the chunks "
                            "before it are stored, rerun to resume once the endpoint answers")


def stored_questions(store, seed_ids: list[str]) -> list[Question]:
    rows = store.sql("SELECT * FROM questions WHERE json_extract_string(meta, '$.seed_id') IN (SELECT unnest($ids))"
                     " ORDER BY id", {"ids": seed_ids}).to_dicts()
    for row in rows:
        row["meta"] = json.loads(row["meta"]) if isinstance(row.get("meta"), str) else (row.get("meta") or {})
    return [Question.from_dict(row) for row in rows]


def inject(recipe, store, seeds: list[Seed], base_url: str, model: str, shard_dir: Path,
           run_id: str) -> list[Question]:
    """LLM injection of every seed not yet done, chunk by chunk; returns the stored questions of all ``seeds``."""
    from pipelines.llm_injection import NO_OUTPUT, run_llm_injection
    from pipelines.llm_tasks import NO_GENERATION
    from seekhelp.store.ingest import write_shard

    inj = recipe.injection
    done = injected_seeds(store, NO_GENERATION, NO_OUTPUT)
    todo = [s for s in seeds if s.id not in done]
    log.info("LLM injection: %d seeds to rewrite (%d already stored), chunks of %d", len(todo), len(seeds) - len(todo),
             inj.chunk_size)
    for i, chunk in enumerate(chunks(todo, inj.chunk_size)):
        qs, rejected = run_llm_injection(list(chunk), base_url, model, api_key_env=recipe.endpoint.api_key_env,
                                         temperature=inj.temperature, max_new_tokens=inj.max_new_tokens,
                                         ray_address=recipe.ray.address, replicas=recipe.ray.replicas)
        if qs:
            write_shard(shard_dir, "questions", qs, run_id)
        if rejected:
            write_shard(shard_dir, "failures", [{"item_id": r["seed_id"], "stage": "injection", "reason": r["reason"]}
                                                for r in rejected], run_id)
        store.ingest_shards(shard_dir)
        log.info("injection chunk %d: %d questions, %d rejected (stored)", i + 1, len(qs), len(rejected))
        if not qs:
            stop_if_failed_alike("LLM injection", [r["reason"] for r in rejected], len(chunk))
    return stored_questions(store, [s.id for s in seeds])


def judge(recipe, store, base_url: str, model: str, shard_dir: Path, run_id: str) -> int:
    """LLM leakage verdicts for the dialogues that sent messages and have none stored, chunk by chunk."""
    from pipelines.llm_injection import run_llm_judge
    from seekhelp.store.ingest import write_shard

    jc = recipe.judge
    limit = f"LIMIT {int(jc.limit)}" if jc.limit else ""
    todo = store.sql(f"""
        SELECT t.id AS trajectory_id, list(u.sent ORDER BY u.idx) AS messages_sent, any_value(q.privacy_items) AS pi
        FROM trajectories t JOIN turns u ON u.trajectory_id = t.id AND u.role = 'llm' AND u.sent IS NOT NULL
        JOIN questions q ON q.id = t.question_id
        WHERE NOT EXISTS (SELECT 1 FROM judgments j WHERE j.trajectory_id = t.id AND j.judge = 'leak_judge'
                          AND j.value IS NOT NULL)
        GROUP BY t.id ORDER BY t.id {limit}""").to_dicts()
    n = 0
    for chunk in chunks(todo, jc.chunk_size):
        items = [{"trajectory_id": r["trajectory_id"], "messages_sent": r["messages_sent"], "privacy_items": r["pi"]}
                 for r in chunk]
        verdicts = run_llm_judge(items, base_url, model, api_key_env=recipe.endpoint.api_key_env,
                                 max_new_tokens=jc.max_new_tokens, timeout_s=jc.timeout_s, max_retries=jc.max_retries,
                                 ray_address=recipe.ray.address, replicas=recipe.ray.replicas)
        rows = [{"trajectory_id": v["trajectory_id"], "judge": "leak_judge", "value": float(bool(v["leak"])),
                 "label": "leak" if v["leak"] else "clean",
                 "details": json.dumps({k: v.get(k) for k in ("leaked_items", "reason", "error")}, default=str)}
                for v in verdicts if v.get("leak") is not None]
        # a verdict the judge could not give is a failure (re-judged on the next run), never an 'error' judgment
        got = {v["trajectory_id"] for v in verdicts}
        failed = [{"item_id": v["trajectory_id"], "stage": "llm_judge", "reason": v.get("error") or "no verdict"}
                  for v in verdicts if v.get("leak") is None]
        failed += [{"item_id": i["trajectory_id"], "stage": "llm_judge", "reason": "no verdict returned"}
                   for i in items if i["trajectory_id"] not in got]
        if rows:
            write_shard(shard_dir, "judgments", rows, run_id)
        if failed:
            log.warning("LLM judge: %d of %d dialogues without a verdict (recorded in failures)", len(failed),
                        len(items))
            write_shard(shard_dir, "failures", failed, run_id)
        store.ingest_shards(shard_dir)
        n += len(rows)
        if not rows:
            stop_if_failed_alike("LLM judge", [f["reason"] for f in failed], len(items))
    return n
