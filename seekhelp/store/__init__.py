"""The DuckDB store: every question, trajectory, turn and judgment, and the runs that produced them.

    with Store("data/store.duckdb") as store:
        run = store.start_run("generate", config)
        store.add_questions(questions, run)
        store.add_trajectories(trajectories, run)
        store.add_judgments([{"trajectory_id": t.id, "judge": "em", "value": 1.0}], run)
        store.finish_run(run, "ok")

One writer process per file (DuckDB's rule): pipeline steps write parquet shards with `write_shard` and a
single process calls `Store.ingest_shards`. Reading goes through `run_sql` (a read-only connection).
Every write is one transaction, and ids are content hashes, so writing the same records twice is a no-op.
"""

import contextlib
import json
import logging
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pyarrow as pa

from seekhelp.records import Question, Trajectory
from seekhelp.store.ingest import (
    EASY_SCHEMA,
    FAILURE_SCHEMA,
    JUDGMENT_SCHEMA,
    ROW_KEYS,
    file_sha256,
    list_shards,
    questions_table,
    read_shard,
    rows_table,
    trajectory_tables,
    utc_now,
    write_shard,
)
from seekhelp.store.query import load_query, run_sql
from seekhelp.store.schema import SCHEMA_VERSION, TABLES, StoreError, check_version, ensure_schema

log = logging.getLogger(__name__)

DUCKDB_CONFIG = {"autoinstall_known_extensions": False, "autoload_known_extensions": False}

# SQL that moves a registered Arrow table `src` into its table. Conflicts on the content-hash keys are skipped,
# except judgments and easiness estimates, which a later verdict replaces.
_INSERT = {
    "questions": "INSERT INTO questions BY NAME SELECT * FROM src "
                 "QUALIFY row_number() OVER (PARTITION BY id) = 1 ON CONFLICT DO NOTHING",
    "trajectories": "INSERT INTO trajectories BY NAME SELECT * FROM src "
                    "QUALIFY row_number() OVER (PARTITION BY id) = 1 ON CONFLICT DO NOTHING",
    "turns": "INSERT INTO turns BY NAME SELECT * FROM src "
             "QUALIFY row_number() OVER (PARTITION BY trajectory_id, idx) = 1 ON CONFLICT DO NOTHING",
    "judgments": "INSERT INTO judgments BY NAME SELECT * FROM src "
                 "QUALIFY row_number() OVER (PARTITION BY trajectory_id, judge ORDER BY created_at DESC) = 1 "
                 "ON CONFLICT DO UPDATE SET value = excluded.value, label = excluded.label, "
                 "details = excluded.details, run_id = excluded.run_id, created_at = excluded.created_at",
    "easy": "INSERT INTO easy BY NAME SELECT * FROM src "
            "QUALIFY row_number() OVER (PARTITION BY question_id, slm) = 1 "
            "ON CONFLICT DO UPDATE SET k = excluded.k, n_correct = excluded.n_correct, is_easy = excluded.is_easy",
    "failures": "INSERT INTO failures BY NAME SELECT DISTINCT * FROM src s WHERE NOT EXISTS ("
                "SELECT 1 FROM failures f WHERE f.item_id IS NOT DISTINCT FROM s.item_id "
                "AND f.stage IS NOT DISTINCT FROM s.stage AND f.reason IS NOT DISTINCT FROM s.reason "
                "AND f.run_id IS NOT DISTINCT FROM s.run_id)",
}


def code_version() -> str:
    try:
        return metadata.version("seekhelp")
    except metadata.PackageNotFoundError:
        return "unknown"


# Stores open for writing in this process, by resolved path: a read-only reader of the same file in the same
# process (DuckDB refuses a second configuration of one file) borrows a cursor of the writer's connection.
_WRITERS: dict[str, "Store"] = {}


def connect(path: str | Path, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """A DuckDB connection that never downloads extensions; missing or locked files become StoreError."""
    path = Path(path)
    if read_only and not path.exists():
        raise StoreError(f"{path}: no such store (run a pipeline or `Store(path)` to create one)")
    if read_only and str(path.resolve()) in _WRITERS:
        return _WRITERS[str(path.resolve())].con.cursor()
    if not read_only:
        path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return duckdb.connect(str(path), read_only=read_only, config=dict(DUCKDB_CONFIG))
    except duckdb.IOException as e:
        if "lock" in str(e).lower():
            raise StoreError(f"{path}: store is in use by another process (DuckDB allows one writer per file)") from e
        raise StoreError(f"{path}: cannot open store ({str(e).splitlines()[0]})") from e
    except duckdb.Error as e:
        raise StoreError(f"{path}: cannot open store ({str(e).splitlines()[0]})") from e


class Store:
    """Read-write access to one store file (use as a context manager)."""

    def __init__(self, path: str | Path, read_only: bool = False):
        self.path = Path(path)
        self.read_only = read_only
        self._depth = 0
        self.con = connect(self.path, read_only)
        try:
            if read_only:
                check_version(self.con, str(self.path))
            else:
                ensure_schema(self.con, str(self.path))
        except Exception:
            self.con.close()
            raise
        if not read_only:
            _WRITERS[str(self.path.resolve())] = self

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if _WRITERS.get(str(self.path.resolve())) is self:
            del _WRITERS[str(self.path.resolve())]
        self.con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction; nested uses join the outer one (so several add_* calls can commit together)."""
        if self._depth:
            self._depth += 1
            try:
                yield self.con
            finally:
                self._depth -= 1
            return
        self.con.begin()
        self._depth = 1
        try:
            yield self.con
        except BaseException:
            self.con.rollback()
            raise
        else:
            self.con.commit()
        finally:
            self._depth = 0

    def _insert(self, con: duckdb.DuckDBPyConnection, table: str, src: pa.Table) -> int:
        if src.num_rows == 0:
            return 0
        con.register("src", src)
        try:
            return con.execute(_INSERT[table]).fetchall()[0][0]
        finally:
            con.unregister("src")

    # ---------------------------------------------------------------------------------------------- runs

    def start_run(self, kind: str, config: Any = None, models: Any = None, notes: str | None = None,
                  run_id: str | None = None) -> str:
        """Record the start of a pipeline / training / eval run; returns its run_id.

        A caller that passes its own `run_id` (e.g. a hash of its config) reuses the row on a rerun instead of
        adding one, so repeating the same run leaves the table as it was."""
        run_id = run_id or f"{kind}-{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"
        with self.transaction() as con:
            con.execute("INSERT INTO runs VALUES (?, ?, ?, ?, ?, ?, NULL, 'running', ?) ON CONFLICT (run_id) "
                        "DO UPDATE SET started_at = excluded.started_at, status = 'running', finished_at = NULL",
                        [run_id, kind, json.dumps(config, default=str), json.dumps(models, default=str),
                         code_version(), utc_now(), notes])
        return run_id

    def finish_run(self, run_id: str, status: str = "ok", notes: str | None = None) -> None:
        with self.transaction() as con:
            con.execute("UPDATE runs SET finished_at = ?, status = ?, notes = coalesce(?, notes) WHERE run_id = ?",
                        [utc_now(), status, notes, run_id])

    # -------------------------------------------------------------------------------------------- writes

    def add_questions(self, questions: Iterable[Question | dict], run_id: str | None = None) -> int:
        """Store questions not stored yet; returns how many were new."""
        with self.transaction() as con:
            return self._insert(con, "questions", questions_table(questions, run_id))

    def add_trajectories(self, trajectories: Iterable[Trajectory | dict], run_id: str | None = None) -> int:
        """Store trajectories (with their turns) not stored yet; returns how many trajectories were new."""
        traj, turns = trajectory_tables(trajectories, run_id)
        with self.transaction() as con:
            n = self._insert(con, "trajectories", traj)
            self._insert(con, "turns", turns)
        return n

    def add_judgments(self, rows: Sequence[dict], run_id: str | None = None) -> int:
        """Rows of {trajectory_id, judge, value, label?, details?, run_id?, created_at?}; a re-judged pair is
        replaced. Returns the number of rows written."""
        with self.transaction() as con:
            return self._insert(con, "judgments", rows_table(rows, JUDGMENT_SCHEMA, run_id, ROW_KEYS["judgments"]))

    def add_easy(self, rows: Sequence[dict]) -> int:
        """Rows of {question_id, slm, k, n_correct, is_easy}: the SLM-alone easiness estimate (replaced if known)."""
        with self.transaction() as con:
            return self._insert(con, "easy", rows_table(rows, EASY_SCHEMA, key=ROW_KEYS["easy"]))

    def add_failures(self, rows: Sequence[dict], run_id: str | None = None) -> int:
        """Rows of {item_id, stage, reason, run_id?, created_at?} for items a stage could not produce."""
        with self.transaction() as con:
            return self._insert(con, "failures", rows_table(rows, FAILURE_SCHEMA, run_id))

    def ingest_shards(self, directory: str | Path) -> dict[str, int]:
        """Ingest every shard under `directory` not ingested before (or changed since), one transaction each.

        Returns {"shards": n, <table>: rows written, ...}.
        """
        counts: dict[str, int] = {"shards": 0}
        known = dict(self.con.execute("SELECT file_name, sha256 FROM ingested_shards").fetchall())
        for path in list_shards(directory):
            sha = file_sha256(path)
            if known.get(path.name) == sha:
                continue
            if path.name in known:
                log.warning("%s changed since it was ingested; ingesting it again", path)
            kind, tables = read_shard(path)
            with self.transaction() as con:
                for table, src in tables.items():
                    counts[table] = counts.get(table, 0) + self._insert(con, table, src)
                n_rows = next(iter(tables.values())).num_rows
                con.execute("INSERT INTO ingested_shards VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                            "sha256 = excluded.sha256, n_rows = excluded.n_rows, ingested_at = excluded.ingested_at",
                            [path.name, sha, kind, n_rows, utc_now()])
            counts["shards"] += 1
        return counts

    # --------------------------------------------------------------------------------------------- reads

    def sql(self, query: str, params: dict[str, Any] | list | None = None) -> pl.DataFrame:
        """Run a query on this (writer's) connection; for ad-hoc reading prefer `run_sql` (read-only)."""
        return self.con.sql(query, params=params).pl()

    def stored_ids(self, table: str, ids: Iterable[str]) -> set[str]:
        """Which of `ids` are already in `questions` or `trajectories` (to skip work on a rerun)."""
        if table not in ("questions", "trajectories"):
            raise StoreError(f"stored_ids: table must be questions or trajectories, not {table!r}")
        src = pa.table({"id": pa.array(list(ids), pa.string())})
        self.con.register("ids_src", src)
        try:
            rows = self.con.execute(f"SELECT id FROM {table} JOIN ids_src USING (id)").fetchall()
        finally:
            self.con.unregister("ids_src")
        return {r[0] for r in rows}

    def counts(self) -> dict[str, int]:
        return {t: self.con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES if t != "meta"}


__all__ = ["SCHEMA_VERSION", "Store", "StoreError", "connect", "load_query", "run_sql", "write_shard"]
