"""Export selected trajectories as a chat dataset for SFT (parquet in the Hub's layout), with a provenance file.

The folder holds `data/train-00000-of-00001.parquet` and `provenance.json`: what `datasets.load_dataset(folder)`,
`datasets.load_dataset("parquet", data_files=...)`, `trl sft --dataset_name folder` and the Hub read as they are.
`read_export` also opens the `save_to_disk` folders older exports wrote.

The selection is any read-only query returning a `trajectory_id` (or `id`) column, typically
data/queries/sft_candidates.sql. Each dialogue is rebuilt from its stored turns in the SLM's view
(seekhelp.conversation.slm_messages): system prompt, the question with its private facts, then the SLM's raw
turns as assistant messages and the LLM's replies, wrapped in <agent-reply>, as user messages.
"""

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl
import pyarrow as pa

from seekhelp.records import Question, Turn
from seekhelp.store.ingest import utc_now
from seekhelp.store.query import run_sql
from seekhelp.store.schema import StoreError

log = logging.getLogger(__name__)

PROVENANCE_FILE = "provenance.json"
PARQUET_FILE = "data/train-00000-of-00001.parquet"
_OLD_LAYOUT = ("dataset_info.json", "state.json", "dataset_dict.json")
COLUMNS = ("messages", "trajectory_id", "question_id", "answers", "split")


def _features():
    import datasets

    message = {"role": datasets.Value("string"), "content": datasets.Value("string")}
    as_list = datasets.List if hasattr(datasets, "List") else (lambda f: [f])
    return datasets.Features({
        "messages": as_list(message),
        "trajectory_id": datasets.Value("string"),
        "question_id": datasets.Value("string"),
        "answers": as_list(datasets.Value("string")),
        "split": datasets.Value("string"),
    })


def well_formed(messages: list[dict]) -> bool:
    """system, user, then assistant / user alternating, ending with an assistant turn."""
    if len(messages) < 3 or messages[0]["role"] != "system" or messages[-1]["role"] != "assistant":
        return False
    return all(m["role"] == ("user" if i % 2 == 0 else "assistant") for i, m in enumerate(messages[1:]))


def _fetch(store_path: str | Path, ids: list[str]) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Question + trajectory heads for `ids`, and their turns in order."""
    from seekhelp.store import connect

    con = connect(store_path, read_only=True)
    try:
        con.register("sel", pa.table({"trajectory_id": pa.array(ids, pa.string())}))
        heads = con.sql("""
            SELECT t.id AS trajectory_id, t.question_id, t.run_id AS t_run, q.run_id AS q_run,
                   q.question, q.answers, q.privacy_items, q.split
            FROM sel JOIN trajectories t ON t.id = sel.trajectory_id
            LEFT JOIN questions q ON q.id = t.question_id""").pl()
        turns = con.sql("""
            SELECT u.trajectory_id, u.idx, u.role, u.raw, u.action, u.content
            FROM sel JOIN turns u USING (trajectory_id)
            ORDER BY u.trajectory_id, u.idx""").pl()
    finally:
        con.close()
    return heads, turns


def export_sft(store_path: str | Path, query_sql: str, out_dir: str | Path, system_prompt: str,
               render_user: Callable[[dict], str] | None = None, params: dict[str, Any] | None = None,
               provenance: dict[str, Any] | None = None):
    """Run `query_sql` (read-only) and save the selected dialogues as a `datasets.Dataset` in `out_dir`.

    render_user(question_row) may replace the first user message; the row has question, privacy_items,
    answers, split. `provenance` adds keys to the folder's provenance.json (how a caller chose the ids).
    Returns the Dataset (columns: messages, trajectory_id, question_id, answers, split).
    """
    import datasets

    from seekhelp.conversation import slm_messages  # late: keeps the store importable on its own

    selected = run_sql(store_path, query_sql, params)
    id_col = "trajectory_id" if "trajectory_id" in selected.columns else "id" if "id" in selected.columns else None
    if id_col is None:
        raise StoreError(f"the export query must return a trajectory_id (or id) column; got {selected.columns}")
    ids = list(dict.fromkeys(selected[id_col].to_list()))  # keep the query's order, drop repeats
    heads, turns = _fetch(store_path, ids)
    by_traj: dict[str, list[Turn]] = {}
    for r in turns.iter_rows(named=True):
        by_traj.setdefault(r["trajectory_id"], []).append(
            Turn(role=r["role"], raw=r["raw"] or "", action=r["action"], content=r["content"] or ""))
    head_of = {r["trajectory_id"]: r for r in heads.iter_rows(named=True)}

    rows: dict[str, list] = {c: [] for c in COLUMNS}
    skipped: dict[str, int] = {"missing": 0, "no_question": 0, "malformed": 0}
    runs: set[str] = set()
    for tid in ids:
        head = head_of.get(tid)
        if head is None:
            skipped["missing"] += 1
            continue
        if head["question"] is None:
            skipped["no_question"] += 1
            continue
        q = Question(question=head["question"], answers=head["answers"] or [],
                     privacy_items=head["privacy_items"] or [], split=head["split"] or "", id=head["question_id"])
        messages = slm_messages(system_prompt, q, by_traj.get(tid, []))
        if render_user is not None:
            messages[1] = {"role": "user", "content": render_user(head)}
        if not well_formed(messages):
            skipped["malformed"] += 1
            log.warning("trajectory %s: turns do not alternate SLM / LLM; left out of the export", tid)
            continue
        rows["messages"].append(messages)
        rows["trajectory_id"].append(tid)
        rows["question_id"].append(head["question_id"])
        rows["answers"].append(list(head["answers"] or []))
        rows["split"].append(head["split"] or "")
        runs.update(r for r in (head["t_run"], head["q_run"]) if r)

    ds = datasets.Dataset.from_dict(rows, features=_features())
    out_dir = Path(out_dir)
    for stale in [*(out_dir / f for f in _OLD_LAYOUT), *out_dir.glob("data-*.arrow"), *out_dir.glob("data/*.parquet")]:
        stale.unlink(missing_ok=True)  # an earlier export into the same folder must not be read back with this one
    (out_dir / PARQUET_FILE).parent.mkdir(parents=True, exist_ok=True)
    ds.to_parquet(str(out_dir / PARQUET_FILE))
    provenance = {
        "store": str(store_path),
        "query": query_sql,
        "params": params or {},
        "selected": len(ids),
        "rows": ds.num_rows,
        "skipped": skipped,
        "run_ids": sorted(runs),
        "system_prompt": system_prompt,
        "created_at": utc_now().isoformat(timespec="seconds") + "Z",
    } | (provenance or {})
    (out_dir / PROVENANCE_FILE).write_text(json.dumps(provenance, ensure_ascii=False, indent=2) + "\n",
                                           encoding="utf-8")
    return ds


def read_export(folder: str | Path):
    """The dialogues of an export folder as a `datasets.Dataset`: parquet (data/*.parquet) or a save_to_disk folder.
    Raises FileNotFoundError when the folder holds neither."""
    import datasets

    folder = Path(folder)
    files = sorted(folder.glob("data/*.parquet")) or sorted(folder.glob("*.parquet"))
    if files:
        return datasets.load_dataset("parquet", data_files={"train": [str(f) for f in files]}, split="train")
    if any((folder / f).exists() for f in _OLD_LAYOUT):
        ds = datasets.load_from_disk(str(folder))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds["train"] if "train" in ds else next(iter(ds.values()))
        return ds
    raise FileNotFoundError(f"{folder}: not an export folder (no data/*.parquet, no datasets.save_to_disk files)")
