"""The DuckDB store: every question, trajectory, turn and judgment, and the runs that produced them.

    with Store("data/store.duckdb") as store:
        run = store.start_run("generate", config)
        store.add_questions(questions, run)
        store.add_trajectories(trajectories, run)
        store.add_judgments([{"trajectory_id": t.id, "judge": "em", "value": 1.0}], run)
        store.finish_run(run, "ok")

One writer process per file at a time (DuckDB's rule), so a `Store` never keeps the file open: every write is
one short transaction that opens the file, writes and closes it, and `seekhelp sql` / `seekhelp stats` read
between them while a stage runs (a reader that finds the file busy waits; see seekhelp.store.connection).
Pipeline steps write parquet shards with `write_shard` and one process calls `Store.ingest_shards`. Reading goes
through `run_sql` (a read-only connection). Ids are content hashes, so writing the same records twice is a no-op.
"""

import contextlib
import json
import logging
import threading
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
from seekhelp.store.connection import connect, readers_waiting, register_open
from seekhelp.store.ingest import (
    EASY_SCHEMA,
    FAILURE_SCHEMA,
    JUDGMENT_SCHEMA,
    ROW_KEYS,
    file_sha256,
    list_shards,
    questions_table,
    rows_table,
    shard_info,
    shard_selects,
    trajectory_tables,
    utc_now,
    write_shard,
)
from seekhelp.store.query import load_query, run_sql
from seekhelp.store.schema import SCHEMA_VERSION, TABLES, StoreError, check_version, ensure_schema

log = logging.getLogger(__name__)

INGEST_HOLD_S = 5.0  # the longest ingest keeps the file across transactions (a waiting reader cuts it short)
INGEST_BATCH_ROWS = 2_000_000  # rows (turns included) per ingest transaction: a second or two of work

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


class Store:
    """Read-write access to one store file. It holds no connection between calls: each write is one short
    transaction that opens the file, writes and closes it again, so other processes can read in between.

    `with store.transaction() as con:` groups several writes (and reads) into one; `store.sql(...)` reads.
    A reader waits while another process writes (up to `wait_s`; see seekhelp.store.connection).
    """

    def __init__(self, path: str | Path, read_only: bool = False, wait_s: float | None = None):
        self.path = Path(path)
        self.read_only = read_only
        self.wait_s = wait_s
        self._con: duckdb.DuckDBPyConnection | None = None  # set while a transaction (or a hold) is open
        self._depth = 0
        self._hold_s = 0.0  # ingest keeps its connection across shard transactions for this long
        self._hold_until = 0.0
        self._lock = threading.RLock()
        con = connect(self.path, read_only, wait_s)
        try:
            if read_only:
                check_version(con, str(self.path))
            else:
                ensure_schema(con, str(self.path))
        finally:
            con.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release a connection still held (there is none outside a transaction or an ingest)."""
        with self._lock:
            if self._con is not None and not self._depth:
                self._release()

    def _release(self) -> None:
        con, self._con = self._con, None
        if con is not None:
            if not self.read_only:
                register_open(self.path, None)
            con.close()

    @contextlib.contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """One transaction on a connection opened for it and closed after it; nested uses join the outer one
        (so several add_* calls can commit together). Threads take turns."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield self._con
                finally:
                    self._depth -= 1
                return
            if self._con is not None and (time.monotonic() > self._hold_until or readers_waiting(self.path)):
                self._release()
            if self._con is None:
                self._con = connect(self.path, self.read_only, self.wait_s)
                self._hold_until = time.monotonic() + self._hold_s
                if not self.read_only:
                    register_open(self.path, self._con)
            con = self._con
            self._depth = 1
            try:
                con.begin()
                yield con
            except BaseException:
                with contextlib.suppress(duckdb.Error):
                    con.rollback()
                raise
            else:
                con.commit()
            finally:
                self._depth = 0
                if not self._hold_s or time.monotonic() > self._hold_until:
                    self._release()

    def execute(self, statement: str, params: list | dict | None = None) -> None:
        """One write statement in its own short transaction (e.g. a stage's own CREATE TABLE IF NOT EXISTS)."""
        with self.transaction() as con:
            con.execute(statement, params)

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

    def ingest_shards(self, directory: str | Path, hold_s: float = INGEST_HOLD_S) -> dict[str, int]:
        """Ingest every shard under `directory` not ingested before (or changed since).

        DuckDB reads the parquet files itself. Consecutive shards of one kind go in together, up to
        INGEST_BATCH_ROWS rows per transaction, each recorded in `ingested_shards` in the same transaction. The
        common case (every row new) is one plain INSERT ... SELECT per table; a batch with rows stored already (a
        rerun) or repeated is redone shard by shard with the conflict-aware statements, so the result is the same
        either way. The connection stays open across transactions for up to `hold_s` at a time (closed sooner when
        a reader waits), then the file is let go. Returns {"shards": n, <table>: rows written, ...}.
        """
        counts: dict[str, int] = {"shards": 0}
        shards = list_shards(directory)
        batch: list[tuple[Path, str, int]] = []  # (path, sha256, rows) of one kind
        size = 0  # rows the batch writes, turns included

        def flush() -> int:
            if batch:
                for table, n in self._ingest_batch(kind_of_batch, batch).items():
                    counts[table] = counts.get(table, 0) + n
                counts["shards"] += len(batch)
                batch.clear()
            return 0

        with self._lock:
            self._hold_s = hold_s
            try:
                known = dict(self.sql("SELECT file_name, sha256 FROM ingested_shards").rows())
                kind_of_batch = ""
                for path in shards:
                    sha = file_sha256(path)
                    if known.get(path.name) == sha:
                        continue
                    if path.name in known:
                        log.warning("%s changed since it was ingested; ingesting it again", path)
                    try:
                        kind, rows, turns = shard_info(path)
                    except StoreError:
                        flush()  # the good shards before a broken one are kept
                        raise
                    if batch and (kind != kind_of_batch or size + rows + turns > INGEST_BATCH_ROWS):
                        size = flush()
                    kind_of_batch = kind
                    batch.append((path, sha, rows))
                    size += rows + turns
                flush()
            finally:
                self._hold_s = 0.0
                if not self._depth:
                    self._release()
        return counts

    def _ingest_batch(self, kind: str, batch: list[tuple[Path, str, int]]) -> dict[str, int]:
        if not self._depth:  # nested in a caller's transaction: a failed statement would abort it, so no retry
            try:
                with self.transaction() as con:
                    return self._load(con, kind, batch, plain=kind != "failures")  # failures have no key
            except duckdb.ConstraintException:
                log.debug("%d %s shard(s): rows stored already; ingesting them one by one", len(batch), kind)
        counts: dict[str, int] = {}
        for shard in batch:
            with self.transaction() as con:
                for table, n in self._load(con, kind, [shard], plain=False).items():
                    counts[table] = counts.get(table, 0) + n
        return counts

    def _load(self, con: duckdb.DuckDBPyConnection, kind: str, batch: list[tuple[Path, str, int]],
              plain: bool) -> dict[str, int]:
        out = {}
        where = str(batch[0][0]) if len(batch) == 1 else f"{batch[0][0].parent}: {len(batch)} {kind} shards"
        try:
            for table, select in shard_selects([p for p, _, _ in batch], kind).items():
                if plain:
                    out[table] = con.execute(f"INSERT INTO {table} BY NAME {select}").fetchall()[0][0]
                else:
                    con.execute(f"CREATE OR REPLACE TEMP VIEW src AS {select}")
                    out[table] = con.execute(_INSERT[table]).fetchall()[0][0]
                    con.execute("DROP VIEW src")
        except duckdb.ConstraintException:
            if plain:
                raise
            raise StoreError(f"{where}: rows conflict with the store's keys") from None
        except duckdb.Error as e:
            raise StoreError(f"{where}: shard columns do not match kind {kind!r} ({str(e).splitlines()[0]})") from e
        now = utc_now()
        con.executemany("INSERT INTO ingested_shards VALUES (?, ?, ?, ?, ?) ON CONFLICT DO UPDATE SET "
                        "sha256 = excluded.sha256, n_rows = excluded.n_rows, ingested_at = excluded.ingested_at",
                        [[p.name, sha, kind, rows, now] for p, sha, rows in batch])
        return out

    # --------------------------------------------------------------------------------------------- reads

    def sql(self, query: str, params: dict[str, Any] | list | None = None) -> pl.DataFrame:
        """Run a query in a short transaction (or the one open); for ad-hoc reading prefer `run_sql` (read-only)."""
        with self.transaction() as con:
            rel = con.sql(query, params=params)
            return pl.DataFrame() if rel is None else rel.pl()

    def stored_ids(self, table: str, ids: Iterable[str]) -> set[str]:
        """Which of `ids` are already in `questions` or `trajectories` (to skip work on a rerun)."""
        if table not in ("questions", "trajectories"):
            raise StoreError(f"stored_ids: table must be questions or trajectories, not {table!r}")
        src = pa.table({"id": pa.array(list(ids), pa.string())})
        with self.transaction() as con:
            con.register("ids_src", src)
            try:
                rows = con.execute(f"SELECT id FROM {table} JOIN ids_src USING (id)").fetchall()
            finally:
                con.unregister("ids_src")
        return {r[0] for r in rows}

    def trajectories(self, ids: Sequence[str]) -> list[Trajectory]:
        """The stored trajectories with these ids, turns included, in the order of `ids` (missing ids skipped)."""
        src = pa.table({"id": pa.array(list(ids), pa.string())})
        with self.transaction() as con:
            con.register("ids_src", src)
            try:
                heads = con.sql("SELECT t.* FROM trajectories t JOIN ids_src USING (id)").pl().to_dicts()
                turns = con.sql("SELECT u.* FROM turns u JOIN ids_src s ON u.trajectory_id = s.id "
                                "ORDER BY u.trajectory_id, u.idx").pl().to_dicts()
            finally:
                con.unregister("ids_src")
        by_id: dict[str, list[dict]] = {}
        for u in turns:
            by_id.setdefault(u["trajectory_id"], []).append(u)
        out = {}
        for h in heads:
            created = h.get("created_at")
            h["created_at"] = created.timestamp() if created is not None else 0.0
            h["turns"] = [{**u, "errors": list(u["errors"] or [])} for u in by_id.get(h["id"], [])]
            out[h["id"]] = Trajectory.from_dict(h)
        return [out[i] for i in ids if i in out]

    def counts(self) -> dict[str, int]:
        with self.transaction() as con:
            return {t: con.execute(f"SELECT count(*) FROM {t}").fetchall()[0][0] for t in TABLES if t != "meta"}


__all__ = ["SCHEMA_VERSION", "Store", "StoreError", "connect", "load_query", "run_sql", "write_shard"]
