"""Records → Arrow tables, and parquet shards.

Everything that enters the store passes through an Arrow table built column by column (never row by row),
so one code path serves both direct writes (`Store.add_*`) and shards written by pipeline steps.
A trajectory shard is one parquet file whose `turns` column is a list of structs; ingesting it (DuckDB reads the
file directly, see `shard_selects`) flattens the turns back into their own table.
"""

import hashlib
import json
import os
import time
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from seekhelp.records import Question, Trajectory, Turn
from seekhelp.store.schema import StoreError

KINDS = ("questions", "trajectories", "judgments", "easy", "failures")  # also the order shards are ingested in
_KIND_KEY = b"seekhelp.kind"

TS = pa.timestamp("us")
STR_LIST = pa.list_(pa.string())

QUESTION_SCHEMA = pa.schema([
    ("id", pa.string()), ("question", pa.string()), ("answers", STR_LIST), ("privacy_items", STR_LIST),
    ("original_question", pa.string()), ("source", pa.string()), ("split", pa.string()), ("meta", pa.string()),
    ("run_id", pa.string()),
])
TRAJECTORY_SCHEMA = pa.schema([
    ("id", pa.string()), ("question_id", pa.string()), ("strategy", pa.string()), ("slm", pa.string()),
    ("llm", pa.string()), ("sample_index", pa.int32()), ("config_hash", pa.string()), ("round", pa.int32()),
    ("final_answer", pa.string()), ("stop_reason", pa.string()), ("format_ok", pa.bool_()),
    ("raw_question_sent", pa.bool_()), ("n_llm_calls", pa.int32()), ("slm_prompt_tokens", pa.int64()),
    ("slm_completion_tokens", pa.int64()), ("llm_prompt_tokens", pa.int64()), ("llm_completion_tokens", pa.int64()),
    ("error", pa.string()), ("created_at", TS), ("run_id", pa.string()),
])
TURN_FIELDS = [
    ("role", pa.string()), ("raw", pa.string()), ("action", pa.string()), ("content", pa.string()),
    ("think", pa.string()), ("errors", STR_LIST), ("prompt_tokens", pa.int32()), ("completion_tokens", pa.int32()),
    ("latency_s", pa.float64()), ("sent", pa.string()), ("guard", pa.string()),
]
TURN_SCHEMA = pa.schema([("trajectory_id", pa.string()), ("idx", pa.int32()), *TURN_FIELDS])
JUDGMENT_SCHEMA = pa.schema([
    ("trajectory_id", pa.string()), ("judge", pa.string()), ("value", pa.float64()), ("label", pa.string()),
    ("details", pa.string()), ("run_id", pa.string()), ("created_at", TS),
])
EASY_SCHEMA = pa.schema([
    ("question_id", pa.string()), ("slm", pa.string()), ("k", pa.int32()), ("n_correct", pa.int32()),
    ("is_easy", pa.bool_()),
])
FAILURE_SCHEMA = pa.schema([
    ("item_id", pa.string()), ("stage", pa.string()), ("reason", pa.string()), ("run_id", pa.string()),
    ("created_at", TS),
])


ROW_KEYS = {"judgments": ("trajectory_id", "judge"), "easy": ("question_id", "slm")}


def utc_now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def _ts(epoch: float | None) -> datetime | None:
    return None if epoch is None else datetime.fromtimestamp(epoch, UTC).replace(tzinfo=None)


def _json(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False, default=str)


def questions_table(questions: Iterable[Question | dict], run_id: str | None = None) -> pa.Table:
    cols: dict[str, list] = {name: [] for name in QUESTION_SCHEMA.names}
    for q in questions:
        q = q if isinstance(q, Question) else Question.from_dict(q)
        cols["id"].append(q.id)
        cols["question"].append(q.question)
        cols["answers"].append(list(q.answers))
        cols["privacy_items"].append(list(q.privacy_items))
        cols["original_question"].append(q.original_question)
        cols["source"].append(q.source)
        cols["split"].append(q.split)
        cols["meta"].append(_json(q.meta or {}))
        cols["run_id"].append(run_id)
    return pa.Table.from_pydict(cols, schema=QUESTION_SCHEMA)


def trajectory_tables(trajectories: Iterable[Trajectory | dict], run_id: str | None = None
                      ) -> tuple[pa.Table, pa.Table]:
    """Two flat tables: one row per trajectory, one row per turn (trajectory_id, idx, ...)."""
    tr: dict[str, list] = {name: [] for name in TRAJECTORY_SCHEMA.names}
    tu: dict[str, list] = {name: [] for name in TURN_SCHEMA.names}
    for t in trajectories:
        t = t if isinstance(t, Trajectory) else Trajectory.from_dict(t)
        tok = {"slm": [0, 0], "llm": [0, 0]}
        n_llm = 0
        for i, turn in enumerate(t.turns):
            turn = turn if isinstance(turn, Turn) else Turn.from_dict(turn)
            tu["trajectory_id"].append(t.id)
            tu["idx"].append(i)
            for name, _ in TURN_FIELDS:
                tu[name].append(getattr(turn, name))
            acc = tok.get(turn.role)
            if acc is not None:
                acc[0] += turn.prompt_tokens or 0
                acc[1] += turn.completion_tokens or 0
            n_llm += turn.role == "llm"
        for name in ("id", "question_id", "strategy", "slm", "llm", "sample_index", "config_hash", "round",
                     "final_answer", "stop_reason", "format_ok", "raw_question_sent", "error"):
            tr[name].append(getattr(t, name))
        tr["n_llm_calls"].append(n_llm)
        tr["slm_prompt_tokens"].append(tok["slm"][0])
        tr["slm_completion_tokens"].append(tok["slm"][1])
        tr["llm_prompt_tokens"].append(tok["llm"][0])
        tr["llm_completion_tokens"].append(tok["llm"][1])
        tr["created_at"].append(_ts(t.created_at))
        tr["run_id"].append(run_id)
    return (pa.Table.from_pydict(tr, schema=TRAJECTORY_SCHEMA), pa.Table.from_pydict(tu, schema=TURN_SCHEMA))


def rows_table(rows: Sequence[dict] | pa.Table, schema: pa.Schema, run_id: str | None = None,
               key: tuple[str, ...] = ()) -> pa.Table:
    """Judgments / easy / failures given as dicts (or an Arrow table / polars frame) → a table of `schema`.

    With `key`, a later row replaces an earlier one with the same key (the last verdict wins).
    """
    if hasattr(rows, "to_arrow"):  # polars DataFrame
        rows = rows.to_arrow()
    if isinstance(rows, pa.Table):
        rows = rows.to_pylist()
    now = utc_now()
    fixed = []
    for r in rows:
        r = dict(r)
        if "details" in schema.names:
            r["details"] = _json(r.get("details"))
        if "created_at" in schema.names:
            ts = r.get("created_at")
            r["created_at"] = _ts(ts) if isinstance(ts, int | float) else (ts or now)
        if "run_id" in schema.names and r.get("run_id") is None:
            r["run_id"] = run_id
        if isinstance(r.get("value"), bool | int):
            r["value"] = float(r["value"])
        fixed.append(r)
    if key:
        fixed = list({tuple(r.get(k) for k in key): r for r in fixed}.values())
    try:
        return pa.Table.from_pylist(fixed, schema=schema)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
        raise StoreError(f"bad rows for columns {schema.names}: {e}") from e


# ----------------------------------------------------------------------------------------------- shards

def _nest_turns(traj: pa.Table, turns: pa.Table, lengths: list[int]) -> pa.Table:
    """Put each trajectory's turns (consecutive rows of `turns`, `lengths[i]` of them) in a list column."""
    offsets = pa.array(np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)]).astype(np.int32))
    structs = pa.StructArray.from_arrays([turns.column(n).combine_chunks() for n, _ in TURN_FIELDS],
                                         fields=[pa.field(n, t) for n, t in TURN_FIELDS])
    return traj.append_column("turns", pa.ListArray.from_arrays(offsets, structs))


def write_shard(directory: str | Path, kind: str, records: Sequence[Any], run_id: str | None = None) -> Path:
    """Write one batch of records as a parquet shard, atomically (temporary file, fsync, rename).

    kind: questions | trajectories | judgments | easy | failures. Returns the shard's path.
    """
    if kind == "questions":
        table = questions_table(records, run_id)
    elif kind == "trajectories":
        records = [t if isinstance(t, Trajectory) else Trajectory.from_dict(t) for t in records]
        table = _nest_turns(*trajectory_tables(records, run_id), [len(t.turns) for t in records])
    elif kind in ("judgments", "easy", "failures"):
        schema = {"judgments": JUDGMENT_SCHEMA, "easy": EASY_SCHEMA, "failures": FAILURE_SCHEMA}[kind]
        table = rows_table(records, schema, run_id, ROW_KEYS.get(kind, ()))
    else:
        raise StoreError(f"unknown shard kind {kind!r}; expected one of {', '.join(KINDS)}")
    table = table.replace_schema_metadata({_KIND_KEY: kind.encode()})
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    name = f"{kind}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:12]}.parquet"
    tmp = directory / f".{name}.tmp"
    with open(tmp, "wb") as f:
        pq.write_table(table, f, compression="zstd")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, directory / name)
    return directory / name


def list_shards(directory: str | Path) -> list[Path]:
    """Finished shards under `directory` (recursively), in ingest order: by kind, then by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise StoreError(f"{directory}: shard directory not found")
    shards = [p for p in directory.rglob("*.parquet") if not p.name.startswith(".")]
    order = {k: i for i, k in enumerate(KINDS)}
    return sorted(shards, key=lambda p: (order.get(p.name.split("-", 1)[0], len(KINDS)), p.name))


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def shard_info(path: Path) -> tuple[str, int, int]:
    """(kind, rows, turns) of a shard: the kind its parquet metadata declares (else its name's prefix), its rows and,
    for trajectories, how many turns they hold. Reads the footer only."""
    try:
        footer = pq.read_metadata(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise StoreError(f"{path}: not a readable parquet shard ({e})") from e
    meta = footer.schema.to_arrow_schema().metadata or {}
    kind = meta.get(_KIND_KEY, b"").decode() or path.name.split("-", 1)[0]
    if kind not in KINDS:
        raise StoreError(f"{path}: unknown shard kind {kind!r}; expected one of {', '.join(KINDS)}")
    turns = 0
    for g in range(footer.num_row_groups):
        group = footer.row_group(g)
        turns += sum(group.column(c).num_values for c in range(group.num_columns)
                    if group.column(c).path_in_schema == "turns.list.element.role")
    return kind, footer.num_rows, turns


def shard_selects(paths: Sequence[Path], kind: str) -> dict[str, str]:
    """{table: SELECT over the shard files} for the tables shards of one kind fill, in the tables' column order.

    DuckDB reads the parquet files itself (no Arrow round trip through Python): a trajectory shard's nested `turns`
    list becomes one row per turn, numbered from 0 in list order.
    """
    files = ", ".join("'" + str(p).replace("'", "''") + "'" for p in paths)
    src = f"read_parquet([{files}])"
    schema = {"questions": QUESTION_SCHEMA, "judgments": JUDGMENT_SCHEMA, "easy": EASY_SCHEMA,
              "failures": FAILURE_SCHEMA, "trajectories": TRAJECTORY_SCHEMA}[kind]
    out = {kind: f"SELECT {', '.join(schema.names)} FROM {src}"}
    if kind == "trajectories":
        fields = ", ".join(f"t.{name}" for name, _ in TURN_FIELDS)
        out["turns"] = (f"SELECT trajectory_id, idx, {fields} FROM (SELECT id AS trajectory_id, "
                        f"(generate_subscripts(turns, 1) - 1)::INTEGER AS idx, unnest(turns) AS t FROM {src})")
    return out
