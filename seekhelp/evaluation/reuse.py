"""Reuse of finished eval runs: `eval_runs_done` records each run an eval finished (its SLM's weights and a key of
everything its trajectories depend on), so a rerun of the same recipe, or another eval with the same run, reads the
stored trajectories instead of generating them again."""

import functools
import hashlib
from pathlib import Path

from seekhelp.config import to_dict
from seekhelp.evaluation.recipe import EvalRecipe, RunSpec
from seekhelp.records import Trajectory, content_hash

EVAL_RUNS_DONE_DDL = """
CREATE TABLE IF NOT EXISTS eval_runs_done (
    eval_id VARCHAR, run_name VARCHAR, slm_key VARCHAR, wall_s DOUBLE, trajectory_ids VARCHAR[],
    finished_at TIMESTAMP, PRIMARY KEY (eval_id, run_name));
ALTER TABLE eval_runs_done ADD COLUMN IF NOT EXISTS run_key VARCHAR;
"""


def slm_key(slm: str) -> str:
    """The SLM's identity for reuse: its name plus, for a model folder, the size and time of its weights (a
    retrained checkpoint at the same path is a different SLM)."""
    p = Path(slm)
    files = sorted(f for f in p.glob("*") if f.suffix in (".json", ".safetensors", ".bin")) if p.is_dir() else []
    return content_hash(slm, [(f.name, f.stat().st_size, f.stat().st_mtime_ns) for f in files])


@functools.lru_cache(maxsize=1)
def code_key() -> str:
    """A hash of the package's own files: trajectories depend on its code (the protocol, the episode loop, the
    grounded expert's retrieval), so a run another version generated is not reused."""
    root = Path(__file__).resolve().parents[1]
    digest = hashlib.sha256()
    for f in sorted(p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(f.relative_to(root)).encode() + b"\0" + f.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def run_key(recipe: EvalRecipe, run: RunSpec, slm: str, question_ids) -> str:
    """What a run's trajectories depend on: its strategy and settings (not its name), the SLM's weights, the LLM
    endpoint, the runtime and SLM serving settings, the questions and the package's code. Two evals whose runs share
    a key (an `sft.seeds` read that re-reads the last read's models) reuse one run's trajectories, not generate them
    again."""
    return content_hash({"code": code_key(),
                         "run": {k: v for k, v in to_dict(run).items() if k not in ("name", "slm")},
                         "guard": run.guard or recipe.runtime.guard, "slm": slm_key(slm),
                         "llm": None if run.strategy == "slm_cot" else to_dict(recipe.endpoint(run.llm)),
                         "runtime": to_dict(recipe.runtime), "slm_batch_size": recipe.slm_batch_size,
                         "slm_serving": to_dict(recipe.slm_serving), "questions": sorted(question_ids)}, length=16)


def finished_run(store, eval_id: str, run_name: str, slm: str,
                 key: str | None = None) -> tuple[list[Trajectory], float, str] | None:
    """The stored trajectories, wall time and eval id of this run when an earlier attempt of the same eval finished
    it, or else (given its run_key) when another eval finished the same run."""
    rows = store.sql("SELECT slm_key, wall_s, trajectory_ids, eval_id, run_key FROM eval_runs_done WHERE eval_id = $e "
                     "AND run_name = $r", {"e": eval_id, "r": run_name}).to_dicts()
    rows = [r for r in rows if r["slm_key"] == slm_key(slm) and (key is None or r["run_key"] in (None, key))]
    if not rows and key is not None:
        rows = store.sql("SELECT slm_key, wall_s, trajectory_ids, eval_id FROM eval_runs_done WHERE run_key = $k "
                         "ORDER BY finished_at DESC", {"k": key}).to_dicts()
    for row in rows:
        ids = list(row["trajectory_ids"] or [])
        trajs = store.trajectories(ids)
        if len(trajs) == len(ids):
            return trajs, row["wall_s"], row["eval_id"]
    return None


def mark_finished(store, eval_id: str, run_name: str, slm: str, trajs: list[Trajectory], wall: float,
                  key: str | None = None) -> None:
    with store.transaction() as con:
        con.execute("DELETE FROM eval_runs_done WHERE eval_id = ? AND run_name = ?", [eval_id, run_name])
        con.execute("INSERT INTO eval_runs_done (eval_id, run_name, slm_key, wall_s, trajectory_ids, finished_at, "
                    "run_key) VALUES (?, ?, ?, ?, ?, now(), ?)",
                    [eval_id, run_name, slm_key(slm), wall, [t.id for t in trajs], key])
